"""Uncertainty layers (geosdm.predict.uncertainty): ensemble members and MC dropout -> lazy mean/sd/quantiles,
written by the one layer writer."""

from __future__ import annotations

import warnings
from typing import Any

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geosdm.demo import DemoLayout
from geosdm.errors import InputError
from geosdm.predict.uncertainty import predict_uncertainty, quantile_name, write_uncertainty

COVARIATES = ["elevation", "bio01", "bio12", "lc_3", "s2_ndvi_jja"]
TILE = (32, 32)


def _no_compute(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a lazy path computed")


@pytest.fixture(scope="module")
def cube(demo_small: DemoLayout) -> xr.Dataset:
    ds = xr.open_zarr(demo_small.truth_zarr)[COVARIATES].load()
    for v in COVARIATES:
        ds[v][:10, :10] = np.nan  # a nodata corner
    return ds


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
def ensemble(table: pd.DataFrame) -> Any:
    from geosdm.models import MultiSpeciesSDM

    return MultiSpeciesSDM(loss="integrated", epochs=2, hidden=16, val_size=0, n_members=3, dropout=0.3,
                           seed=0).fit(table)


def test_quantile_names() -> None:
    assert [quantile_name(q) for q in (0.05, 0.5, 0.95, 0.025)] == ["q05", "q50", "q95", "q2p5"]


def test_ensemble_layers_are_lazy_and_match_members(ensemble: Any, cube: xr.Dataset) -> None:
    with dask.config.set(scheduler=_no_compute):
        out = predict_uncertainty(ensemble, cube, tile_shape=TILE, area=400.0, quantiles=(0.05, 0.5, 0.95))
    assert list(out.data_vars) == ["mean", "sd", "q05", "q50", "q95"]
    assert out["sd"].chunks == ((len(ensemble.species_),), (32, 32, 32, 4), (32, 32, 32, 4))
    graph = dict(out.__dask_graph__())
    assert len([k for k in graph if str(k).startswith("geosdm-model-")]) == 1
    assert out.attrs["geosdm:samples"] == 3 and out.odc.geobox is not None
    v = out.compute()
    # reference: each member's probability at a few cells, from the public predict_members
    cells = cube.isel(y=[20, 50, 99], x=[15, 60, 99]).to_dataframe()[COVARIATES]
    f = ensemble.predict_members(cells)  # (members, n, species)
    p = -np.expm1(-np.exp(f + np.log(400.0 / ensemble.area_unit_m2_)))
    got = v.isel(y=[20, 50, 99], x=[15, 60, 99])
    for name, ref in (("mean", p.mean(0)), ("sd", p.std(0)), ("q50", np.median(p, 0)),
                      ("q05", np.quantile(p, 0.05, axis=0))):
        arr = got[name].transpose("y", "x", "species").values.reshape(-1, len(ensemble.species_))
        np.testing.assert_allclose(arr, ref, rtol=1e-4, atol=1e-6)
    assert np.isnan(v["mean"].values[:, :10, :10]).all() and np.isfinite(v["mean"].values[:, 10:, 10:]).all()
    ok = np.isfinite(v["q05"].values)
    assert (v["q05"].values[ok] <= v["q50"].values[ok] + 1e-7).all()
    assert (v["q50"].values[ok] <= v["q95"].values[ok] + 1e-7).all()
    assert (v["sd"].values[ok] >= 0).all()


def test_mc_dropout_is_seeded_per_tile(ensemble: Any, cube: xr.Dataset) -> None:
    a = predict_uncertainty(ensemble, cube, tile_shape=TILE, mc_dropout=4, seed=1).compute()
    b = predict_uncertainty(ensemble, cube, tile_shape=TILE, mc_dropout=4, seed=1).compute()
    c = predict_uncertainty(ensemble, cube, tile_shape=TILE, mc_dropout=4, seed=2).compute()
    members = predict_uncertainty(ensemble, cube, tile_shape=TILE).compute()
    assert a.attrs["geosdm:samples"] == 12
    xr.testing.assert_identical(a, b)
    assert not np.allclose(a["sd"].values, c["sd"].values, equal_nan=True)
    assert np.nanmean(a["sd"].values) > np.nanmean(members["sd"].values)  # dropout adds spread
    # the two 32 x 32 tiles in a row draw different masks (seed combined with the tile position)
    assert not np.allclose(a["sd"].values[:, 40:72, :32], a["sd"].values[:, 40:72, 32:64])


def test_errors_name_the_fix(table: pd.DataFrame, cube: xr.Dataset, ensemble: Any) -> None:
    from geosdm.models import MultiSpeciesSDM

    single = MultiSpeciesSDM(loss="integrated", epochs=1, hidden=8, val_size=0, seed=0).fit(table)
    with pytest.raises(InputError, match="n_members >= 2"):
        predict_uncertainty(single, cube)
    with pytest.raises(InputError, match="dropout > 0"):
        predict_uncertainty(single, cube, mc_dropout=5)
    with pytest.raises(InputError, match=r"\(0, 1\)"):
        predict_uncertainty(ensemble, cube, quantiles=(0.05, 1.0))


def test_calibrated_samples_and_written_layers(ensemble: Any, table: pd.DataFrame, cube: xr.Dataset,
                                               tmp_path: Any) -> None:
    from geosdm.io import open_layers
    from geosdm.models.calibration import calibrate

    cal = calibrate(ensemble, table, method="platt")
    raw = predict_uncertainty(cal, cube, tile_shape=TILE, calibration=False, quantiles=(0.5,)).compute()
    out = predict_uncertainty(cal, cube, tile_shape=TILE, quantiles=(0.5,), intervals="samples").compute()
    assert out.attrs["geosdm:calibration"] == "platt" and raw.attrs["geosdm:calibration"] == "none"
    # the calibrator is monotone, so the median of calibrated samples is the calibrated median (odd sample count)
    med = cal.calibrator_.transform(raw["q50"].values, axis=0)
    np.testing.assert_allclose(out["q50"].values, med, rtol=1e-4, atol=1e-6)
    path = str(tmp_path / "uncertainty.zarr")
    rep = write_uncertainty(cal, cube, path, tile_shape=TILE, quantiles=(0.5,), intervals="samples")
    assert rep.n_tiles == 16 and rep.layers == 3 * len(cal.species_)
    back = open_layers(path)
    assert back["mean"].encoding["dtype"] == np.uint8 and back["sd"].encoding["dtype"] == np.float16
    np.testing.assert_allclose(back["mean"].values, out["mean"].values, atol=0.5 / 250 + 1e-6)
    np.testing.assert_allclose(back["sd"].values, out["sd"].values, rtol=2e-3, atol=1e-4)
    again = write_uncertainty(cal, cube, path, tile_shape=TILE, quantiles=(0.5,),  # resumes: nothing to do
                              intervals="samples")
    assert again.n_resumed == 16


def test_interval_model_layers(ensemble: Any, table: pd.DataFrame, cube: xr.Dataset, tmp_path: Any) -> None:
    """A calibrated model carries the Beta interval model fitted on neighbouring held-out plots; its layers are
    the true probability's spread around the mean, lazily, rounded outward, written and resumed like the rest."""
    from geosdm.io import open_layers
    from geosdm.models import MultiSpeciesSDM
    from geosdm.models.calibration import calibrate
    from geosdm.models.intervals import ErrorModel

    cal = calibrate(ensemble, table, method="platt")
    if cal.calibrator_.error is None:  # the small demo's surveys may lack neighbours: give it one to test with
        cal.calibrator_.error = ErrorModel(10.0)
    em = cal.calibrator_.error
    again = MultiSpeciesSDM.load(cal.save(tmp_path / "model"))
    assert again.calibrator_.error.to_dict() == em.to_dict()
    with dask.config.set(scheduler=_no_compute):
        lazy = predict_uncertainty(cal, cube, tile_shape=TILE)  # auto: the interval model
    assert lazy.attrs["geosdm:intervals"] == "model" and lazy.attrs["geosdm:error_model"] == em.to_dict()
    out = lazy.compute()
    samples = predict_uncertainty(cal, cube, tile_shape=TILE, intervals="samples").compute()
    np.testing.assert_allclose(out["mean"].values, samples["mean"].values, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out["sd"].values, em.sd(out["mean"].values), rtol=1e-5, atol=1e-7)
    lo, hi = em.interval(out["mean"].values)
    np.testing.assert_allclose(out["q05"].values, lo, atol=1e-6)
    np.testing.assert_allclose(out["q95"].values, hi, atol=1e-6)
    assert np.isnan(out["q95"].values[:, :10, :10]).all()  # nodata stays nodata
    assert "Beta error model" in out["q95"].attrs["long_name"]
    path = str(tmp_path / "intervals.zarr")
    write_uncertainty(cal, cube, path, tile_shape=TILE)
    back = open_layers(path)
    np.testing.assert_allclose(back["q95"].values, out["q95"].values, atol=1e-6, equal_nan=True)
    with pytest.raises(InputError, match="intervals='model'"):
        predict_uncertainty(ensemble, cube, intervals="model")
    single = MultiSpeciesSDM(loss="integrated", epochs=1, hidden=8, val_size=0, seed=0).fit(table)
    single.calibrator_ = cal.calibrator_  # one network: the interval model still gives an interval
    assert predict_uncertainty(single, cube, tile_shape=TILE).attrs["geosdm:samples"] == 1
