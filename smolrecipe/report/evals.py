"""A run's evaluation results -> points on the loss plot's axis of cumulative tokens.

tools/run_eval.py writes one file per suite and local-run checkpoint,
<run>/eval/<stage>/step-<N>/<suite>.json, with per-task metrics and the checkpoint's provenance
(`model`: stage, step, tokens_seen within the stage). This module reads them into EvalPoints;
smolrecipe.report.run_report draws and tabulates them.

  TIERS          which tasks belong to which plot/table, and the metrics each shows
  MC_CHANCE      a uniform guess's accuracy per tier-3 benchmark (the plots' dotted chance lines)
  read_evals     run folder + its stages -> EvalResults (points in training order, skipped files, warnings)
  checkpoints    points -> their (stage, step) in training order: the tables' columns
  stage_ends     points -> each stage's last evaluated checkpoint, in training order
  role           a stage's kind -> what its models are called (base, SFT, preference)
  base_vs_sft    points -> the last pretraining checkpoint's and the SFT checkpoint's values side by side
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from smolrecipe.eval import checks as sft_checks
from smolrecipe.kinds import base_and_chat
from smolrecipe.report.numbers import NO_CLEAR, PPL_MARGIN, apart, normal_interval, wilson
from smolrecipe.runs import EVAL_DIR, StageLog, read_json_if_any

if TYPE_CHECKING:
    from smolrecipe.report.curves import Curve
LOWER_IS_BETTER = {"bits_per_byte", "token_ppl"}


@dataclass(frozen=True)
class Tier:
    key: str
    title: str
    tasks: str  # a task name, or a prefix ending in ':' for a family (ppl:web, ppl:code, ...)
    metrics: tuple[str, ...]  # every metric the report compares; the first `plotted` are drawn and tabulated
    plotted: int = 1  # 1: one line per task (its headline metric); more: one line per metric
    rates: bool = True  # values lie in [0, 1]
    # Metrics of a rate tier that are means of unbounded per-item values (the pairs' margin, in nats):
    # a normal 95% interval from the results' <metric>_stderr instead of Wilson's.
    means: tuple[str, ...] = ()

    @property
    def png(self) -> str:
        return f"eval_{self.key}.png"

    def holds(self, task: str) -> bool:
        return task.startswith(self.tasks) if self.tasks.endswith(":") else task == self.tasks

    @property
    def shown(self) -> tuple[str, ...]:
        return self.metrics[: self.plotted]


TIERS = (
    Tier("tier2", "Tier 2: held-out perplexity (bits per byte, lower is better)", "ppl:", ("bits_per_byte", "token_ppl"), rates=False),
    Tier("tier3", "Tier 3: multiple choice (acc_norm)", "mc:", ("acc_norm", "acc")),
    Tier("tier4", "Tier 4: SFT prompt suite (pass rates)", "sft_suite",
         sft_checks.RATES, plotted=len(sft_checks.RATES)),
    Tier("gsm8k", "GSM8K (exact match)", "gsm8k", ("exact_match",)),
    Tier("world", "World knowledge (qa:world: exact match per category, answer format, multiple choice)", "qa:world",
         ("em_fact", "em_arithmetic", "pass_format", "mc_fact", "mc_arithmetic", "em"), plotted=5),
    Tier("pairs", "Held-out preference pairs (pair_acc: chosen likelier than rejected)", "pairs:",
         ("pair_acc", "pair_acc_norm", "margin"), means=("margin",)),
    # the overall rate over the training tokens; the grid per stage is smolrecipe.report.needles' heatmap
    Tier("niah", "Needle-in-a-haystack retrieval (acc: exact match over every length and depth)", "needle:", ("acc",)),
)
PAIR_CHANCE = 0.5  # a coin flip between a pair's two answers

# How the report names the models of a stage, by its kind (smolrecipe.kinds); another kind by its name.
ROLES = {"pretrain": "base", "sft": "SFT", "preference": "preference"}

# The accuracy of a uniform guess on each tier-3 benchmark: 1 / its answer choices (lighteval's
# cloze formulation scores every choice, so acc and acc_norm share it). ARC has a few 3- and 5-choice
# items; the table keeps the usual 4.
MC_CHANCE = {"piqa": 1 / 2, "arc_easy": 1 / 4, "arc_challenge": 1 / 4, "hellaswag": 1 / 4, "copa": 1 / 2,
             "winogrande": 1 / 2, "social_iqa": 1 / 3, "commonsense_qa": 1 / 5, "openbookqa": 1 / 4, "qasc": 1 / 8,
             "sciq": 1 / 4, "mmlu": 1 / 4}

# The item count a rate is over, where it is not the task's `n`. A results file's own `n_<metric>`
# wins (qa:world's n_mc_fact: the fact items that have choices). None: over a subset whose size the
# results do not give (the SFT suite's format and code prompts), so no interval.
COUNT_KEYS = {"em_fact": "n_fact", "mc_fact": "n_fact", "em_arithmetic": "n_arithmetic", "mc_arithmetic": "n_arithmetic",
              "pass_format": "n_format", "format_valid": None, "code_parse": None}


def tier_of(task: str) -> Tier | None:
    return next((t for t in TIERS if t.holds(task)), None)


@dataclass(frozen=True)
class EvalPoint:
    tier: str
    task: str
    metric: str
    stage: str
    step: int
    tokens: int  # cumulative tokens since the first stage began, as on loss.png's x axis
    value: float
    n: int | None  # items the value is over
    ci: tuple[float, float] | None = None  # 95% interval: Wilson's (a rate with a known item count) or normal (Tier.means)
    chance: float | None = None  # a uniform guess's value (multiple choice)


@dataclass
class EvalResults:
    points: list[EvalPoint]  # in training order (stage order, then step)
    files: int = 0  # results files read
    skipped: list[Path] = field(default_factory=list)  # files that are not a results JSON
    warnings: list[str] = field(default_factory=list)

    def tier_points(self, tier: Tier) -> list[EvalPoint]:
        return [p for p in self.points if p.tier == tier.key and p.metric in tier.shown]


def read_result(path: Path) -> dict | None:
    """One results file, or None when it is not one (cut off, hand-edited, another tool's)."""
    data = read_json_if_any(path)
    model, tasks = data.get("model"), data.get("tasks")
    if not (isinstance(model, dict) and isinstance(tasks, dict) and isinstance(model.get("step"), int)):
        return None
    return data


def best_results(files: list[tuple[Path, dict]]) -> dict[tuple[str, int, str], tuple[dict, dict]]:
    """(stage, step, task) -> (its metrics, the file's model) from the file with the most items for
    that task; on a tie the newer file. A task can be in several suites (quick and tier3 both run mc:piqa)."""
    best: dict[tuple[str, int, str], tuple[tuple, dict, dict]] = {}
    for path, data in files:
        model = data["model"]
        stage = model.get("stage") or path.parent.parent.name
        for task, metrics in data["tasks"].items():
            if not isinstance(metrics, dict):
                continue
            key, rank = (stage, model["step"], task), (_number(metrics.get("n")) or 0, str(data.get("created") or ""))
            if key not in best or rank > best[key][0]:
                best[key] = (rank, metrics, model)
    return {key: (metrics, model) for key, (_rank, metrics, model) in best.items()}


def _number(value) -> float | None:
    """A finite number, or None (null, NaN: a rate with no item to count, e.g. code_parse without code prompts)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def read_evals(run_dir: Path, stages: list[StageLog], curves: list[Curve]) -> EvalResults:
    """Every <run>/eval/<stage>/step-<N>/<suite>.json as points. A checkpoint sits at its stage's start
    on the loss plot (the curve's `start`) plus the tokens its stage had seen (checkpoint_tokens); one
    whose tokens are unknown and that is not its stage's last step is left out. Rates get their
    Wilson interval, multiple-choice metrics their chance level."""
    files, skipped = [], []
    for path in sorted(Path(run_dir).glob(f"{EVAL_DIR}/*/step-*/*.json")):
        data = read_result(path)
        if data is None:
            skipped.append(path)
        else:
            files.append((path, data))
    starts = {curve.stage: (curve.start, stage) for curve, stage in zip(curves, stages, strict=True)}
    results = best_results(files)
    tokens_at: dict[tuple[str, int], int | None] = {}
    for (stage_name, step, _task), (_metrics, model) in results.items():
        tokens_at.setdefault((stage_name, step), checkpoint_tokens(starts.get(stage_name), step, _number(model.get("tokens_seen"))))
    warnings = [f"{EVAL_DIR}/{stage_name}/step-{step}: left out, " + (
                "not a stage of this run" if stage_name not in starts else "no tokens_seen and not the stage's last step")
                for (stage_name, step), tokens in tokens_at.items() if tokens is None]
    unknown = sorted({task for _stage, _step, task in results if tier_of(task) is None})
    if unknown:
        warnings.append(f"tasks of no tier, not shown: {', '.join(unknown)}")
    points = []
    for (stage_name, step, task), (metrics, _model) in results.items():
        tier, tokens = tier_of(task), tokens_at[(stage_name, step)]
        if tier is None or tokens is None:
            continue
        for metric in tier.metrics:
            value, n = _number(metrics.get(metric)), item_count(metrics, metric)
            if value is not None:
                points.append(EvalPoint(tier.key, task, metric, stage_name, step, tokens, value, n,
                                        ci=interval(tier, metric, value, n, metrics), chance=chance(task, metric, metrics)))
    order = {name: i for i, name in enumerate(starts)}
    points.sort(key=lambda p: (order[p.stage], p.step))
    return EvalResults(points=points, files=len(files), skipped=skipped, warnings=warnings)


def item_count(metrics: dict, metric: str) -> int | None:
    """The number of items `metric` is a share of (COUNT_KEYS), or None when unknown or zero."""
    key = f"n_{metric}" if f"n_{metric}" in metrics else COUNT_KEYS.get(metric, "n")
    n = _number(metrics.get(key)) if key else None
    return int(n) if n else None


def interval(tier: Tier, metric: str, value: float, n: int | None, metrics: dict) -> tuple[float, float] | None:
    """A metric's 95% interval: normal from its standard error for a mean (Tier.means), Wilson's for
    a rate over a known item count; None when the results do not give what it needs."""
    if metric in tier.means:
        stderr = _number(metrics.get(f"{metric}_stderr"))
        return normal_interval(value, stderr) if stderr is not None else None
    return wilson(value, n) if tier.rates and n else None


def chance(task: str, metric: str, metrics: dict) -> float | None:
    """A uniform guess's value: `chance_<category>` from the results for an `mc_<category>` rate
    (qa:world's choices differ per item), the benchmark's for an `mc:` task, a coin flip's for a
    pair accuracy."""
    if metric.startswith("mc_"):
        return _number(metrics.get("chance_" + metric.removeprefix("mc_")))
    if task.startswith("pairs:"):
        return PAIR_CHANCE if metric in ("pair_acc", "pair_acc_norm") else None
    return MC_CHANCE.get(task.removeprefix("mc:")) if task.startswith("mc:") else None


def checkpoint_tokens(place: tuple[int, StageLog] | None, step: int, tokens_seen: float | None) -> int | None:
    """Where a checkpoint goes on the cumulative-token axis, given (its stage's start, the stage).
    A stage's last step sits exactly at the stage's end (its total: the start of the next stage),
    whatever count its provenance carries, so the final checkpoint cannot drift into the next stage's span."""
    if place is None:
        return None
    start, stage = place
    if step == stage.steps:
        return start + stage.tokens
    return start + int(tokens_seen) if tokens_seen is not None else None


def checkpoints(points: list[EvalPoint]) -> list[tuple[str, int]]:
    """The (stage, step) of the points, in training order (points come in that order)."""
    return list(dict.fromkeys((p.stage, p.step) for p in points))


def stage_ends(points: list[EvalPoint]) -> list[tuple[str, int]]:
    """Each stage's last evaluated checkpoint (stage, step), in training order."""
    return list({stage: (stage, step) for stage, step in checkpoints(points)}.values())


def role(kind: str | None) -> str:
    """What the report calls the models of a stage of this kind: base, SFT or preference."""
    return ROLES.get(kind, kind or "?")


def rows(points: list[EvalPoint]) -> list[tuple[str, str]]:
    """The (task, metric) of the points, by tier, task name, then the tier's metric order."""
    def order(key: tuple[str, str]):
        tier = tier_of(key[0])
        return TIERS.index(tier), key[0], tier.metrics.index(key[1])

    return sorted({(p.task, p.metric) for p in points}, key=order)


@dataclass
class Comparison:
    task: str
    metric: str
    base: EvalPoint | None
    sft: EvalPoint | None

    @property
    def lower_is_better(self) -> bool:
        return self.metric in LOWER_IS_BETTER

    @property
    def diff(self) -> float | None:
        return self.sft.value - self.base.value if self.base and self.sft else None

    @property
    def verdict(self) -> str | None:
        """How the SFT model compares: better or worse only outside the noise (smolrecipe.report.numbers)."""
        if self.diff is None:
            return None
        if self.lower_is_better:  # perplexity-type: the same texts for both models
            clear = bool(self.base.value) and abs(self.diff / self.base.value) > PPL_MARGIN
        elif self.base.ci and self.sft.ci:
            clear = apart(self.base.ci, self.sft.ci)
        else:
            return "not judged (no item count)"
        if not clear:
            return NO_CLEAR
        return "better" if (self.diff < 0) == self.lower_is_better else "worse"


def base_vs_sft(points: list[EvalPoint], stages: list[StageLog]) -> tuple[tuple[str, int], tuple[str, int], list[Comparison]] | None:
    """(base checkpoint, SFT checkpoint, every task/metric of either compared), where SFT is the
    latest evaluated checkpoint of the first evaluated chat stage (the SFT stage; a preference stage
    after it is not SFT) and base the latest of the last evaluated stage before it of another kind
    (smolrecipe.kinds.base_and_chat); None unless both were evaluated."""
    evaluated = {p.stage for p in points}
    base, chat = base_and_chat([s for s in stages if s.name in evaluated])
    if base is None or chat is None:
        return None
    ends = dict(stage_ends(points))
    base_ckpt, sft_ckpt = (base.name, ends[base.name]), (chat.name, ends[chat.name])
    at = {(p.stage, p.step, p.task, p.metric): p for p in points if (p.stage, p.step) in (base_ckpt, sft_ckpt)}
    return base_ckpt, sft_ckpt, [Comparison(task, metric, at.get((*base_ckpt, task, metric)), at.get((*sft_ckpt, task, metric)))
                                 for task, metric in rows(list(at.values()))]
