"""The report's Checks: what a run that learned shows, each as (text with its numbers, met).

A check whose inputs are missing (a stage still running, a suite not evaluated, no recipe to read
the mixtures from) is left out, never counted as met. Rates are compared by their Wilson 95%
intervals (smolrecipe.report.numbers), so a check does not pass or fail on sampling noise.

  loss_checks        each finished stage: its smoothed loss falls (last W logged steps vs first W)
  clean_end_check    SFT ends more tier-4 answers on end-of-turn than the base model
  world_checks       qa:world: SFT beats base on exact match; the base model knows facts above chance
  preference_checks  pairs:<name>: the preference stage raises held-out pair accuracy over SFT
  mixture_checks     a stage lowers the held-out loss of the domain whose share it raised most
  perplexity_kept    SFT keeps every held-out slice's bits per byte within PPL_KEPT of the base model's
  annealing_checks   an annealing stage lowers every held-out slice below the stable stage it decayed
  extension_kept     a context extension keeps every held-out (short-document) slice within EXTENSION_KEPT of
                     the stage it extended: longer windows must not cost the short context
"""

from __future__ import annotations

from itertools import pairwise
from statistics import fmean

from smolrecipe.kinds import base_and_chat, is_chat_model
from smolrecipe.report.curves import parent_of
from smolrecipe.report.evals import Comparison, EvalPoint, role
from smolrecipe.report.mixture import Shares
from smolrecipe.report.numbers import fmt_point
from smolrecipe.runs import StageLog

Check = tuple[str, bool]
Compared = tuple[tuple[str, int], tuple[str, int], list[Comparison]] | None  # evals.base_vs_sft's answer

LOSS_WINDOW_SHARE, LOSS_WINDOW_MAX = 0.10, 20  # the loss check averages 10% of a stage's logged steps, 1 to 20
EXTENSION_KEPT = 0.05  # a context extension may raise a held-out slice's bits per byte by at most this share
PPL_KEPT = 0.15  # SFT may raise a held-out slice's bits per byte by at most this share of the base model's
WORLD = "qa:world"
DOMAIN_SLICE = {"web": "ppl:web", "math": "ppl:math", "code": "ppl:code"}  # a recipe domain -> its tier-2 held-out slice
SHARE_TIE = 1e-6  # the plan rounds folder weights to 6 decimals: rises closer than this are a tie (each is checked)


def loss_window(logged: int) -> int:
    return min(LOSS_WINDOW_MAX, max(1, int(logged * LOSS_WINDOW_SHARE)))


def loss_checks(stages: list[StageLog]) -> list[Check]:
    """Each finished stage ends below where it began, compared as the mean of its last W logged
    losses against the mean of its first W: one noisy batch at either end cannot decide it."""
    checks = []
    for s in stages:
        losses = [r["loss"] for r in s.records]
        if not s.finished or len(losses) < 2:
            continue
        w = loss_window(len(losses))
        first, last = fmean(losses[:w]), fmean(losses[-w:])
        checks.append((f"{s.name}: mean loss of the last {w} logged step(s) {last:.2f} below that of the first {w} {first:.2f}",
                       last < first))
    return checks


def compared_pair(compared: Compared, task: str, metric: str) -> Comparison | None:
    """The base vs SFT comparison of one metric, when both models have it."""
    found = next((c for c in compared[2] if (c.task, c.metric) == (task, metric)), None) if compared else None
    return found if found is not None and found.diff is not None else None


def clean_end_check(compared: Compared) -> list[Check]:
    clean = compared_pair(compared, "sft_suite", "clean_end")
    if clean is None:
        return []
    return [(f"SFT ends {clean.sft.value:.0%} of the SFT-suite answers cleanly (base: {clean.base.value:.0%})", clean.diff > 0)]


def world_checks(points: list[EvalPoint], stages: list[StageLog], compared: Compared) -> list[Check]:
    """SFT answers more fact and arithmetic questions exactly than the base model, each SFT interval
    above the base model's; the last pretraining checkpoint picks the right fact by likelihood more
    often than a guess, its interval's lower bound above the chance level."""
    checks = []
    pair = [compared_pair(compared, WORLD, metric) for metric in ("em_fact", "em_arithmetic")]
    if all(c is not None and c.base.ci and c.sft.ci for c in pair):
        text = "; ".join(f"{c.metric} {fmt_point(c.sft)} vs base {fmt_point(c.base)}" for c in pair)
        checks.append((f"SFT beats base on the world-knowledge suite (each SFT interval above base's): {text}",
                       all(c.sft.ci[0] > c.base.ci[1] for c in pair)))
    # the base model the SFT stage started from (not a branch trained after it, e.g. a context extension)
    base, _ = base_and_chat(stages)
    chat = {s.name for s in stages if is_chat_model(s.kind)}
    facts = [p for p in points if (p.task, p.metric) == (WORLD, "mc_fact") and p.stage not in chat
             and (base is None or p.stage == base.name) and p.ci is not None and p.chance is not None]
    if facts:
        p = facts[-1]  # points are in training order
        checks.append((f"base model knows the facts better than chance: mc_fact at {p.stage} step {p.step} {fmt_point(p)}, "
                       f"lower bound {p.ci[0]:.2f} above chance {p.chance:.2f}", p.ci[0] > p.chance))
    return checks


def preference_checks(points: list[EvalPoint], stages: list[StageLog]) -> list[Check]:
    """For each pairs:<name> task run on both: the preference stage's last evaluated checkpoint picks
    the chosen answer more often than the SFT stage's, called better by the base-vs-SFT rule (the two
    Wilson intervals apart, Comparison.verdict). No line without a preference stage's result."""
    roles = {s.name: role(s.kind) for s in stages}
    checks = []
    for task in dict.fromkeys(p.task for p in points if p.task.startswith("pairs:")):
        accuracy = [p for p in points if (p.task, p.metric) == (task, "pair_acc")]
        sft = [p for p in accuracy if roles.get(p.stage) == "SFT"]
        aligned = [p for p in accuracy if roles.get(p.stage) == "preference"]
        if not (sft and aligned):
            continue
        before, after = sft[-1], aligned[-1]  # points are in training order
        checks.append((f"{after.stage} raises held-out pair accuracy over SFT ({task}, the intervals apart): pair_acc "
                       f"{fmt_point(after)} at {after.stage} step {after.step} vs {fmt_point(before)} at {before.stage} step {before.step}",
                       Comparison(task, "pair_acc", before, after).verdict == "better"))
    return checks


def last_point(points: list[EvalPoint], stage: str, task: str, metric: str) -> EvalPoint | None:
    return next((p for p in reversed(points) if (p.stage, p.task, p.metric) == (stage, task, metric)), None)


def mixture_checks(points: list[EvalPoint], stages: list[StageLog], shares: Shares | None) -> list[Check]:
    """For each pretraining stage after the first (not a context extension): the domain whose share
    rose most over the stage before has lower held-out bits per byte at the stage's last evaluated
    checkpoint than at the previous stage's."""
    if not shares:
        return []
    pretrain = [s for s in stages if s.name in shares]
    checks = []
    for before_cur, stage in pairwise(pretrain):
        if stage.kind == "long_context":  # its web share is long documents; extension_kept holds its short-context loss
            continue
        parent = parent_of(stage, stages)  # a branch (an annealing arm, an extension) is held to the stage it started from
        prev, cur = (parent.name if parent is not None and parent.name in shares else before_cur.name), stage.name
        rise = {d: shares[cur].get(d, 0.0) - shares[prev].get(d, 0.0) for d in shares[cur].keys() | shares[prev].keys()}
        top = max(rise.values())
        for domain in sorted(d for d, r in rise.items() if r > 0 and r >= top - SHARE_TIE):
            task = DOMAIN_SLICE.get(domain)
            before, after = last_point(points, prev, task, "bits_per_byte"), last_point(points, cur, task, "bits_per_byte")
            if before is None or after is None:
                continue
            checks.append((f"{cur} lowers held-out loss on the domain it upweights ({domain}: "
                           f"{shares[prev].get(domain, 0.0):.0%} -> {shares[cur][domain]:.0%} of its tokens): {task} "
                           f"{after.value:.3f} bits/byte at {cur} step {after.step}, below {before.value:.3f} at {prev} step {before.step}",
                           after.value < before.value))
    return checks


def perplexity_kept(compared: Compared) -> list[Check]:
    """SFT trains on chats only; it may cost some held-out perplexity, but not more than PPL_KEPT on any slice."""
    pairs = [c for c in compared[2] if c.task.startswith("ppl:") and c.metric == "bits_per_byte" and c.diff is not None
             and c.base.value > 0] if compared else []
    if not pairs:
        return []
    text = ", ".join(f"{c.task} {c.sft.value:.3f} vs {c.base.value:.3f} ({c.diff / c.base.value:+.1%})" for c in pairs)
    return [(f"SFT keeps held-out perplexity within {PPL_KEPT:.0%} of base (bits per byte, SFT vs base): {text}",
             all(c.sft.value <= (1 + PPL_KEPT) * c.base.value for c in pairs))]



def against_parent(points: list[EvalPoint], stages: list[StageLog], kind: str):
    """(stage, parent, [(slice, parent's point, stage's point)]) for each stage of `kind` that started from
    another stage of the run, over the ppl:* slices (bits per byte) both evaluated."""
    for stage in stages:
        parent = parent_of(stage, stages)
        if stage.kind != kind or parent is None:
            continue
        slices = sorted({p.task for p in points if p.stage == stage.name and p.task.startswith("ppl:") and p.metric == "bits_per_byte"})
        pairs = [(t, last_point(points, parent.name, t, "bits_per_byte"), last_point(points, stage.name, t, "bits_per_byte"))
                 for t in slices]
        pairs = [(t, b, a) for t, b, a in pairs if b is not None and a is not None and b.value > 0]
        if pairs:
            yield stage, parent, pairs


def extension_kept(points: list[EvalPoint], stages: list[StageLog]) -> list[Check]:
    """Each long_context stage against the stage it started from, on every held-out slice (documents far
    shorter than either window): within EXTENSION_KEPT."""
    checks = []
    for stage, parent, pairs in against_parent(points, stages, "long_context"):
        text = ", ".join(f"{t} {a.value:.3f} vs {b.value:.3f} ({a.value / b.value - 1:+.1%})" for t, b, a in pairs)
        checks.append((f"{stage.name} keeps short-context held-out perplexity within {EXTENSION_KEPT:.0%} of {parent.name} "
                       f"(bits per byte): {text}", all(a.value <= (1 + EXTENSION_KEPT) * b.value for _, b, a in pairs)))
    return checks


def annealing_checks(points: list[EvalPoint], stages: list[StageLog]) -> list[Check]:
    """Each anneal stage against the stable stage it continued: the decay must lower every held-out slice."""
    checks = []
    for stage, parent, pairs in against_parent(points, stages, "anneal"):
        text = ", ".join(f"{t} {a.value:.3f} vs {b.value:.3f}" for t, b, a in pairs)
        checks.append((f"{stage.name} (annealing) lowers every held-out slice below {parent.name} (bits per byte): {text}",
                       all(a.value < b.value for _, b, a in pairs)))
    return checks
