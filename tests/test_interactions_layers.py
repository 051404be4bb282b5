"""Interaction models and layers: formulas, Monte Carlo check, survey fit, laziness, the step on the demo, CLI."""

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

from geosdm.demo import DemoLayout
from geosdm.errors import InputError
from geosdm.interactions import (
    Associations,
    InteractionsConfig,
    estimate_detection,
    fit_associations,
    interaction_layers,
    layer_dtypes,
    network_from_frames,
    read_network,
    run_interactions,
    survey_matrix,
)
from geosdm.interactions._math import dependence_conditional, plackett_joint
from geosdm.io import open_layers, write_layers


def _no_compute(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a lazy path computed")


def _cube(probs: dict[str, np.ndarray], chunks: int | None = None) -> xr.DataArray:
    """A (species, y, x) probability cube on a small EPSG:2154 grid."""
    shape = next(iter(probs.values())).shape
    gbox = GeoBox.from_bbox((0, 0, shape[1] * 100, shape[0] * 100), "EPSG:2154", resolution=100)
    da_ = xr.DataArray(np.stack(list(probs.values())).astype(np.float32), dims=("species", "y", "x"),
                       coords={"species": list(probs), **xr_coords(gbox, crs_coord_name="spatial_ref")})
    return da_.chunk({"species": -1, "y": chunks, "x": chunks}) if chunks else da_


def test_plackett_has_the_odds_ratio_and_limits() -> None:
    p1, p2 = np.array([0.2, 0.5, 0.7]), np.array([0.3, 0.4, 0.9])
    for psi in (0.2, 3.0, 50.0):
        j = plackett_joint(p1, p2, psi)
        odds = j * (1 - p1 - p2 + j) / ((p1 - j) * (p2 - j))
        np.testing.assert_allclose(odds, psi, rtol=1e-6)
    np.testing.assert_allclose(plackett_joint(p1, p2, 1.0), p1 * p2)
    np.testing.assert_allclose(plackett_joint(p1, p2, 1e9), np.minimum(p1, p2), atol=1e-4)
    np.testing.assert_allclose(plackett_joint(p1, p2, 1e-9), np.maximum(p1 + p2 - 1, 0), atol=1e-4)
    q = dependence_conditional(np.array([0.2, 0.0, 0.3, np.nan]), np.array([0.4, 0.0, 0.0, 0.5]), 0.0)
    np.testing.assert_allclose(q, [0.5, 0.0, 1.0, np.nan])


def test_layers_match_a_simulation_of_the_dependence_process() -> None:
    """Simulate plants -> pest (leakage 0.3) -> two enemies and compare every layer with the frequencies."""
    rng = np.random.default_rng(0)
    shape = (3, 4)
    p_h1, p_h2 = rng.uniform(0.1, 0.9, shape), rng.uniform(0.1, 0.9, shape)
    q_k, q_m, q_n = rng.uniform(0.2, 0.9, shape), rng.uniform(0.2, 0.9, shape), rng.uniform(0.2, 0.9, shape)
    eps_k = 0.3
    n = 200_000
    z_h1, z_h2 = rng.uniform(size=(n, *shape)) < p_h1, rng.uniform(size=(n, *shape)) < p_h2
    z_k = (rng.uniform(size=(n, *shape)) < q_k) & ((z_h1 | z_h2) | (rng.uniform(size=(n, *shape)) < eps_k))
    z_m = (rng.uniform(size=(n, *shape)) < q_m) & z_k
    z_n = (rng.uniform(size=(n, *shape)) < q_n) & z_k
    a_k = 1 - (1 - p_h1) * (1 - p_h2)
    p_k = q_k * (eps_k + (1 - eps_k) * a_k)
    cube = _cube({"h1": p_h1, "h2": p_h2, "k": p_k, "m": q_m * p_k, "n": q_n * p_k}, chunks=2)
    net = network_from_frames(pd.DataFrame({"source": ["h1", "h2", "k", "k"], "target": ["k", "k", "m", "n"]}),
                              pd.DataFrame({"species": ["h1", "h2", "k", "m", "n"],
                                            "role": ["plant", "plant", "pest", "enemy", "enemy"],
                                            "guild": ["crop", "wild", "", "", ""]}))
    assoc = Associations({"k": eps_k, "m": 0.0, "n": 0.0}, {})
    out = interaction_layers(cube, net, associations=assoc,
                             sets={"chain": ["h1->k", "k->m"], "both": ["k->m", "k->n"]}).compute()
    tol = 0.01
    np.testing.assert_allclose(out.joint.sel(edge="h1->k"), (z_h1 & z_k).mean(0), atol=tol)
    np.testing.assert_allclose(out.joint.sel(edge="k->m"), (z_k & z_m).mean(0), atol=tol)
    np.testing.assert_allclose(out.joint_independent.sel(edge="h1->k"), p_h1 * p_k, atol=1e-6)
    given_k = np.maximum(z_k.sum(0), 1)
    np.testing.assert_allclose(out.enemy_any.sel(pest="k"), ((z_m | z_n) & z_k).sum(0) / given_k, atol=2 * tol)
    np.testing.assert_allclose(out.enemy_expected.sel(pest="k"), ((z_m.astype(int) + z_n) * z_k).sum(0) / given_k,
                               atol=3 * tol)
    np.testing.assert_allclose(out.pest_any.sel(crop="h1"), (z_k & z_h1).sum(0) / z_h1.sum(0), atol=2 * tol)
    np.testing.assert_allclose(out.set_all.sel(interaction_set="chain"), (z_h1 & z_k & z_m).mean(0), atol=tol)
    np.testing.assert_allclose(out.set_any.sel(interaction_set="chain"), ((z_h1 & z_k) | (z_k & z_m)).mean(0),
                               atol=tol)
    np.testing.assert_allclose(out.set_all.sel(interaction_set="both"), (z_k & z_m & z_n).mean(0), atol=tol)
    np.testing.assert_allclose(out.set_all_independent.sel(interaction_set="chain"), p_h1 * p_k * q_m * p_k,
                               atol=1e-6)
    assert list(out.crop.values) == ["h1"] and list(out.pest.values) == ["k"]
    assert out.enemy_expected.attrs["geosdm:kind"] == "expectation"
    assert layer_dtypes(out)["enemy_expected"] == "float32" and layer_dtypes(out)["joint"] == "uint8"


def _simulated_surveys(rng: np.random.Generator, n_plots: int = 800,
                       d: float = 0.7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plots with a plant h, a pest k that needs h (leakage 0) and a pest j independent of h (leakage 1)."""
    p_h, q_k, p_j = rng.uniform(0.1, 0.9, n_plots), rng.uniform(0.2, 0.9, n_plots), rng.uniform(0.1, 0.6, n_plots)
    z_h = rng.uniform(size=n_plots) < p_h
    z = {"h": z_h, "k": z_h & (rng.uniform(size=n_plots) < q_k), "j": rng.uniform(size=n_plots) < p_j}
    marg = pd.DataFrame({"h": p_h, "k": q_k * p_h, "j": p_j}, index=[f"plot-{i}" for i in range(n_plots)])
    rows = []
    for s, zz in z.items():
        for visit in (1, 2):
            det = zz & (rng.uniform(size=n_plots) < d)
            rows.append(pd.DataFrame({"species": s, "x": np.arange(n_plots) * 100.0 + 50, "y": 50.0,
                                      "crs": "EPSG:2154", "kind": "presence_absence", "value": det.astype(float),
                                      "plot_id": marg.index, "visit": visit}))
    return pd.concat(rows, ignore_index=True), marg


def test_fit_associations_recovers_leakage_and_detection() -> None:
    rng = np.random.default_rng(1)
    surveys, marg = _simulated_surveys(rng)
    net = network_from_frames(pd.DataFrame({"source": ["h", "h"], "target": ["k", "j"]}))
    sm = survey_matrix(surveys)
    assert sm.visits.shape == (800, 3) and int(sm.visits.to_numpy().max()) == 2
    det = estimate_detection(sm)
    assert all(abs(v - 0.7) < 0.08 for v in det.values())
    a = fit_associations(net, sm, marg)
    assert a.leakage["k"] < 0.1 and a.leakage["j"] > 0.5
    assert a.odds_ratio["h->k"] > 20 and 0.3 < a.odds_ratio["h->j"] < 3
    cons = a.consumers.set_index("consumer")
    assert cons.loc["k", "lr_statistic"] > 20 and cons.loc["j", "lr_statistic"] < 5
    edges = a.edges.set_index("edge")
    assert edges.loc["h->k", "n_codetected"] > edges.loc["h->k", "expected_independent"]
    perfect = fit_associations(net, sm, marg, detection="perfect")
    assert perfect.detection["k"] == 1.0
    with pytest.raises(InputError, match="presence_absence"):
        survey_matrix(surveys.assign(kind="presence_only"))


def test_layers_stay_lazy_and_tile_chunked() -> None:
    rng = np.random.default_rng(2)
    probs = {s: rng.uniform(0, 1, (20, 30)) for s in ("h", "k", "m", "x")}
    cube = _cube(probs, chunks=8)
    net = network_from_frames(pd.DataFrame({"source": ["h", "k"], "target": ["k", "m"]}))
    with dask.config.set(scheduler=_no_compute):
        out = interaction_layers(cube, net, sets={"s": ["h->k", "k->m"]})
        import geosdm  # noqa: F401  (the .sdm accessor forwards to interaction_layers)

        via = cube.to_dataset(name="probability").sdm.interactions(net, sets={"s": ["h->k", "k->m"]})
    assert via.joint.data.name == out.joint.data.name  # the same graph
    for name, v in out.data_vars.items():
        assert v.chunks[0] == (v.shape[0],), name  # all layers of a tile in one chunk
        assert v.chunks[1] == (8, 8, 4) and v.chunks[2] == (8, 8, 8, 6)
    assert out.odc.geobox == cube.odc.geobox
    tasks = len(out.joint.data.__dask_graph__())
    assert tasks < 12 * 3 * 4  # a few tasks per tile, not per layer or per species


def test_layer_errors() -> None:
    cube = _cube({"h": np.full((4, 4), 0.5), "k": np.full((4, 4), 0.2)})
    net = network_from_frames(pd.DataFrame({"source": ["h"], "target": ["k"]}))
    with pytest.raises(InputError, match="unknown interactions"):
        interaction_layers(cube, net, sets={"s": ["h->zzz"]})
    with pytest.raises(InputError, match="dependence"):
        interaction_layers(cube, net, method="plackett", sets={"s": ["h->k"]})
    with pytest.raises(InputError, match="no interaction"):
        interaction_layers(cube, network_from_frames(pd.DataFrame({"source": ["a"], "target": ["b"]})))
    with pytest.raises(InputError, match="crops"):
        interaction_layers(cube, net, crops=["nope"])


@pytest.fixture(scope="module")
def prediction_store(demo_small: DemoLayout, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The small demo's true probabilities written like a prediction store (uint8, 50 x 50 tiles)."""
    truth = xr.open_zarr(demo_small.truth_zarr)
    ds = truth[["probability"]].chunk({"species": -1, "y": 50, "x": 50})
    ds = ds.assign_coords(species=[str(s) for s in ds["species"].values])
    path = str(tmp_path_factory.mktemp("interactions") / "probability.zarr")
    write_layers(ds, path, dtypes="uint8", attrs={"geosdm:model_hash": "truth", "geosdm:period": "2023-06-01/2023-08-31"})
    return path


def _corr(a: xr.DataArray, b: np.ndarray) -> float:
    x, y = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def test_run_interactions_on_the_demo(demo_small: DemoLayout, prediction_store: str, tmp_path: Path) -> None:
    cfg = InteractionsConfig(predictions=prediction_store, edges=str(demo_small.edges_csv),
                             nodes=str(demo_small.nodes_csv), surveys=(str(demo_small.surveys_parquet),),
                             output=str(tmp_path / "out"), cog_variables=("joint",), per_layer=False,
                             sets={"chain": ("plant_01->pest_11", "pest_11->enemy_02")})
    report = run_interactions(cfg)
    assert report.write.n_tiles == 4 and report.match["unmatched_nodes"] == []
    assert report.structure["nodes_per_role"] == {"plant": 16, "pest": 12, "enemy": 14}
    ds = open_layers(cfg.zarr_path)
    assert ds.joint.dtype.kind == "f" and ds.joint.encoding["dtype"] == np.uint8
    assert ds.enemy_expected.encoding["dtype"] == np.float32
    truth = xr.open_zarr(demo_small.truth_zarr)
    joint_truth = truth["joint"].load()
    labels = [f"{s}->{t}" for s, t in zip(truth["edge_source"].values, truth["edge_target"].values)]
    co = np.mean([_corr(ds.joint.sel(edge=lbl), joint_truth.isel(edge=i)) for i, lbl in enumerate(labels)])
    ind = np.mean([_corr(ds.joint_independent.sel(edge=lbl), joint_truth.isel(edge=i)) for i, lbl in enumerate(labels)])
    assert co > 0.98 and co > ind
    bias = float(np.nanmean(ds.joint.sel(edge=labels).values - joint_truth.values))
    bias_ind = float(np.nanmean(ds.joint_independent.sel(edge=labels).values - joint_truth.values))
    assert abs(bias) < abs(bias_ind)
    out = Path(cfg.output)
    assert (out / "cogs" / "joint.tif").is_file() and report.cogs[0].valid
    item = json.loads(next((out / "stac").glob("*/*.json")).read_text())
    assert "joint" in item["assets"] and item["properties"]["geosdm:edge"][0] == labels[0]
    assert item["properties"]["start_datetime"].startswith("2023-06-01")  # the predictions' period, not the run's
    from tests.fixtures.stac_schemas import validate_stac_tree

    assert len(validate_stac_tree(out / "stac")) == 2  # the Item and its Collection, valid offline
    assoc = json.loads((out / "associations.json").read_text())
    assert assoc["source"] == "surveys" and len(assoc["leakage"]) == 26
    assert json.loads((out / "network.json").read_text())["match"]["edges_kept"] == 41
    again = run_interactions(cfg.model_copy(update={"cogs": False, "stac": False}))
    assert again.write.n_resumed == again.write.n_tiles


def test_cli_network_and_run(demo_small: DemoLayout, prediction_store: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from geosdm.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["interactions", "network", str(demo_small.edges_csv), "--nodes",
                              str(demo_small.nodes_csv), "--species", prediction_store, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["structure"]["n_links"] == 41 and out["match"]["matched_nodes"] == 42
    res = runner.invoke(app, ["interactions", "run", prediction_store, str(demo_small.edges_csv), str(tmp_path / "o"),
                              "--nodes", str(demo_small.nodes_csv), "--leakage", "0", "--no-cogs", "--no-stac",
                              "--no-progress", "--no-independent", "--set", "s=plant_01->pest_11"])
    assert res.exit_code == 0, res.output
    assert "41" in res.output and "set_any" in res.output
    ds = open_layers(tmp_path / "o" / "interactions.zarr")
    assert "joint_independent" not in ds and list(ds.interaction_set.values) == ["s"]


def test_read_demo_network(demo_small: DemoLayout) -> None:
    net = read_network(demo_small.edges_csv, demo_small.nodes_csv)
    assert len(net.edges) == 41 and len(net.crops()) == 5


def test_associations_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    surveys, marg = _simulated_surveys(rng, n_plots=200)
    net = network_from_frames(pd.DataFrame({"source": ["h", "h"], "target": ["k", "j"]}))
    a = fit_associations(net, surveys, marg)
    a.save(tmp_path / "a.json")
    b = Associations.load(tmp_path / "a.json")
    assert b.leakage == a.leakage and b.odds_ratio == a.odds_ratio and b.n_plots == 200
    assert list(b.edges["edge"]) == ["h->k", "h->j"]
    fixed = Associations.fixed(net, leakage=0.5)
    assert fixed.leakage == {"j": 0.5, "k": 0.5}
    with pytest.raises(InputError, match="leakage"):
        Associations.fixed(net, leakage=2.0)
