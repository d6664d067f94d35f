"""The laws fitted to a sweep's runs, and what they predict: numbers in, numbers out (plots.py draws them).

  fit_scaling        (N, loss[, D]) -> ScalingFit: a power law in N (a line in log-log), the saturating
                     form E + A N^-alpha, or Chinchilla's E + A/N^alpha + B/D^beta; its bootstrap refits
                     give a band around a forecast at any (N, D)
  fit_mixing_law     the proxies' mixtures and one domain's held-out loss -> MixingLawFit, the exponential
                     data-mixing law of Ye et al. 2024
  fit_mixing_laws    the same for every domain
  recommend_mixture  fitted mixing laws, domain weights, share bounds -> Recommendation: the mixture that
                     minimises the weighted predicted loss, without leaving the range the proxies tried

Losses are held-out cross-entropies in nats/token; N is parameters (non-embedding or total, as the sweep says),
D training tokens.
Every fit is scipy's (np.polyfit, least_squares, SLSQP); bad input raises UserError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import brentq, least_squares, minimize

from smolrecipe.errors import UserError
from smolrecipe.recipe.schema import SHARE_TOLERANCE

# ---- scaling laws --------------------------------------------------------------------------------

LAWS = ("power", "saturating", "chinchilla")
PARAMS = {"power": ("A", "alpha"), "saturating": ("E", "A", "alpha"), "chinchilla": ("E", "A", "alpha", "B", "beta")}
FORMULAS = {"power": "L = A * N^-alpha", "saturating": "L = E + A * N^-alpha", "chinchilla": "L = E + A / N^alpha + B / D^beta"}
SOURCES = {
    "power": "Kaplan et al. 2020, Scaling Laws for Neural Language Models (L(N) = (N_c/N)^alpha_N)",
    "saturating": "Hoffmann et al. 2022, Training Compute-Optimal Large Language Models (the N term at fixed D)",
    "chinchilla": "Hoffmann et al. 2022, Training Compute-Optimal Large Language Models (approach 3)",
}
MIN_POINTS = {"power": 2, "saturating": 4, "chinchilla": 5}
MIN_DISTINCT_N = {"power": 2, "saturating": 3, "chinchilla": 2}
EXPONENT_MAX = 3.0  # alpha, beta: fitted LM exponents are ~0.05-0.7; the bound only keeps a bad start from running off
LOG_TERM = (-30.0, 10.0)  # log of a term's value (nats) at the reference scale: far wider than any loss
E_BELOW_MIN = 1 - 1e-6  # E stays strictly under the lowest loss, or the N term has nothing left to explain
DEFAULT_LEVEL = 0.9


@dataclass(frozen=True)
class Forecast:
    """A predicted loss and its bootstrap percentile band at `level` (low == high == value when no refit converged)."""

    value: float
    low: float
    high: float
    level: float

    def to_json(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high, "level": self.level}


@dataclass
class ScalingFit:
    """A fitted scaling law and its bootstrap refits (one row of `refits` per converged resample,
    columns in PARAMS[law] order), which give a band at any query point."""

    law: str
    params: dict[str, float]
    points: int
    bootstrap: int
    refits: np.ndarray = field(default_factory=lambda: np.empty((0, 0)), repr=False)

    def predict(self, n, d=None) -> float | np.ndarray:
        n_arr, d_arr = self._query(n, d)
        out = _evaluate(self.law, np.array([list(self.params.values())]), n_arr, d_arr)[0]
        return float(out[0]) if np.ndim(n) == 0 and np.ndim(d) == 0 else out

    def band(self, n, d=None, level: float = DEFAULT_LEVEL) -> tuple[np.ndarray, np.ndarray]:
        """The bootstrap percentile band (low, high) at each query point; the point prediction
        itself when no refit converged."""
        n_arr, d_arr = self._query(n, d)
        if not len(self.refits):
            point = np.atleast_1d(self.predict(n_arr, d_arr))
            return point, point
        preds = _evaluate(self.law, self.refits, n_arr, d_arr)
        tail = 100 * (1 - level) / 2
        low, high = np.percentile(preds, [tail, 100 - tail], axis=0)
        return low, high

    def forecast(self, n: float, d: float | None = None, level: float = DEFAULT_LEVEL) -> Forecast:
        """The full fit's prediction at (n, d), with the band of the bootstrap refits' predictions there."""
        if not 0 < level < 1:
            raise UserError("forecast.level", f"the band's level must be between 0 and 1, got {level}", "use e.g. 0.9")
        low, high = self.band(n, d, level)
        return Forecast(value=float(self.predict(n, d)), low=float(low[0]), high=float(high[0]), level=level)

    def formula(self) -> str:
        """The law with its fitted numbers, e.g. 'L = 30.1 * N^-0.250'."""
        p = self.params
        n_term = f"{p['A']:.4g} * N^-{p['alpha']:.3f}"
        if self.law == "power":
            return f"L = {n_term}"
        if self.law == "saturating":
            return f"L = {p['E']:.3f} + {n_term}"
        return f"L = {p['E']:.3f} + {p['A']:.4g} / N^{p['alpha']:.3f} + {p['B']:.4g} / D^{p['beta']:.3f}"

    def to_json(self) -> dict:
        return {"law": self.law, "formula": FORMULAS[self.law], "fitted": self.formula(), "params": dict(self.params),
                "points": self.points, "bootstrap": self.bootstrap, "source": SOURCES[self.law]}

    def _query(self, n, d) -> tuple[np.ndarray, np.ndarray | None]:
        n_arr = np.atleast_1d(np.asarray(n, dtype=float))
        if self.law != "chinchilla":
            return n_arr, None
        if d is None:
            raise UserError("forecast.d", "a chinchilla fit predicts from N and D, and no D was given", "pass the token count d")
        n_arr, d_arr = np.broadcast_arrays(n_arr, np.atleast_1d(np.asarray(d, dtype=float)))
        return n_arr, d_arr


def fit_scaling(n: Sequence[float], loss: Sequence[float], d: Sequence[float] | None = None, law: str = "auto",
                bootstrap: int = 1000, seed: int = 0) -> ScalingFit:
    """Fit loss against non-embedding parameters N (and tokens D for "chinchilla"); "auto" is
    chinchilla when D varies across the points, else the log-log power law. The points are then
    resampled with replacement `bootstrap` times and refitted, for forecast bands."""
    n_arr, loss_arr, d_arr = _points(n, loss, d)
    law = _choose_law(law, d_arr)
    _check_enough(law, n_arr, d_arr)
    ref = _Reference.of(n_arr, d_arr)
    best = _fit_law(law, n_arr, loss_arr, d_arr, ref, _starts(law, loss_arr))
    if best is None:
        raise UserError("points", f"the {law} law did not converge on these {len(n_arr)} points",
                        "check the losses (one diverged run skews the fit), or try law='power'")
    refits = _bootstrap(law, n_arr, loss_arr, d_arr, ref, best, bootstrap, seed)
    return ScalingFit(law=law, params=dict(zip(PARAMS[law], map(float, best), strict=True)), points=len(n_arr), bootstrap=len(refits),
                      refits=refits)


def _points(n, loss, d) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    arrays = {"n": n, "loss": loss} | ({"d": d} if d is not None else {})
    out = {}
    for name, values in arrays.items():
        arr = np.asarray(values, dtype=float)
        if arr.ndim != 1:
            raise UserError("points", f"{name} must be a flat list of numbers, got shape {arr.shape}", "give one value per run")
        bad = np.flatnonzero(~(np.isfinite(arr) & (arr > 0)))
        if len(bad):
            raise UserError(f"points.{name}", f"every {name} must be a positive finite number; point {bad[0]} is {arr[bad[0]]}",
                            "drop or rerun that run (a loss of NaN or inf means it diverged)")
        out[name] = arr
    lengths = {name: len(arr) for name, arr in out.items()}
    if len(set(lengths.values())) > 1:
        raise UserError("points", "the lists have different lengths: " + ", ".join(f"{k} {v}" for k, v in lengths.items()),
                        "give one N, one loss (and one D) per run")
    return out["n"], out["loss"], out.get("d")


def _choose_law(law: str, d: np.ndarray | None) -> str:
    varies = d is not None and len(np.unique(d)) > 1
    if law == "auto":
        return "chinchilla" if varies else "power"
    if law not in LAWS:
        raise UserError("fit.law", f"unknown law {law!r}", f"use one of auto, {', '.join(LAWS)}")
    if law == "chinchilla" and not varies:
        raise UserError("points.d", "the chinchilla law needs runs at two or more token counts D",
                        "add runs at another D, or use law='power'")
    if law != "chinchilla" and varies:
        # A law in N alone would read the D effect as an N effect.
        raise UserError("points.d", f"D varies across the points but the {law} law fits N alone", "use law='chinchilla' (or 'auto')")
    return law


def _check_enough(law: str, n: np.ndarray, d: np.ndarray | None) -> None:
    distinct_n = len(np.unique(n))
    if len(n) < MIN_POINTS[law] or distinct_n < MIN_DISTINCT_N[law]:
        raise UserError("points", f"the {law} law needs at least {MIN_POINTS[law]} points at {MIN_DISTINCT_N[law]} or more distinct N; "
                        f"got {len(n)} points at {distinct_n} distinct N", "add runs at more model scales")
    if law == "chinchilla" and _degenerate(law, n, d):
        # Repeats of one (N, D) add no equation: 5 parameters need 5 distinct runs.
        raise UserError("points", f"the chinchilla law needs {MIN_POINTS[law]} distinct (N, D) pairs; got "
                        f"{_distinct_pairs(n, d)}", "add runs at new (N, D) pairs")


def _degenerate(law: str, n: np.ndarray, d: np.ndarray | None) -> bool:
    """A resample that cannot determine the law's parameters (too few distinct points)."""
    if len(np.unique(n)) < MIN_DISTINCT_N[law]:
        return True
    if law == "chinchilla":
        return len(np.unique(d)) < 2 or _distinct_pairs(n, d) < len(PARAMS[law])
    return False


def _distinct_pairs(n: np.ndarray, d: np.ndarray) -> int:
    return len(np.unique(np.stack([n, d]), axis=1).T)


@dataclass(frozen=True)
class _Reference:
    """Geometric means of N and D. The nonlinear laws are fitted as exp(a - alpha*log(N/N0)) instead of
    A*N^-alpha: A spans many orders of magnitude and is tied to alpha, while a (the term's log value at
    N0, in nats) is O(1) and nearly independent of alpha, so the least-squares problem is well conditioned."""

    log_n0: float
    log_d0: float

    @classmethod
    def of(cls, n: np.ndarray, d: np.ndarray | None) -> "_Reference":
        return cls(float(np.log(n).mean()), float(np.log(d).mean()) if d is not None else 0.0)

    def to_theta(self, law: str, p: np.ndarray) -> np.ndarray:
        """Canonical (E, A, alpha, B, beta) -> fitted (E, a, alpha, b, beta)."""
        theta = np.array(p, dtype=float)
        theta[1] = np.log(p[1]) - p[2] * self.log_n0
        if law == "chinchilla":
            theta[3] = np.log(p[3]) - p[4] * self.log_d0
        return theta

    def from_theta(self, law: str, theta: np.ndarray) -> np.ndarray:
        p = np.array(theta, dtype=float)
        p[1] = np.exp(theta[1] + theta[2] * self.log_n0)
        if law == "chinchilla":
            p[3] = np.exp(theta[3] + theta[4] * self.log_d0)
        return p


def _evaluate(law: str, params: np.ndarray, n: np.ndarray, d: np.ndarray | None) -> np.ndarray:
    """Each parameter row's (K, p) predictions at each point -> (K, len(n)); powers taken in log space."""
    p = np.atleast_2d(params)
    log_n = np.log(n)[None, :]
    if law == "power":
        return np.exp(np.log(p[:, [0]]) - p[:, [1]] * log_n)
    loss = p[:, [0]] + np.exp(np.log(p[:, [1]]) - p[:, [2]] * log_n)
    if law == "chinchilla":
        loss = loss + np.exp(np.log(p[:, [3]]) - p[:, [4]] * np.log(d)[None, :])
    return loss


def _starts(law: str, loss: np.ndarray) -> list[np.ndarray]:
    """Canonical starting points for the nonlinear laws, spread over E and the exponents; a is set so
    that the terms add up to the mean loss at the reference scale (filled in by _fit_law)."""
    if law == "power":
        return []
    floors = (0.0, 0.5, 0.9)
    exponents = (0.1, 0.3, 0.7) if law == "saturating" else (0.2, 0.5)
    if law == "saturating":
        return [np.array([f * loss.min(), np.nan, a]) for f in floors for a in exponents]
    return [np.array([f * loss.min(), np.nan, a, np.nan, b]) for f in floors for a in exponents for b in exponents]


def _fit_law(law: str, n: np.ndarray, loss: np.ndarray, d: np.ndarray | None, ref: _Reference,
             starts: list[np.ndarray]) -> np.ndarray | None:
    """The canonical parameters with the lowest squared log-residual over `starts`, or None when no start converged."""
    if law == "power":
        slope, intercept = np.polyfit(np.log(n), np.log(loss), 1)  # the log-log line: ordinary least squares
        return np.array([np.exp(intercept), -slope])
    x = np.log(n) - ref.log_n0
    y = np.log(d) - ref.log_d0 if d is not None else None
    log_loss = np.log(loss)

    def residuals(theta: np.ndarray) -> np.ndarray:
        # log residuals: every run's relative error counts the same, small scales do not dominate
        pred = theta[0] + np.exp(theta[1] - theta[2] * x)
        if law == "chinchilla":
            pred = pred + np.exp(theta[3] - theta[4] * y)
        return np.log(pred) - log_loss

    terms = 2 if law == "chinchilla" else 1
    lower = np.array([0.0] + [LOG_TERM[0], 0.0] * terms)
    upper = np.array([E_BELOW_MIN * loss.min()] + [LOG_TERM[1], EXPONENT_MAX] * terms)
    theta0s = []
    for start in starts:
        theta0 = start.copy()
        if np.isnan(start).any():  # a fresh start: split what E leaves of the mean loss evenly between the terms
            theta0[1::2] = np.log(max(loss.mean() - start[0], 1e-3) / terms)
        else:
            theta0 = ref.to_theta(law, start)
        theta0s.append(theta0)
    best = _best_least_squares(residuals, theta0s, lower, upper)
    return None if best is None else ref.from_theta(law, best)


def _best_least_squares(residuals, starts: list[np.ndarray], lower: np.ndarray, upper: np.ndarray) -> np.ndarray | None:
    """scipy's least_squares from every start (clipped into the bounds); the converged solution with
    the lowest cost, or None when none converged."""
    best = None
    for theta0 in starts:
        try:
            result = least_squares(residuals, np.clip(theta0, lower, upper), bounds=(lower, upper), xtol=1e-12, ftol=1e-12, gtol=1e-12)
        except (ValueError, FloatingPointError):
            continue
        if result.status > 0 and np.isfinite(result.cost) and (best is None or result.cost < best.cost):
            best = result
    return None if best is None else best.x


def _bootstrap(law: str, n: np.ndarray, loss: np.ndarray, d: np.ndarray | None, ref: _Reference, full: np.ndarray,
               times: int, seed: int) -> np.ndarray:
    """Refits on `times` resamples (with replacement) of the points; each nonlinear refit starts from the
    full fit, which keeps 1,000 refits fast and in the same basin. Degenerate resamples are skipped."""
    rng = np.random.default_rng(seed)
    refits = []
    for _ in range(max(times, 0)):
        idx = rng.integers(0, len(n), len(n))
        rd = d[idx] if d is not None else None
        if _degenerate(law, n[idx], rd):
            continue
        p = _fit_law(law, n[idx], loss[idx], rd, ref, [full])
        if p is not None and np.isfinite(p).all():
            refits.append(p)
    return np.array(refits, dtype=float).reshape(-1, len(PARAMS[law]))


# ---- data-mixing laws ----------------------------------------------------------------------------

MIXING_SOURCE = "Ye et al. 2024, Data Mixing Laws: Optimizing Data Mixtures by Predicting Language Modeling Performance"
MIXING_FORMULA = "L = c + exp(log_k + sum_j t_j * r_j)"
T_BOUND = 30.0  # |t_j|: a share moving from 0 to 1 changes the exponential term by at most e^30; keeps exp finite
C_STARTS = (0.0, 0.25, 0.5, 0.75, 0.9, 0.97)  # fractions of the lowest loss
SHARE_DECIMALS = 3
SUM_TO_ONE = {"type": "eq", "fun": lambda r: r.sum() - 1, "jac": lambda r: np.ones_like(r)}


@dataclass
class MixingLawFit:
    """One domain's held-out loss as a function of the mixture shares r (Ye et al. 2024, eq. 1):
    L(r) = c + k * exp(sum_j t_j r_j), stored as c, log_k and t_<domain> for every domain of `domains`;
    the last domain's t is 0 (the reference: see fit_mixing_law)."""

    domain: str
    domains: list[str]
    params: dict[str, float]
    rmse: float
    loo_rmse: float | None

    def predict(self, shares) -> float | np.ndarray:
        """Predicted loss at a mixture (dict domain -> share, or an (m,) vector in `domains` order) or at
        each row of a (P, m) array."""
        matrix = _share_matrix(shares, self.domains, "shares")
        out = self._raw(matrix)
        return out if not isinstance(shares, Mapping) and np.ndim(shares) == 2 else float(out[0])

    def _raw(self, matrix: np.ndarray) -> np.ndarray:
        t = np.array([self.params[f"t_{d}"] for d in self.domains])
        return self.params["c"] + np.exp(self.params["log_k"] + matrix @ t)

    @classmethod
    def from_json(cls, data: dict) -> "MixingLawFit":
        """The law as to_json wrote it (recommendation.json keeps the laws a recommendation came from)."""
        return cls(data["domain"], list(data["domains"]), dict(data["params"]), data["rmse"], data["loo_rmse"])

    def to_json(self) -> dict:
        return {"domain": self.domain, "domains": list(self.domains), "formula": MIXING_FORMULA, "params": dict(self.params),
                "reference": self.domains[-1], "rmse": self.rmse, "loo_rmse": self.loo_rmse, "source": MIXING_SOURCE}


def fit_mixing_law(shares: np.ndarray, loss: np.ndarray, domain: str, domains: list[str]) -> MixingLawFit:
    """Fit one domain's loss over P proxy mixtures (rows of `shares`, columns in `domains` order).

    The shares sum to 1, so adding s to every t_j is the same law as multiplying k by e^s: one t is
    redundant. It is fixed at 0 for the last domain (the reference), which leaves m + 1 free
    parameters (c, log k and m - 1 t's) for m domains; P >= m + 2 proxies leave at least one degree of
    freedom, and leave-one-out needs one more."""
    matrix, loss = _mixing_points(shares, loss, domains, f"mixtures.loss.{domain}")
    theta = _fit_mixing(matrix, loss)
    if theta is None:
        raise UserError(f"mixtures.loss.{domain}", "the mixing law did not converge on these proxies",
                        "check the proxies' losses (one diverged run skews the fit)")
    params = _mixing_params(theta, domains)
    fitted = MixingLawFit(domain=domain, domains=list(domains), params=params, rmse=0.0, loo_rmse=None)
    fitted.rmse = float(np.sqrt(np.mean((fitted._raw(matrix) - loss) ** 2)))
    fitted.loo_rmse = _leave_one_out(matrix, loss, domains)
    return fitted


def fit_mixing_laws(shares: np.ndarray, losses: Mapping[str, np.ndarray], domains: list[str]) -> dict[str, MixingLawFit]:
    """fit_mixing_law for every domain in `losses` (the domains whose held-out loss was measured)."""
    return {domain: fit_mixing_law(shares, loss, domain, domains) for domain, loss in losses.items()}


def _mixing_points(shares, loss, domains: list[str], loss_field: str) -> tuple[np.ndarray, np.ndarray]:
    if len(domains) < 2 or len(set(domains)) != len(domains):
        raise UserError("mixtures.domains", f"a mixture needs two or more distinct domains, got {list(domains)}", "list each domain once")
    matrix = _share_matrix(np.asarray(shares, dtype=float), domains, "mixtures.shares")
    loss = np.asarray(loss, dtype=float)
    if loss.ndim != 1 or len(loss) != len(matrix):
        raise UserError(loss_field, f"{loss.size} losses for {len(matrix)} mixtures", "give one held-out loss per proxy")
    if not (np.isfinite(loss) & (loss > 0)).all():
        raise UserError(loss_field, "every loss must be a positive finite number", "drop or rerun the proxy whose loss is not")
    m = len(domains)
    if len(matrix) < m + 2:
        raise UserError("mixtures", f"the mixing law over {m} domains has {m + 1} free parameters and needs at least {m + 2} proxies; "
                        f"got {len(matrix)}", f"add {m + 2 - len(matrix)} more proxy mixture(s)")
    if np.linalg.matrix_rank(matrix) < m:
        raise UserError("mixtures", "the proxies' mixtures do not vary the domains' shares independently of each other",
                        "add proxies that move each domain's share on its own")
    return matrix, loss


def _share_matrix(shares, domains: list[str], where: str) -> np.ndarray:
    """Mixture(s) as a (P, m) array in `domains` order: rows non-negative, each summing to 1."""
    if isinstance(shares, Mapping):
        unknown = sorted(set(shares) - set(domains))
        if unknown:
            raise UserError(where, f"unknown domain(s) {unknown}", f"use the fitted domains {list(domains)}")
        shares = [shares.get(d, 0.0) for d in domains]
    matrix = np.atleast_2d(np.asarray(shares, dtype=float))
    if matrix.ndim != 2 or matrix.shape[1] != len(domains):
        raise UserError(where, f"expected one share per domain ({len(domains)}: {list(domains)}), got shape {np.shape(shares)}",
                        "give the shares in the domains' order")
    if not np.isfinite(matrix).all() or (matrix < 0).any() or (np.abs(matrix.sum(axis=1) - 1) > SHARE_TOLERANCE).any():
        raise UserError(where, "every mixture's shares must be non-negative and sum to 1", "normalise the shares")
    return matrix


def _fit_mixing(matrix: np.ndarray, loss: np.ndarray) -> np.ndarray | None:
    """theta = (c, log_k, t_1 .. t_{m-1}) with the lowest squared error, or None. For each c on a grid
    below the lowest loss, log(L - c) is linear in the shares: its least-squares line starts the
    nonlinear fit."""
    design = np.column_stack([np.ones(len(matrix)), matrix[:, :-1]])  # the reference domain's column dropped: t_ref = 0
    free = design.shape[1]
    lower = np.array([0.0, -np.inf] + [-T_BOUND] * (free - 1))
    upper = np.array([E_BELOW_MIN * loss.min(), np.inf] + [T_BOUND] * (free - 1))

    def residuals(theta: np.ndarray) -> np.ndarray:
        return theta[0] + np.exp(design @ theta[1:]) - loss

    starts = []
    for fraction in C_STARTS:
        c = fraction * E_BELOW_MIN * loss.min()
        line, *_ = np.linalg.lstsq(design, np.log(loss - c), rcond=None)
        starts.append(np.concatenate([[c], line]))
    return _best_least_squares(residuals, starts, lower, upper)


def _mixing_params(theta: np.ndarray, domains: list[str]) -> dict[str, float]:
    t = list(theta[2:]) + [0.0]
    return {"c": float(theta[0]), "log_k": float(theta[1])} | {f"t_{d}": float(v) for d, v in zip(domains, t, strict=True)}


def _leave_one_out(matrix: np.ndarray, loss: np.ndarray, domains: list[str]) -> float | None:
    """RMSE of each proxy's loss predicted by the law fitted to the others: the error to expect at a
    mixture the law has not seen. None when too few proxies are left to fit after leaving one out."""
    m = matrix.shape[1]
    if len(matrix) < m + 3:
        return None
    errors = []
    for i in range(len(matrix)):
        keep = np.arange(len(matrix)) != i
        if np.linalg.matrix_rank(matrix[keep]) < m:
            continue  # without this proxy one direction is unmeasured: the law cannot predict along it
        theta = _fit_mixing(matrix[keep], loss[keep])
        if theta is not None:
            pred = theta[0] + np.exp(theta[1] + matrix[i, :-1] @ theta[2:])
            errors.append(pred - loss[i])
    return float(np.sqrt(np.mean(np.square(errors)))) if errors else None


# ---- the recommended mixture ---------------------------------------------------------------------


@dataclass
class Recommendation:
    """The mixture that minimises the weighted mean of the predicted losses. `shares` are rounded to
    SHARE_DECIMALS and sum to 1; `predicted` and `objective` are the laws' values at those rounded shares."""

    shares: dict[str, float]
    predicted: dict[str, float]
    objective: float
    weights: dict[str, float] = field(default_factory=dict)  # normalised to sum to 1

    def to_json(self) -> dict:
        return {"shares": dict(self.shares), "predicted": dict(self.predicted), "objective": self.objective,
                "weights": dict(self.weights)}


def recommend_mixture(fits: Mapping[str, MixingLawFit], weights: Mapping[str, float], bounds: Mapping[str, tuple[float, float]],
                      starts: np.ndarray | None = None) -> Recommendation:
    """Minimise sum_i w_i L_i(r) over mixtures r with bounds[d][0] <= r_d <= bounds[d][1] and sum r = 1
    (SLSQP), from every row of `starts` (e.g. the proxies' mixtures) and the centre of the bounds, each
    moved to the nearest allowed mixture first; the best converged result wins. Give as bounds the
    lowest and highest share the proxies tried: the laws are not to be trusted beyond them."""
    domains = _common_domains(fits)
    w = _weights(weights, fits)
    lo, hi = _bounds(bounds, domains)
    used = [(fits[name], weight) for name, weight in w.items() if weight > 0]

    def objective(r: np.ndarray) -> float:
        return float(sum(weight * fit._raw(r[None, :])[0] for fit, weight in used))

    points = [] if starts is None else list(np.atleast_2d(np.asarray(starts, dtype=float)))
    points.append((lo + hi) / 2)
    best = None
    for point in points:
        if point.shape != (len(domains),) or not np.isfinite(point).all():
            raise UserError("mixture.starts", f"a start must have one share per domain ({len(domains)}), got {point.tolist()}",
                            "give starts as a (K, m) array in the domains' order")
        x0 = _project(point, lo, hi)
        result = minimize(objective, x0, method="SLSQP", bounds=list(zip(lo, hi, strict=True)), constraints=[SUM_TO_ONE],
                          options={"ftol": 1e-12, "maxiter": 500})
        x = _project(result.x, lo, hi)  # SLSQP's answer can sit a rounding error outside the bounds
        if best is None or objective(x) < objective(best):
            best = x
    shares = _round_shares(best, lo, hi)
    predicted = {name: float(fit._raw(shares[None, :])[0]) for name, fit in fits.items()}
    return Recommendation(shares={d: float(s) for d, s in zip(domains, shares, strict=True)}, predicted=predicted,
                          objective=float(sum(w[name] * predicted[name] for name in w)), weights=w)


def _common_domains(fits: Mapping[str, MixingLawFit]) -> list[str]:
    if not fits:
        raise UserError("mixture.fits", "no mixing law to optimise", "fit at least one domain's law first")
    orders = {tuple(fit.domains) for fit in fits.values()}
    if len(orders) > 1:
        raise UserError("mixture.fits", f"the laws were fitted over different domain orders: {sorted(orders)}",
                        "fit every domain's law on the same share matrix")
    return list(orders.pop())


def _weights(weights: Mapping[str, float], fits: Mapping[str, MixingLawFit]) -> dict[str, float]:
    unknown = sorted(set(weights) - set(fits))
    if unknown:
        raise UserError("mixture.weights", f"no fitted law for {unknown}", f"weight only the fitted domains {list(fits)}")
    values = {name: float(weights.get(name, 0.0)) for name in fits}
    total = sum(values.values())
    if any(not np.isfinite(v) or v < 0 for v in values.values()) or total <= 0:
        raise UserError("mixture.weights", f"weights must be non-negative with a positive sum, got {dict(weights)}",
                        "give each domain that matters a positive weight")
    return {name: v / total for name, v in values.items()}


def _bounds(bounds: Mapping[str, tuple[float, float]], domains: list[str]) -> tuple[np.ndarray, np.ndarray]:
    unknown = sorted(set(bounds) - set(domains))
    if unknown:
        raise UserError("mixture.bounds", f"unknown domain(s) {unknown}", f"bound only the mixture's domains {domains}")
    lo = np.array([float(bounds.get(d, (0.0, 1.0))[0]) for d in domains])
    hi = np.array([float(bounds.get(d, (0.0, 1.0))[1]) for d in domains])
    if (lo < 0).any() or (hi > 1).any() or (lo > hi).any():
        raise UserError("mixture.bounds", "every bound must be (low, high) with 0 <= low <= high <= 1", "fix the bounds")
    if lo.sum() > 1 + SHARE_TOLERANCE or hi.sum() < 1 - SHARE_TOLERANCE:
        raise UserError("mixture.bounds", f"no mixture fits the bounds: the lows sum to {lo.sum():.3f}, the highs to {hi.sum():.3f}",
                        "the lows must sum to at most 1 and the highs to at least 1")
    return lo, hi


def _project(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The allowed mixture nearest to x: clip(x - s, lo, hi) for the shift s that makes it sum to 1
    (the Euclidean projection onto the box cut by the simplex's plane)."""
    if lo.sum() >= 1 or hi.sum() <= 1:  # the bounds allow one mixture (up to the share tolerance)
        return lo.copy() if lo.sum() >= 1 else hi.copy()

    def excess(shift: float) -> float:
        return float(np.clip(x - shift, lo, hi).sum() - 1)

    shift = brentq(excess, float(np.min(x - hi)) - 1, float(np.max(x - lo)) + 1, xtol=1e-15)
    return np.clip(x - shift, lo, hi)


def _round_shares(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """x on a grid of 10^-SHARE_DECIMALS, summing to exactly 1 in grid units and within the bounds
    (rounded inwards): round down, then hand the units left over to the shares that lost most to
    rounding (largest remainder). x itself when the bounds leave no mixture on the grid."""
    unit = 10**SHARE_DECIMALS
    lo_u, hi_u = np.ceil(lo * unit - 1e-9), np.floor(hi * unit + 1e-9)
    if (lo_u > hi_u).any() or lo_u.sum() > unit or hi_u.sum() < unit:
        return x
    units = np.clip(np.floor(x * unit + 1e-9), lo_u, hi_u)
    while units.sum() != unit:
        remainder = x * unit - units
        if units.sum() < unit:
            i = np.argmax(np.where(units < hi_u, remainder, -np.inf))
            units[i] += 1
        else:
            i = np.argmin(np.where(units > lo_u, remainder, np.inf))
            units[i] -= 1
    return units / unit
