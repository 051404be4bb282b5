"""Prediction on the small demo: lazy == eager, seamless patches, Zarr (uint8/float), resume, cluster + S3, COG, STAC.

The cube is the demo's truth covariates (a stand-in for a built cube, same grid and conventions) stored as
sharded Zarr v3 with a 40 x 40 cell NaN corner (a "sea" covering one whole 32 x 32 tile). Models are small
``MultiSpeciesSDM`` fits (one or two epochs): an MLP and a CNN on 5 x 5 covariate patches cut from the cube.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geosdm.demo import DemoLayout
from geosdm.errors import InputError, MissingVariableError
from geosdm.predict import (
    PredictConfig,
    encode_probability,
    export_cogs,
    model_fingerprint,
    open_predictions,
    predict,
    run_prediction,
    write_predictions,
    write_stac,
)

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
    path = tmp_path_factory.mktemp("predict") / "cube.zarr"
    enc = {v: {"chunks": (16, 16), "shards": TILE} for v in truth.data_vars}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth.to_zarr(path, zarr_format=3, encoding=enc, consolidated=True)
    return str(path)


@pytest.fixture(scope="module")
def cube(cube_path: str) -> xr.Dataset:
    return xr.open_zarr(cube_path).load()


@pytest.fixture(scope="module")
def table(demo_small: DemoLayout, cube_path: str) -> pd.DataFrame:
    from geosdm.records import read_records, training_table

    recs = pd.concat([read_records(demo_small.presence_only_csv), read_records(demo_small.surveys_parquet)],
                     ignore_index=True)
    return training_table(recs, cube_path, n_background=300, block_size=1_500, seed=1, variables=COVARIATES,
                          max_missing=0.5).table


@pytest.fixture(scope="module")
def mlp(table: pd.DataFrame) -> Any:
    from geosdm.models import MultiSpeciesSDM

    return MultiSpeciesSDM(loss="integrated", epochs=2, hidden=32, val_size=0, seed=0).fit(table)


@pytest.fixture(scope="module")
def cnn(table: pd.DataFrame, cube_path: str) -> Any:
    from geosdm.models import MultiSpeciesSDM

    model = MultiSpeciesSDM(network="cnn", loss="integrated", covariates=COVARIATES, epochs=1, width=8, n_blocks=1,
                            patch_size=5, val_size=0, seed=0).fit(table, cube=cube_path)
    assert model.patch_["variables"] == COVARIATES
    return model


@pytest.fixture(scope="module")
def model_dir(mlp: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(mlp.save(tmp_path_factory.mktemp("model") / "mlp"))


@pytest.fixture(scope="module")
def store(model_dir: str, cube_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The reference output: uint8, uninterrupted, local threads."""
    path = str(tmp_path_factory.mktemp("out") / "probability.zarr")
    write_predictions(model_dir, cube_path, path, tile_shape=TILE)
    return path


def _files(root: str, fs: Any = None) -> dict[str, bytes]:
    import fsspec

    fs = fs or fsspec.filesystem("file")
    base = root.split("://", 1)[-1].rstrip("/")
    return {p[len(base):]: fs.cat_file(p) for p in fs.find(base)}


# ------------------------------------------------------------------------------------------------------ lazy


def test_lazy_equals_eager_and_skips_nodata(mlp: Any, cube_path: str, cube: xr.Dataset) -> None:
    with dask.config.set(scheduler=_no_compute):
        out = predict(mlp, cube_path, tile_shape=TILE, log_intensity=True, area=400.0)
    assert out.probability.chunks == ((len(mlp.species_),), (32, 32, 32, 4), (32, 32, 32, 4))
    graph = dict(out.__dask_graph__())
    models = [k for k in graph if str(k).startswith("geosdm-model-")]
    assert models == [f"geosdm-model-{model_fingerprint(mlp)}"]  # the model is one key, shared by all tiles
    lazy = out.compute()
    eager_p = mlp.predict_proba(cube, area=400.0)
    eager_f = mlp.predict(cube, log=True)
    np.testing.assert_allclose(lazy.probability.values, eager_p.values, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(lazy.log_intensity.values, eager_f.values, rtol=1e-5, atol=1e-5)
    assert np.isnan(lazy.probability.values[:, SEA[0], SEA[1]]).all()
    assert np.isfinite(lazy.probability.values[:, 40:, 40:]).all()
    assert list(lazy.species.values) == list(mlp.species_) and "spatial_ref" in lazy.coords
    import geosdm  # noqa: F401  (the .sdm accessor forwards to predict)

    via = cube.chunk({"y": 32, "x": 32}).sdm.predict(mlp, area=400.0)
    np.testing.assert_allclose(via.probability.values, lazy.probability.values, rtol=1e-5, atol=1e-7)


def test_patch_model_tiles_without_seams(cnn: Any, cube_path: str, cube: xr.Dataset) -> None:
    eager = cnn.predict(cube, log=True).values
    for tile in [(16, 16), (32, 48)]:
        lazy = predict(cnn, cube_path, tile_shape=tile, log_intensity=True, probability=False).log_intensity.values
        np.testing.assert_allclose(lazy, eager, rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="halo"):
        predict(cnn, cube_path, tile_shape=(33, 33))  # 100 = 3 x 33 + 1: an edge tile of 1 cell < halo 2


def test_errors_name_the_problem(mlp: Any, cube: xr.Dataset, model_dir: str, cube_path: str, tmp_path: Path) -> None:
    from geosdm.models import MultiSpeciesSDM

    with pytest.raises(MissingVariableError, match="bio12"):
        predict(mlp, cube.drop_vars("bio12"))
    with pytest.raises(InputError, match="not a fitted"):
        predict(MultiSpeciesSDM(), cube)
    with pytest.raises(InputError, match="dtype"):
        write_predictions(mlp, cube, tmp_path / "x.zarr", dtype="int16")  # type: ignore[arg-type]
    write_predictions(model_dir, cube_path, tmp_path / "a.zarr", tile_shape=TILE)
    with pytest.raises(InputError, match="different configuration"):
        write_predictions(model_dir, cube_path, tmp_path / "a.zarr", tile_shape=TILE, area=400.0)


# ------------------------------------------------------------------------------------------------------ zarr


def test_zarr_uint8_decodes_with_provenance(store: str, mlp: Any, model_dir: str, cube_path: str) -> None:
    ds = xr.open_zarr(store).load()  # plain xarray decodes scale_factor/_FillValue
    raw = open_predictions(store, decode=False).probability.load()
    assert open_predictions(store).probability.chunks == ((len(mlp.species_),), (32, 32, 32, 4), (32, 32, 32, 4))
    lazy = predict(mlp, cube_path, tile_shape=TILE).probability.values
    assert raw.dtype == np.uint8 and int(raw.max()) == 255 and int(raw.values[:, 50:, 50:].max()) <= 250
    np.testing.assert_array_equal(raw.values, encode_probability(lazy, "uint8"))
    assert np.nanmax(np.abs(ds.probability.values - lazy)) <= 0.002 + 1e-6
    assert np.isnan(ds.probability.values[:, SEA[0], SEA[1]]).all()
    enc = ds.probability.encoding
    assert tuple(enc["shards"]) == (len(mlp.species_), *TILE) and tuple(enc["chunks"])[1:] == TILE
    assert ds.attrs["geosdm:model_hash"] == model_fingerprint(mlp)
    assert ds.attrs["geosdm:model_path"] == model_dir and ds.attrs["geosdm:cube"]["path"] == cube_path
    assert ds.attrs["geosdm:config"]["dtype"] == "uint8" and 0.8 < ds.attrs["geosdm:valid_fraction"] < 0.9
    assert ds.probability.attrs["units"] == "1"
    f32 = write_predictions(mlp, cube_path, Path(store).with_name("f32.zarr"), dtype="float32", tile_shape=TILE,
                            log_intensity=True)
    assert f32.n_tiles == 16 and f32.n_empty == 1  # the tile fully in the sea is skipped
    out = open_predictions(f32.path).load()
    np.testing.assert_array_equal(out.probability.values, lazy)
    assert out.log_intensity.dtype == np.float32


def test_kill_and_resume_gives_identical_bytes(model_dir: str, cube_path: str, tmp_path: Path) -> None:
    ref = tmp_path / "ref.zarr"
    write_predictions(model_dir, cube_path, ref, tile_shape=(16, 16))
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", "from geosdm.cli._predict import app; app()", "run", model_dir, cube_path, str(out),
           "--tile", "16", "--no-cogs", "--no-stac", "--no-progress"]
    # the writer runs at the lowest priority, so on a busy machine this watcher still sees the third marker (and
    # kills) long before the 49 small tiles are all done
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: os.nice(19))
    progress = out / "probability.zarr.progress"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(progress.glob("tile_*.json"))) < 3:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(list(progress.glob("tile_*.json")))
    assert 0 < n_before < 49, "the kill must land mid-run"
    report = write_predictions(model_dir, cube_path, out / "probability.zarr", tile_shape=(16, 16))
    assert report.n_resumed == n_before and report.n_tiles == 49, (report, n_before)
    got, want = _files(str(out / "probability.zarr")), _files(str(ref))
    assert sorted(got) == sorted(want)
    assert [k for k in want if got[k] != want[k]] == []


def test_cluster_by_address_and_s3_match_local(mlp: Any, store: str, cube_path: str, tmp_path: Path,
                                               s3: Any) -> None:
    """Cube read from S3 and output written to S3 by worker processes of a cluster reached by its address."""
    import fsspec
    from dask.distributed import LocalCluster

    fs = fsspec.filesystem("s3", **s3.storage_options)
    fs.put(cube_path, "predict/cube.zarr", recursive=True)
    url = "s3://predict/run/probability.zarr"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        report = write_predictions(mlp, "s3://predict/cube.zarr", url, tile_shape=TILE,
                                   storage_options=s3.storage_options, cube_storage_options=s3.storage_options,
                                   client=cluster.scheduler_address)
        cogs = export_cogs(url, "s3://predict/run/cogs", layers=["plant_01"], multiband=False,
                           storage_options=s3.storage_options, client=cluster.scheduler_address)
    assert report.n_tiles == 16 and report.n_resumed == 0 and report.n_empty == 1
    remote, local = _files(url, fs), _files(store)
    assert remote.pop("/zarr.json") != local.pop("/zarr.json")  # group attrs name the cube's and model's origin
    assert remote == local  # every array (metadata, shards) byte for byte
    np.testing.assert_array_equal(open_predictions(url, storage_options=s3.storage_options).probability.values,
                                  open_predictions(store).probability.values)
    local_cog = export_cogs(store, tmp_path / "cogs", layers=["plant_01"], multiband=False)[0]
    assert fs.cat_file(cogs[0].path) == Path(local_cog.path).read_bytes()


def test_a_worker_killed_mid_prediction_is_replaced_and_the_map_is_identical(model_dir: str, store: str,
                                                                            cube_path: str, tmp_path: Path) -> None:
    """A worker process dies (os._exit) as it starts its first tile; its nanny restarts it, the scheduler reruns
    the tile, and the store equals the uninterrupted one byte for byte."""
    from dask.distributed import Client, LocalCluster, WorkerPlugin

    flag = tmp_path / "killed"

    class DieOnce(WorkerPlugin):  # a local class: shipped to the workers by value
        def __init__(self, path: str) -> None:
            self.path = path

        def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
            if finish == "executing" and "geosdm-write" in str(key) and not os.path.exists(self.path):
                open(self.path, "w").close()
                os._exit(1)  # as an OOM kill or a preempted node would

    out = str(tmp_path / "probability.zarr")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.register_plugin(DieOnce(str(flag)))
        report = write_predictions(model_dir, cube_path, out, tile_shape=TILE, client=client)
    assert flag.exists(), "a worker was killed during the run"
    assert report.n_tiles == 16 and report.n_resumed == 0
    got, ref = _files(out), _files(store)
    got.pop("/zarr.json"), ref.pop("/zarr.json")
    assert got == ref


# ------------------------------------------------------------------------------------------------ COG, STAC


def test_cogs_are_valid_and_equal_the_store(store: str, tmp_path: Path) -> None:
    import rasterio
    import rioxarray
    from rio_cogeo.cogeo import cog_validate

    species = ["plant_01", "pest_01"]
    cogs = export_cogs(store, tmp_path / "cogs", layers=species, blocksize=32)
    assert [c.key for c in cogs] == ["probability_plant_01", "probability_pest_01", "probability"]
    assert sorted(p.name for p in (tmp_path / "cogs").iterdir()) == sorted(Path(c.path).name for c in cogs)
    decoded = open_predictions(store).probability.load()
    for cog in cogs:
        assert cog.valid and cog_validate(cog.path, strict=True)[0]
        with rasterio.open(cog.path) as src:
            assert src.overviews(1) == [2, 4] and src.nodata == 255 and src.scales[0] == pytest.approx(0.004)
            assert src.descriptions == tuple(cog.layers) and src.units == ("1",) * len(cog.layers)
            assert src.tags(ns="IMAGE_STRUCTURE")["INTERLEAVE"] == "BAND"
            assert [src.tags(i + 1)["geosdm_species"] for i in range(src.count)] == list(cog.layers)
            tags = src.tags()  # what a value is, without geosdm
            assert tags["units"] == "1" and tags["geosdm_area_m2"] == "7200"
            assert tags["geosdm_decode"] == "value = raw * 0.004 + 0; raw 255 = nodata"
            assert tags["geosdm_calibration"] == "none (fitted on presence/absence or count surveys)"
            assert tags["geosdm_model"] == "MultiSpeciesSDM mlp integrated cloglog" and len(tags["geosdm_model_hash"]) == 16
            assert tags["long_name"] == "presence probability over 7200 m2 (cloglog link)"
        r = rioxarray.open_rasterio(cog.path, mask_and_scale=True)
        np.testing.assert_allclose(r.values, decoded.sel(species=list(cog.layers)).values, atol=1e-6)


class _CountingFile(io.RawIOBase):
    """A binary file that counts the bytes GDAL reads through it (rasterio's ``opener``)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.f, self.n = open(path, "rb"), 0  # noqa: SIM115

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        b = self.f.read(len(buf))
        buf[: len(b)] = b
        self.n += len(b)
        return len(b)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()

    def close(self) -> None:
        self.f.close()
        super().close()


def test_multiband_cog_reads_one_species_alone(store: str, tmp_path: Path) -> None:
    """All 42 species in one COG, band-interleaved: one species reads its own tiles (not all 42 bands')."""
    import rasterio
    from rasterio.shutil import copy as gdal_copy

    cog = export_cogs(store, tmp_path, per_layer=False, blocksize=32)[0]
    assert len(cog.layers) == 42 and cog.valid
    pixel = str(tmp_path / "pixel.tif")  # the former layout: GDAL 3.10's COG driver, pixel-interleaved
    gdal_copy(cog.path, pixel, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=32, PREDICTOR="YES")
    want = open_predictions(store, decode=False).probability.sel(species="plant_01").values
    read = {}
    for path in (cog.path, pixel):
        files: list[_CountingFile] = []

        def opener(name: str, mode: str = "rb") -> _CountingFile:
            files.append(_CountingFile(name))
            return files[-1]

        with rasterio.Env(GDAL_CACHEMAX=16), rasterio.open(path, opener=opener) as src:
            assert src.descriptions == cog.layers
            np.testing.assert_array_equal(src.read(cog.layers.index("plant_01") + 1), want)
            read[src.tags(ns="IMAGE_STRUCTURE")["INTERLEAVE"]] = files[0].n
    assert read["BAND"] * 3 < read["PIXEL"], read


def test_stac_catalog_moves_and_loads_by_species(store: str, tmp_path: Path) -> None:
    """Zarr + COGs + STAC written in one folder, copied elsewhere (the original deleted): odc-stac and stackstac
    load it with no arguments, one band per species, the store's values; the files validate offline."""
    import json
    import shutil

    import odc.stac
    import pystac
    import stackstac

    from geosdm.predict import read_items
    from tests.fixtures.stac_schemas import validate_stac_tree

    first = tmp_path / "first"
    shutil.copytree(store, first / "probability.zarr")
    cogs = export_cogs(first / "probability.zarr", first / "cogs", layers=["plant_01", "pest_01"], blocksize=32)
    out = write_stac(first / "probability.zarr", cogs, first / "stac", collection_id="demo-predictions",
                     item_id="demo", period="2024-01-01/2024-12-31")
    raw_item = json.loads(Path(out.items[0]).read_text())
    assert {k: a["href"] for k, a in raw_item["assets"].items()} == {
        "zarr": "../../probability.zarr", "plant_01": "../../cogs/probability_plant_01.tif",
        "pest_01": "../../cogs/probability_pest_01.tif"}
    alt = next(link for link in raw_item["links"] if link["rel"] == "alternate")  # the multi-band COG, for QGIS
    assert alt["href"] == "../../cogs/probability.tif" and alt["geosdm:species"] == ["plant_01", "pest_01"]
    props = raw_item["properties"]
    assert (props["datetime"], props["start_datetime"], props["end_datetime"]) == (
        "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z", "2024-12-31T23:59:59Z")
    assert props["created"] > "2025" and props["proj:epsg"] == 2154 and props["proj:code"] == "EPSG:2154"
    assert props["geosdm:area_m2"] == 7200.0 and props["geosdm:calibration"].startswith("none")
    band = raw_item["assets"]["plant_01"]["raster:bands"][0]
    assert (band["data_type"], band["nodata"], band["scale"], band["offset"], band["unit"]) == (
        "uint8", 255, 0.004, 0.0, "1")
    assert raw_item["assets"]["plant_01"]["eo:bands"][0]["name"] == "plant_01"
    coll = json.loads(Path(out.collection).read_text())
    assert coll["extent"]["temporal"]["interval"] == [["2024-01-01T00:00:00Z", "2024-12-31T23:59:59Z"]]

    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(first, moved)
    shutil.rmtree(first)
    assert len(validate_stac_tree(moved / "stac")) == 2
    decoded = open_predictions(moved / "probability.zarr").probability.load()
    want = decoded.sel(species=["plant_01", "pest_01"]).values

    plain = list(pystac.Collection.from_file(str(moved / "stac" / "collection.json")).get_items())
    for items in (plain, read_items(moved / "stac")):  # odc-stac resolves relative hrefs itself
        ds = odc.stac.load(items)
        assert list(ds.data_vars) == ["plant_01", "pest_01"] and ds.odc.geobox.crs.epsg == 2154
        raw = ds.to_array("band").isel(time=0).values
        np.testing.assert_allclose(np.where(raw == 255, np.nan, raw * 0.004), want, atol=1e-6)
    stack = stackstac.stack(read_items(moved / "stac"))  # relative hrefs resolved, proj:epsg kept
    assert list(stack.band.values) == ["plant_01", "pest_01"]
    np.testing.assert_allclose(stack.isel(time=0).values, want, atol=1e-6)  # rescaled, nodata -> NaN
    zarr_asset = read_items(moved / "stac")[0].assets["zarr"]
    opened = xr.open_dataset(zarr_asset.href, **zarr_asset.extra_fields["xarray:open_kwargs"])
    assert opened.probability.shape == decoded.shape


def test_items_date_the_covariates_not_the_run(mlp: Any, cube: xr.Dataset) -> None:
    from geosdm.predict import covariate_period

    config = {"datetime": "2024-01-01/2024-12-31",
              "sources": [{"source": "s2", "datetime": "2023-06-01/2023-08-31"}, {"source": "dem"}]}
    assert covariate_period({"geosdm:config": config}) == "2023-06-01T00:00:00Z/2024-12-31T23:59:59Z"
    assert covariate_period({"geosdm:config": {"datetime": "2024", "sources": [{"source": "dem"}]}}) == (
        "2024-01-01T00:00:00Z/2024-12-31T23:59:59Z")
    assert covariate_period({"geosdm:period": "2020-05"}) == "2020-05-01T00:00:00Z/2020-05-31T23:59:59Z"
    assert covariate_period({"geosdm:config": {"sources": [{"source": "dem"}]}}) is None
    assert covariate_period({}) is None
    with dask.config.set(scheduler=_no_compute):  # the predict step carries the cube's period to the store
        out = predict(mlp, cube.assign_attrs({"geosdm:config": config}), tile_shape=TILE)
    assert out.attrs["geosdm:period"] == "2023-06-01T00:00:00Z/2024-12-31T23:59:59Z"


def test_zarr_layers_decode_to_float32(store: str) -> None:
    probs = open_predictions(store).probability
    assert probs.dtype == np.float32 and probs.encoding["dtype"] == np.uint8
    plain = xr.open_zarr(store).probability  # xarray's own decoding: float64 (JSON scale_factor), same values
    np.testing.assert_array_equal(probs.values, plain.values.astype(np.float32))


def test_cli_run_writes_zarr_cogs_and_stac(model_dir: str, cube_path: str, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from geosdm.cli._predict import app

    root = typer.Typer()
    root.add_typer(app, name="predict")  # as the lead registers it
    root.command("noop")(lambda: None)
    res = CliRunner().invoke(root, ["predict", "run", model_dir, cube_path, str(tmp_path / "out"), "--tile", "32",
                                    "--species", "plant_01", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "16 tiles (0 resumed, 1 without valid cells)" in res.output
    assert sorted(p.name for p in (tmp_path / "out" / "cogs").iterdir()) == ["probability.tif", "probability_plant_01.tif"]
    assert (tmp_path / "out" / "stac" / "collection.json").is_file()


def test_run_prediction_from_config(mlp: Any, cube_path: str, tmp_path: Path) -> None:
    cfg = PredictConfig(cube=cube_path, output=str(tmp_path / "p"), dtype="float16", cogs=False,
                        tile_shape=TILE)
    report = run_prediction(cfg, model=mlp)
    assert report.write.n_tiles == 16 and report.cogs == [] and report.stac is not None
    assert xr.open_zarr(cfg.zarr_path).probability.encoding["dtype"] == np.float16
    with pytest.raises(ValueError, match="extra"):
        PredictConfig.model_validate({"model": "m", "cube": "c", "output": "o", "tiles": 3})


@pytest.mark.gpu
def test_cuda_prediction_matches_cpu(mlp: Any, cube_path: str) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from sklearn.base import clone

    gpu = clone(mlp)
    gpu.__dict__.update({k: v for k, v in mlp.__dict__.items() if k.endswith("_")})
    gpu.set_params(device="cuda")
    a = predict(mlp, cube_path, tile_shape=TILE).probability.values
    b = predict(gpu, cube_path, tile_shape=TILE).probability.values
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    from geosdm.services.s3 import S3Server, create_bucket

    with S3Server() as server:
        create_bucket(server.endpoint_url, "predict")
        yield server
