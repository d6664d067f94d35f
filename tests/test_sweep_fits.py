"""smolrecipe.sweeps.fits and .plots on synthetic sweeps drawn from known laws: the laws come back, forecasts and
recommendations land where the true law says, and bad input is refused with the field named."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smolrecipe.errors import UserError
from smolrecipe.sweeps.fits import _round_shares, fit_mixing_law, fit_mixing_laws, fit_scaling, recommend_mixture
from smolrecipe.sweeps.plots import plot_mixture, plot_scaling

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# ---- scaling laws --------------------------------------------------------------------------------

POWER_N = np.geomspace(1e4, 1e6, 6)


def power(n, a=30.0, alpha=0.25):
    return a * np.asarray(n, dtype=float) ** -alpha


def chinchilla(n, d, e=1.7, a=400.0, alpha=0.34, b=410.0, beta=0.28):
    return e + a / np.asarray(n, dtype=float) ** alpha + b / np.asarray(d, dtype=float) ** beta


def chinchilla_grid():
    n, d = np.meshgrid(np.geomspace(1e6, 1e8, 3), np.geomspace(1e8, 1e10, 3))
    return n.ravel(), d.ravel()


def test_power_law_recovers_the_exponent_and_forecasts_inside_its_band():
    noise = np.exp(np.random.default_rng(0).normal(0, 0.005, POWER_N.size))  # 0.5% run-to-run noise
    fit = fit_scaling(POWER_N, power(POWER_N) * noise, bootstrap=500)
    assert fit.law == "power" and fit.points == 6 and fit.bootstrap == 500
    assert abs(fit.params["alpha"] - 0.25) < 0.01
    truth = power(1e7)
    forecast = fit.forecast(1e7, level=0.9)
    assert abs(forecast.value / truth - 1) < 0.02
    assert forecast.low < truth < forecast.high
    assert forecast.low < forecast.value < forecast.high
    assert forecast.high - forecast.low < 0.1 * truth  # a band, not the whole axis


def test_power_law_on_exact_points_has_no_band():
    fit = fit_scaling(POWER_N, power(POWER_N), bootstrap=100, seed=3)
    forecast = fit.forecast(1e7)
    assert forecast.value == pytest.approx(power(1e7), rel=1e-9)
    assert forecast.high - forecast.low < 1e-9
    assert fit.predict(POWER_N) == pytest.approx(power(POWER_N), rel=1e-9)
    assert isinstance(fit.predict(1e5), float)


def test_bootstrap_is_seeded():
    loss = power(POWER_N) * np.exp(np.random.default_rng(1).normal(0, 0.01, POWER_N.size))
    a, b, c = (fit_scaling(POWER_N, loss, bootstrap=200, seed=s).forecast(1e7) for s in (5, 5, 6))
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)


def test_saturating_law_recovers_the_exponent():
    n = np.geomspace(1e4, 1e7, 6)
    fit = fit_scaling(n, 1.5 + 40 * n**-0.3, law="saturating", bootstrap=100)
    assert abs(fit.params["alpha"] - 0.3) < 0.05
    assert 0 <= fit.params["E"] < 1.5 + 40 * n.max() ** -0.3
    assert fit.to_json()["formula"] == "L = E + A * N^-alpha"


def test_chinchilla_recovers_both_exponents_and_predicts_a_held_out_run():
    n, d = chinchilla_grid()
    fit = fit_scaling(n, chinchilla(n, d), d=d, bootstrap=100)  # auto: D varies
    assert fit.law == "chinchilla"
    assert abs(fit.params["alpha"] - 0.34) < 0.05 and abs(fit.params["beta"] - 0.28) < 0.05
    held_out = (3e8, 3e10)
    assert fit.predict(*held_out) == pytest.approx(chinchilla(*held_out), rel=0.01)
    forecast = fit.forecast(*held_out)
    assert forecast.low <= forecast.value <= forecast.high
    doc = fit.to_json()
    assert set(doc["params"]) == {"E", "A", "alpha", "B", "beta"} and doc["points"] == 9 and doc["bootstrap"] == fit.bootstrap > 0


def test_chinchilla_with_noise_keeps_the_truth_in_a_finite_band():
    n, d = chinchilla_grid()
    loss = chinchilla(n, d) * np.exp(np.random.default_rng(2).normal(0, 0.003, n.size))
    forecast = fit_scaling(n, loss, d=d, bootstrap=300).forecast(3e8, 3e10)
    truth = chinchilla(3e8, 3e10)
    assert abs(forecast.value / truth - 1) < 0.02
    assert forecast.low < truth < forecast.high < 1.1 * truth


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        (([1e4], [3.0]), {}, "points"),  # one point cannot make a line
        (([1e4, 1e5, 1e6], [3.0, 2.0]), {}, "points"),  # lengths differ
        (([1e4, 1e5, 1e6], [3.0, 2.0, 1.5]), {"d": [1e8, 1e8]}, "points"),
        (([1e4, 0.0, 1e6], [3.0, 2.0, 1.5]), {}, "points.n"),
        (([1e4, 1e5, 1e6], [3.0, -2.0, 1.5]), {}, "points.loss"),
        (([1e4, 1e5, 1e6], [3.0, float("nan"), 1.5]), {}, "points.loss"),
        (([1e4, 1e5, 1e6], [3.0, 2.0, 1.5]), {"d": [1e8, 0, 1e8]}, "points.d"),
        (([1e4, 1e5, 1e6], [3.0, 2.0, 1.5]), {"law": "quadratic"}, "fit.law"),
        (([1e4, 1e5, 1e6], [3.0, 2.0, 1.5]), {"law": "saturating"}, "points"),  # needs 4 points
        (([1e4, 1e5, 1e6], [3.0, 2.0, 1.5]), {"law": "chinchilla"}, "points.d"),  # no D at all
        (([1e4, 1e5, 1e6], [3.0, 2.0, 1.5]), {"law": "power", "d": [1e8, 1e9, 1e8]}, "points.d"),  # D varies
        (([1e4, 1e5, 1e4, 1e5], [3.0, 2.0, 2.5, 1.8]), {"d": [1e8, 1e8, 1e9, 1e9]}, "points"),  # chinchilla: 4 < 5 points
        (([1e4, 1e5, 1e4, 1e5, 1e5], [3.0, 2.0, 2.5, 1.8, 1.8]), {"d": [1e8, 1e8, 1e9, 1e9, 1e9]}, "points"),  # a repeat
    ],
)
def test_bad_scaling_input_names_the_field(args, kwargs, field):
    with pytest.raises(UserError) as err:
        fit_scaling(*args, bootstrap=10, **kwargs)
    assert err.value.field == field
    assert err.value.fix


def test_chinchilla_prediction_needs_d():
    n, d = chinchilla_grid()
    fit = fit_scaling(n, chinchilla(n, d), d=d, bootstrap=0)
    assert fit.bootstrap == 0
    with pytest.raises(UserError) as err:
        fit.forecast(1e9)
    assert err.value.field == "forecast.d"
    forecast = fit.forecast(1e9, 1e11)  # no refits: no band, said so by bootstrap == 0
    assert forecast.low == forecast.value == forecast.high


# ---- mixing laws ---------------------------------------------------------------------------------

DOMAINS = ["web", "code", "math"]
C = np.array([2.0, 1.2, 1.5])
K = np.array([1.0, 0.8, 1.2])
T = np.array([[-3.0, 0.5, 0.3], [0.4, -4.0, 0.6], [0.2, 0.8, -2.5]])  # each domain's loss falls with its own share
BOUNDS = {d: (0.1, 0.7) for d in DOMAINS}


def true_losses(shares: np.ndarray) -> np.ndarray:
    """Ye et al.'s law with a t for every domain (the fit fixes one of them): (P, m) shares -> (P, domains) losses."""
    return C + K * np.exp(np.atleast_2d(shares) @ T.T)


def proxy_shares(count: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet([3.0, 3.0, 3.0], count)


def fitted(shares: np.ndarray):
    losses = true_losses(shares)
    return fit_mixing_laws(shares, {d: losses[:, i] for i, d in enumerate(DOMAINS)}, DOMAINS)


def brute_force_optimum(weights: np.ndarray, bounds: dict[str, tuple[float, float]], step: float = 0.002) -> np.ndarray:
    """The true law's best mixture on a grid of the simplex: independent of the fit and the optimiser."""
    g = np.arange(0, 1 + step / 2, step)
    a, b = (x.ravel() for x in np.meshgrid(g, g))
    grid = np.column_stack([a, b, 1 - a - b])
    lo, hi = (np.array([bounds[d][i] for d in DOMAINS]) for i in (0, 1))
    grid = grid[((grid >= lo - 1e-12) & (grid <= hi + 1e-12)).all(axis=1)]
    return grid[np.argmin(true_losses(grid) @ (weights / weights.sum()))]


def test_mixing_laws_predict_unseen_mixtures():
    fits = fitted(proxy_shares())
    unseen = proxy_shares(5, seed=1)
    predicted = np.column_stack([fits[d].predict(unseen) for d in DOMAINS])
    assert np.abs(predicted / true_losses(unseen) - 1).max() < 0.01
    for fit in fits.values():
        assert fit.rmse < 1e-6 and fit.loo_rmse is not None and fit.loo_rmse < 1e-3
        assert fit.params["t_math"] == 0.0  # the reference domain
        assert 0 <= fit.params["c"]
    one = {"web": 0.5, "code": 0.2, "math": 0.3}
    assert fits["code"].predict(one) == pytest.approx(true_losses(np.array(list(one.values())))[0, 1], rel=0.01)


def test_mixing_law_with_too_few_proxies_says_how_many():
    shares = proxy_shares(4)
    with pytest.raises(UserError) as err:
        fit_mixing_law(shares, true_losses(shares)[:, 0], "web", DOMAINS)
    assert err.value.field == "mixtures" and "5" in err.value.problem and "1 more" in err.value.fix
    five = proxy_shares(5)
    assert fit_mixing_law(five, true_losses(five)[:, 0], "web", DOMAINS).loo_rmse is None  # no proxy to spare


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s, loss: (s[:, :2], loss), "mixtures.shares"),  # a domain's column missing
        (lambda s, loss: (s * 1.1, loss), "mixtures.shares"),  # rows do not sum to 1
        (lambda s, loss: (s, loss[:-1]), "mixtures.loss.web"),
        (lambda s, loss: (s, np.where(np.arange(len(loss)) == 2, 0.0, loss)), "mixtures.loss.web"),
        (lambda s, loss: (np.tile(s[:1], (len(s), 1)), loss), "mixtures"),  # every proxy the same mixture
    ],
)
def test_bad_mixture_input_names_the_field(change, field):
    shares = proxy_shares()
    with pytest.raises(UserError) as err:
        fit_mixing_law(*change(shares, true_losses(shares)[:, 0]), "web", DOMAINS)
    assert err.value.field == field


def test_recommendation_finds_the_true_optimum_inside_the_bounds():
    shares = proxy_shares()
    weights = {"web": 1.0, "code": 2.0, "math": 1.0}
    rec = recommend_mixture(fitted(shares), weights, BOUNDS, starts=shares)
    best = brute_force_optimum(np.array([weights[d] for d in DOMAINS]), BOUNDS)
    assert ((best > 0.1 + 0.01) & (best < 0.7 - 0.01)).all()  # interior: the bounds do not decide it
    assert np.abs(np.array([rec.shares[d] for d in DOMAINS]) - best).max() < 0.02
    assert math.fsum(rec.shares.values()) == 1.0
    assert all(round(s, 3) == s for s in rec.shares.values())
    assert rec.weights == pytest.approx({"web": 0.25, "code": 0.5, "math": 0.25})
    truth = true_losses(np.array([[rec.shares[d] for d in DOMAINS]]))[0]
    assert rec.predicted == pytest.approx(dict(zip(DOMAINS, truth, strict=True)), rel=1e-3)
    assert rec.objective == pytest.approx(0.25 * truth[0] + 0.5 * truth[1] + 0.25 * truth[2], rel=1e-3)


def test_recommendation_respects_binding_bounds():
    shares = proxy_shares()
    bounds = {"web": (0.1, 0.7), "code": (0.05, 0.15), "math": (0.3, 0.7)}  # code wants more than 0.15
    rec = recommend_mixture(fitted(shares), {"code": 1.0}, bounds, starts=shares)
    for d, (lo, hi) in bounds.items():
        assert lo <= rec.shares[d] <= hi
    assert rec.shares["code"] == 0.15
    best = brute_force_optimum(np.array([0.0, 1.0, 0.0]), bounds)
    assert np.abs(np.array([rec.shares[d] for d in DOMAINS]) - best).max() < 0.02
    assert math.fsum(rec.shares.values()) == 1.0


def test_rounded_shares_sum_to_one_and_stay_inside_the_bounds():
    thirds = _round_shares(np.full(3, 1 / 3), np.zeros(3), np.ones(3))  # plain rounding gives 0.999
    assert sorted(thirds.tolist()) == [0.333, 0.333, 0.334] and math.fsum(thirds) == 1.0
    lo, hi = np.array([0.1234, 0.0, 0.0]), np.array([1.0, 0.3331, 1.0])
    shares = _round_shares(np.array([0.1234, 0.3339, 0.5427]), lo, hi)
    # web rounds up to its bound; the unit left over goes to math, as code (larger remainder) is at its bound
    assert shares.tolist() == [0.124, 0.333, 0.543] and math.fsum(shares) == 1.0


@pytest.mark.parametrize(
    ("weights", "bounds", "field"),
    [
        ({"web": 1.0, "books": 1.0}, BOUNDS, "mixture.weights"),
        ({"web": 0.0}, BOUNDS, "mixture.weights"),
        ({"web": 1.0}, {d: (0.4, 0.7) for d in DOMAINS}, "mixture.bounds"),  # lows sum past 1
        ({"web": 1.0}, {"web": (0.5, 0.2)}, "mixture.bounds"),
    ],
)
def test_bad_recommendation_input_names_the_field(weights, bounds, field):
    with pytest.raises(UserError) as err:
        recommend_mixture(fitted(proxy_shares()), weights, bounds)
    assert err.value.field == field


# ---- plots ---------------------------------------------------------------------------------------


def test_plot_scaling_writes_pngs(tmp_path):
    loss = power(POWER_N) * np.exp(np.random.default_rng(0).normal(0, 0.005, POWER_N.size))
    fit = fit_scaling(POWER_N, loss, bootstrap=100)
    out = plot_scaling(tmp_path / "scaling.png", POWER_N, loss, fit, forecast_n=1e7, forecast=fit.forecast(1e7),
                       measured=float(power(1e7)), labels=[f"s{i}" for i in range(POWER_N.size)], title="power")
    assert out.read_bytes().startswith(PNG_SIGNATURE) and out.stat().st_size > 10_000
    n, d = chinchilla_grid()
    fit = fit_scaling(n, chinchilla(n, d), d=d, bootstrap=50)
    out = plot_scaling(tmp_path / "sub" / "chinchilla.png", n, chinchilla(n, d), fit, d=d, forecast_n=3e8,
                       forecast=fit.forecast(3e8, 3e10), forecast_d=3e10)
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["chinchilla.png", "scaling.png", "sub"]  # no temporary left


def test_plot_mixture_writes_a_png(tmp_path):
    shares = proxy_shares()
    losses = true_losses(shares)
    fits = fitted(shares)
    rec = recommend_mixture(fits, dict.fromkeys(DOMAINS, 1.0), BOUNDS, starts=shares)
    proxies = [{"name": f"p{i}", "shares": dict(zip(DOMAINS, row, strict=True)), "loss": dict(zip(DOMAINS, loss, strict=True))}
               for i, (row, loss) in enumerate(zip(shares, losses, strict=True))]
    measured = dict(zip(DOMAINS, true_losses(np.array([list(rec.shares.values())]))[0], strict=True))
    out = plot_mixture(tmp_path / "mixture.png", DOMAINS, proxies, fits, rec, measured=measured, title="mix")
    assert out.read_bytes().startswith(PNG_SIGNATURE) and out.stat().st_size > 10_000
