"""Cube builder on the small demo: truth, seams, fractions, resume, S3, cluster, backends, bad inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pystac
import pytest
import xarray as xr
import yaml

from geosdm.cube import CubeConfig, build_cube, resolve_sources
from geosdm.cube.tiling import SourcePlan
from geosdm.demo import DemoLayout
from geosdm.errors import DataSourceError, EmptySearchError, GridError, InputError
from geosdm.io import open_cube

JJA = "2024-06-01/2024-08-31"


def _config(demo: DemoLayout, out: str, *, sources: list[dict] | None = None, datetime: str = "2024-01-01/2024-12-31",
            tile: int = 64, **extra: object) -> CubeConfig:
    region = demo.region()["target_grid"]
    cat = str(demo.catalog_json)
    default = [
        {"source": "demo-sentinel-2-l2a", "catalog": cat, "working_resolution": 20, "indices": ["ndvi", "ndwi"]},
        {"source": "demo-cop-dem-glo-30", "catalog": cat, "working_resolution": 20, "terrain": ["slope"]},
        {"source": "demo-landcover", "catalog": cat, "working_resolution": 20},
        {"source": "demo-bioclim", "catalog": cat},
    ]
    return CubeConfig.model_validate({
        "grid": {"crs": "EPSG:2154", "resolution": region["resolution"], "bbox": region["bbox"]},
        "datetime": datetime,
        "sources": sources if sources is not None else default,
        "output": {"path": out, "tile_shape": [tile, tile], "chunk_shape": [tile // 2, tile // 2]},
        **extra,
    })


def _s2_only(demo: DemoLayout, **kw: object) -> list[dict]:
    return [{"source": "demo-sentinel-2-l2a", "catalog": str(demo.catalog_json), "working_resolution": 20, **kw}]


def _same(a: xr.Dataset, b: xr.Dataset) -> None:
    assert sorted(a.data_vars) == sorted(b.data_vars)
    for v in a.data_vars:
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)


@pytest.fixture(scope="module")
def full_cube(demo_small: DemoLayout, tmp_path_factory: pytest.TempPathFactory) -> xr.Dataset:
    out = tmp_path_factory.mktemp("cube") / "cube.zarr"
    build_cube(_config(demo_small, str(out)))
    return open_cube(str(out)).load()


@pytest.fixture(scope="module")
def truth(demo_small: DemoLayout) -> xr.Dataset:
    return xr.open_zarr(demo_small.truth_zarr).load()


@pytest.mark.parametrize("var", ["s2_B02_jja", "s2_B04_mam", "s2_B08_jja", "s2_B11_son", "s2_B12_mam", "s2_B04_djf"])
def test_composites_match_cloud_free_truth(full_cube: xr.Dataset, truth: xr.Dataset, var: str) -> None:
    a, b = full_cube[var].values, truth[var].values
    ok = np.isfinite(a)
    assert ok.mean() > 0.5
    err = np.abs(a[ok] - b[ok])
    assert err.mean() < 0.004 and np.quantile(err, 0.99) < 0.03, (err.mean(), np.quantile(err, 0.99))


def test_indices_layers_and_metadata(full_cube: xr.Dataset, truth: xr.Dataset) -> None:
    a, b = full_cube["s2_ndvi_jja"].values, truth["s2_ndvi_jja"].values
    ok = np.isfinite(a)
    assert np.corrcoef(a[ok], b[ok])[0, 1] > 0.99
    assert full_cube["s2_B04_jja"].attrs["units"] == "1" and "median" in full_cube["s2_B04_jja"].attrs["long_name"]
    assert full_cube["bio01"].attrs["units"] == "degC"
    assert "spatial_ref" in full_cube.coords and full_cube["bio01"].attrs["grid_mapping"] == "spatial_ref"
    assert "sentinel-2-l2a" not in full_cube.attrs["geosdm:source_items"]  # keyed by source name
    assert len(full_cube.attrs["geosdm:source_items"]["demo-sentinel-2-l2a"]) >= 20
    for v in ["bio01", "bio12", "lc_3"]:
        np.testing.assert_allclose(full_cube[v].values, truth[v].values, atol=1e-3)
    dem_err = np.abs(full_cube["elevation"].values - truth["elevation"].values)  # DEM comes via EPSG:4326
    assert dem_err.mean() < 0.3 and dem_err.max() < 3.0


def test_fractional_cover_sums_to_one(full_cube: xr.Dataset, truth: xr.Dataset) -> None:
    total = sum(full_cube[f"lc_{k}"] for k in range(1, 13))
    np.testing.assert_allclose(total.values, 1.0, atol=1e-5)
    assert full_cube["lc_3"].attrs["categorical"] == "fraction"
    np.testing.assert_allclose(full_cube["lc_7"].values, truth["lc_7"].values, atol=1e-6)


def test_no_seam_between_utm_zones(full_cube: xr.Dataset, truth: xr.Dataset) -> None:
    """Errors next to the 0° meridian (where EPSG:32630 meets EPSG:32631) are no larger than elsewhere."""
    from pyproj import Transformer

    x = full_cube.x.values
    y0 = float(full_cube.y.values.mean())
    lon, _ = Transformer.from_crs(2154, 4326, always_xy=True).transform(x, np.full_like(x, y0))
    near = np.abs(lon) < 0.004
    assert near.sum() >= 2 and (~near).sum() > 10
    for var in ["s2_B08_jja", "s2_B04_mam"]:
        err = np.abs(full_cube[var].values - truth[var].values)
        seam, rest = np.nanmean(err[:, near]), np.nanmean(err[:, ~near])
        assert seam < 1.5 * rest + 0.002, (var, seam, rest)


def test_gaps_are_reported_not_filled(demo_small: DemoLayout, tmp_path: Path) -> None:
    """The fully cloudy date alone: every pixel NaN with valid count 0, and the report says so."""
    cloudy = demo_small.region()["fully_cloudy_s2_date"][:10]
    cfg = _config(demo_small, str(tmp_path / "c.zarr"), sources=_s2_only(demo_small, max_cloud=100), datetime=f"{cloudy}/{cloudy}")
    report = build_cube(cfg)
    cube = open_cube(str(tmp_path / "c.zarr"))
    assert np.isnan(cube["s2_B04_mam"].values).all()
    assert (cube["s2_count_mam"].values == 0).all()
    assert report.gap_fraction["demo-sentinel-2-l2a"]["mam"] == 1.0
    assert cube.attrs["geosdm:gap_fraction"]["demo-sentinel-2-l2a"]["mam"] == 1.0
    # only the period the dates cover is planned: no all-NaN variables for seasons outside them
    assert not [v for v in cube.data_vars if v.endswith(("_jja", "_son", "_djf"))]
    assert set(report.gap_fraction["demo-sentinel-2-l2a"]) == {"mam"}


def test_covered_months() -> None:
    from geosdm.cube.build import covered_months

    assert covered_months("2024-06-01/2024-08-31") == (6, 7, 8)
    assert covered_months("2023-11-15/2024-02-10") == (1, 2, 11, 12)
    assert covered_months("2024-01-01/2024-12-31") is None and covered_months(None) is None
    assert covered_months("2024-06-01/..") is None and covered_months("2024-05-02") == (5,)
    with pytest.raises(InputError, match="ends before"):
        covered_months("2024-06-01/2024-01-01")


def test_kill_and_resume_gives_identical_cube(demo_small: DemoLayout, tmp_path: Path) -> None:
    ref = _config(demo_small, str(tmp_path / "ref.zarr"), sources=_s2_only(demo_small), datetime=JJA, tile=32)
    build_cube(ref)
    killed = ref.model_copy(update={"output": ref.output.model_copy(update={"path": str(tmp_path / "k.zarr")})})
    cfg_path = tmp_path / "cube.yaml"
    cfg_path.write_text(yaml.safe_dump({"cube": killed.model_dump(mode="json")}))
    proc = subprocess.Popen([sys.executable, "-m", "geosdm", "cube", "build", str(cfg_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = Path(str(tmp_path / "k.zarr") + ".progress")
    deadline = time.time() + 120
    while time.time() < deadline and len(list(progress.glob("tile_*.json"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(list(progress.glob("tile_*.json")))
    assert 0 < n_before < 16, "the kill must land mid-build"
    report = build_cube(killed)
    assert report.n_skipped == n_before
    _same(open_cube(str(tmp_path / "k.zarr")).load(), open_cube(str(tmp_path / "ref.zarr")).load())


def test_changed_config_refuses_to_resume(demo_small: DemoLayout, tmp_path: Path) -> None:
    cfg = _config(demo_small, str(tmp_path / "c.zarr"), sources=_s2_only(demo_small), datetime=JJA)
    build_cube(cfg)
    other = _config(demo_small, str(tmp_path / "c.zarr"), sources=_s2_only(demo_small, indices=["ndvi"]), datetime=JJA)
    with pytest.raises(InputError, match="different configuration"):
        build_cube(other)


def test_s3_cluster_and_served_stac_match_local(demo_small: DemoLayout, demo_small_served, tmp_path: Path) -> None:
    """Search the real STAC API, read COGs over HTTP, run tiles on worker processes, write to S3."""
    from dask.distributed import Client, LocalCluster

    local = _config(demo_small, str(tmp_path / "local.zarr"), sources=_s2_only(demo_small, indices=["ndvi"]), datetime=JJA)
    build_cube(local)
    served = [{"source": "demo-sentinel-2-l2a", "url": demo_small_served.stac_url, "working_resolution": 20, "indices": ["ndvi"]}]
    remote = _config(demo_small, f"s3://{demo_small_served.bucket}/cubes/s2.zarr", sources=served, datetime=JJA)
    remote = remote.model_copy(update={"output": remote.output.model_copy(update={"storage_options": demo_small_served.storage_options})})
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster.scheduler_address) as client:  # connect by address, as to a remote scheduler
        report = build_cube(remote, client=client)
    assert report.n_tiles == 4 and not report.failures
    s3 = open_cube(remote.output.path, storage_options=demo_small_served.storage_options).load()
    _same(s3, open_cube(str(tmp_path / "local.zarr")).load())


def test_stackstac_backend_agrees(demo_small: DemoLayout, tmp_path: Path) -> None:
    a = _config(demo_small, str(tmp_path / "odc.zarr"), sources=_s2_only(demo_small), datetime=JJA)
    b = a.model_copy(update={"backend": "stackstac", "output": a.output.model_copy(update={"path": str(tmp_path / "ss.zarr")})})
    build_cube(a)
    build_cube(b)
    ca, cb = open_cube(str(tmp_path / "odc.zarr")).load(), open_cube(str(tmp_path / "ss.zarr")).load()
    for v in ["s2_B04_jja", "s2_B08_jja"]:
        ok = np.isfinite(ca[v].values) & np.isfinite(cb[v].values)
        assert ok.mean() > 0.9
        assert np.abs(ca[v].values[ok] - cb[v].values[ok]).mean() < 0.003


# ------------------------------------------------------------------------------------------------ bad inputs


def _plans_with(demo: DemoLayout, cfg: CubeConfig, edit) -> list[SourcePlan]:  # type: ignore[no-untyped-def]
    plans = resolve_sources(cfg)
    return [SourcePlan(p.source, tuple(edit(list(p.items))), p.factor, p.indices, p.terrain, p.assets, p.mask_buffer) for p in plans]


def test_unreachable_and_corrupt_assets_are_reported(demo_small: DemoLayout, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + os.urandom(2048))

    def edit(items: list[pystac.Item]) -> list[pystac.Item]:
        items = [i.clone() for i in items]
        items[0].assets["B04"].href = str(tmp_path / "missing.tif")
        items[1].assets["B08"].href = str(corrupt)
        return items

    cfg = _config(demo_small, str(tmp_path / "c.zarr"), sources=_s2_only(demo_small), datetime=JJA, retries=1)
    report = build_cube(cfg, plans=_plans_with(demo_small, cfg, edit))
    failed = {f["item_id"] for f in report.failures["demo-sentinel-2-l2a"]}
    assert len(failed) == 2
    cube = open_cube(str(tmp_path / "c.zarr"))
    assert sorted(failed) == sorted(f["item_id"] for f in cube.attrs["geosdm:failed_items"]["demo-sentinel-2-l2a"])
    assert np.isfinite(cube["s2_B04_jja"].values).mean() > 0.5


def test_all_items_unreadable_is_an_error(demo_small: DemoLayout, tmp_path: Path) -> None:
    def edit(items: list[pystac.Item]) -> list[pystac.Item]:
        items = [i.clone() for i in items]
        for i in items:
            i.assets["B04"].href = str(tmp_path / "missing.tif")
        return items

    cfg = _config(demo_small, str(tmp_path / "c.zarr"), sources=_s2_only(demo_small), datetime=JJA, retries=0)
    with pytest.raises(DataSourceError, match="none of its"):
        build_cube(cfg, plans=_plans_with(demo_small, cfg, edit))


def test_item_without_projection_is_an_error(demo_small: DemoLayout, tmp_path: Path) -> None:
    ic = json.loads(demo_small.item_collection("demo-landcover").read_text())
    for f in ic["features"]:
        for k in [k for k in f["properties"] if k.startswith("proj:")]:
            del f["properties"][k]
        for a in f["assets"].values():
            for k in [k for k in a if k.startswith("proj:")]:
                del a[k]
            a["href"] = str(demo_small.root / a["href"])
    path = tmp_path / "noproj.json"
    path.write_text(json.dumps(ic))
    cfg = _config(demo_small, str(tmp_path / "c.zarr"), sources=[{"source": "demo-landcover", "catalog": str(path)}])
    with pytest.raises(Exception, match="proj"):
        build_cube(cfg)


def test_empty_search_and_grid_outside_items(demo_small: DemoLayout, tmp_path: Path) -> None:
    cfg = _config(demo_small, str(tmp_path / "c.zarr"), sources=_s2_only(demo_small), datetime="2019-01-01/2019-12-31")
    with pytest.raises(EmptySearchError):
        build_cube(cfg)
    far = _config(demo_small, str(tmp_path / "d.zarr"), sources=_s2_only(demo_small), datetime=JJA)
    far = far.model_copy(update={"grid": far.grid.model_copy(update={"bbox": (900_000.0, 6_200_000.0, 906_000.0, 6_206_000.0)})})
    with pytest.raises((EmptySearchError, GridError)):
        build_cube(far)


def test_bad_config_values(demo_small: DemoLayout, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="working_resolution"):
        build_cube(_config(demo_small, str(tmp_path / "c.zarr"), sources=_s2_only(demo_small, working_resolution=25), datetime=JJA))
    with pytest.raises(InputError, match="index"):
        build_cube(_config(demo_small, str(tmp_path / "c.zarr"), sources=_s2_only(demo_small, indices=["evi9"]), datetime=JJA))
