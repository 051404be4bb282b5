"""Raster and dataset cube sources on small files written here: GeoTIFF (one per variable, multi-band), NetCDF
with and without a CF grid mapping, Zarr on the local S3 server, categorical legends, mixing with a STAC
(cog-urls) source, resume, and bad inputs with clear errors."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import yaml
from affine import Affine
import rioxarray  # noqa: F401  (the .rio accessor)
from pydantic import ValidationError

from geosdm.cube import CubeConfig, build_cube
from geosdm.errors import GridError, InputError, MissingVariableError
from geosdm.grid import geobox_from_bbox
from geosdm.io import open_cube
from geosdm.io.zarr import quiet_zarr

CRS = "EPSG:32631"  # UTM 31N: around (500 km, 5000 km) it lies in southern France
X0, Y1, RES = 500_000.0, 5_000_000.0, 100.0  # upper-left corner and pixel size of every test raster
NY, NX = 30, 40


# ------------------------------------------------------------------------------------------------ helpers


def _transform(res: float = RES, origin: tuple[float, float] = (X0, Y1)) -> Affine:
    return Affine(res, 0.0, origin[0], 0.0, -res, origin[1])


def _tif(path: Path, data: np.ndarray, *, crs: str | None = CRS, nodata: float | None = None,
         descriptions: list[str] | None = None, res: float = RES, origin: tuple[float, float] = (X0, Y1)) -> str:
    """A tiled GeoTIFF of ``data`` ((bands,) y, x) on the test grid; returns its path."""
    import rasterio

    data = data[None] if data.ndim == 2 else data
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype.name, transform=_transform(res, origin), nodata=nodata, tiled=True,
                   blockxsize=16, blockysize=16)
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or (), start=1):
            dst.set_band_description(i, d)
    return str(path)


def _field(seed: int = 0, shape: tuple[int, int] = (NY, NX)) -> np.ndarray:
    """A smooth float32 field with some fine detail (values well away from 0)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    return (10 + 0.3 * xx + 0.2 * yy + np.sin(xx / 4) + rng.normal(0, 0.05, shape)).astype(np.float32)


def _centres(n: int, start: float, step: float) -> np.ndarray:
    return start + step * (np.arange(n) + 0.5)


def _warp(data: np.ndarray, gbox: Any, resampling: str = "bilinear") -> np.ndarray:
    """``data`` (on the test grid) warped onto ``gbox`` by one GDAL call over the whole array."""
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    out = np.full(gbox.shape, np.nan, np.float32)
    reproject(data, out, src_transform=_transform(), src_crs=CRS, dst_transform=gbox.transform, dst_crs=str(gbox.crs),
              resampling=Resampling[resampling], src_nodata=np.nan, dst_nodata=np.nan, XSCALE=1, YSCALE=1)
    return out


def _cube(tmp_path: Path, grid: dict[str, Any], sources: list[dict[str, Any]], *, name: str = "cube.zarr",
          tile: int = 16, **extra: Any) -> CubeConfig:
    return CubeConfig.model_validate({
        "grid": grid,
        "sources": sources,
        "output": {"path": str(tmp_path / name), "tile_shape": [tile, tile]},
        **extra,
    })


def _raster_source(name: str, assets: dict[str, dict[str, Any]], **kw: Any) -> dict[str, Any]:
    full = {k: {"long_name": k, "dtype": None, **a} for k, a in assets.items()}
    return {"source": {"name": name, "kind": "raster", "assets": full, **kw.pop("definition", {})}, **kw}


def _dataset_source(name: str, url: str, assets: dict[str, dict[str, Any]], **kw: Any) -> dict[str, Any]:
    full = {k: {"long_name": k, "dtype": None, **a} for k, a in assets.items()}
    return {"source": {"name": name, "kind": "dataset", "url": url, "assets": full, **kw.pop("definition", {})}, **kw}


def _build(cfg: CubeConfig) -> xr.Dataset:
    build_cube(cfg)
    return open_cube(cfg.output.path).load()


def _grid_around(res: float) -> dict[str, Any]:
    """A bbox grid in the test rasters' CRS over their extent, aligned with their pixels."""
    return {"crs": CRS, "resolution": res, "bbox": [X0, Y1 - NY * RES, X0 + NX * RES, Y1]}


def _cf_dataset(values: dict[str, np.ndarray], *, times: Any = None, grid_mapping: str | None = CRS,
                mapping_name: str = "spatial_ref", wkt: bool = True, ascending_y: bool = False) -> xr.Dataset:
    """A CF dataset of ``values`` on the test grid (y/x in metres) with a grid-mapping variable ``mapping_name``
    (CF parameters, plus ``crs_wkt`` when ``wkt``), or none when ``grid_mapping`` is None."""
    from pyproj import CRS as ProjCRS

    x = _centres(NX, X0, RES)
    y = _centres(NY, Y1, -RES)
    if ascending_y:
        y = y[::-1]
        values = {k: v[..., ::-1, :] for k, v in values.items()}
    dims = ("time", "y", "x") if times is not None else ("y", "x")
    attrs = {"grid_mapping": mapping_name} if grid_mapping else {}
    ds = xr.Dataset(
        {k: (dims, v, dict(attrs, units="1")) for k, v in values.items()},
        coords={"x": ("x", x, {"units": "m", "standard_name": "projection_x_coordinate"}),
                "y": ("y", y, {"units": "m", "standard_name": "projection_y_coordinate"}),
                **({"time": times} if times is not None else {})},
    )
    if grid_mapping:
        crs = ProjCRS(grid_mapping)
        cf = {k: v for k, v in crs.to_cf().items() if k != "crs_wkt"}
        ds[mapping_name] = xr.DataArray(np.int32(0), attrs={**cf, **({"crs_wkt": crs.to_wkt()} if wkt else {})})
    return ds


# ------------------------------------------------------------------------------------------------ GeoTIFF


def test_geotiff_per_variable_round_trips_on_its_own_grid(tmp_path: Path) -> None:
    a, b = _field(1), _field(2) * 3
    a[3:6, 10:14] = -9999.0  # nodata -> NaN
    ta = _tif(tmp_path / "a.tif", a, nodata=-9999.0)
    tb = _tif(tmp_path / "b.tif", b)
    src = _raster_source("mine", {"alpha": {"href": ta, "units": "degC"}, "beta": {"href": tb, "name": "b"}})
    cube = _build(_cube(tmp_path, {"like": ta}, [src]))
    assert sorted(cube.data_vars) == ["alpha", "b"]
    assert cube.sizes == {"y": NY, "x": NX}
    expect = np.where(a == -9999.0, np.nan, a)
    np.testing.assert_array_equal(cube["alpha"].values, expect)  # bit-exact: windows pasted, not warped
    np.testing.assert_array_equal(cube["b"].values, b)
    np.testing.assert_allclose(cube.x.values, _centres(NX, X0, RES))
    np.testing.assert_allclose(cube.y.values, _centres(NY, Y1, -RES))
    assert cube["alpha"].attrs["units"] == "degC" and cube["alpha"].attrs["source"] == "mine"
    assert cube.rio.crs.to_epsg() == 32631


def test_geotiff_reprojected_to_another_crs_matches_a_direct_warp(tmp_path: Path) -> None:
    """Tile by tile onto Lambert-93: the same values as one GDAL warp of the whole file."""
    a = _field(3)
    ta = _tif(tmp_path / "a.tif", a)
    grid = {"crs": "EPSG:2154", "resolution": 100, "bbox": [3.02, 45.125, 3.05, 45.14], "bbox_crs": "EPSG:4326"}
    cube = _build(_cube(tmp_path, grid, [_raster_source("mine", {"alpha": {"href": ta}})]))
    gbox = geobox_from_bbox(tuple(grid["bbox"]), crs="EPSG:2154", resolution=100, bbox_crs="EPSG:4326")
    assert cube.sizes == {"y": gbox.shape[0], "x": gbox.shape[1]} and cube.sizes["y"] > 16  # several tiles
    direct = _warp(a, gbox)
    got = cube["alpha"].values
    both = np.isfinite(got) & np.isfinite(direct)
    assert both.sum() > 300 and (np.isfinite(got) != np.isfinite(direct)).sum() <= 4  # same edges
    np.testing.assert_allclose(got[both], direct[both], atol=1e-4)
    # and close to the field itself, sampled at the cell centres (bilinear on a smooth field)
    from pyproj import Transformer

    xx, yy = np.meshgrid(cube.x.values, cube.y.values)
    ux, uy = Transformer.from_crs("EPSG:2154", CRS, always_xy=True).transform(xx, yy)
    col, row = (ux - X0) / RES - 0.5, (Y1 - uy) / RES - 0.5
    inside = (col >= 0) & (col <= NX - 1) & (row >= 0) & (row <= NY - 1)
    exact = 10 + 0.3 * col + 0.2 * row + np.sin(col / 4)
    assert np.abs(got[inside] - exact[inside]).max() < 0.3


def test_multiband_geotiff_bands_by_number_and_by_name(tmp_path: Path) -> None:
    bands = np.stack([np.full((NY, NX), 100 * (i + 1), np.uint16) + np.arange(NX, dtype=np.uint16)
                      for i in range(3)])
    path = _tif(tmp_path / "multi.tif", bands, descriptions=["red", "green", "nir"])
    src = _raster_source("ortho", {
        "r": {"href": path, "band": 1, "dtype": "uint16"},
        "n": {"href": path, "band": "nir", "dtype": "uint16", "scale": 0.5, "offset": 1.0},
        "g": {"href": path, "band": "green", "dtype": "uint16", "name": "green"},
    })
    cube = _build(_cube(tmp_path, {"like": path}, [src]))
    np.testing.assert_array_equal(cube["r"].values, bands[0])
    np.testing.assert_array_equal(cube["green"].values, bands[1])
    np.testing.assert_allclose(cube["n"].values, bands[2] * 0.5 + 1.0)


# ------------------------------------------------------------------------------------------------ NetCDF


def test_netcdf_with_cf_grid_mapping_variables_renamed_and_seasons_composited(tmp_path: Path) -> None:
    import pandas as pd

    times = pd.date_range("2019-01-01", periods=24, freq="MS") + pd.Timedelta(days=14)  # mid-month, 2019-2020
    rng = np.random.default_rng(4)
    tas = (rng.normal(15, 5, (24, NY, NX))).astype(np.float32)
    tas[rng.random(tas.shape) < 0.1] = np.nan  # gaps: means over the valid steps only
    pr = rng.gamma(2, 3, (24, NY, NX)).astype(np.float32)
    pr[np.isnan(tas)] = np.nan  # the same gaps in both (the count layer is per source)
    path = tmp_path / "climate.nc"
    ds = _cf_dataset({"tas": tas, "pr": pr, "other": pr}, times=times, mapping_name="utm")  # a named grid mapping
    ds.to_netcdf(path, engine="h5netcdf")

    src = _dataset_source("clim", str(path), {
        "temperature": {"variable": "tas", "name": "t", "units": "degC"},
        "precip": {"variable": "pr"},
    }, definition={"composite": {"period": "season", "statistics": ["mean"]}})
    # 2019-03 .. 2020-11: DJF pools 2019-12, 2020-01, 2020-02 only
    cube = _build(_cube(tmp_path, {"like": str(path)}, [src], datetime="2019-03-01/2020-11-30"))
    assert {"t_djf_mean", "t_jja_mean", "precip_mam_mean", "clim_count_djf"} <= set(cube.data_vars)
    assert "other" not in cube.data_vars and not any(v.startswith("tas") for v in cube.data_vars)
    keep = (times >= "2019-03-01") & (times <= "2020-11-30")
    for season, months in {"djf": (12, 1, 2), "mam": (3, 4, 5), "jja": (6, 7, 8), "son": (9, 10, 11)}.items():
        sel = keep & times.month.isin(months)
        assert sel.sum() == (3 if season == "djf" else 6)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
            expect_t, expect_pr = np.nanmean(tas[sel], axis=0), np.nanmean(pr[sel], axis=0)
        np.testing.assert_allclose(cube[f"t_{season}_mean"].values, expect_t, rtol=1e-5, err_msg=season)
        np.testing.assert_allclose(cube[f"precip_{season}_mean"].values, expect_pr, rtol=1e-5)
        np.testing.assert_array_equal(cube[f"clim_count_{season}"].values, np.isfinite(tas[sel]).sum(axis=0))
    assert cube.rio.crs.to_epsg() == 32631
    np.testing.assert_allclose(cube.y.values, _centres(NY, Y1, -RES))


def test_netcdf_months_on_a_reprojected_grid(tmp_path: Path) -> None:
    """Month means of a dataset warped onto a coarser grid in another CRS are the warp of the month means."""
    import pandas as pd

    times = pd.date_range("2020-01-01", periods=36, freq="10D")  # 2020-01 .. 2020-12
    tas = np.stack([_field(0) + 0.1 * i for i in range(times.size)])
    path = tmp_path / "daily.nc"
    # a grid mapping with CF parameters only (no crs_wkt): the CRS is rebuilt from them
    _cf_dataset({"tas": tas}, times=times, mapping_name="crs", wkt=False).to_netcdf(path, engine="h5netcdf")
    src = _dataset_source("clim", str(path), {"tas": {}},
                          definition={"composite": {"period": "month", "statistics": ["mean", "max"]}})
    grid = {"crs": "EPSG:2154", "resolution": 200, "bbox": [3.02, 45.125, 3.05, 45.14], "bbox_crs": "EPSG:4326"}
    cube = _build(_cube(tmp_path, grid, [src], datetime="2020-01-01/2020-03-31"))
    # only the months the dates cover are planned
    assert sorted(v for v in cube.data_vars if v.startswith("tas_")) == [
        "tas_m01_max", "tas_m01_mean", "tas_m02_max", "tas_m02_mean", "tas_m03_max", "tas_m03_mean"]
    # step i is the field + 0.1 * i: a month's mean is the warp of the field + 0.1 * mean(i) (the warp is linear)
    gbox = geobox_from_bbox(tuple(grid["bbox"]), crs="EPSG:2154", resolution=200, bbox_crs="EPSG:4326")
    for m in (1, 2, 3):
        idx = np.flatnonzero(times.month == m)
        expect = _warp(_field(0) + np.float32(0.1 * idx.mean()), gbox)
        got = cube[f"tas_m{m:02d}_mean"].values
        ok = np.isfinite(got)
        assert ok.sum() > 80 and (ok == np.isfinite(expect)).all()
        np.testing.assert_allclose(got[ok], expect[ok], atol=1e-4)
        spread = cube[f"tas_m{m:02d}_max"].values - got
        np.testing.assert_allclose(spread[ok], 0.1 * (idx.max() - idx.mean()), atol=1e-4)
        assert (cube[f"clim_count_m{m:02d}"].values[ok] == idx.size).all()


def test_netcdf_without_grid_mapping_takes_the_crs_from_the_definition(tmp_path: Path) -> None:
    a = _field(5)
    path = tmp_path / "plain.nc"
    ds = _cf_dataset({"a": a}, grid_mapping=None, ascending_y=True)  # south-up, as many NetCDF files are
    ds.to_netcdf(path, engine="h5netcdf")
    src = _dataset_source("plain", str(path), {"a": {}}, definition={"crs": CRS})
    cube = _build(_cube(tmp_path, _grid_around(RES), [src]))
    np.testing.assert_allclose(cube["a"].values, a, atol=1e-5)  # flipped back onto the north-up cube
    assert cube.rio.crs.to_epsg() == 32631

    # no CRS anywhere: a clear error naming the file and the fix
    src_nocrs = _dataset_source("plain", str(path), {"a": {}})
    with pytest.raises(InputError, match=r"(?s)'plain'.*plain\.nc.*no CRS.*add `crs: EPSG:NNNN`"):
        build_cube(_cube(tmp_path, _grid_around(RES), [src_nocrs], name="nocrs.zarr"))


def test_latitude_longitude_files_need_no_crs(tmp_path: Path) -> None:
    """A NetCDF with lat/lon in degrees (ascending latitude) and a GeoTIFF in EPSG:4326: cubes with y/x axes."""
    lat, lon = _centres(NY, 45.0, 0.01), _centres(NX, 3.0, 0.01)
    a = _field(16)
    path = tmp_path / "ll.nc"
    xr.Dataset({"a": (("lat", "lon"), a)}, coords={
        "lat": ("lat", lat, {"units": "degrees_north"}), "lon": ("lon", lon, {"units": "degrees_east"}),
    }).to_netcdf(path, engine="h5netcdf")
    cube = _build(_cube(tmp_path, {"like": str(path)}, [_dataset_source("ll", str(path), {"a": {}})]))
    assert cube.rio.crs.to_epsg() == 4326 and set(cube.dims) == {"y", "x"}
    np.testing.assert_allclose(cube.y.values, lat[::-1])  # `like:` a south-up file gives its grid north-up
    np.testing.assert_allclose(cube.x.values, lon)
    np.testing.assert_array_equal(cube["a"].values, a[::-1])
    # the same values on a north-up lon/lat grid, from a GeoTIFF of the flipped array
    tif = _tif(tmp_path / "ll.tif", a[::-1].copy(), crs="EPSG:4326", res=0.01, origin=(3.0, 45.3))
    both = _build(_cube(tmp_path, {"like": tif}, [_dataset_source("ll", str(path), {"nc": {"variable": "a"}}),
                                                  _raster_source("tif", {"tif": {"href": tif}})], name="both.zarr"))
    assert both.y.values[0] > both.y.values[-1]
    np.testing.assert_allclose(both["nc"].values, a[::-1], atol=1e-6)
    np.testing.assert_array_equal(both["tif"].values, a[::-1])


# ------------------------------------------------------------------------------------------------ Zarr on S3


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    from geosdm.services.s3 import S3Server, create_bucket

    with S3Server() as server:
        create_bucket(server.endpoint_url, "rasters")
        yield server


def test_zarr_on_s3_as_a_dataset_source(s3: Any, tmp_path: Path) -> None:
    from geosdm.services.s3 import gdal_s3_env

    a = _field(6)
    url = "s3://rasters/layers.zarr"
    with quiet_zarr():
        _cf_dataset({"a": a, "b": a * 2}).to_zarr(url, storage_options=s3.storage_options, mode="w")
    src = _dataset_source("remote", url, {"a": {}, "twice": {"variable": "b"}},
                          definition={"storage_options": s3.storage_options})
    cube = _build(_cube(tmp_path, _grid_around(RES), [src]))
    np.testing.assert_array_equal(cube["a"].values, a)
    np.testing.assert_array_equal(cube["twice"].values, a * 2)
    # credentials and endpoint from the environment instead (as GDAL and s3fs read them)
    with gdal_s3_env(s3.endpoint_url):
        env_src = _dataset_source("remote-env", url, {"a": {}})
        cube = _build(_cube(tmp_path, _grid_around(RES), [env_src], name="env.zarr"))
    np.testing.assert_array_equal(cube["a"].values, a)


def test_geotiff_on_s3(s3: Any, tmp_path: Path) -> None:
    from geosdm.services.s3 import gdal_s3_env, s3_client

    a = _field(7)
    s3_client(s3.endpoint_url).upload_file(_tif(tmp_path / "a.tif", a), "rasters", "tifs/a.tif")
    with gdal_s3_env(s3.endpoint_url, extra={"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}):
        src = _raster_source("remote-tif", {"a": {"href": "s3://rasters/tifs/a.tif"}})
        cube = _build(_cube(tmp_path, _grid_around(RES), [src]))
    np.testing.assert_array_equal(cube["a"].values, a)


# ------------------------------------------------------------------------------------------------ categorical


LEGEND = {1: "forest", 2: "crops", 3: "urban"}


def _classes(seed: int = 8, shape: tuple[int, int] = (NY, NX)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lc = rng.integers(1, 4, shape).astype(np.uint8)
    lc[:4, :4] = 0  # nodata
    return lc


def test_categorical_legend_becomes_fractions(tmp_path: Path) -> None:
    lc = _classes()
    path = _tif(tmp_path / "lc.tif", lc, nodata=0)
    asset = {"lc": {"href": path, "dtype": "uint8", "role": "categorical", "classes": LEGEND}}
    native = _build(_cube(tmp_path, {"like": path}, [_raster_source("landcover", asset)]))
    assert sorted(native.data_vars) == ["lc_1", "lc_2", "lc_3"]
    assert native["lc_2"].attrs["class_name"] == "crops" and native["lc_2"].attrs["categorical"] == "fraction"
    for v in LEGEND:  # one-hot on the native grid, NaN where nodata
        one_hot = np.where(lc == 0, np.nan, (lc == v).astype(np.float32))
        np.testing.assert_array_equal(native[f"lc_{v}"].values, one_hot)

    # 4x coarser, classes read at the native 100 m: the share of each cell's valid pixels
    coarse = _build(_cube(tmp_path, _grid_around(400), [_raster_source("landcover", asset, working_resolution=100)],
                          name="coarse.zarr", tile=4))
    assert coarse.sizes == {"y": NY // 4 + (NY % 4 > 0), "x": NX // 4}
    total = sum(coarse[f"lc_{v}"] for v in LEGEND).values
    ok = np.isfinite(total)
    np.testing.assert_allclose(total[ok], 1.0, atol=1e-6)
    for v in LEGEND:
        f = coarse[f"lc_{v}"].values
        assert ((f[ok] >= 0) & (f[ok] <= 1)).all()
    # exact shares in the full blocks (the bbox grid is aligned with the raster)
    blocks = lc[:28].reshape(7, 4, 10, 4)
    valid = (blocks > 0).sum(axis=(1, 3))
    for v in LEGEND:
        with np.errstate(invalid="ignore"):
            expect = np.where(valid > 0, (blocks == v).sum(axis=(1, 3)) / np.maximum(valid, 1), np.nan)
        np.testing.assert_allclose(coarse[f"lc_{v}"].values[:7], expect, atol=1e-6)
    assert np.flatnonzero(np.isnan(coarse["lc_1"].values[:7])).tolist() == [0]  # the all-nodata corner block


def test_legend_missing_a_value_stops_the_build(tmp_path: Path) -> None:
    lc = _classes()
    lc[20, 30] = 7
    path = _tif(tmp_path / "lc.tif", lc, nodata=0)
    asset = {"lc": {"href": path, "dtype": "uint8", "role": "categorical", "classes": LEGEND}}
    with pytest.raises(InputError, match=r"(?s)'landcover'.*'lc'.*\[7\].*add them to `classes:`"):
        build_cube(_cube(tmp_path, {"like": path}, [_raster_source("landcover", asset)]))


# ------------------------------------------------------------------------------------------------ mixed, resume


def test_raster_and_stac_sources_mix_in_one_cube(tmp_path: Path) -> None:
    """A ``cog-urls`` source (STAC Items, odc-stac) and a ``raster`` source of the same file agree exactly."""
    a = _field(9)
    path = _tif(tmp_path / "a.tif", a)
    cog = {"source": {"name": "cog", "kind": "cog-urls", "collection": "cog", "datetime": "2020-01-01",
                      "assets": {"a": {"href": path, "long_name": "a", "dtype": "float32", "name": "stac_a"}}}}
    cube = _build(_cube(tmp_path, {"like": path}, [_raster_source("mine", {"a": {"href": path}}), cog]))
    assert sorted(cube.data_vars) == ["a", "stac_a"]
    np.testing.assert_array_equal(cube["a"].values, a)
    np.testing.assert_array_equal(cube["stac_a"].values, cube["a"].values)


def test_tiles_on_a_dask_cluster_match_the_local_build(tmp_path: Path) -> None:
    """Raster and dataset sources as one task per tile on worker processes (the plans pickle; files open there)."""
    from dask.distributed import Client, LocalCluster

    a = _field(19)
    path = _tif(tmp_path / "a.tif", a)
    nc = tmp_path / "d.nc"
    _cf_dataset({"d": a * 2}).to_netcdf(nc, engine="h5netcdf")
    cfg = _cube(tmp_path, {"like": path}, [_raster_source("mine", {"a": {"href": path}}),
                                           _dataset_source("ds", str(nc), {"d": {}})])
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        report = build_cube(cfg, client=client)
    assert report.n_tiles == 6
    cube = open_cube(cfg.output.path).load()
    np.testing.assert_array_equal(cube["a"].values, a)
    np.testing.assert_array_equal(cube["d"].values, a * 2)


def test_resume_rebuilds_only_the_missing_tile(tmp_path: Path) -> None:
    a = _field(10)
    path = _tif(tmp_path / "a.tif", a)
    cfg = _cube(tmp_path, {"like": path}, [_raster_source("mine", {"a": {"href": path}})])
    first = build_cube(cfg)
    assert first.n_tiles == 6 and first.n_skipped == 0  # 30 x 40 cells in 16 x 16 tiles
    progress = Path(cfg.output.path + ".progress")
    marker = progress / "tile_0001_0002.json"
    assert marker.exists()
    before = {p.name: p.stat().st_mtime_ns for p in progress.glob("tile_*.json")}
    marker.unlink()
    shards = [p for p in Path(cfg.output.path, "a").rglob("*") if p.is_file() and p.parts[-2:] == ("1", "2")]
    assert len(shards) == 1
    shards[0].unlink()  # the tile's data are gone too
    assert np.isnan(open_cube(cfg.output.path)["a"].values[16:, 32:]).all()
    second = build_cube(cfg)
    assert second.n_tiles == 6 and second.n_skipped == 5
    after = {p.name: p.stat().st_mtime_ns for p in progress.glob("tile_*.json")}
    assert {k for k in after if after[k] != before.get(k)} == {"tile_0001_0002.json"}
    np.testing.assert_array_equal(open_cube(cfg.output.path)["a"].values, a)


def test_a_file_rewritten_in_place_is_read_again(tmp_path: Path) -> None:
    """Opened files are cached per process; a rebuild after the file changed must not read the old handle."""
    a = _field(17)
    path = _tif(tmp_path / "a.tif", a)
    nc = tmp_path / "d.nc"
    _cf_dataset({"d": a}).to_netcdf(nc, engine="h5netcdf")
    srcs = [_raster_source("mine", {"a": {"href": path}}), _dataset_source("ds", str(nc), {"d": {}})]
    cfg = _cube(tmp_path, {"like": path}, srcs)
    build_cube(cfg)
    _tif(tmp_path / "a.tif", a + 1)
    # HDF5 refuses to truncate a file this process holds open: replace it (a new file at the same path)
    _cf_dataset({"d": a + 2}).to_netcdf(tmp_path / "new.nc", engine="h5netcdf")
    os.replace(tmp_path / "new.nc", nc)
    build_cube(cfg, overwrite=True)
    cube = open_cube(cfg.output.path).load()
    np.testing.assert_array_equal(cube["a"].values, a + 1)
    np.testing.assert_array_equal(cube["d"].values, a + 2)


# ------------------------------------------------------------------------------------------------ bad inputs


def test_geotiff_without_crs(tmp_path: Path) -> None:
    a = _field(11)
    path = _tif(tmp_path / "nocrs.tif", a, crs=None)
    src = _raster_source("bare", {"a": {"href": path}})
    with pytest.raises(InputError, match=r"(?s)'bare'.*nocrs\.tif.*no CRS.*add `crs: EPSG:NNNN`"):
        build_cube(_cube(tmp_path, _grid_around(RES), [src]))
    with pytest.raises(InputError, match=r"(?s)nocrs\.tif.*no CRS.*`crs:`"):
        _cube(tmp_path, {"like": path}, [src]).grid.geobox()
    # the definition's crs fixes it
    fixed = _raster_source("bare", {"a": {"href": path}}, definition={"crs": CRS})
    cube = _build(_cube(tmp_path, _grid_around(RES), [fixed], name="fixed.zarr"))
    np.testing.assert_array_equal(cube["a"].values, a)


def test_variable_missing_from_the_dataset(tmp_path: Path) -> None:
    path = tmp_path / "d.nc"
    _cf_dataset({"tas": _field(12)}).to_netcdf(path, engine="h5netcdf")
    src = _dataset_source("clim", str(path), {"temperature": {"variable": "tmean"}})
    with pytest.raises(MissingVariableError, match=r"(?s)'clim'.*no variable 'tmean'.*\['tas'\].*`variable:`"):
        build_cube(_cube(tmp_path, {"like": str(path)}, [src]))
    unnamed = _dataset_source("clim", str(path), {"tmean": {}})  # the asset key is the variable by default
    with pytest.raises(MissingVariableError, match="no variable 'tmean'"):
        build_cube(_cube(tmp_path, {"like": str(path)}, [unnamed]))


def test_dates_outside_the_time_axis(tmp_path: Path) -> None:
    import pandas as pd

    path = tmp_path / "t.nc"
    _cf_dataset({"tas": np.stack([_field(18)] * 3)}, times=pd.date_range("2020-06-01", periods=3)).to_netcdf(
        path, engine="h5netcdf")
    src = _dataset_source("clim", str(path), {"tas": {}}, definition={"composite": {"period": "year"}})
    with pytest.raises(InputError, match=r"(?s)'clim'.*'tas' has no time steps in '2021-01-01/2021-12-31'.*datetime"):
        build_cube(_cube(tmp_path, {"like": str(path)}, [src], datetime="2021-01-01/2021-12-31"))


def test_grid_outside_the_rasters(tmp_path: Path) -> None:
    path = _tif(tmp_path / "a.tif", _field(13))
    far = {"crs": CRS, "resolution": RES, "bbox": [700_000, 5_300_000, 702_000, 5_302_000]}
    with pytest.raises(GridError, match=r"(?s)'mine'.*'a'.*outside the cube's grid.*check the grid"):
        build_cube(_cube(tmp_path, far, [_raster_source("mine", {"a": {"href": path}})]))
    path_nc = tmp_path / "d.nc"
    _cf_dataset({"tas": _field(14)}).to_netcdf(path_nc, engine="h5netcdf")
    with pytest.raises(GridError, match="outside the cube's grid"):
        build_cube(_cube(tmp_path, far, [_dataset_source("clim", str(path_nc), {"tas": {}})]))


def test_bad_bands(tmp_path: Path) -> None:
    bands = np.ones((2, NY, NX), np.uint8)
    path = _tif(tmp_path / "two.tif", bands, descriptions=["red", "nir"])
    cases = {
        3: r"(?s)'x'.*band 3 is outside 1\.\.2.*two\.tif",
        "swir": r"(?s)two\.tif.*no band named 'swir'.*\['red', 'nir'\]",
        None: r"(?s)two\.tif.*2 bands.*`band:`.*\['red', 'nir'\]",
    }
    for band, msg in cases.items():
        asset = {"x": {"href": path, **({"band": band} if band is not None else {})}}
        with pytest.raises(InputError, match=msg):
            build_cube(_cube(tmp_path, {"like": path}, [_raster_source("two", asset)]))
    zero = _cube(tmp_path, {"like": path}, [_raster_source("two", {"x": {"href": path, "band": 0}})])
    with pytest.raises(InputError, match=r"(?s)inline source 'two'.*`assets\.x`: band 0 is not a band number.*from 1"):
        build_cube(zero)


def test_bad_definitions(tmp_path: Path) -> None:
    path = _tif(tmp_path / "a.tif", _field(15))
    no_href = _raster_source("mine", {"a": {"href": path}, "b": {}})
    with pytest.raises(InputError, match=r"(?s)inline source 'mine'.*kind raster needs an `href`.*\['b'\]"):
        build_cube(_cube(tmp_path, {"like": path}, [no_href]))
    like_and_res = r"`like:` takes the raster's own resolution; drop `resolution:`"
    with pytest.raises(ValidationError, match=like_and_res):
        _cube(tmp_path, {"like": path, "resolution": 100}, [no_href])
    yml = tmp_path / "pipeline.yaml"  # as users meet it: the YAML file named in the message
    yml.write_text(yaml.safe_dump({"cube": {"grid": {"like": path, "resolution": 100}, "sources": [no_href],
                                            "output": {"path": str(tmp_path / "c.zarr")}}}))
    with pytest.raises(InputError, match=rf"(?s)pipeline\.yaml.*{like_and_res}"):
        CubeConfig.from_yaml(yml)
    missing = _raster_source("mine", {"a": {"href": str(tmp_path / "missing.tif")}})
    with pytest.raises(InputError, match=r"(?s)cannot open raster .*missing\.tif.*does not exist.*`href`"):
        build_cube(_cube(tmp_path, _grid_around(RES), [missing]))
    with pytest.raises(InputError, match=r"(?s)dataset .*missing\.nc.*does not exist"):
        build_cube(_cube(tmp_path, _grid_around(RES), [_dataset_source("d", str(tmp_path / "missing.nc"), {"a": {}})]))
    with pytest.raises(InputError, match=r"(?s)cannot tell.*`format: netcdf`"):
        build_cube(_cube(tmp_path, _grid_around(RES), [_dataset_source("d", str(tmp_path / "data.bin"), {"a": {}})]))
