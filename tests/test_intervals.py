"""The Beta interval model of calibrated probabilities (geosdm.models.intervals)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta

from geosdm.errors import InputError
from geosdm.models.intervals import ErrorModel, error_model_from_surveys, outward


def test_quantiles_match_the_beta_distribution() -> None:
    em = ErrorModel(8.0)
    p = np.array([1e-4, 0.01, 0.2, 0.5, 0.9, 0.999])
    for u in (0.05, 0.5, 0.95):
        exact = beta.ppf(u, p * 8, (1 - p) * 8)
        np.testing.assert_allclose(em.ppf(p, u), exact, rtol=5e-3, atol=1e-7)
        np.testing.assert_allclose(em.ppf(p, np.full(p.shape, u)), exact, rtol=5e-3, atol=1e-7)
    np.testing.assert_allclose(em.sd(p), np.sqrt(p * (1 - p) / 9))
    assert np.isnan(em.ppf(np.array([np.nan]), 0.9)).all()


def test_intervals_are_rounded_outward_to_the_storage_step() -> None:
    lo, hi = outward(np.array([0.0, 0.0041, 0.5]), np.array([1e-30, 0.0041, 0.5]))
    np.testing.assert_allclose(lo, [0.0, 0.004, 0.5])
    np.testing.assert_allclose(hi, [0.004, 0.008, 0.5])
    em = ErrorModel(20.0)
    p = np.random.default_rng(0).uniform(0, 1, 1000)
    lo, hi = em.interval(p)
    raw_lo, raw_hi = em.interval(p, step=None)
    assert (lo <= raw_lo + 1e-12).all() and (hi >= raw_hi - 1e-12).all()
    assert np.allclose(np.round(lo * 250), lo * 250) and np.allclose(np.round(hi * 250), hi * 250)
    q05, q50, q95 = em.quantiles(p, [0.05, 0.5, 0.95])
    assert np.array_equal(q05, lo) and np.array_equal(q95, hi) and (q05 <= q50).all() and (q50 <= q95).all()


def test_json_round_trip_and_bad_precision() -> None:
    em = ErrorModel(12.5, 0.004, 210, 8000, 1650.0, (9.0, 18.0))
    again = ErrorModel.from_dict(em.to_dict())
    assert again.to_dict() == em.to_dict()
    with pytest.raises(InputError, match="precision"):
        ErrorModel(0.0)
    with pytest.raises(InputError, match="kind"):
        ErrorModel.from_dict({"kind": "gaussian", "precision": 3})


def _surveys(phi: float, detect: float, n_pairs: int = 600, n_species: int = 30, seed: int = 0):
    """Plots in close pairs (the two share one true probability, drawn around the map's p by the Beta model);
    pairs far apart. Occupancy per plot, detection per visit (2 visits)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1e6, (n_pairs, 2))
    xy = np.concatenate([centres, centres + rng.normal(0, 50, centres.shape)])
    p_map = rng.beta(0.6, 3.0, (n_pairs, n_species))
    p_true = rng.beta(p_map * phi, (1 - p_map) * phi)
    p_map, p_true = np.concatenate([p_map, p_map]), np.concatenate([p_true, p_true])
    z = rng.uniform(size=p_true.shape) < p_true
    D = 1 - (1 - detect) ** 2
    observed = (z & (rng.uniform(size=z.shape) < D)).astype(float)
    return xy, observed, p_map, D


@pytest.mark.parametrize("phi", [5.0, 20.0])
def test_the_precision_is_recovered_from_neighbouring_plots(phi: float) -> None:
    xy, observed, p_map, D = _surveys(phi, detect=0.7)
    em = error_model_from_surveys(xy, observed, p_map, D)
    assert em.n_pairs >= 500 and em.precision_range[0] <= phi <= em.precision_range[1]
    assert abs(np.log(em.precision / phi)) < np.log(1.6)


def test_the_intervals_cover_the_truth_they_were_fitted_without() -> None:
    xy, observed, p_map, D = _surveys(8.0, detect=0.8, seed=1)
    em = error_model_from_surveys(xy, observed, p_map, D)
    rng = np.random.default_rng(5)  # new cells of the same world
    p = rng.beta(0.6, 3.0, 200_000)
    truth = rng.beta(p * 8.0, (1 - p) * 8.0)
    lo, hi = em.interval(p, 0.9)
    assert 0.85 <= ((truth >= lo) & (truth <= hi)).mean() <= 0.97


def test_too_few_neighbouring_plots_is_a_clear_error() -> None:
    xy, observed, p_map, D = _surveys(8.0, detect=0.8, n_pairs=10)
    with pytest.raises(InputError, match="neighbouring"):
        error_model_from_surveys(xy, observed, p_map, D)
