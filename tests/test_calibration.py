"""Calibration (geosdm.models.calibration): links, detection from repeat visits, calibrators on simulated data,
held-out folds on the small demo, persistence with the model and lazy application on the cube."""

from __future__ import annotations

import json
import warnings
from typing import Any

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geosdm.demo import DemoLayout
from geosdm.errors import InputError
from geosdm.evaluate import expected_calibration_error
from geosdm.models.calibration import (
    SpeciesCalibrator,
    apply_calibration,
    calibrate,
    cross_fitted,
    detection_probability,
    fit_calibrator,
    fit_held_out,
    held_out_predictions,
    intensity_to_probability,
    inverse_link,
    link_function,
    survey_sites,
)

COVARIATES = ["elevation", "bio01", "bio12", "lc_3", "s2_ndvi_jja"]


def _no_compute(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a lazy path computed")


# --------------------------------------------------------------------------------------------- pure maths


def test_links_and_intensity_to_probability() -> None:
    p = np.array([1e-6, 0.01, 0.3, 0.9, 0.999])
    for link in ("cloglog", "logit"):
        np.testing.assert_allclose(inverse_link(link_function(p, link), link), p, rtol=1e-9)
    # 0.5 records per 400 m² -> P(>= 1 in 400 m²) = 1 - exp(-0.5); in 800 m²: 1 - exp(-1)
    assert intensity_to_probability(0.5, area=400.0, area_unit=400.0) == pytest.approx(1 - np.exp(-0.5))
    assert intensity_to_probability(np.log(0.5), area=800.0, area_unit=400.0, log=True) == pytest.approx(1 - np.exp(-1))
    with pytest.raises(InputError, match="area"):
        intensity_to_probability(0.5, area=0.0)


def test_detection_probability_from_repeat_visits() -> None:
    # two visits: n1 plots detected once, n2 twice -> d = 2 n2 / (n1 + 2 n2); undetected plots carry no information
    assert detection_probability([2] * 6, [1, 1, 2, 2, 2, 0]) == pytest.approx(2 * 3 / (2 + 2 * 3), abs=1e-6)
    assert np.isnan(detection_probability([1, 1], [1, 0]))  # single visits: not identifiable
    assert detection_probability([2, 2], [2, 2]) == 1.0
    shrunk = detection_probability([2, 2], [1, 1], prior=(0.8, 10))
    assert detection_probability([2, 2], [1, 1]) < shrunk < 0.8
    rng = np.random.default_rng(0)
    v = rng.integers(2, 5, 4000)
    occupied = rng.uniform(size=v.size) < 0.4
    k = rng.binomial(v, 0.6) * occupied
    assert detection_probability(v, k) == pytest.approx(0.6, abs=0.02)


def _simulated(n: int = 6000, seed: int = 0, detect: float = 1.0) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Miscalibrated predictions of 3 species: raw = true ** 0.5 (too high, too flat)."""
    rng = np.random.default_rng(seed)
    true = rng.beta(0.8, 4.0, (n, 3))
    raw = pd.DataFrame(np.sqrt(true), columns=["a", "b", "c"])
    occ = rng.uniform(size=true.shape) < true
    obs = pd.DataFrame((occ & (rng.uniform(size=true.shape) < detect)).astype(float), columns=raw.columns)
    return raw, obs, true


@pytest.mark.parametrize("method", ["isotonic", "platt", "temperature"])
def test_calibrators_fix_a_known_miscalibration(method: str) -> None:
    raw, obs, true = _simulated()
    cal = fit_calibrator(raw, obs, method=method, link="cloglog")
    test_raw, _, test_true = _simulated(seed=1)
    p = cal.transform(test_raw.to_numpy(), axis=-1)
    before = expected_calibration_error(test_true.ravel(), test_raw.to_numpy().ravel())
    after = expected_calibration_error(test_true.ravel(), p.ravel())
    assert before > 0.15
    assert after < (0.03 if method != "temperature" else 0.08)
    assert np.all(np.diff(cal.transform_species(np.linspace(0, 1, 50), "a")) >= -1e-12)  # monotone
    assert cal.n_sites == {"a": 6000, "b": 6000, "c": 6000} and not cal.fallback


def test_detection_corrected_calibration_targets_occupancy() -> None:
    raw, obs, true = _simulated(n=20000, detect=0.6)  # one visit detects 60% of occupied plots
    visits = pd.DataFrame(1.0, index=raw.index, columns=raw.columns)
    delta = visits * 0.6
    cal = fit_calibrator(raw, obs, method="platt", detectability=delta, detection={"a": 0.6})
    naive = fit_calibrator(raw, obs, method="platt")
    p, q = cal.transform(raw.to_numpy()), naive.transform(raw.to_numpy())
    assert cal.target == "occupancy" and naive.target == "detection"
    assert abs(p.mean() - true.mean()) < 0.01
    assert q.mean() == pytest.approx(0.6 * true.mean(), abs=0.01)  # the probability of a detection instead


def test_fallback_json_roundtrip_and_apply() -> None:
    raw, obs, _ = _simulated(n=500)
    obs["c"] = 0.0
    obs.loc[:2, "c"] = 1.0  # 3 detections < min_presences: the shared map
    raw["d"], obs["d"] = 0.2, np.nan  # never surveyed: identity
    cal = fit_calibrator(raw, obs, method="isotonic", min_presences=5)
    assert cal.fallback == ["c"] and cal.params["d"] == {}
    back = SpeciesCalibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    x = np.random.default_rng(2).uniform(size=(7, 4))
    x[0, 0] = np.nan
    np.testing.assert_array_equal(back.transform(x), cal.transform(x))
    assert np.isnan(back.transform(x)[0, 0]) and back.transform(x)[1, 3] == x[1, 3]
    frame = pd.DataFrame(x, columns=list("abcd"))
    np.testing.assert_array_equal(apply_calibration(frame, cal).to_numpy(), cal.transform(x))
    da = xr.DataArray(x.T.reshape(4, 7, 1), dims=("species", "y", "x"), coords={"species": list("abcd")})
    np.testing.assert_allclose(apply_calibration(da.chunk({"y": 3}), cal).compute().values[:, :, 0], cal.transform(x).T)
    out = x.astype(np.float32).T.copy()
    cal.transform(out, axis=0, out=out)  # in place on a (species, n) float32 tile
    np.testing.assert_allclose(out, cal.transform(x).T, rtol=1e-6)
    with pytest.raises(InputError, match="layers"):
        cal.transform(x[:, :3])
    with pytest.raises(InputError, match="method"):
        fit_calibrator(raw, obs, method="beta")  # type: ignore[arg-type]


def test_survey_sites_groups_visits() -> None:
    rows = []
    for plot, fold in (("p1", 0), ("p2", 1)):
        for visit in (1, 2):
            for sp, val in (("a", 1.0 if plot == "p1" else 0.0), ("b", float(visit == 2))):
                rows.append({"species": sp, "x": 1.0, "y": 2.0, "crs": "EPSG:2154", "kind": "presence_absence",
                             "value": val, "plot_id": plot, "plot_area_m2": 400.0, "dataset": "s", "fold": fold,
                             "bio01": 3.0})
    rows.append({"species": "a", "x": 5.0, "y": 5.0, "kind": "presence_only", "value": 1.0, "fold": 0})
    sites = survey_sites(pd.DataFrame(rows))
    assert list(sites.visits.columns) == ["a", "b"] and len(sites.frame) == 2
    assert sites.visits.to_numpy().tolist() == [[2, 2], [2, 2]]
    assert sites.detections.to_numpy().tolist() == [[2, 1], [0, 1]]
    assert sites.observed.to_numpy().tolist() == [[1, 1], [0, 1]]
    assert sites.frame["area_m2"].tolist() == [400.0, 400.0] and sites.frame["fold"].tolist() == [0, 1]
    with pytest.raises(InputError, match="presence_absence"):
        survey_sites(pd.DataFrame(rows[-1:]))


# ------------------------------------------------------------------------------------- with a fitted model


@pytest.fixture(scope="module")
def cube(demo_small: DemoLayout) -> xr.Dataset:
    return xr.open_zarr(demo_small.truth_zarr)[COVARIATES].load()


@pytest.fixture(scope="module")
def table(demo_small: DemoLayout) -> pd.DataFrame:
    from geosdm.records import read_records, training_table

    recs = pd.concat([read_records(demo_small.presence_only_csv), read_records(demo_small.surveys_parquet)],
                     ignore_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return training_table(recs, str(demo_small.truth_zarr), n_background=300, block_size=1_500, seed=1,
                              variables=COVARIATES, max_missing=0.5).table


@pytest.fixture(scope="module")
def model(table: pd.DataFrame) -> Any:
    from geosdm.models import MultiSpeciesSDM

    return MultiSpeciesSDM(loss="integrated", epochs=2, hidden=16, val_size=0, seed=0).fit(table)


@pytest.fixture(scope="module")
def held(model: Any, table: pd.DataFrame) -> Any:
    return held_out_predictions(model, table)


def test_held_out_predictions_come_from_other_folds(model: Any, table: pd.DataFrame, held: Any) -> None:
    folds = sorted(table.loc[table.kind == "presence_absence", "fold"].unique())
    assert held.folds["fold"].tolist() == folds
    assert (held.folds["n_train_rows"] < len(table)).all()
    assert held.probability.shape == held.observed.shape and list(held.probability.columns) == model.species_
    assert held.probability.notna().all().all()
    assert held.presence["fold"].isin(folds).all() and set(held.background["fold"]) <= set(folds)
    # the site's own fold model, not the full model, predicted it: a prefit run gives other values
    pre = held_out_predictions(model, table, cv="prefit")
    assert not np.allclose(pre.probability.to_numpy(), held.probability.to_numpy())
    # prefit values are the model's probability over each plot's area
    X = pre.sites.frame
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = model.predict_proba(X, area=float(X["area_m2"].iloc[0]))
    np.testing.assert_allclose(pre.probability.to_numpy(), direct.to_numpy(), rtol=1e-5)
    with pytest.raises(InputError, match="fold"):
        held_out_predictions(model, table.drop(columns="fold"))


def test_calibrate_persists_and_applies_everywhere(model: Any, table: pd.DataFrame, held: Any, cube: xr.Dataset,
                                                   tmp_path: Any) -> None:
    from geosdm.models import MultiSpeciesSDM
    from geosdm.predict import model_fingerprint, open_predictions, predict, write_predictions

    cal = calibrate(model, method="platt", held_out=held)
    assert not hasattr(model, "calibrator_") and cal is not model
    assert cal.calibrator_.species == model.species_ and cal.calibrator_.target == "occupancy"
    assert model_fingerprint(cal) != model_fingerprint(model)
    pts = table[table.kind == "presence_absence"].head(50)
    raw = cal.predict_proba(pts, calibration=False)
    np.testing.assert_allclose(raw.to_numpy(), model.predict_proba(pts).to_numpy())
    p = cal.predict_proba(pts)
    np.testing.assert_allclose(p.to_numpy(), cal.calibrator_.transform(raw.to_numpy()), rtol=1e-9)
    loaded = MultiSpeciesSDM.load(cal.save(tmp_path / "model"))
    assert loaded.calibrator_.to_dict() == cal.calibrator_.to_dict()
    assert model_fingerprint(loaded) == model_fingerprint(cal)
    np.testing.assert_allclose(loaded.predict_proba(pts).to_numpy(), p.to_numpy(), rtol=1e-6)
    with dask.config.set(scheduler=_no_compute):
        lazy = predict(loaded, cube.chunk({"y": 32, "x": 32}), tile_shape=(32, 32), area=400.0)
    assert lazy.attrs["geosdm:calibration"] == "platt"
    eager = cal.predict_proba(cube, area=400.0)
    np.testing.assert_allclose(lazy.probability.compute().values, eager.values, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(predict(cal, cube, tile_shape=(32, 32), area=400.0, calibration=False)
                               .probability.values, model.predict_proba(cube, area=400.0).values, rtol=1e-5, atol=1e-7)
    store = str(tmp_path / "p.zarr")
    write_predictions(loaded, cube, store, tile_shape=(32, 32), area=400.0)  # uint8, packed after calibration
    back = open_predictions(store).probability.values
    np.testing.assert_allclose(back, eager.values, atol=0.5 / 250 + 1e-6)


def test_calibrate_refits_and_errors(model: Any, table: pd.DataFrame) -> None:
    from geosdm.models import MultiSpeciesSDM

    unfitted = MultiSpeciesSDM(loss="integrated", epochs=1, hidden=8, val_size=0, seed=0)
    cal = calibrate(unfitted, table, method="isotonic", detection="none")
    assert hasattr(cal, "network_") and not hasattr(unfitted, "network_")
    assert cal.calibrator_.target == "detection" and cal.calibrator_.detection == {}
    with pytest.raises(InputError, match="presence_absence"):
        calibrate(model, table[table.kind != "presence_absence"])
    one_fold = table.assign(fold=0)
    with pytest.raises(InputError, match="at least 2 folds"):
        calibrate(model, one_fold)
    with pytest.raises(InputError, match="method"):
        calibrate(model, table, method="beta")  # type: ignore[arg-type]


def test_cross_fitting_and_auto_method(model: Any, held: Any) -> None:
    cal, det = cross_fitted(held, method="platt")
    fold = held.fold.to_numpy()
    k = sorted(set(fold))[0]
    other = fit_held_out(held, method="platt", rows=fold != k)  # fold k is calibrated by the other folds only
    np.testing.assert_allclose(cal[fold == k].to_numpy(), other.transform(held.probability[fold == k].to_numpy()))
    delta = held.sites.detectability(other.detection).to_numpy()[fold == k]
    np.testing.assert_allclose(det[fold == k].to_numpy(), cal[fold == k].to_numpy() * delta)
    auto = calibrate(model, method="auto", held_out=held)
    scores = auto.calibrator_.selection
    assert set(scores) == {"platt", "isotonic", "temperature"}
    assert auto.calibrator_.method == min(scores, key=scores.__getitem__)
    assert SpeciesCalibrator.from_dict(auto.calibrator_.to_dict()).selection == scores
