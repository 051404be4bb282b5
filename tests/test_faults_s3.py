"""Faults on the local S3 server (moto, on 127.0.0.1) and on HTTP, injected by the fault server as a reverse proxy.

``tests/fixtures/fault_server.py`` runs in front of the session's moto server (``s3_server``) and answers chosen
requests with S3's throttling error (503 SlowDown) or a 500 InternalError, truncates a body, or cuts an upload
off in the middle; geosdm talks to the proxy through the ordinary ``storage_options`` endpoint. Every output is
read back from the moto server itself (not through the proxy) and compared with one written without faults.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geosdm.errors import DataSourceError
from geosdm.services import S3Server, create_bucket, s3_client, s3_storage_options

BUCKET = "geosdm-faults"
VARIABLES = ("a", "b", "c")
SHAPE, TILE = (64, 64), (32, 32)


# ------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def s3(s3_server: S3Server) -> S3Server:
    """The session's moto server with this module's bucket."""
    create_bucket(s3_server.endpoint_url, BUCKET)
    return s3_server


@pytest.fixture()
def prefix() -> str:
    """A fresh key prefix in the bucket for one test."""
    return f"{BUCKET}/{uuid.uuid4().hex[:8]}"


def _fs(options: dict[str, Any]) -> Any:
    import fsspec

    return fsspec.filesystem("s3", skip_instance_cache=True, **options)


@pytest.fixture()
def proxy(s3: S3Server, fault_server: Callable[..., Any]) -> Callable[[dict[str, list[str]]], Any]:
    """``proxy(plan)``: the fault server in front of moto; ``.url`` is the endpoint geosdm is given."""
    return lambda plan: fault_server(s3.endpoint_url, plan)


def _geobox() -> Any:
    from odc.geo.geobox import GeoBox

    return GeoBox.from_bbox((400_000, 5_000_000, 400_000 + 20 * SHAPE[1], 5_000_000 + 20 * SHAPE[0]),
                            "EPSG:32631", resolution=20)


def _write_cube(path: str, storage_options: dict[str, Any] | None = None) -> None:
    """A covariate cube written like ``geosdm cube build`` writes one: shards = tiles, a marker per tile listing
    the variables that hold data (``CubeStore.write_arrays``), consolidated metadata."""
    from geosdm.io.zarr import CubeStore, VariableSpec

    rng = np.random.default_rng(0)
    store = CubeStore(path, _geobox(), TILE, None, storage_options)
    store.create([VariableSpec(v) for v in VARIABLES], attrs={"title": "fault cube"}, fingerprint="faults")
    data = {v: rng.normal(size=SHAPE).astype("float32") for v in VARIABLES}
    for iy in range(SHAPE[0] // TILE[0]):
        for ix in range(SHAPE[1] // TILE[1]):
            sl = (slice(iy * TILE[0], (iy + 1) * TILE[0]), slice(ix * TILE[1], (ix + 1) * TILE[1]))
            store.write_arrays((iy, ix), sl, {v: d[sl] for v, d in data.items()})
    store.finalize()


@pytest.fixture(scope="module")
def model() -> Any:
    from geosdm.models import MultiSpeciesSDM

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 3)).astype("float32"), columns=list(VARIABLES))
    Y = pd.DataFrame((rng.random((200, 2)) < 0.3).astype("float32"), columns=["sp_1", "sp_2"])
    return MultiSpeciesSDM(loss="bce", epochs=1, hidden=8, val_size=0, seed=0).fit(X, Y)


@pytest.fixture(scope="module")
def s3_cube(s3: S3Server) -> str:
    """The cube in the bucket (written straight to moto), shared read-only by the tests."""
    url = f"s3://{BUCKET}/shared/cube.zarr"
    _write_cube(url, s3.storage_options)
    return url


def _objects(fs: Any, root: str) -> dict[str, bytes]:
    """Every object under ``root`` (relative key -> bytes), read from moto itself."""
    base = root.split("://", 1)[-1].rstrip("/")
    return {p[len(base):]: fs.cat_file(p) for p in fs.find(base)}


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _kinds(server: Any) -> list[str]:
    return [line.split()[0] for line in server.injected()]


def _no_pending_uploads(s3: S3Server, prefix: str) -> None:
    bucket, _, key = prefix.partition("/")
    pending = s3_client(s3.endpoint_url).list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
    assert pending == [], pending


# -------------------------------------------------------------------------------------- (a) Zarr under throttling


@pytest.mark.slow  # end to end (> 10 s); make test-all and CI run it
def test_prediction_to_s3_rides_out_throttling_and_equals_a_clean_write(model: Any, s3: S3Server, s3_cube: str,
                                                                        proxy: Any, prefix: str) -> None:
    """503 SlowDown on the first two PUTs of every shard, a 500 on a marker and on the final metadata, SlowDown and
    a truncated body on reads of the cube: botocore/s3fs retry them; the store equals one written without faults."""
    from geosdm.predict import open_predictions, write_predictions

    direct = s3.storage_options
    ref = f"s3://{prefix}/ref/probability.zarr"
    write_predictions(model, s3_cube, ref, tile_shape=TILE, storage_options=direct, cube_storage_options=direct)
    run = f"s3://{prefix}/run/probability.zarr"
    key = run.split("://", 1)[1]
    server = proxy({
        f"PUT /{key}/probability/c/": ["503", "503"],  # every shard (4 tiles): throttled twice
        f"PUT /{key}.progress/tile_0001_0000.json": ["500"],
        f"PUT /{key}/zarr.json": ["503", "500"],  # the store's metadata: throttled, then a 500, then written
        f"GET /{BUCKET}/shared/cube.zarr/b/c/1/1": ["503", "truncate"],
    })
    opts = s3_storage_options(server.url)
    report = write_predictions(model, s3_cube, run, tile_shape=TILE, storage_options=opts, cube_storage_options=opts)
    kinds = _kinds(server)
    assert kinds.count("503") >= 9 and kinds.count("500") >= 2 and "truncate" in kinds, server.injected()
    assert report.n_tiles == 4 and report.n_resumed == 0 and report.valid_fraction == 1.0
    fs = _fs(direct)
    got, want = _objects(fs, run), _objects(fs, ref)
    assert sorted(got) == sorted(want) and len([k for k in got if k.startswith("/probability/c/")]) == 4
    assert [k for k in want if k not in ("/zarr.json",) and got[k] != want[k]] == []  # every shard and marker
    a = open_predictions(run, storage_options=direct, decode=False).probability.values
    b = open_predictions(ref, storage_options=direct, decode=False).probability.values
    assert _sha(a) == _sha(b) and (a != 255).all()


# ------------------------------------------------------------------------ (b) COG/STAC export, multipart uploads


def _big_layers(url: str, storage_options: dict[str, Any]) -> None:
    """A (y, x) float32 layer store of noise whose COG is ~17 MB: over twice a 5 MiB part, so a multipart upload."""
    import odc.geo.xr  # noqa: F401
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import wrap_xr

    from geosdm.io.layers import write_layers

    gbox = GeoBox.from_bbox((0, 0, 2048 * 10, 2048 * 10), "EPSG:32631", resolution=10)
    data = np.random.default_rng(1).random(gbox.shape, dtype=np.float32)
    ds = xr.Dataset({"score": wrap_xr(data, gbox)})
    write_layers(ds, url, dtypes="float32", tile_shape=(1024, 1024), storage_options=storage_options,
                 identity={"test": "big"})


PART = 5 * 2**20  # s3fs's smallest part; multipart for files over 2 parts


@pytest.mark.slow  # end to end (> 10 s); make test-all and CI run it
def test_cog_and_stac_export_retry_an_interrupted_multipart_upload(s3: S3Server, proxy: Any, prefix: str,
                                                                   tmp_path: Path) -> None:
    """The multipart upload of a COG is cut off in part 2, throttled at its start and at completion, and the STAC
    writes are throttled: all retried; the COG in the bucket is byte for byte the local export, the STAC
    Item names it and every output reads back."""
    import rasterio

    from geosdm.predict import export_cogs, write_stac

    direct = {**s3.storage_options, "default_block_size": PART}
    store = f"s3://{prefix}/layers.zarr"
    _big_layers(store, direct)
    out, stac = f"s3://{prefix}/cogs", f"s3://{prefix}/stac"
    server = proxy({
        f"POST /{prefix}/cogs/score.tif?uploads": ["503"],  # CreateMultipartUpload
        f"PUT /{prefix}/cogs/score.tif?partNumber=2": ["drop", "503"],  # UploadPart cut off, then throttled
        f"POST /{prefix}/cogs/score.tif?uploadId": ["500"],  # CompleteMultipartUpload
        f"PUT /{prefix}/stac/": ["503", "503"],  # the Item and the Collection, twice each
    })
    opts = {**s3_storage_options(server.url), "default_block_size": PART}
    cogs = export_cogs(store, out, variable="score", storage_options=opts)
    written = write_stac(store, cogs, stac, collection_id="faults", storage_options=opts)
    kinds = _kinds(server)
    assert sorted(set(kinds)) == ["500", "503", "drop"] and len(kinds) == 8, server.injected()
    assert any("partNumber=2" in line and line.startswith("drop") for line in server.injected())
    fs = _fs(direct)
    assert fs.size(f"{prefix}/cogs/score.tif") > 2 * PART  # it did go up in parts
    local = export_cogs(store, tmp_path / "cogs", variable="score", storage_options=direct)[0]
    assert local.valid
    assert fs.cat_file(f"{prefix}/cogs/score.tif") == Path(local.path).read_bytes()
    remote = tmp_path / "remote.tif"
    remote.write_bytes(fs.cat_file(f"{prefix}/cogs/score.tif"))
    with rasterio.open(remote) as src:
        assert src.shape == (2048, 2048) and src.overviews(1)
    coll = json.loads(fs.cat_file(written.collection.split("://", 1)[1]))
    item = json.loads(fs.cat_file(written.items[0].split("://", 1)[1]))
    # hrefs relative to the Item (same bucket), so the catalog survives a copy to another bucket or host
    assert coll["id"] == "faults" and item["assets"]["score"]["href"] == "../../cogs/score.tif"
    assert item["assets"]["zarr"]["href"] == "../../layers.zarr"
    from pystac.utils import make_absolute_href

    assert make_absolute_href("../../cogs/score.tif", written.items[0]) == f"{out}/score.tif"
    assert sorted(fs.ls(f"{prefix}/cogs", detail=False)) == [f"{prefix}/cogs/score.tif"]  # no partial object
    _no_pending_uploads(s3, prefix)


def test_an_upload_that_keeps_failing_stops_with_the_object_named_and_leaves_nothing(s3: S3Server, proxy: Any,
                                                                                      prefix: str) -> None:
    """Part 2 of the COG's multipart upload is cut off on every try: the export fails with DataSourceError
    naming the object; no object at the key, the multipart upload aborted. A STAC write that always gets a 500
    fails the same way, and the Collection is not written without its Item."""
    from geosdm.predict import export_cogs, write_stac
    from geosdm.predict.cog import CogOutput

    direct = {**s3.storage_options, "default_block_size": PART}
    store = f"s3://{prefix}/layers.zarr"
    _big_layers(store, direct)
    out = f"s3://{prefix}/cogs"
    server = proxy({f"PUT /{prefix}/cogs/score.tif?partNumber=2": ["always_drop"],
                    f"PUT /{prefix}/stac/faults/": ["always_500"]})
    opts = {**s3_storage_options(server.url), "default_block_size": PART,
            "config_kwargs": {"retries": {"max_attempts": 2, "mode": "standard"}}}
    with pytest.raises(DataSourceError, match=rf"cannot upload {out}/score\.tif .*rerun the export"):
        export_cogs(store, out, variable="score", storage_options=opts)
    assert _kinds(server).count("always_drop") >= 2, server.injected()
    fs = _fs(direct)
    assert not fs.exists(f"{prefix}/cogs/score.tif") and fs.find(f"{prefix}/cogs") == []
    _no_pending_uploads(s3, prefix)
    cog = CogOutput(f"{out}/score.tif", "score", ("score",), "float32", float("nan"), 1.0, 0.0, (2048, 2048), None,
                    True, "score")
    with pytest.raises(DataSourceError, match=rf"cannot write STAC file s3://{prefix}/stac/faults/faults\.json"):
        write_stac(store, [cog], f"s3://{prefix}/stac", collection_id="faults", storage_options=opts)
    assert not fs.exists(f"{prefix}/stac")  # neither the Item nor a Collection linking to it


# ------------------------------------------------------------------------------------ (c) missing keys on read


def test_a_missing_cube_shard_or_variable_on_s3_names_it(model: Any, s3: S3Server, prefix: str) -> None:
    """A shard object deleted from the bucket, then a whole variable's objects (consolidated metadata still
    lists it): prediction stops with DataSourceError naming the variable and tile, never a NaN map."""
    from geosdm.predict import write_predictions

    opts = s3.storage_options
    cube = f"s3://{prefix}/cube.zarr"
    _write_cube(cube, opts)
    fs = _fs(opts)
    fs.rm_file(f"{prefix}/cube.zarr/b/c/1/0")
    with pytest.raises(DataSourceError, match=r"lacks 1 shard\(s\) .*\['b'\] .*tile 1, 0") as err:
        write_predictions(model, cube, f"s3://{prefix}/out.zarr", storage_options=opts, cube_storage_options=opts)
    assert f"{prefix}/cube.zarr.progress/tile_0001_0000.json" in str(err.value)
    fs.rm(f"{prefix}/cube.zarr/c", recursive=True)
    assert "c" in xr.open_zarr(cube, storage_options=opts, zarr_format=3).data_vars  # still listed
    with pytest.raises(DataSourceError, match=r"lacks 5 shard\(s\) .*\['b', 'c'\]"):
        write_predictions(model, cube, f"s3://{prefix}/out.zarr", storage_options=opts, cube_storage_options=opts)
    assert not fs.exists(f"{prefix}/out.zarr/zarr.json")


def test_a_missing_cube_on_s3_is_named(model: Any, s3: S3Server, prefix: str) -> None:
    from geosdm.predict import write_predictions

    opts = s3.storage_options
    with pytest.raises(DataSourceError, match=rf"no cube at 's3://{prefix}/nowhere\.zarr'"):
        write_predictions(model, f"s3://{prefix}/nowhere.zarr", f"s3://{prefix}/out.zarr", storage_options=opts,
                          cube_storage_options=opts)


def test_export_of_a_prediction_store_with_a_lost_shard_is_refused(model: Any, s3: S3Server, s3_cube: str,
                                                                  prefix: str) -> None:
    """A shard of the probability store is gone from the bucket: export_cogs names it instead of writing COGs
    with a nodata hole (it used to read the fill value, 255, and exit normally)."""
    from geosdm.predict import export_cogs, write_predictions

    opts = s3.storage_options
    store = f"s3://{prefix}/probability.zarr"
    write_predictions(model, s3_cube, store, tile_shape=TILE, storage_options=opts, cube_storage_options=opts)
    fs = _fs(opts)
    shard = next(p for p in fs.find(f"{prefix}/probability.zarr/probability/c") if p.endswith("/0/1"))
    fs.rm_file(shard)
    with pytest.raises(DataSourceError, match=r"lacks 1 shard\(s\) of 'probability' .*tile 0, 1"):
        export_cogs(store, f"s3://{prefix}/cogs", storage_options=opts)
    assert not fs.exists(f"{prefix}/cogs/probability.tif")


# ------------------------------------------------------------------------------ (d) prediction over HTTP faults


def test_prediction_from_a_cube_over_http_with_faults(model: Any, fault_server: Any, tmp_path: Path) -> None:
    """The cube read over HTTP through the fault server: two 503s and a truncated body (Content-Length announced,
    half sent) on one shard, a connection dropped before any answer on another: read_window tries again with
    backoff and the map equals the local one. A host that answers 500 every time stops the prediction with
    DataSourceError naming the variable, the cells and the host with its status, not "corrupt shard"."""
    from geosdm.io.reading import READ_RETRIES
    from geosdm.predict import predict

    root = tmp_path / "served"
    _write_cube(str(root / "cube.zarr"))
    local = predict(model, str(root / "cube.zarr"), tile_shape=TILE).probability.values
    server = fault_server(root, {"cube.zarr/a/c/1/1": ["503", "503", "truncate"], "cube.zarr/b/c/0/1": ["drop"]})
    got = predict(model, f"{server.url}/cube.zarr", tile_shape=TILE).probability.values
    np.testing.assert_array_equal(got, local)
    assert sorted(_kinds(server)) == ["503", "503", "drop", "truncate"], server.injected()
    server = fault_server(root, {"cube.zarr/a/c/1/1": ["always_500"]})
    host = server.url.split("://", 1)[1]
    pattern = (rf"variable 'a' at rows 32:64, columns 32:64: transient read error from the host {host} \(HTTP 500\) "
               rf"on each of {READ_RETRIES + 1} tries")
    with pytest.raises(DataSourceError, match=pattern) as err:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predict(model, f"{server.url}/cube.zarr", tile_shape=TILE).probability.values
    assert "corrupt" not in str(err.value) and "rebuild" not in str(err.value)
    assert _kinds(server).count("always_500") >= READ_RETRIES + 1
