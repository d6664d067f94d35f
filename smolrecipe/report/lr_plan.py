"""The LR a run's plan gives every step, across stages, before anything trains.

Each stage's LRs are smolrecipe.backends.lr_schedule's (which make_config.py --check holds to
nanotron's scheduler step for step); a stage starts on the token axis where the stage it starts from
ends, so a branch (annealing arms, a context extension) starts at its parent's end. The preflight
prints, for each annealing stage, the LR on both sides of its boundary, and `make_config.py --lr-plot`
draws the whole curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smolrecipe.backends.lr_schedule import stage_lrs
from smolrecipe.recipe.plan import RunPlan


@dataclass(frozen=True)
class PlannedLR:
    stage: str
    kind: str
    start: int  # tokens before the stage's first step (its parent's end)
    tokens: list[int]  # tokens after each step
    lrs: list[float]  # the LR each step trains with


def planned_lrs(plan: RunPlan) -> list[PlannedLR]:
    ends: dict[str, int] = {}
    out = []
    for stage in plan.stages:
        start = ends.get(stage.init_from, 0) if stage.init_from else 0
        lrs = stage_lrs(stage)
        out.append(PlannedLR(stage.name, stage.kind, start, [start + (i + 1) * stage.tokens_per_step for i in range(len(lrs))], lrs))
        ends[stage.name] = start + stage.tokens
    return out


def chain_tokens(plan: RunPlan, name: str) -> int:
    """Tokens trained on by stage `name` and every stage it continues (its chain from scratch)."""
    stage = plan.stage(name)
    return stage.tokens + (chain_tokens(plan, stage.init_from) if stage.init_from else 0)


def boundary_lines(plan: RunPlan) -> list[str]:
    """For each annealing stage: its parent's last LR, its own first and last, and whether they join."""
    curves = {c.stage: c for c in planned_lrs(plan)}
    lines = []
    for stage in plan.stages:
        if stage.kind != "anneal" or stage.init_from is None:
            continue
        before, after = curves[stage.init_from].lrs[-1], curves[stage.name].lrs
        joined = "continuous" if after[0] == before else f"a JUMP of {after[0] - before:+.3g}"
        lines.append(f"LR at {stage.name}'s boundary: {stage.init_from} ends at {before:.3g}, {stage.name} starts at "
                     f"{after[0]:.3g} ({joined}) and decays to {after[-1]:.3g} over {len(after):,} steps "
                     f"({stage.tokens / chain_tokens(plan, stage.name):.0%} of the tokens of its chain of stages), "
                     f"with {stage.init_from}'s optimizer state" + ("" if stage.load_optimizer else " NOT loaded"))
    return lines


def plot_planned_lrs(plan: RunPlan, path: Path) -> Path:
    """The planned LR of every stage on one token axis, as a PNG at `path` (written whole)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    from smolrecipe.atomic import write_file

    fig = Figure(figsize=(9, 3.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, curve in enumerate(planned_lrs(plan)):
        ax.plot([curve.start, *curve.tokens], [curve.lrs[0], *curve.lrs], color=f"C{i % 10}", label=f"{curve.stage} ({curve.kind})")
        if curve.start:
            ax.axvline(curve.start, color="grey", linestyle="--", linewidth=0.8)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_xlabel("tokens (a stage starts where the stage it continues ended)")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{plan.recipe.name}: planned learning rate per step")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return write_file(Path(path), buf.getvalue())
