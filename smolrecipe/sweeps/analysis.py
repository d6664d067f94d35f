"""From a sweep's measured points to its answer: the scaling forecast, or the recommended mixture.

The forecast (and the recommendation) is written to a file of its own the first time the fitted
points are all measured, before the held-out scale (or the recommended mixture) is trained, and
is kept as long as those points do not change: the comparison in the result is with a prediction
made without the answer.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from smolrecipe.atomic import write_json
from smolrecipe.errors import UserError
from smolrecipe.recipe.envpaths import resolve_recipe
from smolrecipe.recipe.estimates import count_params
from smolrecipe.recipe.loading import load_recipe
from smolrecipe.recipe.plan import build_plan
from smolrecipe.sweeps.fits import ScalingFit, fit_mixing_laws, fit_scaling, recommend_mixture
from smolrecipe.sweeps.points import Point, point_of
from smolrecipe.sweeps.variants import SweepPlan, domain_sources, effective_mixture, recommended_variant

FORECAST = "forecast.json"
RECOMMENDATION = "recommendation.json"
RESULT = "sweep.json"
LEVEL = 0.9  # the forecast band: 5th to 95th percentile of the bootstrap refits


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


def _fitted(points: list[Point]) -> list[Point]:
    missing = [p.label for p in points if p.role == "point" and p.status != "done"]
    if missing:
        raise UserError("sweep", f"point(s) {missing} are not trained and scored yet", "run the sweep with --run first")
    return [p for p in points if p.role == "point"]


def _inputs(points: list[Point]) -> dict[str, float]:
    return {p.label: round(p.objective, 9) for p in points}


def _kept(path: Path, inputs: dict[str, float]) -> dict[str, Any] | None:
    """The earlier forecast or recommendation, if it was made from these very measurements."""
    if path.is_file():
        earlier = json.loads(path.read_text())
        if earlier.get("inputs") == inputs:
            return earlier
    return None


# ---- scaling -------------------------------------------------------------------------------------


def scaling_fit(plan: SweepPlan, points: list[Point]) -> ScalingFit:
    fitted = _fitted(points)
    d = [p.tokens for p in fitted] if len({p.tokens for p in fitted}) > 1 else None
    return fit_scaling([p.n(plan.sweep.parameters) for p in fitted], [p.objective for p in fitted], d=d, law=plan.sweep.law,
                       bootstrap=plan.sweep.bootstrap, seed=0)


def forecast(plan: SweepPlan, points: list[Point]) -> dict[str, Any]:
    """The forecast for every holdout scale and the target recipe, made (or kept) before they train."""
    path = plan.folder / FORECAST
    inputs = _inputs(_fitted(points))
    kept = _kept(path, inputs)
    if kept is not None:
        return kept
    fit = scaling_fit(plan, points)
    varies_d = fit.law == "chinchilla"
    holdouts = {}
    for p in points:
        if p.role == "holdout":
            f = fit.forecast(p.n(plan.sweep.parameters), p.tokens if varies_d else None, level=LEVEL)
            holdouts[p.label] = {"params": p.n(plan.sweep.parameters), "tokens": p.tokens, "predicted_loss": f.value,
                                 "low": f.low, "high": f.high, "status_when_predicted": p.status}
    out = {"written": _now(), "inputs": inputs, "level": LEVEL, "parameters": plan.sweep.parameters, "fit": fit.to_json(),
           "holdout": holdouts, "target": _target(plan, fit, points)}
    write_json(path, out)
    return out


def _target(plan: SweepPlan, fit: ScalingFit, points: list[Point]) -> dict[str, Any] | None:
    """The forecast for the target recipe's model: at the sweep's budget (a fit in N alone says
    nothing about more tokens), or at the target stage's own budget when the fit has D too."""
    if plan.sweep.target is None:
        return None
    target = resolve_recipe(load_recipe(plan.sweep.path("target")))
    count = count_params(target)
    n = count.non_embedding if plan.sweep.parameters == "non_embedding" else count.total
    if fit.law == "chinchilla":
        stages = build_plan(target).stages
        stage = next((s for s in stages if s.name == plan.stage), stages[0])
        tokens, note = stage.tokens, f"at {target.name}'s {stage.name} budget"
    else:
        tokens = max(p.tokens for p in points)
        note = "at the sweep's token budget (the fit has no token axis)"
    f = fit.forecast(n, tokens if fit.law == "chinchilla" else None, level=LEVEL)
    return {"recipe": target.name, "params": n, "tokens": tokens, "predicted_loss": f.value, "low": f.low,
            "high": f.high, "note": note}


def scaling_result(plan: SweepPlan, points: list[Point]) -> dict[str, Any]:
    made = forecast(plan, points)
    holdouts = []
    for p in points:
        if p.role != "holdout":
            continue
        f = made["holdout"][p.label]
        measured = p.objective if p.status == "done" else None
        error = None if measured is None else (f["predicted_loss"] - measured) / measured
        holdouts.append({"label": p.label, **f, "measured_loss": measured, "relative_error": error,
                         "inside_band": None if measured is None else f["low"] <= measured <= f["high"]})
    first = holdouts[0] if holdouts else {}
    return {**_header(plan, points), "parameters": made["parameters"], "fit": made["fit"], "forecast_written": made["written"],
            "level": made["level"],
            "holdout": holdouts, "target": made["target"],
            # the held-out scale's numbers, at the top level for a quick look
            "predicted_loss": first.get("predicted_loss"), "measured_loss": first.get("measured_loss"),
            "relative_error": first.get("relative_error"),
            "predicted_before_training": all(h["status_when_predicted"] == "pending" for h in made["holdout"].values())}


# ---- mixture -------------------------------------------------------------------------------------


def _share_matrix(plan: SweepPlan, points: list[Point]) -> np.ndarray:
    return np.array([[p.mixture.get(d, 0.0) for d in plan.domains] for p in points])


def recommend(plan: SweepPlan, points: list[Point]) -> dict[str, Any]:
    """The fitted laws and the recommended mixture, made (or kept) before it trains."""
    path = plan.folder / RECOMMENDATION
    proxies = _fitted(points)
    inputs = _inputs(proxies)
    kept = _kept(path, inputs)
    if kept is not None:
        return kept
    shares = _share_matrix(plan, proxies)
    losses = {d: np.array([p.loss[d] for p in proxies]) for d in plan.domains}
    fits = fit_mixing_laws(shares, losses, plan.domains)
    bounds = {d: (float(shares[:, i].min()), float(shares[:, i].max())) for i, d in enumerate(plan.domains)}
    best = recommend_mixture(fits, plan.weights, bounds, starts=shares)
    status = point_of(plan, recommended_variant(plan, best.shares)).status  # "pending", unless these shares ran before
    out = {"written": _now(), "inputs": inputs, "fits": {d: f.to_json() for d, f in fits.items()}, "bounds": bounds,
           **best.to_json(), "status_when_recommended": status}
    write_json(path, out)
    return out


def mixture_result(plan: SweepPlan, points: list[Point], made: dict[str, Any]) -> dict[str, Any]:
    proxies = [p for p in points if p.role == "point"]
    best_proxy = min(proxies, key=lambda p: p.objective)
    trained = next((p for p in points if p.role == "recommended"), None)
    measured = trained.objective if trained and trained.status == "done" else None
    beaten = None if measured is None else int(sum(p.objective > measured for p in proxies))
    return {**_header(plan, points), "fits": made["fits"], "bounds": made["bounds"], "recommendation_written": made["written"],
            "recommended": {"shares": made["shares"], "predicted": made["predicted"], "predicted_objective": made["objective"],
                            "measured": trained.loss if measured is not None else None, "measured_objective": measured,
                            "proxies_beaten": beaten, "status_when_recommended": made["status_when_recommended"]},
            "best_proxy": {"label": best_proxy.label, "shares": best_proxy.mixture, "objective": best_proxy.objective},
            "mixture_yaml": mixture_yaml(plan, made["shares"])}


def mixture_yaml(plan: SweepPlan, shares: dict[str, float]) -> str:
    """The recommended shares as the swept stage's `mixture:` block (its sources in their proportions)."""
    stage_mix = effective_mixture(plan.base, plan.base.stage(plan.stage))
    lines = ["mixture:"]
    for domain, share in shares.items():
        if share > 0:
            sources = ", ".join(f"{s}: {w:.3g}" for s, w in domain_sources(stage_mix, domain).items())
            lines.append(f"  {domain}: {{share: {share:g}, sources: {{{sources}}}}}")
    return "\n".join(lines) + "\n"


def _header(plan: SweepPlan, points: list[Point]) -> dict[str, Any]:
    sweep = plan.sweep
    return {"sweep": sweep.name, "kind": sweep.kind, "recipe": sweep.recipe, "stage": sweep.stage, "eval_suite": sweep.eval_suite,
            "domains": plan.domains, "objective_weights": plan.weights, "loss_unit": "nats/token (held out)",
            "train_seconds": sum(p.seconds or 0 for p in points), "points": [p.to_json() for p in points]}
