"""Raster and NetCDF/Zarr sources with no usable CRS, or damaged files: errors that name the file and the fix."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from odc.geo.geobox import GeoBox
from rasterio.transform import from_origin

from geosdm.cube._raster import load_raster_observations
from geosdm.errors import DataSourceError, InputError
from geosdm.sources import parse_source

ORIGIN = (480_000.0, 6_576_000.0)  # Lambert-93, 100 m cells
GRID = GeoBox.from_bbox((ORIGIN[0], ORIGIN[1] - 6_400, ORIGIN[0] + 6_400, ORIGIN[1]), "EPSG:2154", resolution=100)


def _tif(path: Path, *, crs: str | None = "EPSG:2154", driver: str = "COG") -> Path:
    profile = {"driver": driver, "width": 64, "height": 64, "count": 1, "dtype": "float32",
               "transform": from_origin(*ORIGIN, 100, 100), "compress": "deflate"}
    if crs:
        profile["crs"] = crs
    if driver == "COG":
        profile["blocksize"] = 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as f:
            f.write(np.random.default_rng(0).normal(size=(64, 64)).astype("float32"), 1)
    return path


def _raster(href: Path) -> object:
    return parse_source({"name": "covariates", "kind": "raster",
                         "assets": {"bio01": {"long_name": "annual mean temperature", "dtype": "float32",
                                              "href": str(href)}}})


def _dataset(url: Path) -> object:
    return parse_source({"name": "climate", "kind": "dataset", "url": str(url),
                         "assets": {"t": {"long_name": "temperature", "dtype": None}}})


def _grid_dataset(**attrs: object) -> xr.Dataset:
    y = ORIGIN[1] - 50 - 100 * np.arange(64)
    x = ORIGIN[0] + 50 + 100 * np.arange(64)
    return xr.Dataset({"t": (("y", "x"), np.ones((64, 64), "float32"), attrs)}, coords={"y": y, "x": x})


def test_a_geotiff_without_a_crs_asks_for_one(tmp_path: Path) -> None:
    tif = _tif(tmp_path / "nocrs.tif", crs=None, driver="GTiff")
    with pytest.raises(InputError, match=r"source 'covariates': raster '.*nocrs\.tif' has no CRS; add "
                                         r"`crs: EPSG:NNNN`"):
        load_raster_observations(_raster(tif), GRID)


def test_a_truncated_cog_names_the_asset_file_and_window(tmp_path: Path) -> None:
    tif = _tif(tmp_path / "bio01.tif")
    raw = tif.read_bytes()
    tif.write_bytes(raw[: len(raw) * 2 // 3])  # header intact, tiles cut: opens, fails on read
    with pytest.raises(DataSourceError, match=r"cannot read asset 'bio01' from '.*bio01\.tif' at rows 0:64, columns "
                                              r"0:64 .*truncated or corrupt.*gdalinfo -checksum.*download it again"):
        load_raster_observations(_raster(tif), GRID)


def test_a_corrupt_tiff_header_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bio01.tif"
    bad.write_bytes(b"II*\x00" + bytes(range(256)) * 8)  # a TIFF signature, then garbage
    with pytest.raises(InputError, match=r"cannot open raster '.*bio01\.tif': .*corrupt, truncated or not a GeoTIFF"):
        load_raster_observations(_raster(bad), GRID)


def test_netcdf_without_a_grid_mapping_asks_for_a_crs(tmp_path: Path) -> None:
    nc = tmp_path / "t.nc"
    _grid_dataset().to_netcdf(nc, engine="h5netcdf")
    with pytest.raises(InputError, match=r"variable 't' of '.*t\.nc' has no CRS \(no CF `grid_mapping`.*add `crs: "
                                         r"EPSG:NNNN` to the source definition"):
        load_raster_observations(_dataset(nc), GRID)


@pytest.mark.parametrize(("mapping", "match"), [
    ({"grid_mapping_name": "made_up_projection"},
     r"grid mapping 'crs' of variable 't' is not a valid CRS .*give `crs:`"),
    ({"crs_wkt": 'LOCAL_CS["unknown"]'}, r"variable 't' of '.*t\.nc' has CRS .* cannot be related to longitude/latitude"
                                        r" \(an unknown or local CRS\).*add `crs: EPSG:NNNN`"),
])
def test_netcdf_with_an_unknown_crs(tmp_path: Path, mapping: dict, match: str) -> None:
    nc = tmp_path / "t.nc"
    ds = _grid_dataset(grid_mapping="crs").assign_coords(crs=xr.DataArray(0, attrs=mapping))
    ds.to_netcdf(nc, engine="h5netcdf")
    with pytest.raises(InputError, match=match):
        load_raster_observations(_dataset(nc), GRID)


def test_a_zarr_without_spatial_ref_asks_for_a_crs(tmp_path: Path) -> None:
    store = tmp_path / "t.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _grid_dataset().to_zarr(store, zarr_format=3, consolidated=True)
    with pytest.raises(InputError, match=r"variable 't' of '.*t\.zarr' has no CRS .*add `crs: EPSG:NNNN`"):
        load_raster_observations(_dataset(store), GRID)
    fixed = parse_source({"name": "climate", "kind": "dataset", "url": str(store), "crs": "EPSG:2154",
                          "assets": {"t": {"long_name": "temperature", "dtype": None}}})
    assert np.isfinite(load_raster_observations(fixed, GRID).values["t"]).all()  # the fix the message gives works
