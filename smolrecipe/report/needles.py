"""Needle-in-a-haystack results -> a heatmap per stage (eval_needle.png) and the report's tables.

A needle:<name> task (smolrecipe.eval.needle) scores retrieval on a grid of context lengths x
needle depths; its results hold the grid ({length: {depth: acc}}), the accuracy per length, a few
example answers and the model's context length. For each stage, the report shows its last evaluated
checkpoint that ran the task: one heatmap panel per stage, side by side on one colour scale, so
that a context-extension stage's effect reads left to right.

  read_needles     run folder + its stages -> NeedleResult per (task, stage), in training order
  plot_needles     results -> PNG bytes (a row of panels per task)
  summary_table    results -> (header, rows, right-aligned columns): overall and per-length accuracy
  example_table    results -> (header, rows): each task's example answers at its last stage

Tables come as plain strings; smolrecipe.report.run_report escapes and lays them out.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smolrecipe.report.evals import best_results, read_result, role
from smolrecipe.report.numbers import CONFIDENCE, MISSING, wilson
from smolrecipe.runs import EVAL_DIR, StageLog

PLOT = "eval_needle.png"
PREFIX = "needle:"
INTRO = ("Retrieval of a fact hidden in filler text (smolrecipe.eval.needle): each prompt is exactly `length` tokens, the "
         "needle (\"The special magic number for <key> is <value>.\") at `depth` (0: the start, 1: right before the question), "
         "answered greedily; exact match on the value. Each stage's last checkpoint that ran the task; heatmap cells: "
         f"accuracy per (length, depth). Brackets: Wilson {CONFIDENCE:.0%} intervals. Lengths beyond the model's context "
         "(dashed line in the heatmap) test extrapolation.")


@dataclass(frozen=True)
class NeedleResult:
    task: str
    stage: str
    kind: str
    step: int
    acc: float | None
    n: int | None
    lengths: list[int]
    depths: list[str]  # as the grid's keys ("0.25")
    grid: dict[str, dict[str, float]]  # {length: {depth: acc}}
    per_length: dict[str, float]
    context: int | None = None  # the model's max_position_embeddings
    examples: list[dict[str, Any]] = field(default_factory=list)

    def cell(self, length: int, depth: str) -> float:
        value = self.grid.get(str(length), {}).get(depth)
        return float(value) if isinstance(value, (int, float)) else math.nan


def _axes_of(metrics: dict) -> tuple[list[int], list[str]]:
    """(lengths, depth keys) of a result: as the task ran them, else the grid's own keys, sorted."""
    grid = metrics.get("grid") if isinstance(metrics.get("grid"), dict) else {}
    lengths = metrics.get("lengths") or sorted(int(k) for k in grid)
    depths = metrics.get("depths") or sorted({float(d) for row in grid.values() if isinstance(row, dict) for d in row})
    return [int(x) for x in lengths], [str(float(d)) for d in depths]


def _result(task: str, stage: StageLog, step: int, metrics: dict) -> NeedleResult:
    lengths, depths = _axes_of(metrics)
    acc, n = metrics.get("acc"), metrics.get("n")
    return NeedleResult(task=task, stage=stage.name, kind=stage.kind, step=step, acc=float(acc) if isinstance(acc, (int, float)) else None,
                        n=int(n) if isinstance(n, int) else None, lengths=lengths, depths=depths,
                        grid={k: v for k, v in (metrics.get("grid") or {}).items() if isinstance(v, dict)},
                        per_length=dict(metrics.get("per_length") or {}), context=metrics.get("context"),
                        examples=list(metrics.get("examples") or []))


def read_needles(run_dir: Path, stages: list[StageLog]) -> list[NeedleResult]:
    """Every needle:* task's result at each stage's last evaluated checkpoint that ran it, by task,
    then in training order. Results of stages not in `stages` are left out (read_evals warns of them)."""
    files = [(path, data) for path in sorted(Path(run_dir).glob(f"{EVAL_DIR}/*/step-*/*.json"))
             if (data := read_result(path)) is not None]
    last: dict[tuple[str, str], tuple[int, dict]] = {}
    for (stage, step, task), (metrics, _model) in best_results(files).items():
        if task.startswith(PREFIX) and ((task, stage) not in last or step > last[(task, stage)][0]):
            last[(task, stage)] = (step, metrics)
    tasks = sorted({task for task, _stage in last})
    return [_result(task, stage, *last[(task, stage.name)]) for task in tasks for stage in stages if (task, stage.name) in last]


# --- the heatmap ------------------------------------------------------------------------------------


def _panel(ax, result: NeedleResult, image_kwargs: dict):
    import numpy as np

    values = np.array([[result.cell(length, depth) for length in result.lengths] for depth in result.depths])
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", **image_kwargs)
    for (row, col), value in np.ndenumerate(values):
        text = MISSING if math.isnan(value) else f"{value:.2f}"
        dark = not math.isnan(value) and value < 0.5  # viridis: dark purple at 0, yellow at 1
        ax.text(col, row, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(len(result.lengths)), [str(length) for length in result.lengths])
    ax.set_yticks(range(len(result.depths)), result.depths)
    ax.set_xlabel("context length (tokens)")
    acc = MISSING if result.acc is None else f"{result.acc:.2f}"
    note = ""
    if result.context is not None and any(length > result.context for length in result.lengths):
        inside = sum(length <= result.context for length in result.lengths)
        ax.axvline(inside - 0.5, color="red", linestyle="--", linewidth=1.5)
        note = f"; dashed: its context, {result.context}"
    ax.set_title(f"{result.stage} ({role(result.kind)}) step {result.step}\nacc {acc}{note}", fontsize=9)
    return image


def plot_needles(results: list[NeedleResult], title: str) -> bytes:
    """One panel per stage side by side (a row per task): lengths on x, depths on y (0 at the top),
    accuracy in each cell, one colour scale (0 to 1) for all."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(r.task for r in results))
    rows = [[r for r in results if r.task == task] for task in tasks]
    columns = max(len(row) for row in rows)
    fig = Figure(figsize=(1.2 + 3.4 * columns, 0.6 + 3.2 * len(rows)), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), columns, squeeze=False)
    image_kwargs = {"cmap": "viridis", "vmin": 0.0, "vmax": 1.0}
    image = None
    for i, (task, row) in enumerate(zip(tasks, rows, strict=True)):
        for j, ax in enumerate(axes[i]):
            if j >= len(row):
                ax.set_visible(False)
                continue
            image = _panel(ax, row[j], image_kwargs)
            if j == 0:
                ax.set_ylabel(f"{task}\nneedle depth")
    fig.colorbar(image, ax=axes, label="accuracy (exact match)", shrink=0.9)
    fig.suptitle(f"{title}: needle in a haystack")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# --- tables -----------------------------------------------------------------------------------------


def _fmt_acc(value: float | None, n: int | None = None) -> str:
    if value is None:
        return MISSING
    if not n:
        return f"{value:.2f}"
    low, high = wilson(value, n)
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def summary_table(results: list[NeedleResult]) -> tuple[list[str], list[list[str]], set[int]]:
    """(header, rows, right-aligned columns): task, model, checkpoint, accuracy (Wilson interval),
    n, then the accuracy at each length any result has."""
    lengths = sorted({length for r in results for length in r.lengths})
    header = ["task", "model", "checkpoint", "accuracy", "n", *(f"{length} tokens" for length in lengths)]
    rows = []
    for r in results:
        per_length = {int(k): v for k, v in r.per_length.items() if isinstance(v, (int, float))}
        rows.append([r.task, role(r.kind), f"{r.stage} step {r.step}", _fmt_acc(r.acc, r.n), MISSING if r.n is None else f"{r.n:,}",
                     *(_fmt_acc(per_length.get(length)) for length in lengths)])
    return header, rows, set(range(3, len(header)))


def example_table(results: list[NeedleResult]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): the example answers each task kept at its last stage (a right and a wrong one per length)."""
    last = {r.task: r for r in results}
    header = ["task", "checkpoint", "length", "depth", "value", "generated", "right"]
    rows = [[r.task, f"{r.stage} step {r.step}", str(e.get("length", MISSING)), str(e.get("depth", MISSING)), str(e.get("value", MISSING)),
             repr(e.get("generated", "")), "✅" if e.get("correct") else "❌"] for r in last.values() for e in r.examples]
    return header, rows
