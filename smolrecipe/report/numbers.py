"""How the report states an evaluated number without overstating it.

A small model is evaluated on few items (the demo: 24 PIQA questions), so a rate moves by several
points between checkpoints from sampling noise alone. Every rate with a known item count carries a
Wilson 95% interval (scipy's, not a hand-rolled formula), a mean of per-item values with its
standard error (the preference pairs' margin) the normal 95% interval, and two checkpoints are
called different only outside the noise:

  rates, means              the two intervals do not overlap (for rates, stricter than a 5%
                            two-proportion test: a difference it accepts is clear by either rule)
  perplexity-type metrics   bits per byte and token perplexity are measured on the same texts for
                            both models (a paired comparison): a relative change above PPL_MARGIN
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smolrecipe.report.evals import EvalPoint

CONFIDENCE = 0.95
PPL_MARGIN = 0.02  # relative; tokenization and scoring are deterministic, so 2% is a real change
MISSING = "—"
NO_CLEAR = "no clear difference"


@lru_cache(maxsize=4096)
def _wilson(successes: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest  # imported on first use: it takes most of a second

    ci = binomtest(successes, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return float(ci.low), float(ci.high)


def wilson(rate: float, n: int) -> tuple[float, float]:
    """The Wilson interval of a rate over n items; the rate is a share of items, so rate x n is
    rounded to the whole count it came from."""
    return _wilson(min(n, max(0, round(rate * n))), n)


def normal_interval(mean: float, stderr: float) -> tuple[float, float]:
    """The normal-approximation interval of a mean over many items, from its standard error."""
    from scipy.stats import norm

    half = float(norm.ppf(0.5 + CONFIDENCE / 2)) * stderr
    return mean - half, mean + half


def apart(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two intervals do not overlap."""
    return a[1] < b[0] or b[1] < a[0]


def fmt_metric(x: float | None, signed: bool = False) -> str:
    """A rate or bits per byte to 3 decimals; a perplexity (large) to 1."""
    return MISSING if x is None else f"{x:{'+' if signed else ''},.{1 if abs(x) >= 100 else 3}f}"


def fmt_interval(p: EvalPoint | None, signed: bool = False) -> str:
    """`0.54 [0.35, 0.72]`: a value with its interval, where a table gives n in a column of its own
    (two decimals: the interval is wider than the third)."""
    if p is None:
        return MISSING
    sign = "+" if signed else ""
    return f"{p.value:{sign}.2f}" + (f" [{p.ci[0]:{sign}.2f}, {p.ci[1]:{sign}.2f}]" if p.ci else "")


def fmt_point(p: EvalPoint | None) -> str:
    """`0.54 [0.35, 0.72] (n=24)` for a rate with its interval, otherwise the value and, when known,
    its item count."""
    if p is None:
        return MISSING
    if p.ci is not None:
        return f"{fmt_interval(p)} (n={p.n:,})"
    return fmt_metric(p.value) + (f" (n={p.n:,})" if p.n is not None else "")
