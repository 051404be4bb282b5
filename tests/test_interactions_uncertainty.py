"""Uncertainty of interaction maps by joint samples: laziness, seeds, the copula, coverage, the pipeline step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords
from scipy import special

from geosdm.demo import DemoLayout
from geosdm.errors import InputError
from geosdm.interactions import (
    Associations,
    InteractionsConfig,
    association_samples,
    interaction_uncertainty,
    layer_dtypes,
    network_from_frames,
    run_interactions,
)
from geosdm.interactions.layers import _prepare, _tile
from geosdm.io import open_layers, write_layers
from geosdm.models.intervals import ErrorModel, error_model_from_surveys


def _no_compute(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a lazy path computed")


def _cube(probs: dict[str, np.ndarray], chunks: int | None = None) -> xr.DataArray:
    shape = next(iter(probs.values())).shape
    gbox = GeoBox.from_bbox((0, 0, shape[1] * 100, shape[0] * 100), "EPSG:2154", resolution=100)
    da_ = xr.DataArray(np.stack(list(probs.values())).astype(np.float32), dims=("species", "y", "x"),
                       coords={"species": list(probs), **xr_coords(gbox, crs_coord_name="spatial_ref")})
    return da_.chunk({"species": -1, "y": chunks, "x": chunks}) if chunks else da_


def _error(phi: float, species: list[str], rho: float) -> ErrorModel:
    r = np.full((len(species), len(species)), rho)
    np.fill_diagonal(r, 1.0)
    return ErrorModel(phi, correlation=r, correlation_species=tuple(species))


NET = network_from_frames(pd.DataFrame({"source": ["h", "h", "k"], "target": ["k", "m", "x"]}),
                          pd.DataFrame({"species": ["h", "k", "m", "x"], "role": ["plant", "pest", "pest", "enemy"]}))


def test_uncertainty_is_lazy_tile_chunked_and_named() -> None:
    rng = np.random.default_rng(2)
    cube = _cube({s: rng.uniform(0, 1, (20, 30)) for s in ("h", "k", "m", "x")}, chunks=8)
    with dask.config.set(scheduler=_no_compute):
        out = interaction_uncertainty(cube, NET, error=_error(10.0, ["h", "k", "m", "x"], 0.5), n_samples=8,
                                      sets={"s": ["h->k", "k->x"]})
    for layer in ("joint", "enemy_any", "enemy_expected", "pest_any", "set_all", "set_any"):
        for st in ("mean", "sd", "q05", "q50", "q95", "width"):
            v = out[f"{layer}_{st}"]
            assert v.attrs["geosdm:layer"] == layer and v.attrs["geosdm:stat"] == st
            assert v.chunks[0] == (v.shape[0],) and v.chunks[1] == (8, 8, 4) and v.chunks[2] == (8, 8, 8, 6)
    assert out.joint_mean.dims == ("edge", "y", "x") and list(out.edge.values) == ["h->k", "h->m", "k->x"]
    assert out.odc.geobox == cube.odc.geobox and "spatial_ref" in out.coords
    assert out.attrs["geosdm:samples"] == "model" and out.attrs["geosdm:copula"] == "correlated"
    graph = out.joint_q05.data.__dask_graph__()
    task = next(k for k in graph.layers if str(k).startswith("geosdm-interaction-uncertainty"))
    assert len(graph.layers[task]) == 12 and len(graph) <= 12 * 4  # one sampling task per tile
    dtypes = layer_dtypes(out)
    assert dtypes["joint_q95"] == "uint8" and dtypes["joint_sd"] == "float32" and dtypes["pest_expected_q05"] == "float32"
    with pytest.raises(InputError, match="interval model"):
        interaction_uncertainty(cube, NET, samples="model")
    with pytest.raises(InputError, match="quantiles"):
        interaction_uncertainty(cube, NET, error=ErrorModel(5.0), quantiles=(0.95, 0.05))


def test_seeded_per_tile_reruns_are_identical() -> None:
    rng = np.random.default_rng(3)
    cube = _cube({s: rng.uniform(0, 1, (16, 16)) for s in ("h", "k", "m", "x")}, chunks=8)
    em = _error(8.0, ["h", "k", "m", "x"], 0.3)
    sets = [Associations.fixed(NET, leakage=e) for e in (0.0, 0.3, 0.6)]
    a = interaction_uncertainty(cube, NET, error=em, associations=sets, n_samples=6, seed=4).compute()
    b = interaction_uncertainty(cube, NET, error=em, associations=sets, n_samples=6, seed=4).compute(
        scheduler="threads")
    c = interaction_uncertainty(cube, NET, error=em, associations=sets, n_samples=6, seed=5).compute()
    xr.testing.assert_identical(a, b)
    assert not np.array_equal(a.joint_q95.values, c.joint_q95.values)
    assert a.attrs["geosdm:association_samples"] == 3
    q05, q50, q95 = a.joint_q05.values, a.joint_q50.values, a.joint_q95.values
    assert (q05 <= q50).all() and (q50 <= q95).all() and np.allclose(a.joint_width.values, q95 - q05)
    assert np.allclose(np.round(q05 * 250), q05 * 250, atol=1e-3)  # rounded outward to the uint8 step


def test_correlated_errors_widen_the_joint_interval() -> None:
    """joint = p_s p_t under independence (leakage 1): with positively correlated errors, the product varies
    more (Var(XY) grows with Cov(X, Y) for positive means), so its interval is wider than with independent
    draws; the marginal intervals are the same."""
    cube = _cube({"h": np.full((10, 10), 0.4), "k": np.full((10, 10), 0.3)})
    net = network_from_frames(pd.DataFrame({"source": ["h"], "target": ["k"]}))
    indep = Associations.fixed(net, leakage=1.0)
    w = {rho: float(interaction_uncertainty(cube, net, error=_error(6.0, ["h", "k"], rho), associations=indep,
                                            n_samples=400).joint_width.mean()) for rho in (0.0, 0.8)}
    assert w[0.8] > 1.2 * w[0.0]
    assert interaction_uncertainty(cube, net, error=_error(6.0, ["h", "k"], 0.0),
                                   associations=indep).attrs["geosdm:copula"] == "independent"


def test_coverage_of_a_truth_drawn_from_the_models_assumptions() -> None:
    """The truth: per cell, the species' true probabilities around the map from the Beta model with the copula,
    the joint computed from them with the true leakage. The 90 % intervals hold it about 90 % of the time."""
    rng = np.random.default_rng(7)
    species = ["h", "k", "m", "x"]
    shape = (40, 40)
    mapped = {s: rng.beta(1.5, 2.5, shape) for s in species}
    cube = _cube(mapped, chunks=20)
    em = _error(8.0, species, 0.6)
    z = np.einsum("ij,j...->i...", np.linalg.cholesky(em.correlation), rng.standard_normal((4, *shape)))
    truth = em.ppf(np.stack([mapped[s] for s in species]), special.ndtr(z))
    assoc = Associations.fixed(NET, leakage=0.2)
    prep = _prepare(_cube(dict(zip(species, truth))), NET, associations=assoc, method="dependence",
                    independent=False, edges=True, regulation=True, pest_pressure=True, crops=None, sets=None,
                    weighted=False, aliases=None, variable="probability", storage_options=None)
    true_layers = _tile(truth[[species.index(s) for s in prep.used]], plan=prep.plan)
    out = interaction_uncertainty(cube, NET, error=em, associations=assoc, n_samples=200).compute()
    n_edges = len(NET.edges)
    lo, hi = out.joint_q05.values, out.joint_q95.values
    cov = np.mean((true_layers[:n_edges] >= lo) & (true_layers[:n_edges] <= hi))
    assert 0.85 <= cov <= 0.96, cov
    enemy = true_layers[n_edges:n_edges + 1]
    assert 0.85 <= np.mean((enemy >= out.enemy_any_q05.values) & (enemy <= out.enemy_any_q95.values)) <= 0.97


def test_error_correlation_is_estimated_from_neighbouring_plots() -> None:
    rng = np.random.default_rng(0)
    k, n, phi = 10, 1500, 10.0
    r = np.eye(k)
    r[:5, :5] = 0.7
    np.fill_diagonal(r, 1.0)
    centres = rng.uniform(0, 1e6, (n, 2))
    xy = np.concatenate([centres, centres + rng.normal(0, 50, centres.shape)])
    p_map = rng.beta(0.8, 2.0, (n, k))
    z = rng.standard_normal((n, k)) @ np.linalg.cholesky(r).T
    p_true = ErrorModel(phi).ppf(p_map, special.ndtr(z))
    p_map, p_true = np.concatenate([p_map, p_map]), np.concatenate([p_true, p_true])
    observed = ((rng.uniform(size=p_true.shape) < p_true) & (rng.uniform(size=p_true.shape) < 0.96)).astype(float)
    em = error_model_from_surveys(xy, observed, p_map, 0.96, species=[f"s{i}" for i in range(k)])
    block = em.correlation[:5, :5][~np.eye(5, dtype=bool)].mean()
    rest = em.correlation[5:, 5:][~np.eye(5, dtype=bool)]
    assert block > 0.3 and abs(rest.mean()) < 0.15 and block > rest.mean() + 0.25
    assert np.linalg.eigvalsh(em.correlation).min() > 0
    again = ErrorModel.from_dict(json.loads(json.dumps(em.to_dict())))
    np.testing.assert_allclose(again.correlation, em.correlation, atol=1e-4)
    sub = again.correlation_for(["s1", "zzz", "s0"])
    assert sub[1, 1] == 1 and sub[0, 1] == 0 and abs(sub[0, 2] - em.correlation[1, 0]) < 1e-4


@pytest.fixture(scope="module")
def predictions_with_intervals(demo_small: DemoLayout, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The small demo's probabilities as a prediction store, with an uncertainty store beside it that records
    an interval model (as the predict step writes with `uncertainty: true`)."""
    truth = xr.open_zarr(demo_small.truth_zarr)
    ds = truth[["probability"]].chunk({"species": -1, "y": 50, "x": 50})
    ds = ds.assign_coords(species=[str(s) for s in ds["species"].values])
    folder = tmp_path_factory.mktemp("predictions")
    write_layers(ds, str(folder / "probability.zarr"), dtypes="uint8", attrs={"geosdm:model_hash": "truth"})
    species = [str(s) for s in ds["species"].values]
    em = _error(12.0, species, 0.2)
    unc = ds.rename(probability="mean")
    write_layers(unc, str(folder / "uncertainty.zarr"), dtypes="uint8",
                 attrs={"geosdm:intervals": "model", "geosdm:error_model": em.to_dict()})
    return str(folder / "probability.zarr")


def test_the_interactions_step_writes_uncertainty_layers(demo_small: DemoLayout, predictions_with_intervals: str,
                                                          tmp_path: Path) -> None:
    cfg = InteractionsConfig(predictions=predictions_with_intervals, edges=str(demo_small.edges_csv),
                             nodes=str(demo_small.nodes_csv), surveys=(str(demo_small.surveys_parquet),),
                             output=str(tmp_path / "out"), cog_variables=("joint", "enemy_any"), per_layer=False,
                             independent=False, stac=False, n_samples=8, bootstrap=3)
    report = run_interactions(cfg)
    assert report.uncertainty is not None and "interval model" in report.uncertainty_source
    unc = open_layers(cfg.uncertainty_path)
    assert unc.joint_q95.encoding["dtype"] == np.uint8 and unc.joint_sd.encoding["dtype"] == np.float32
    assert unc.attrs["geosdm:samples"] == "model" and unc.attrs["geosdm:association_samples"] == 3
    assert unc.joint_width.shape == (41, 100, 100) and "spatial_ref" in unc.coords
    lo, hi, mid = (unc[f"joint_{s}"].values for s in ("q05", "q95", "mean"))
    ok = np.isfinite(mid)
    assert ((lo <= hi) | ~ok).all() and np.nanmean(hi - lo) > 0.005
    cogs = Path(cfg.output) / "cogs"
    assert (cogs / "joint_width.tif").is_file() and (cogs / "enemy_any_width.tif").is_file()
    assert report.summary()["uncertainty"] == cfg.uncertainty_path
    again = run_interactions(cfg.model_copy(update={"cogs": False}))
    assert again.uncertainty is not None and again.uncertainty.n_resumed == again.uncertainty.n_tiles
    off = run_interactions(cfg.model_copy(update={"uncertainty": False, "cogs": False,
                                                  "output": str(tmp_path / "off")}))
    assert off.uncertainty is None


def test_association_samples_vary_and_are_seeded(demo_small: DemoLayout, predictions_with_intervals: str) -> None:
    from geosdm.interactions import match_species, read_network
    from geosdm.records import read_records

    prob = open_layers(predictions_with_intervals)["probability"]
    match = match_species(read_network(demo_small.edges_csv, demo_small.nodes_csv),
                          [str(s) for s in prob["species"].values])
    surveys = read_records(demo_small.surveys_parquet)
    a = association_samples(match, surveys, prob, n=3, seed=1)
    b = association_samples(match, surveys, prob, n=3, seed=1)
    assert [x.leakage for x in a] == [x.leakage for x in b]
    assert len({json.dumps(x.leakage, sort_keys=True) for x in a}) > 1


def test_without_an_interval_model_the_ensemble_members_are_the_samples(demo_small: DemoLayout) -> None:
    import warnings

    from geosdm.interactions import match_species, read_network
    from geosdm.models import MultiSpeciesSDM
    from geosdm.predict import predict
    from geosdm.records import read_records, training_table

    covariates = ["bio01", "bio12"]
    cube = xr.open_zarr(demo_small.truth_zarr)[covariates].load()
    recs = pd.concat([read_records(demo_small.presence_only_csv), read_records(demo_small.surveys_parquet)],
                     ignore_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = training_table(recs, str(demo_small.truth_zarr), n_background=300, block_size=1_500, seed=1,
                               variables=covariates, max_missing=0.5).table
        model = MultiSpeciesSDM(loss="integrated", epochs=2, hidden=16, val_size=0, n_members=3, seed=0).fit(table)
    prob = predict(model, cube, tile_shape=(50, 50))["probability"]
    match = match_species(read_network(demo_small.edges_csv, demo_small.nodes_csv),
                          [str(s) for s in prob["species"].values])
    with dask.config.set(scheduler=_no_compute):
        unc = interaction_uncertainty(prob, match, model=model, cube=cube, regulation=False, pest_pressure=False)
    assert unc.attrs["geosdm:samples"] == "members" and unc.attrs["geosdm:n_samples"] == 3
    assert "ensemble members" in unc.joint_sd.attrs["long_name"]
    out = unc.compute()
    lo, hi, mid = out.joint_q05.values, out.joint_q95.values, out.joint_mean.values
    assert np.isfinite(mid).all() and (lo <= mid + 1e-6).all() and (mid <= hi + 1e-6).all()
    assert float(out.joint_sd.mean()) > 0
