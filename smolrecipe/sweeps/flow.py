"""The order of a sweep, as tools/sweep.py runs it: the fitted points, then the fit and its
prediction (written down), then the variants that test it (holdout scales, the recommended
mixture), then the result."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.table import Table

from smolrecipe import PROJECT_ROOT
from smolrecipe.errors import UserError
from smolrecipe.recipe.estimates import count_params, run_cost
from smolrecipe.recipe.plan import build_plan
from smolrecipe.report.preflight import human
from smolrecipe.sweeps import analysis, runner
from smolrecipe.sweeps.points import Point, point_of
from smolrecipe.sweeps.report import write_result
from smolrecipe.sweeps.spec import load_sweep
from smolrecipe.sweeps.variants import SweepPlan, Variant, plan_sweep, recommended_variant, write_variants


@dataclass(frozen=True)
class SweepCost:
    variants: int  # the recommended mixture included, at a proxy's cost
    flops: float
    gpu_hours: float | None  # None: a CPU recipe


def sweep_cost(plan: SweepPlan) -> SweepCost:
    costs = [run_cost(build_plan(v.recipe)) for v in _rows(plan)]
    hours = None if any(c.gpu_hours is None for c in costs) else sum(c.gpu_hours for c in costs)
    return SweepCost(len(costs), sum(c.flops for c in costs), hours)


def _rows(plan: SweepPlan) -> list[Variant]:
    """The variants a sweep trains: its points and holdouts, and (a mixture sweep) the recommended
    mixture, whose cost is a proxy's."""
    extra = [plan.by_role("point")[0]] if plan.sweep.kind == "mixture" and plan.sweep.validate_ else []
    return [*plan.variants, *extra]


def cost_line(plan: SweepPlan, cost: SweepCost | None = None) -> str:
    """The sweep's cost next to its base recipe's whole run."""
    cost, main = cost or sweep_cost(plan), run_cost(build_plan(plan.base))
    if cost.gpu_hours is not None and main.gpu_hours:
        return (f"sweep {plan.sweep.name}: {cost.variants} variant(s), {cost.flops:.2e} FLOPs, {cost.gpu_hours:,.1f} "
                f"{plan.base.cluster.gpu_name}-hours at {main.mfu:.0%} MFU = {cost.gpu_hours / main.gpu_hours:.1%} of the main run's "
                f"{main.gpu_hours:,.0f} ({main.flops:.2e} FLOPs)")
    return (f"sweep {plan.sweep.name}: {cost.variants} variant(s), {cost.flops:.2e} FLOPs = {cost.flops / main.flops:.1%} of "
            f"the main run's {main.flops:.2e} ({plan.base.name} trains on {plan.base.cluster.gpu_name})")


def sweeps_of(recipe_path: str | Path) -> list[SweepPlan]:
    """The committed sweeps (sweeps/*.yaml) whose base is this recipe file, planned."""
    target = Path(recipe_path).resolve()
    out = []
    for path in sorted((PROJECT_ROOT / "sweeps").glob("*.yaml")):
        sweep = load_sweep(path)
        if sweep.path("recipe").resolve() == target:
            out.append(plan_sweep(sweep))
    return out


def print_plan(plan: SweepPlan, backend: str, console: Console | None = None) -> None:
    """The variants with their shape, size, budget and cost, and the sweep's cost next to the main run's."""
    console = console or Console(width=160, highlight=False)
    table = Table(title=f"sweep {plan.sweep.name}: {plan.sweep.kind} of {plan.base.name}'s {plan.stage}", title_justify="left")
    for col in ("variant", "role", "hidden x layers", "heads/kv", "non-embedding", "total", "tokens", "FLOPs", "GPU-hours", "status"):
        table.add_column(col, justify="left" if col in ("variant", "role", "status") else "right")
    rows = _rows(plan)
    for i, v in enumerate(rows):
        recommended = i >= len(plan.variants)
        cost, m, count = run_cost(build_plan(v.recipe)), v.recipe.model, count_params(v.recipe)
        table.add_row("recommended" if recommended else v.label, "recommended" if recommended else v.role,
                      f"{m.hidden_size} x {m.num_layers}", f"{m.num_attention_heads}/{m.num_key_value_heads}", human(count.non_embedding),
                      human(count.total), human(v.tokens), f"{cost.flops:.2e}", "—" if cost.gpu_hours is None else f"{cost.gpu_hours:.1f}",
                      "after the fit" if recommended else _status(plan, v, backend))
    console.print(table)
    console.print(cost_line(plan))


def _status(plan: SweepPlan, variant: Variant, backend: str) -> str:
    try:
        return point_of(plan, variant, backend).status
    except UserError as err:  # a cost preview needs no run folder: e.g. $SCRATCH unset on a laptop
        return f"? ({err.field} unresolved)"


def submit(plan: SweepPlan, backend: str, dry_run: bool, say: Callable[[str], None] = print) -> None:
    """The unfinished points' jobs; once every point is measured, the fit's prediction and the
    jobs of the variants that test it."""
    points = [point_of(plan, v, backend) for v in plan.by_role("point")]
    if any(p.status != "done" for p in points):
        ids = runner.submit_slurm(plan, plan.by_role("point"), backend, dry_run, say)
        if not dry_run:
            say(f"submitted {len(ids)} job(s); when they are done: python tools/sweep.py SPEC --fit, then --run --slurm again "
                "for the variants that test the fit")
        return
    testing = _testing_variants(plan, points, backend, say)
    ids = runner.submit_slurm(plan, testing, backend, dry_run, say)
    if not dry_run:
        say(f"submitted {len(ids)} job(s); when they are done: python tools/sweep.py SPEC --fit")


def run(plan: SweepPlan, train: bool, backend: str = "local", say: Callable[[str], None] = print) -> str:
    """Train what is unfinished (when `train`), fit, predict, test the prediction, write the result;
    the one-line summary."""
    fitted = plan.by_role("point")
    if train:
        runner.run_local(plan, fitted, say)
    points = [point_of(plan, v, backend) for v in fitted]
    testing = _testing_variants(plan, points, backend, say)
    if train and testing:
        runner.run_local(plan, testing, say)
    points += [point_of(plan, v, backend) for v in testing]
    if plan.sweep.kind == "scaling":
        result = analysis.scaling_result(plan, points)
    else:
        result = analysis.mixture_result(plan, points, analysis.recommend(plan, points))
    report = write_result(plan, result, points)
    return _summary(plan, result, points) + f"; {report}"


def _testing_variants(plan: SweepPlan, points: list[Point], backend: str, say: Callable[[str], None]) -> list[Variant]:
    """Make (or keep) the prediction from the measured points, say it, and return the variants that test it."""
    if plan.sweep.kind == "scaling":
        holdouts = plan.by_role("holdout")
        made = analysis.forecast(plan, points + [point_of(plan, v, backend) for v in holdouts])
        fit = made["fit"]
        say(f"fit: {fit['formula']} with " + ", ".join(f"{k} = {v:.4g}" for k, v in fit["params"].items()))
        for label, f in made["holdout"].items():
            say(f"forecast for {label} ({human(f['params'])} {_kind(plan)} parameters): {f['predicted_loss']:.4f} "
                f"[{f['low']:.4f}, {f['high']:.4f}] nats/token (written {made['written']})")
        if made["target"]:
            t = made["target"]
            say(f"forecast for {t['recipe']} ({human(t['params'])} {_kind(plan)} parameters, {t['note']}): {t['predicted_loss']:.4f} "
                f"[{t['low']:.4f}, {t['high']:.4f}]")
        return holdouts
    made = analysis.recommend(plan, points)
    say("recommended mixture: " + ", ".join(f"{d} {s:.3f}" for d, s in made["shares"].items())
        + f", predicted objective {made['objective']:.4f} (best proxy: {min(p.objective for p in points):.4f})")
    if not plan.sweep.validate_:
        return []
    variant = recommended_variant(plan, made["shares"])
    write_variants(plan, [variant])
    return [variant]


def _kind(plan: SweepPlan) -> str:
    return plan.sweep.parameters.replace("_", "-")


def _summary(plan: SweepPlan, result: dict, points: list[Point]) -> str:
    seconds = result["train_seconds"]
    head = f"{plan.sweep.name}: {len(points)} variant(s), {seconds:.0f} s of training"
    if plan.sweep.kind == "scaling":
        if result["measured_loss"] is None:
            return f"{head}; forecast {result['predicted_loss']:.4f} for the held-out scale (not trained yet)"
        return (f"{head}; held-out scale predicted {result['predicted_loss']:.4f}, measured {result['measured_loss']:.4f} "
                f"nats/token ({result['relative_error']:+.1%})")
    rec = result["recommended"]
    shares = ", ".join(f"{d} {s:.2f}" for d, s in rec["shares"].items())
    if rec["measured_objective"] is None:
        return f"{head}; recommended {shares}, predicted {rec['predicted_objective']:.4f} (not trained)"
    proxies = sum(1 for p in points if p.role == "point")
    return (f"{head}; recommended {shares}: predicted {rec['predicted_objective']:.4f}, measured {rec['measured_objective']:.4f}, "
            f"better than {rec['proxies_beaten']}/{proxies} proxies (best proxy {result['best_proxy']['objective']:.4f})")
