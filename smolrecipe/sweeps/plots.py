"""A sweep's figures, written as PNG files (atomically, like every report file).

  plot_scaling   the runs' losses against N on log-log axes, the fitted law with its bootstrap band,
                 the forecast at a larger N with its band, and the loss measured there once trained
  plot_mixture   per domain, each proxy's measured loss against the mixing law's prediction (the
                 fit's quality), then every proxy's weighted loss beside the recommended mixture's

Like smolrecipe.report.run_report, figures are drawn on matplotlib's Agg canvas (no display, no pyplot state).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from smolrecipe.atomic import write_file
from smolrecipe.errors import UserError
from smolrecipe.sweeps.fits import DEFAULT_LEVEL, Forecast, MixingLawFit, Recommendation, ScalingFit

LINE_POINTS = 200
MARGIN = 1.5  # the fit line reaches this factor beyond the smallest and largest N shown


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _write_png(path: Path, fig) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return write_file(Path(path), buf.getvalue())


def _count(x: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= size * 0.9995:
            return f"{x / size:.3g}{unit}"
    return f"{x:.3g}"


# ---- scaling -------------------------------------------------------------------------------------


def plot_scaling(path: Path, n: Sequence[float], loss: Sequence[float], fit: ScalingFit, *, d: Sequence[float] | None = None,
                 forecast_n: float | None = None, forecast: Forecast | None = None, forecast_d: float | None = None,
                 measured: float | None = None, labels: list[str] | None = None, title: str = "",
                 parameters: str = "non-embedding") -> Path:
    """Write the scaling figure to `path`. A chinchilla fit gets one line (and band) per distinct D,
    the forecast's D (`forecast_d`) included; the forecast and the measured loss sit at forecast_n."""
    from matplotlib.ticker import FuncFormatter

    n_arr, loss_arr = np.asarray(n, dtype=float), np.asarray(loss, dtype=float)
    if (forecast is not None or measured is not None) and forecast_n is None:
        raise UserError("plot.forecast_n", "a forecast or measured loss needs the N it is at", "pass forecast_n")
    level = forecast.level if forecast is not None else DEFAULT_LEVEL
    grid = np.geomspace(n_arr.min() / MARGIN, max(n_arr.max(), forecast_n or 0) * MARGIN, LINE_POINTS)
    fig = _figure(9, 5.4)
    ax = fig.add_subplot()
    if fit.law == "chinchilla":
        if d is None:
            raise UserError("plot.d", "a chinchilla fit is drawn per token count D, and no D was given", "pass d")
        _scaling_by_d(ax, fit, grid, n_arr, loss_arr, np.asarray(d, dtype=float), forecast_d, level)
    else:
        _fit_line(ax, fit, grid, None, level, "C0", "fit")
        ax.scatter(n_arr, loss_arr, color="C0", edgecolor="k", zorder=3, label="runs")
    for x, y, text in zip(n_arr, loss_arr, labels or [], strict=False):
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if forecast is not None:
        ax.errorbar([forecast_n], [forecast.value], yerr=[[forecast.value - forecast.low], [forecast.high - forecast.value]],
                    fmt="s", color="C3", capsize=5, markersize=7, zorder=4,
                    label=f"forecast at N = {_count(forecast_n)}: {forecast.value:.3f} [{forecast.low:.3f}, {forecast.high:.3f}]")
    if measured is not None:
        # hollow, so that a forecast that was right still shows under it
        ax.scatter([forecast_n], [measured], marker="*", s=260, facecolors="none", edgecolors="C2", linewidths=1.8, zorder=5,
                   label=f"measured: {measured:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda y, _pos: f"{y:g}")  # losses span less than a decade: 2.5, not 2.5x10^0
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel(f"{parameters} parameters N")
    ax.set_ylabel("held-out loss (nats/token)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"{title + ': ' if title else ''}{fit.formula()}", fontsize=10)
    ax.legend(fontsize=8, title=f"band: {level:.0%} bootstrap ({fit.bootstrap} refits)", title_fontsize=8)
    return _write_png(path, fig)


def _fit_line(ax, fit: ScalingFit, grid: np.ndarray, d: float | None, level: float, colour: str, label: str) -> None:
    ax.plot(grid, fit.predict(grid, d), color=colour, label=label)
    if fit.bootstrap:
        low, high = fit.band(grid, d, level)
        ax.fill_between(grid, low, high, color=colour, alpha=0.15, linewidth=0)


def _scaling_by_d(ax, fit: ScalingFit, grid: np.ndarray, n: np.ndarray, loss: np.ndarray, d: np.ndarray,
                  forecast_d: float | None, level: float) -> None:
    ds = sorted(set(d.tolist()) | ({forecast_d} if forecast_d is not None else set()))
    for i, value in enumerate(ds):
        colour = f"C{i % 10}"
        dashed = value not in d  # the forecast's D, where no run was trained
        ax.plot(grid, fit.predict(grid, value), color=colour, linestyle="--" if dashed else "-",
                label=f"fit, D = {_count(value)}" + (" (forecast)" if dashed else ""))
        if fit.bootstrap:
            low, high = fit.band(grid, value, level)
            ax.fill_between(grid, low, high, color=colour, alpha=0.12, linewidth=0)
        at = d == value
        if at.any():
            ax.scatter(n[at], loss[at], color=colour, edgecolor="k", zorder=3)


# ---- mixtures ------------------------------------------------------------------------------------


def plot_mixture(path: Path, domains: list[str], proxies: list[dict], fits: Mapping[str, MixingLawFit], recommendation: Recommendation,
                 measured: Mapping[str, float] | None = None, weights: Mapping[str, float] | None = None, title: str = "") -> Path:
    """Write the mixture figure to `path`. `proxies`: [{"name", "shares": {domain: share}, "loss": {domain: loss}}];
    `measured`: the recommended mixture's losses once trained; `weights` default to the recommendation's."""
    shares = np.array([[p["shares"].get(dom, 0.0) for dom in domains] for p in proxies], dtype=float)
    names = [p["name"] for p in proxies]
    panels = len(fits) + 1
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig = _figure(4.3 * cols, 3.9 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (dom, fit) in zip(axes, fits.items(), strict=False):
        measured_loss = np.array([p["loss"][dom] for p in proxies], dtype=float)
        _fit_panel(ax, dom, fit, measured_loss, fit.predict(shares), names, recommendation.predicted[dom], (measured or {}).get(dom))
    w = _normalised(weights or recommendation.weights or dict.fromkeys(fits, 1.0))
    _objective_panel(axes[len(fits)], proxies, fits, shares, w, recommendation, measured)
    for ax in axes[panels:]:
        ax.set_visible(False)
    rec = ", ".join(f"{dom} {share:.3f}" for dom, share in recommendation.shares.items())
    fig.suptitle(f"{title + ': ' if title else ''}recommended mixture {rec}", fontsize=11)
    return _write_png(path, fig)


def _fit_panel(ax, domain: str, fit: MixingLawFit, measured: np.ndarray, predicted: np.ndarray, names: list[str],
               recommended: float, recommended_measured: float | None) -> None:
    ax.scatter(measured, predicted, color="C0", edgecolor="k", zorder=3, label="proxies")
    for x, y, name in zip(measured, predicted, names, strict=True):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    values = [*measured, *predicted, recommended] + ([recommended_measured] if recommended_measured is not None else [])
    pad = 0.05 * (max(values) - min(values) or 1.0)
    lims = (min(values) - pad, max(values) + pad)
    ax.plot(lims, lims, linestyle="--", color="grey", linewidth=1, label="y = x")
    if recommended_measured is not None:
        ax.scatter([recommended_measured], [recommended], marker="*", s=180, color="C3", edgecolor="k", zorder=4, label="recommended")
    else:
        ax.axhline(recommended, color="C3", linestyle=":", label="recommended (predicted)")
    ax.set_xlim(lims)
    ax.set_ylim(lims)
    loo = f", leave-one-out {fit.loo_rmse:.3f}" if fit.loo_rmse is not None else ""
    ax.set_title(f"{domain}: RMSE {fit.rmse:.3f}{loo}", fontsize=9)
    ax.set_xlabel("measured loss (nats/token)")
    ax.set_ylabel("mixing law's prediction")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def _objective_panel(ax, proxies: list[dict], fits: Mapping[str, MixingLawFit], shares: np.ndarray, weights: dict[str, float],
                     recommendation: Recommendation, measured: Mapping[str, float] | None) -> None:
    """Every proxy's weighted loss as a bar (best at the top), the laws' prediction of it as a cross,
    and the recommended mixture's predicted (and measured) weighted loss as vertical lines."""
    observed = np.array([sum(w * p["loss"][dom] for dom, w in weights.items()) for p in proxies])
    predicted = sum(w * fits[dom].predict(shares) for dom, w in weights.items())
    order = np.argsort(observed)
    rows = np.arange(len(proxies))
    ax.barh(rows, observed[order], color="C0", alpha=0.6, label="proxy, measured")
    ax.scatter(predicted[order], rows, marker="x", color="k", zorder=3, label="proxy, law's prediction")
    lines = [recommendation.objective]
    if measured is not None and all(dom in measured for dom in weights):
        value = sum(w * measured[dom] for dom, w in weights.items())
        lines.append(value)
        ax.axvline(value, color="C2", linewidth=2.5, label=f"recommended, measured {value:.3f}")
    # dashed over the measured line, so that both show when the law was right
    ax.axvline(recommendation.objective, color="C3", linestyle="--", zorder=4,
               label=f"recommended, predicted {recommendation.objective:.3f}")
    values = [*observed, *predicted, *lines]
    pad = 0.1 * (max(values) - min(values) or 1.0)
    ax.set_xlim(min(values) - pad, max(values) + pad)  # the differences, not the bars' common base, are the point
    ax.set_yticks(rows, [proxies[i]["name"] for i in order], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("weighted held-out loss (nats/token)")
    ax.set_title("objective: " + ", ".join(f"{w:.2f} {dom}" for dom, w in weights.items() if w), fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)  # below: inside it would cover bars


def _normalised(weights: Mapping[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {dom: w / total for dom, w in weights.items()} if total > 0 else dict(weights)
