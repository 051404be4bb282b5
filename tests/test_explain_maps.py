"""Explanations over a cube (small demo): lazy attribution and MESS cubes, region aggregation, writing, run, CLI.

The cube is the demo's truth covariates stored as sharded Zarr v3 with a 40 x 40 NaN corner (as in
tests/test_predict.py); the models are tiny ``MultiSpeciesSDM`` fits (an MLP and a CNN on 5 x 5 patches).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geosdm.demo import DemoLayout
from geosdm.errors import InputError, MissingVariableError
from geosdm.explain import (
    ExplainConfig,
    aggregate_regions,
    attribute,
    attribution_cube,
    attribution_species,
    mess,
    mess_points,
    plot_attribution,
    plot_mess,
    reference_from,
    region_raster,
    run_explain,
)
from geosdm.predict import predict

COVARIATES = ["elevation", "bio01", "bio12", "lc_3", "s2_ndvi_jja"]
SEA = (slice(0, 40), slice(0, 40))
TILE = (32, 32)


def _no_compute(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a lazy path computed")


@pytest.fixture(scope="module")
def cube_path(demo_small: DemoLayout, tmp_path_factory: pytest.TempPathFactory) -> str:
    truth = xr.open_zarr(demo_small.truth_zarr)[COVARIATES].load()
    for v in COVARIATES:
        truth[v][SEA] = np.nan
    truth.attrs["geosdm:period"] = "2023-06-01/2023-08-31"  # the covariates' period: dates the output Items
    path = tmp_path_factory.mktemp("explain") / "cube.zarr"
    enc = {v: {"chunks": (16, 16), "shards": TILE} for v in truth.data_vars}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth.to_zarr(path, zarr_format=3, encoding=enc, consolidated=True)
    return str(path)


@pytest.fixture(scope="module")
def table(demo_small: DemoLayout, cube_path: str) -> pd.DataFrame:
    from geosdm.records import read_records, training_table

    recs = pd.concat([read_records(demo_small.presence_only_csv), read_records(demo_small.surveys_parquet)],
                     ignore_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return training_table(recs, cube_path, n_background=300, block_size=1_500, seed=1, variables=COVARIATES,
                              max_missing=0.5).table


@pytest.fixture(scope="module")
def mlp(table: pd.DataFrame) -> Any:
    from geosdm.models import MultiSpeciesSDM

    return MultiSpeciesSDM(loss="integrated", epochs=2, hidden=32, val_size=0, seed=0).fit(table)


def test_attribution_cube_is_lazy_and_complete(mlp: Any, cube_path: str, tmp_path: Path) -> None:
    species = ["plant_01", "pest_02"]
    with dask.config.set(scheduler=_no_compute):
        attr = attribution_cube(mlp, cube_path, species=species, steps=64, residual=True, tile_shape=TILE)
        per = aggregate_regions(attr[species], 1_200.0)
    assert attribution_species(attr) == species
    assert attr["plant_01"].dims == ("variable", "y", "x") and attr["plant_01"].chunks[1] == (32, 32, 32, 4)
    assert list(attr["variable"].values) == list(mlp.feature_names_)
    models = [k for k in dict(attr.__dask_graph__()) if str(k).startswith("geosdm-model-")]
    assert len(models) == 1  # the model is one key shared by every tile
    done = attr.compute()
    f = predict(mlp, cube_path, log_intensity=True, probability=False, tile_shape=TILE)["log_intensity"].compute()
    for s in species:
        base = done.attrs["geosdm:baseline_log_intensity"][s]
        delta = f.sel(species=s).values - base
        gap = np.abs(delta - done[s].sum("variable", skipna=False).values)
        assert np.nanmax(gap) < 0.02 * np.nanmax(np.abs(delta))  # integrated-gradients completeness
        assert np.isnan(done[s].values[:, SEA[0], SEA[1]]).all() and np.isfinite(done[s].values[:, 40:, 40:]).all()
    np.testing.assert_allclose(done["completeness_residual"].sel(species="plant_01").values,
                               f.sel(species="plant_01").values - done.attrs["geosdm:baseline_log_intensity"][
                                   "plant_01"] - done["plant_01"].sum("variable", skipna=False).values, atol=1e-4)
    # region means of |attribution| equal a numpy group-by
    means = per.compute()
    a = np.abs(done["pest_02"].values)
    rows, cols = np.divmod(np.arange(100 * 100), 100)
    block = (rows // 20) * 5 + cols // 20  # 1200 m blocks of 60 m cells: 20 x 20
    b = block.reshape(100, 100)
    for r in (7, 12, 24):
        expect = np.nanmean(a[:, b == r], axis=1)
        np.testing.assert_allclose(means["pest_02"].isel(region=r).values, expect, rtol=1e-4)
    assert np.isnan(means["pest_02"].isel(region=0).values).all()  # a block of sea: no valid cell
    assert int(means["n_cells"].isel(region=0)) == 0 and int(means["n_cells"].isel(region=24)) == 400
    assert list(means.region.values[:2]) == ["r0c0", "r0c1"]
    # written like predictions, and drawn
    from geosdm.io import open_layers, write_layers

    rep = write_layers(attr[species], tmp_path / "attribution.zarr", dtypes="float16", identity={"t": 1})
    assert rep.n_tiles == 16 and rep.layers == 2 * len(mlp.feature_names_)
    back = open_layers(tmp_path / "attribution.zarr")
    np.testing.assert_allclose(back["plant_01"].values, done["plant_01"].values, rtol=2e-3, atol=2e-3)
    fig = plot_attribution(back, "plant_01")
    fig2 = plot_attribution(back, "plant_01", "bio01")
    fig3 = plot_attribution(back, "plant_01", groups={"climate": ["bio01", "bio12"], "other": ["lc_3", "elevation"]})
    assert fig.axes and fig2.axes
    assert [t.get_text() for t in fig3.axes[0].get_legend().get_texts()][:2] in (["climate", "other"],
                                                                                  ["other", "climate"])
    import matplotlib.pyplot as plt

    plt.close("all")


def test_attribution_points_match_the_cube(mlp: Any, cube_path: str, table: pd.DataFrame) -> None:
    cube = xr.open_zarr(cube_path).load()
    rows = np.array([50, 60, 99]), np.array([45, 80, 99])
    pts = pd.DataFrame({v: cube[v].values[rows] for v in COVARIATES})
    eager = attribute(mlp, pts, species=["plant_03"], steps=16)
    lazy = attribution_cube(mlp, cube.chunk({"y": 50, "x": 50}), species=["plant_03"], steps=16)
    got = lazy["plant_03"].values[:, rows[0], rows[1]].T
    np.testing.assert_allclose(eager["attribution"].sel(species="plant_03").values, got, rtol=1e-4, atol=1e-5)


def test_patch_network_attribution_tiles_without_seams(table: pd.DataFrame, cube_path: str) -> None:
    from geosdm.models import MultiSpeciesSDM

    cnn = MultiSpeciesSDM(network="cnn", loss="integrated", covariates=COVARIATES, epochs=1, width=8, n_blocks=1,
                          patch_size=5, val_size=0, seed=0).fit(table, cube=cube_path)
    one = attribution_cube(cnn, cube_path, species=["plant_01"], steps=8, residual=True, tile_shape=(100, 100))
    tiled = attribution_cube(cnn, cube_path, species=["plant_01"], steps=8, residual=True, tile_shape=(32, 48))
    a, b = one["plant_01"].values, tiled["plant_01"].values
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # halo patches: no seams between tiles
    assert np.isnan(a[:, SEA[0], SEA[1]]).all() and np.isfinite(a[:, 40:, 40:]).all()
    # the residual layer is f(x) - f(baseline) - sum of attributions, f as the model predicts it (GroupNorm makes
    # a patch network scale-invariant near the constant baseline, so completeness is not expected: docs/explain.md)
    f = predict(cnn, cube_path, log_intensity=True, probability=False)["log_intensity"].sel(species="plant_01").values
    base = one.attrs["geosdm:baseline_log_intensity"]["plant_01"]
    np.testing.assert_allclose(one["completeness_residual"].values[0], f - base - a.sum(axis=0), atol=1e-4)
    with pytest.raises(InputError, match="halo"):
        attribution_cube(cnn, cube_path, species=["plant_01"], tile_shape=(33, 33))


def test_mess_cube_lazy_matches_points(mlp: Any, cube_path: str, table: pd.DataFrame, tmp_path: Path) -> None:
    ref = reference_from(table[table["elevation"] < table["elevation"].median()], mlp.feature_names_, model=mlp)
    with dask.config.set(scheduler=_no_compute):
        ext = mess(ref, cube_path, tile_shape=TILE)
    assert ext["mess"].dims == ("y", "x") and ext["similarity"].dims == ("variable", "y", "x")
    done = ext.compute()
    cube = xr.open_zarr(cube_path).load()
    pts = pd.DataFrame({v: cube[v].values.ravel() for v in ref.variables})
    eager = mess_points(ref, pts)
    np.testing.assert_allclose(done["mess"].values.ravel(), eager["mess"].to_numpy(), rtol=1e-5, atol=1e-4)
    names = done["most_dissimilar"].attrs["flag_meanings"].split()
    idx = done["most_dissimilar"].values.ravel()
    ok = np.isfinite(idx)
    assert [names[int(i)] for i in idx[ok][:50]] == list(eager["most_dissimilar"].to_numpy()[ok][:50])
    assert np.isnan(done["mess"].values[SEA]).all()
    low = done["mess"].values < 0  # the upper half of the elevation range is outside the training range
    assert 0.2 < np.nanmean(low[40:, 40:]) < 1.0
    assert plot_mess(done).axes
    import matplotlib.pyplot as plt

    plt.close("all")


def test_region_raster_from_polygons(cube_path: str) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    cube = xr.open_zarr(cube_path)
    gb = cube.odc.geobox
    x0, y0, x1, y1 = gb.extent.boundingbox
    mid = (x0 + x1) / 2
    gdf = gpd.GeoDataFrame({"name": ["w", "e"]}, geometry=[box(x0, y0, mid, y1), box(mid, y0, x1, y1)],
                           crs=gb.crs.to_wkt()).to_crs("EPSG:4326")
    with dask.config.set(scheduler=_no_compute):
        labels, names = region_raster(cube[["bio01"]].chunk({"y": 32, "x": 32}), gdf)
    assert names == ["w", "e"]
    lab = labels.compute().values
    assert (lab[:, :49] == 0).all() and (lab[:, 51:] == 1).all()
    per = aggregate_regions(cube[["bio01"]].chunk({"y": 32, "x": 32}), gdf, stat="mean").compute()
    bio = cube["bio01"].values
    np.testing.assert_allclose(float(per["bio01"].sel(region="w")), np.nanmean(bio[lab == 0]), rtol=1e-5)
    with pytest.raises(InputError, match="stat"):
        aggregate_regions(cube[["bio01"]], gdf, stat="max")  # type: ignore[arg-type]


def test_run_explain_and_cli(mlp: Any, cube_path: str, table: pd.DataFrame, tmp_path: Path) -> None:
    tpath = tmp_path / "training.parquet"
    table.to_parquet(tpath)
    model_dir = str(mlp.save(tmp_path / "model"))
    cfg = ExplainConfig(model=model_dir, cube=cube_path, table=str(tpath), output=str(tmp_path / "explain"),
                        species=("plant_01", "plant_02", "pest_01"), attribution_species=("plant_01",), n_points=400,
                        n_repeats=2, n_grid=8, n_pd=100, n_ice=5, steps=8, n_figure_species=1, regions=1_800.0,
                        min_region_points=10)
    report = run_explain(cfg)
    out = tmp_path / "explain"
    for name in ("importance.csv", "importance_groups.csv", "importance_regions.csv", "response.csv",
                 "attribution_regions.csv", "report.json"):
        assert (out / name).is_file(), name
    imp = pd.read_csv(out / "importance.csv")
    assert set(imp.species) == {"plant_01", "plant_02", "pest_01"} and set(imp.variable) == set(COVARIATES)
    assert {"mean", "sd", "rank"} <= set(imp.columns)
    resp = pd.read_csv(out / "response.csv")
    assert {"in_training_range", "partial_dependence", "ice_q10", "ice_q90"} <= set(resp.columns)
    assert report.attribution is not None and report.attribution.n_tiles == 16
    assert report.completeness_error is not None and report.completeness_error < 0.1
    assert report.mess is not None and 0 <= report.extrapolated_fraction <= 1  # type: ignore[operator]
    assert sorted(Path(p).name for p in report.cogs) == ["mess.tif", "plant_01.tif"]
    assert len(report.stac) == 4 and all(Path(p).is_file() for p in report.stac)
    from tests.fixtures.stac_schemas import validate_stac

    for path in report.stac:  # attribution and MESS Items and Collections, valid offline
        validate_stac(path)
    items = [json.loads(Path(p).read_text()) for p in report.stac if json.loads(Path(p).read_text())["type"] == "Feature"]
    assert len(items) == 2 and all(  # dated by the cube's period, not by the run
        i["properties"]["start_datetime"].startswith("2023-06-01") and i["properties"]["end_datetime"].startswith(
            "2023-08-31") for i in items)
    assert any("attribution_plant_01" in p for p in report.figures) and all(Path(p).is_file() for p in report.figures)
    saved = json.loads((out / "report.json").read_text())
    assert saved["top_variables"] == report.top_variables
    summary = json.loads((out / "summary.json").read_text())
    assert summary["species explained"] == 3 and all(not isinstance(v, (dict, list)) for v in summary.values())
    assert any(p.suffix == ".png" for p in out.iterdir())
    regional = pd.read_csv(out / "attribution_regions.csv")
    assert set(regional.columns) >= {"species", "region", "variable", "mean_abs_attribution", "n_cells"}
    # a rerun resumes the stores; unknown keys and species are refused
    again = run_explain(cfg.model_copy(update={"figures": False, "cogs": False, "groups": "correlated",
                                               "response_mode": "on_manifold", "correlation_threshold": 0.8}))
    assert again.attribution.n_resumed == 16  # type: ignore[union-attr]
    grouped = pd.read_csv(out / "importance_groups.csv")
    assert set(grouped.variable) <= set(COVARIATES) | {g for g in grouped.variable if "+" in g}
    with pytest.raises(ValueError, match="extra"):
        ExplainConfig(cube=cube_path, table=str(tpath), output="x", bogus=1)  # type: ignore[call-arg]
    with pytest.raises(InputError, match="not modelled"):
        run_explain(cfg.model_copy(update={"species": ("zebra",)}))
    with pytest.raises(InputError, match="training table"):
        run_explain(cfg.model_copy(update={"table": str(tmp_path / "none.parquet")}))

    import typer
    from typer.testing import CliRunner

    from geosdm.cli._explain import app

    root = typer.Typer()
    root.add_typer(app, name="explain")
    root.command("noop")(lambda: None)
    res = CliRunner().invoke(root, ["explain", "importance", model_dir, str(tpath), "--species", "plant_01",
                                    "--repeats", "2", "--points", "300", "--groups"])
    assert res.exit_code == 0, res.output
    assert "plant_01" in res.output and "climate" in res.output
    res = CliRunner().invoke(root, ["explain", "importance", model_dir, str(tpath), "--species", "plant_01",
                                    "--repeats", "2", "--points", "300", "--scale", "probability", "--area", "3600"])
    assert res.exit_code == 0, res.output
    assert "correlation of the probability" in res.output.replace("\n", " ")
    res = CliRunner().invoke(root, ["explain", "run", model_dir, cube_path, str(tpath), str(tmp_path / "cli"),
                                    "--species", "plant_01", "--repeats", "2", "--points", "300", "--steps", "4",
                                    "--no-cogs", "--no-figures", "--no-progress", "--tile", "32"])
    assert res.exit_code == 0, res.output
    assert "attribution" in res.output and "MESS" in res.output and (tmp_path / "cli" / "mess.zarr").is_dir()


def test_cube_errors_name_the_problem(mlp: Any, cube_path: str) -> None:
    cube = xr.open_zarr(cube_path)
    with pytest.raises(MissingVariableError, match="bio12"):
        attribution_cube(mlp, cube.drop_vars("bio12"))
    with pytest.raises(MissingVariableError, match="not modelled"):
        attribution_cube(mlp, cube, species=["zebra"])
    with pytest.raises(InputError, match="method"):
        attribution_cube(mlp, cube, method="shap")
    with pytest.raises(InputError, match="Reference"):
        mess({"bio01": [1.0]}, cube)  # type: ignore[arg-type]
