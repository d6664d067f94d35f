"""A run folder's training logs and evaluation results -> plots (loss.png, eval_<tier>.png, the needle heatmap
eval_needle.png) and a Markdown report (report.md).

Reads what either backend writes for each stage, in <run>/<stage>/local/ (the local backend) or
<run>/<stage>/ (our nanotron entry point, smolrecipe.backends.nanotron.train):
  log.jsonl      one JSON object per logged optimizer step (step, tokens within the stage, loss, ...);
                 after a resume a step can appear twice (the last one counts), and a line cut off
                 by a kill is skipped
  summary.json   written when the stage finished (its `index` orders the stages)
and, when present, <run>/samples.json: the base and SFT models' answers to the same prompts, and
<run>/eval/<stage>/step-<N>/<suite>.json: tools/run_eval.py's results (read by smolrecipe.report.evals).

  find_stages        run folder -> the stages in training order (StageLog each)
  loss_curves        stages -> one curve per stage on a shared axis of cumulative tokens
  plot_loss          curves -> PNG bytes (matplotlib, Agg canvas: no display needed)
  plot_eval          one tier's evaluation points -> PNG bytes, on the same token axis as the loss
                     (eval_figure: the figure itself), with Wilson intervals and chance lines
  learning_checks    the Checks section's expectations (smolrecipe.report.checks)
  report_sections    everything the report shows -> its Markdown sections, one small function each
  write_report       all of it: every file written atomically, returns the summary line

The report is a list of section builders (SECTIONS); a new section is added by writing one more
builder, putting the data it reads into ReportInputs, and listing it there.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection

from smolrecipe import shown_path
from smolrecipe.atomic import write_file
from smolrecipe.errors import UserError
from smolrecipe.report import checks as report_checks
from smolrecipe.report import needles as report_needles
from smolrecipe.report.curves import Curve, loss_curves
from smolrecipe.report.evals import TIERS, EvalPoint, EvalResults, Tier, base_vs_sft, checkpoints, read_evals, role, rows, stage_ends
from smolrecipe.report.mixture import Shares, default_recipe, domain_shares
from smolrecipe.report.numbers import CONFIDENCE, MISSING, NO_CLEAR, PPL_MARGIN, fmt_interval, fmt_metric, fmt_point
from smolrecipe.runs import EVAL_DIR, LOG, LOSS_PLOT, REPORT, SAMPLES, SUMMARY, StageLog, find_stages, read_json

CELL_CHARS = 200  # longer answers are shortened in the Markdown table
# Eval series, one style each, so that series with the same values stay visible (':' is the chance lines')
MARKERS = "osD^vPX*"
LINESTYLES = ("-", "--", "-.", (0, (6, 2, 1, 2, 1, 2)))


@dataclass
class ReportInputs:
    """Everything the Markdown sections read. A new section adds its data here."""

    name: str
    stages: list[StageLog]
    samples: dict | None = None
    plot: str = LOSS_PLOT  # the plot's path relative to report.md
    evals: EvalResults | None = None
    shares: Shares | None = None  # stage -> domain -> share of its tokens, from the run's recipe
    recipe_note: str | None = None  # why the recipe's mixtures are not used, when a recipe file was found
    needles: list[report_needles.NeedleResult] = field(default_factory=list)  # needle:* grids, each stage's last


# ---- reading the logs ----------------------------------------------------------------------------


def read_samples(run_dir: Path) -> dict | None:
    """<run>/samples.json (base vs SFT answers), or None when there is none."""
    path = Path(run_dir) / SAMPLES
    return read_json(path, "rerun the sampling step, or delete the file to report without it") if path.is_file() else None


# ---- the loss curve ------------------------------------------------------------------------------


def human_tokens(n: float) -> str:
    """A token count for an axis or a sentence: 512, 32K, 1.2M, 3B."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size * 0.9995:  # 999,999 -> 1M, not 1e+03K
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}" if n != int(n) else f"{int(n)}"


def _axes(width: float = 9):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 4.8), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def stage_spans(curves: list[Curve]) -> list[tuple[str, int, int]]:
    """(stage, start, end) on the cumulative-token axis. A checkpoint of a stage lies in (start, end]:
    the final one on the boundary line, so each name is centred on its own span, not written just
    right of its start line, where it would stand over the previous stage's final checkpoint."""
    return [(c.stage, c.start, c.end) for c in curves]


def token_axis(ax, curves: list[Curve], name_stages: bool = False) -> None:
    """x as tokens seen, a dashed line where each stage after the first begins (stages named over
    their spans when the lines are not stages themselves)."""
    from matplotlib.ticker import FuncFormatter

    for i, curve in enumerate(curves):
        if i:
            ax.axvline(curve.start, color="grey", linestyle="--", linewidth=1)
    if name_stages:  # just above the axes, where no point or error bar can hide a name
        spans = stage_spans(curves)
        for i, (stage, start, end) in enumerate(spans):
            above = sum(1 for _, s, e in spans[:i] if (s, e) == (start, end))  # branches over the same span: stacked
            ax.text((start + end) / 2, 1.01 + 0.045 * above, stage, transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", color="grey", fontsize=8)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: human_tokens(x)))
    ax.set_xlabel("tokens seen")
    ax.grid(True, alpha=0.3)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_loss(curves: list[Curve], title: str) -> bytes:
    """The loss figure as PNG bytes: one coloured line per stage, dashed lines at the boundaries; below
    it, when the logs have it, the LR each step trained with, so that a schedule across stages
    (warmup-stable-decay: an annealing stage continues its stable parent's LR) can be seen whole."""
    with_lr = any(v is not None for c in curves for v in (c.lr or []))
    if not with_lr:
        fig, ax = _axes()
    else:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(9, 6.4), dpi=110, layout="constrained")
        FigureCanvasAgg(fig)
        ax, lr_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.4])
    token_axis(ax, curves)
    for i, curve in enumerate(curves):
        ax.plot(curve.tokens, curve.loss, color=f"C{i % 10}", label=curve.label, marker="." if len(curve.tokens) < 40 else None)
    ax.set_ylabel("training loss")
    ax.set_title(f"{title}: training loss" + (" and learning rate" if with_lr else ""))
    ax.legend(title="stage")
    if with_lr:
        token_axis(lr_ax, curves)
        for i, curve in enumerate(curves):
            steps = [(t, v) for t, v in zip(curve.tokens, curve.lr or [None] * len(curve.tokens), strict=True) if v is not None]
            lr_ax.plot([t for t, _ in steps], [v for _, v in steps], color=f"C{i % 10}")
        lr_ax.set_ylabel("learning rate")
        ax.set_xlabel("")
    return _png(fig)


def eval_figure(points: list[EvalPoint], tier: Tier, curves: list[Curve], end: int, title: str):
    """One tier's figure: a line per task (or per metric, where the tier plots several), over the
    whole run's tokens (0 to `end`) so that the tiers' figures line up with loss.png. Rates carry
    their Wilson interval as error bars; a multiple-choice series its chance level as a dotted line."""
    from matplotlib.lines import Line2D

    fig, ax = _axes(width=11)  # wider than loss.png by the legend beside it
    token_axis(ax, curves, name_stages=True)
    lines: dict[str, list[EvalPoint]] = {}
    for p in points:
        lines.setdefault(p.task if tier.plotted == 1 else p.metric, []).append(p)
    handles = []  # in the order drawn (matplotlib's own legend lists plain lines before error bars)
    for i, (label, line) in enumerate(lines.items()):
        # Series often coincide (every rate 0 early on, two tasks at chance): each has its own marker
        # and line style, is slightly transparent, and has a smaller marker than the one drawn before.
        style = {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)], "linestyle": LINESTYLES[i % len(LINESTYLES)],
                 "markersize": 9 - 1.5 * (i % 4), "alpha": 0.8}
        x, y = [p.tokens for p in line], [p.value for p in line]
        if any(p.ci for p in line):
            below = [p.value - p.ci[0] if p.ci else 0.0 for p in line]
            above = [p.ci[1] - p.value if p.ci else 0.0 for p in line]
            handles.append(ax.errorbar(x, y, yerr=[below, above], capsize=3, elinewidth=1, label=label, **style))
        else:
            handles += ax.plot(x, y, label=label, **style)
        for level in sorted({p.chance for p in line if p.chance is not None}):
            ax.axhline(level, color=style["color"], linestyle=":", linewidth=1.2, alpha=0.8)
    if end:  # a run that logged no tokens keeps matplotlib's own limits
        ax.set_xlim(-0.02 * end, 1.02 * end)
    if tier.rates:
        ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel(tier.shown[0] if tier.plotted == 1 else "rate")
    ax.set_title(f"{title}: {tier.title}", pad=16)  # above the stage names
    if any(p.chance is not None for p in points):
        handles.append(Line2D([], [], color="grey", linestyle=":", label="chance (dotted, in the series' colour)"))
    if any(p.ci for p in points):
        handles.append(Line2D([], [], color="grey", marker="|", linestyle="none", markersize=10,
                              label=f"bars: Wilson {CONFIDENCE:.0%} interval"))
    # Outside the axes: inside, it would hide points, bars or the stage names along the top.
    ax.legend(handles=handles, title="task" if tier.plotted == 1 else tier.tasks, fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))
    return fig


def plot_eval(points: list[EvalPoint], tier: Tier, curves: list[Curve], end: int, title: str) -> bytes:
    """eval_figure as PNG bytes."""
    return _png(eval_figure(points, tier, curves, end, title))


# ---- Markdown ------------------------------------------------------------------------------------


def md_cell(text: object, limit: int = CELL_CHARS) -> str:
    """Text safe inside a Markdown table cell: shortened to `limit` characters with an ellipsis,
    `|` escaped, newlines as <br>."""
    text = MISSING if text is None else str(text)
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")


def md_table(header: list[str], rows: list[list[str]], right: Collection[int] = ()) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_loss(x: float | None) -> str:
    return MISSING if x is None else f"{x:.2f}"


def fmt_number(x: float | None, digits: int = 0) -> str:
    return MISSING if x is None else f"{x:,.{digits}f}"


def fmt_checkpoint(checkpoint: tuple[str, int]) -> str:
    return f"{checkpoint[0]} step {checkpoint[1]}"


STAGE_COLUMNS = ["stage", "kind", "steps", "tokens", "first loss", "final loss", "tokens/s", "time (s)", "checkpoint"]
NUMERIC_COLUMNS = {2, 3, 4, 5, 6, 7}


def stage_rows(stages: list[StageLog]) -> list[list[str]]:
    """The stage table's rows (plain text, one per stage, then the total), shared by the Markdown
    report and the CLI's terminal table."""
    rows = []
    for s in stages:
        steps = f"{s.steps:,}" if s.finished or not s.train_steps else f"{s.steps:,} / {s.train_steps:,}"
        rows.append([s.label, s.kind, steps, f"{s.tokens:,}", fmt_loss(s.first_loss), fmt_loss(s.final_loss),
                     fmt_number(s.tokens_per_s), fmt_number(s.seconds, 1), shown_path(s.checkpoint) if s.checkpoint else MISSING])
    tokens = sum(s.tokens for s in stages)
    times = [s.seconds for s in stages if s.seconds is not None]
    seconds = sum(times) if times else None
    rate = tokens / seconds if seconds else None
    rows.append(["total", "", f"{sum(s.steps for s in stages):,}", f"{tokens:,}", fmt_loss(stages[0].first_loss),
                 fmt_loss(stages[-1].final_loss), fmt_number(rate), fmt_number(seconds, 1), ""])
    return rows


def title_section(r: ReportInputs) -> str:
    return f"# {r.name} — training report"


def plot_section(r: ReportInputs) -> str:
    return (f"## Training loss\n\n![loss]({r.plot})\n\nStages follow one another on the token axis in the recipe's order "
            "(a branch, such as a context extension off stage 3, is drawn after the stages before it in the file); the lower "
            "panel is the learning rate each step trained with, as logged.")


def stages_section(r: ReportInputs) -> str:
    rows = [[md_cell(c) for c in row] for row in stage_rows(r.stages)]
    rows[-1] = [f"**{c}**" if c else c for c in rows[-1]]
    text = "## Stages\n\n" + md_table(STAGE_COLUMNS, rows, right=NUMERIC_COLUMNS)
    notes = [f"- {s.name}: skipped {s.skipped_lines} unreadable log line(s) in {s.folder / LOG}"
             for s in r.stages if s.skipped_lines]
    unfinished = [s.name for s in r.stages if not s.finished]
    if unfinished:
        notes.append(f"- unfinished (no {SUMMARY}): {', '.join(unfinished)}; their numbers are the last logged step's")
    return text + ("\n\n" + "\n".join(notes) if notes else "")


def eot_count(model: dict | None) -> tuple[int, int]:
    """(answers that ended with the end-of-turn token, answers) of one model in samples.json."""
    flags = (model or {}).get("ends_with_eot") or []
    return sum(bool(f) for f in flags), len(flags)


def samples_section(r: ReportInputs) -> str | None:
    if r.samples is None:
        return None
    prompts = r.samples.get("prompts") or []
    models = r.samples.get("models") or {}
    base, sft = models.get("base"), models.get("sft")

    def answer(model: dict | None, i: int) -> str | None:
        answers = (model or {}).get("answers") or []
        return answers[i] if i < len(answers) else None

    # the chat stages after SFT (preference alignment), under their stage names (tools/sample.py)
    later = {name: m for name, m in models.items() if name not in ("base", "sft")}
    shown = {"base": base, "SFT": sft, **later}
    rows = [[md_cell(p), *(md_cell(answer(m, i)) for m in shown.values())] for i, p in enumerate(prompts)]
    title = "## Base vs SFT" + "".join(f" vs {name}" for name in later)
    parts = [title, "Answers of the base model (end of the last pretraining stage), the SFT model"
             + "".join(f", the {name} model" for name in later) + " to the same prompts."]
    checkpoints = [f"{name}: `{shown_path(m['checkpoint'])}`" for name, m in shown.items() if m and m.get("checkpoint")]
    if checkpoints:
        parts.append("Checkpoints: " + ", ".join(checkpoints) + ".")
    parts.append(md_table(["prompt", *(f"{name} answer" for name in shown)], rows))
    ended = ", ".join(f"{name} {eot} of {n}" for name, (eot, n) in ((k, eot_count(m)) for k, m in shown.items()))
    parts.append(f"Ended with the end-of-turn token: {ended} answers.")
    return "\n\n".join(parts)


def learning_checks(r: ReportInputs) -> list[tuple[str, bool]]:
    """The rehearsal's expectations, each (what, met): every finished stage's loss falls; the SFT
    model ends more sampled answers with the end-of-turn token than the base model, or all of them;
    and the evaluated checks of smolrecipe.report.checks (tier-4 clean endings among them)."""
    checks = report_checks.loss_checks(r.stages)
    if r.samples is not None:
        models = r.samples.get("models") or {}
        (sft_eot, sft_n), (base_eot, base_n) = eot_count(models.get("sft")), eot_count(models.get("base"))
        if sft_n:
            # A base model that read chats in pretraining may end every answer already; then the
            # SFT model can only keep that, so all of its answers ending cleanly meets the check.
            every = " (all)" if sft_eot == sft_n else ""
            checks.append((f"SFT ends {sft_eot} of {sft_n} answers{every} with the end-of-turn token (base: {base_eot} of {base_n})",
                           sft_eot > base_eot or sft_eot == sft_n))
    if r.evals is None:
        return checks
    points = r.evals.points
    compared = base_vs_sft(points, r.stages)
    return (checks + report_checks.clean_end_check(compared) + report_checks.world_checks(points, r.stages, compared)
            + report_checks.preference_checks(points, r.stages) + report_checks.mixture_checks(points, r.stages, r.shares)
            + report_checks.perplexity_kept(compared) + report_checks.annealing_checks(points, r.stages)
            + report_checks.extension_kept(points, r.stages))


def checks_section(r: ReportInputs) -> str | None:
    checks = learning_checks(r)
    if not checks:
        return None
    lines = [f"- {'✅' if met else '❌'} {what}" for what, met in checks]
    if r.recipe_note and r.evals and any(p.task.startswith("ppl:") for p in r.evals.points):
        lines.append(f"- left out, the checks that a stage lowers held-out loss on the domain it upweights: {r.recipe_note}; "
                     "pass the recipe the run was trained with (tools/report.py --recipe FILE)")
    return "## Checks\n\n" + "\n".join(lines)


def eval_notes(evals: EvalResults) -> list[str]:
    notes = [f"- skipped an unreadable results file: {path}" for path in evals.skipped]
    return notes + [f"- {w}" for w in evals.warnings]


def evaluation_section(r: ReportInputs) -> str | None:
    """Per tier: its plot and a task x checkpoint table of the headline metric."""
    if r.evals is None or not (r.evals.files or r.evals.skipped):
        return None
    parts = ["## Evaluation", f"{r.evals.files} result file(s) of tools/run_eval.py ({EVAL_DIR}/<stage>/step-<N>/<suite>.json). "
             f"Cells: the metric, for a rate its Wilson {CONFIDENCE:.0%} interval in brackets (n = items; in the plots, "
             "error bars; dotted lines: a uniform guess's score). A task run by several suites on one checkpoint shows the "
             "result over more items."]
    for tier in TIERS:
        points = r.evals.tier_points(tier)
        if not points:
            continue
        columns = checkpoints(points)
        at = {(p.task, p.metric, p.stage, p.step): p for p in points}
        table = [[md_cell(task), md_cell(metric)] + [fmt_point(at.get((task, metric, *c))) for c in columns]
                 for task, metric in rows(points)]
        parts += [f"### {tier.title}", f"![{tier.key}]({tier.png})",
                  md_table(["task", "metric"] + [fmt_checkpoint(c) for c in columns], table, right=range(2, 2 + len(columns)))]
    notes = eval_notes(r.evals)
    return "\n\n".join(parts + (["\n".join(notes)] if notes else []))


PAIR_COLUMNS = ["task", "model", "checkpoint", "pair accuracy", "norm accuracy", "mean margin (nats)", "n"]


def pairs_section(r: ReportInputs) -> str | None:
    """Held-out preference pairs at each evaluated stage's last checkpoint, named by the stage's role."""
    points = [p for p in r.evals.points if p.tier == "pairs"] if r.evals else []
    if not points:
        return None
    kinds = {s.name: s.kind for s in r.stages}
    table = []
    for task in dict.fromkeys(p.task for p in points):
        at = {(p.stage, p.step, p.metric): p for p in points if p.task == task}
        for stage, step in stage_ends([p for p in points if p.task == task]):
            acc, norm, margin = (at.get((stage, step, metric)) for metric in ("pair_acc", "pair_acc_norm", "margin"))
            n = next((p.n for p in (acc, norm, margin) if p is not None and p.n is not None), None)
            table.append([md_cell(task), role(kinds.get(stage)), fmt_checkpoint((stage, step)), fmt_interval(acc), fmt_interval(norm),
                          fmt_interval(margin, signed=True), fmt_number(n)])
    return "\n\n".join([
        "## Preference pairs",
        "Held-out pairs of the preference stage, each scored by the model's own log-likelihood of the chosen and the "
        "rejected answer (+ end of turn) after the chat-rendered prompt: pair accuracy, the share of pairs whose chosen "
        "answer is likelier (summed over its tokens); norm accuracy, the same by mean log-likelihood per token; mean margin, "
        f"log p(chosen) − log p(rejected). Brackets: {CONFIDENCE:.0%} intervals (Wilson's for the accuracies, normal for the "
        "margin); a coin flip scores 0.50. Each stage's last evaluated checkpoint.",
        md_table(PAIR_COLUMNS, table, right={3, 4, 5, 6}),
    ])


def needle_section(r: ReportInputs) -> str | None:
    """The needle-in-a-haystack heatmap (smolrecipe.report.needles), overall and per-length accuracy, example answers."""
    if not r.needles:
        return None
    header, table, right = report_needles.summary_table(r.needles)
    example_header, examples = report_needles.example_table(r.needles)
    parts = ["## Needle in a haystack", report_needles.INTRO, f"![needle]({report_needles.PLOT})",
             md_table(header, [[md_cell(c) for c in row] for row in table], right=right)]
    if examples:
        parts.append(md_table(example_header, [[md_cell(c) for c in row] for row in examples]))
    return "\n\n".join(parts)


def eval_base_vs_sft_section(r: ReportInputs) -> str | None:
    """Every evaluated metric of the last pretraining checkpoint next to the SFT model's."""
    compared = base_vs_sft(r.evals.points, r.stages) if r.evals else None
    if compared is None:
        return None
    base, sft, comparisons = compared
    table = [[md_cell(c.task), md_cell(c.metric), fmt_point(c.base), fmt_point(c.sft), fmt_metric(c.diff, signed=True),
              "lower" if c.lower_is_better else "higher", c.verdict or MISSING] for c in comparisons]
    return "\n\n".join([
        "## Base vs SFT: evaluation",
        f"Base: {fmt_checkpoint(base)} (the last evaluated pretraining checkpoint); SFT: {fmt_checkpoint(sft)}. "
        f"A difference is called better or worse only outside the noise: for a rate, when the two Wilson {CONFIDENCE:.0%} "
        f"intervals do not overlap (for a mean, the pairs' margin, its normal interval); for bits_per_byte and token_ppl "
        f"(the same texts for both models), when SFT differs "
        f"from base by more than {PPL_MARGIN:.0%} of base. Otherwise: {NO_CLEAR}.",
        md_table(["task", "metric", "base", "SFT", "SFT − base", "better when", "SFT is"], table, right={2, 3, 4}),
    ])


# The report, in order: each is a function ReportInputs -> Markdown text, or None to leave itself
# out; their data goes in ReportInputs. The evaluated comparison comes before the sampled answers.
SECTIONS: list[Callable[[ReportInputs], str | None]] = [title_section, plot_section, stages_section, checks_section,
                                                        evaluation_section, pairs_section, needle_section,
                                                        eval_base_vs_sft_section, samples_section]


def report_sections(r: ReportInputs, sections=None) -> list[str]:
    """The Markdown sections of the report, leaving out those with nothing to show."""
    out = [build(r) for build in (SECTIONS if sections is None else sections)]
    return [text for text in out if text]


def render_report(r: ReportInputs) -> str:
    return "\n\n".join(report_sections(r)) + "\n"


# ---- writing -------------------------------------------------------------------------------------


def summary_line(stages: list[StageLog], written: list[Path], checks: list[tuple[str, bool]] | None = None,
                 evals: EvalResults | None = None) -> str:
    """One line: stages, tokens, loss from the first stage's first step to the last stage's last,
    evaluation results read (when there are any)."""
    first, last = stages[0], stages[-1]
    tokens = sum(s.tokens for s in stages)
    met = f"checks {sum(ok for _, ok in checks)}/{len(checks)} met; " if checks else ""
    read = ""
    if evals and (evals.files or evals.skipped):
        read = f"{evals.files} eval result(s) read" + (f", {len(evals.skipped)} unreadable skipped" if evals.skipped else "") + "; "
    return (f"report: {len(stages)} stage{'s' if len(stages) != 1 else ''}, {tokens:,} tokens, "
            f"loss {fmt_loss(first.first_loss)} -> {fmt_loss(last.final_loss)} ({first.name} first -> {last.name} final); "
            f"{met}{read}wrote {', '.join(str(p) for p in written)}")


@dataclass
class Report:
    stages: list[StageLog]
    curves: list[Curve]
    markdown: Path
    plot: Path
    summary: str
    evals: EvalResults | None = None
    eval_plots: list[Path] = field(default_factory=list)


def write_report(run_dir: Path, out_dir: Path | None = None, recipe: Path | None = None) -> Report:
    """Read a run folder's logs and evaluation results and write report.md, loss.png, an
    eval_<tier>.png per tier with results and, with needle:* results, eval_needle.png into `out_dir`
    (default: the run folder). `recipe` (default: recipes/<run name>.yaml) gives the stage mixtures,
    used when the run recorded its hash. Every input is read and checked before anything is written."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    name = run_dir.resolve().name
    stages = find_stages(run_dir)
    samples = read_samples(run_dir)
    curves = loss_curves(stages)
    evals = read_evals(run_dir, stages, curves)
    if recipe is not None and not Path(recipe).is_file():
        raise UserError("--recipe", f"{recipe} is not a file", "pass the recipe YAML the run was trained with, e.g. recipes/tiny.yaml")
    shares, recipe_note = domain_shares(Path(recipe) if recipe is not None else default_recipe(run_dir), stages)
    plots = {out_dir / LOSS_PLOT: plot_loss(curves, name)}
    end = max(c.end for c in curves)  # branches overlap on the token axis
    plots |= {out_dir / tier.png: plot_eval(points, tier, curves, end, name) for tier in TIERS if (points := evals.tier_points(tier))}
    needles = report_needles.read_needles(run_dir, stages)
    if needles:
        plots[out_dir / report_needles.PLOT] = report_needles.plot_needles(needles, name)
    inputs = ReportInputs(name=name, stages=stages, samples=samples, plot=LOSS_PLOT, evals=evals, shares=shares,
                          recipe_note=recipe_note, needles=needles)
    markdown = render_report(inputs)
    for path, png in plots.items():
        write_file(path, png)
    md_path = write_file(out_dir / REPORT, markdown)
    plot_path, *eval_plots = plots
    return Report(stages=stages, curves=curves, markdown=md_path, plot=plot_path, evals=evals, eval_plots=eval_plots,
                  summary=summary_line(stages, [md_path, *plots], learning_checks(inputs), evals))
