"""A sweep's result: sweep.json, report.md and the plot, in <runs>/sweeps/<sweep>/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smolrecipe.atomic import write_file, write_json
from smolrecipe.report.preflight import human
from smolrecipe.sweeps import plots
from smolrecipe.sweeps.analysis import RESULT, scaling_fit
from smolrecipe.sweeps.fits import MixingLawFit, Recommendation
from smolrecipe.sweeps.points import Point
from smolrecipe.sweeps.variants import SweepPlan

REPORT = "report.md"
PLOT = {"scaling": "scaling.png", "mixture": "mixture.png"}


def write_result(plan: SweepPlan, result: dict[str, Any], points: list[Point]) -> Path:
    folder = plan.folder
    plot = _plot(plan, result, points, folder / PLOT[plan.sweep.kind])
    write_json(folder / RESULT, result)
    lines = _scaling_lines(plan, result) if plan.sweep.kind == "scaling" else _mixture_lines(plan, result)
    text = "\n".join([f"# Sweep {plan.sweep.name}", "", plan.sweep.description, "", *_points_table(plan, points), "",
                      *lines, "", f"![{plan.sweep.kind}]({plot.name})", ""])
    return write_file(folder / REPORT, text)


def _points_table(plan: SweepPlan, points: list[Point]) -> list[str]:
    mix = plan.sweep.kind == "mixture"
    head = ["variant", "role", "hidden x layers", "non-embedding", "total", "tokens", "FLOPs",
            *(f"share {d}" for d in plan.domains if mix), *(f"loss {d}" for d in plan.domains), "objective", "train s"]
    rows = [f"| {' | '.join(head)} |", f"|{'---|' * len(head)}"]
    for p in points:
        cells = [p.label, p.role, f"{p.shape['hidden_size']} x {p.shape['num_layers']}", human(p.non_embedding), human(p.params),
                 human(p.tokens), f"{p.flops:.2e}", *(f"{p.mixture.get(d, 0):.2f}" for d in plan.domains if mix),
                 *(f"{p.loss[d]:.4f}" if d in p.loss else p.status for d in plan.domains),
                 f"{p.objective:.4f}" if p.objective is not None else "—", f"{p.seconds:.0f}" if p.seconds else "—"]
        rows.append(f"| {' | '.join(cells)} |")
    weights = ", ".join(f"{d} {w:.2f}" for d, w in plan.weights.items())
    return ["Held-out loss in nats per token (the eval suite's tier-2 slices); objective: their weighted mean "
            f"({weights}).", "", *rows]


def _scaling_lines(plan: SweepPlan, result: dict[str, Any]) -> list[str]:
    fit, kind = result["fit"], result["parameters"].replace("_", "-")
    params = ", ".join(f"{k} = {v:.4g}" for k, v in fit["params"].items())
    out = ["## Forecast", "", f"Fit: {fit['formula']} ({params}; {fit['points']} points, {fit['bootstrap']} bootstrap refits "
           f"for the {result['level']:.0%} band). Written {result['forecast_written']}"
           + (", before the held-out scale was trained." if result["predicted_before_training"] else
              " (after the held-out scale was trained: no longer a blind forecast)."), "",
           f"| held-out scale | {kind} parameters | predicted | band | measured | error | in band |", "|---|---|---|---|---|---|---|"]
    for h in result["holdout"]:
        measured = "—" if h["measured_loss"] is None else f"{h['measured_loss']:.4f}"
        error = "—" if h["relative_error"] is None else f"{h['relative_error']:+.1%}"
        inside = {None: "—", True: "yes", False: "no"}[h["inside_band"]]
        out.append(f"| {h['label']} | {human(h['params'])} | {h['predicted_loss']:.4f} | [{h['low']:.4f}, {h['high']:.4f}] "
                   f"| {measured} | {error} | {inside} |")
    target = result.get("target")
    if target:
        out += ["", f"Target {target['recipe']} ({human(target['params'])} {kind} parameters, {human(target['tokens'])} "
                f"tokens, {target['note']}): predicted {target['predicted_loss']:.4f} [{target['low']:.4f}, {target['high']:.4f}]."]
    return out


def _mixture_lines(plan: SweepPlan, result: dict[str, Any]) -> list[str]:
    rec, best = result["recommended"], result["best_proxy"]
    shares = ", ".join(f"{d} {s:.3f}" for d, s in rec["shares"].items())
    law_rows = ["| domain | law | in-sample RMSE | leave-one-out RMSE |", "|---|---|---|---|"]
    for d, f in result["fits"].items():
        loo = "—" if f.get("loo_rmse") is None else f"{f['loo_rmse']:.4f}"
        law_rows.append(f"| {d} | {f['formula']} | {f['rmse']:.4f} | {loo} |")
    out = ["## Mixing laws", "", *law_rows, "", "## Recommended mixture", "",
           f"Shares {shares}, within the range the proxies tried per domain "
           f"({', '.join(f'{d} {lo:.2f}-{hi:.2f}' for d, (lo, hi) in result['bounds'].items())}); "
           f"written {result['recommendation_written']}"
           + (", before it was trained." if rec["status_when_recommended"] == "pending" else " (after it was trained)."), "",
           "| | " + " | ".join(plan.domains) + " | objective |", "|---|" + "---|" * (len(plan.domains) + 1),
           "| predicted | " + " | ".join(f"{rec['predicted'][d]:.4f}" for d in plan.domains) + f" | {rec['predicted_objective']:.4f} |"]
    if rec["measured_objective"] is not None:
        measured = " | ".join(f"{rec['measured'][d]:.4f}" for d in plan.domains)
        out.append(f"| measured | {measured} | {rec['measured_objective']:.4f} |")
        proxies = sum(1 for p in result["points"] if p["role"] == "point")
        out += ["", f"The recommended mixture's objective {rec['measured_objective']:.4f} beats {rec['proxies_beaten']} of the "
                f"{proxies} proxies; the best proxy, {best['label']}, has {best['objective']:.4f} "
                f"({(rec['measured_objective'] - best['objective']) / best['objective']:+.2%})."]
    out += ["", "To use it, the stage's mixture (its sources in the stage's proportions):", "", "```yaml",
            result["mixture_yaml"].rstrip(), "```"]
    return out


def _plot(plan: SweepPlan, result: dict[str, Any], points: list[Point], path: Path) -> Path:
    fitted = [p for p in points if p.role == "point"]
    if plan.sweep.kind == "scaling":
        varies_d = result["fit"]["law"] == "chinchilla"
        fit = scaling_fit(plan, points)
        n = [p.n(plan.sweep.parameters) for p in fitted]
        first = result["holdout"][0] if result["holdout"] else None
        target = result.get("target")
        forecast_n = first["params"] if first else (target["params"] if target else None)
        f = fit.forecast(forecast_n, first["tokens"] if varies_d and first else None) if forecast_n else None
        return plots.plot_scaling(path, n, [p.objective for p in fitted], fit,
                                  forecast_d=first["tokens"] if varies_d and first else None,
                                  d=[p.tokens for p in fitted] if varies_d else None, forecast_n=forecast_n, forecast=f,
                                  measured=first["measured_loss"] if first else None, labels=[p.label for p in fitted],
                                  parameters=plan.sweep.parameters.replace("_", "-"),
                                  title=f"{plan.sweep.name}: held-out loss vs {plan.sweep.parameters.replace('_', '-')} parameters")
    fits = {d: MixingLawFit.from_json(f) for d, f in result["fits"].items()}  # the laws the recommendation came from
    rec = result["recommended"]
    recommendation = Recommendation(rec["shares"], rec["predicted"], rec["predicted_objective"])
    proxies = [{"name": p.label, "shares": p.mixture, "loss": p.loss} for p in fitted]
    return plots.plot_mixture(path, plan.domains, proxies, fits, recommendation,
                              measured=rec["measured"] if rec["measured_objective"] is not None else None, weights=plan.weights,
                              title=f"{plan.sweep.name}: mixing laws and the recommended mixture")
