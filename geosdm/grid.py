"""Grids: the one description of a raster grid is an :class:`odc.geo.geobox.GeoBox`.

Regions come as a bbox (in any CRS) or a polygon (GeoJSON / GeoParquet / shapely); the result is always a
GeoBox aligned to whole multiples of the resolution, so cubes built at different times line up pixel for pixel.
Tiling helpers cut a GeoBox into shard-aligned tiles for tile-by-tile processing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from odc.geo import CRS
from odc.geo.geobox import GeoBox, GeoboxTiles
from odc.geo.geom import Geometry, box

from geosdm.errors import GridError, InputError

__all__ = [
    "GridPreset",
    "grid_coords",
    "PRESETS",
    "geobox_from_bbox",
    "geobox_from_geometry",
    "preset_geobox",
    "read_region",
    "tiles",
]


@dataclass(frozen=True)
class GridPreset:
    """A named reference grid: CRS and the bbox (in that CRS) it covers."""

    name: str
    crs: str
    bbox: tuple[float, float, float, float]
    description: str


PRESETS: dict[str, GridPreset] = {
    "france": GridPreset(
        "france",
        "EPSG:2154",
        (99_000.0, 6_046_000.0, 1_243_000.0, 7_111_000.0),
        "Metropolitan France incl. Corsica in Lambert-93 (RGF93).",
    ),
    "europe": GridPreset(
        "europe",
        "EPSG:3035",
        (2_500_000.0, 1_400_000.0, 7_400_000.0, 5_500_000.0),
        "EU/EEA extent in ETRS89-LAEA (the EEA reference grid).",
    ),
}


def _check_resolution(resolution: float) -> float:
    try:
        res = float(resolution)
    except (TypeError, ValueError):
        raise InputError(f"resolution {resolution!r} is not a number; give the pixel size in CRS units") from None
    if not res > 0:
        raise InputError(f"resolution must be > 0 (CRS units per pixel), got {resolution!r}")
    return res


def geobox_from_bbox(
    bbox: tuple[float, float, float, float],
    *,
    crs: Any,
    resolution: float,
    bbox_crs: Any | None = None,
) -> GeoBox:
    """Grid covering ``bbox`` at ``resolution``, with edges snapped to multiples of the resolution.

    Parameters
    ----------
    bbox
        (minx, miny, maxx, maxy) in ``bbox_crs`` (default: ``crs``).
    crs
        Target CRS (anything pyproj accepts, e.g. ``"EPSG:2154"``).
    resolution
        Pixel size in target CRS units (square pixels, north-up).
    bbox_crs
        CRS of ``bbox`` when it differs from ``crs`` (e.g. ``"EPSG:4326"`` for lon/lat).

    Example
    -------
    >>> gbox = geobox_from_bbox((480_000, 6_570_000, 520_000, 6_610_000), crs="EPSG:2154", resolution=100)
    >>> gbox.shape
    Shape2d(y=400, x=400)
    """
    res = _check_resolution(resolution)
    minx, miny, maxx, maxy = (float(v) for v in bbox)
    if not (maxx > minx and maxy > miny):
        raise GridError(f"bbox {bbox!r} is empty or inverted; give (minx, miny, maxx, maxy) with max > min")
    geom = box(minx, miny, maxx, maxy, CRS(bbox_crs) if bbox_crs is not None else CRS(crs))
    return geobox_from_geometry(geom, crs=crs, resolution=res)


def geobox_from_geometry(geometry: Geometry | Any, *, crs: Any, resolution: float) -> GeoBox:
    """Grid covering a polygon (odc-geo Geometry, or shapely geometry assumed in ``crs``), snapped to the resolution."""
    res = _check_resolution(resolution)
    target = CRS(crs)
    if not isinstance(geometry, Geometry):
        geometry = Geometry(geometry, target)
    if geometry.crs is None:
        raise GridError("region geometry has no CRS; pass an odc.geo Geometry with crs set")
    geom = geometry.to_crs(target)
    if geom.is_empty:
        raise GridError("region geometry is empty after reprojection to {target}; check its CRS")
    return GeoBox.from_geopolygon(geom, resolution=res, crs=target, tight=False)


def preset_geobox(name: str, *, resolution: float) -> GeoBox:
    """Reference grid for a named preset (``"france"`` in EPSG:2154, ``"europe"`` in EPSG:3035)."""
    try:
        preset = PRESETS[name.lower()]
    except KeyError:
        raise InputError(f"unknown grid preset {name!r}; choose one of {sorted(PRESETS)}") from None
    return geobox_from_bbox(preset.bbox, crs=preset.crs, resolution=resolution)


def read_region(path: str | PathLike[str]) -> Geometry:
    """Read a region polygon (union of all features) from GeoJSON, GeoPackage or GeoParquet."""
    import geopandas as gpd

    p = Path(path)
    if not p.exists():
        raise InputError(f"region file {str(p)!r} does not exist; give a GeoJSON/GeoParquet polygon file")
    gdf = gpd.read_parquet(p) if p.suffix.lower() in {".parquet", ".geoparquet"} else gpd.read_file(p)
    if gdf.crs is None:
        raise GridError(f"region file {str(p)!r} has no CRS; set one (e.g. EPSG:4326) when writing it")
    if len(gdf) == 0:
        raise GridError(f"region file {str(p)!r} has no features")
    return Geometry(gdf.geometry.union_all(), CRS(gdf.crs.to_wkt()))


@dataclass(frozen=True)
class Tile:
    """One tile of a tiled grid: its index in the tile grid, its GeoBox and its pixel slices in the parent."""

    index: tuple[int, int]
    geobox: GeoBox
    slices: tuple[slice, slice]


def tiles(geobox: GeoBox, tile_shape: tuple[int, int]) -> Iterator[Tile]:
    """Cut ``geobox`` into tiles of ``tile_shape`` pixels (y, x); edge tiles may be smaller.

    Tiles align with Zarr chunks/shards of the same shape, so each tile is written by exactly one task.
    """
    ny, nx = (int(v) for v in tile_shape)
    if ny <= 0 or nx <= 0:
        raise InputError(f"tile_shape must be positive (y, x) pixel counts, got {tile_shape!r}")
    gt = GeoboxTiles(geobox, (ny, nx))
    for iy in range(gt.shape[0]):
        for ix in range(gt.shape[1]):
            sl = (slice(iy * ny, min((iy + 1) * ny, geobox.shape[0])), slice(ix * nx, min((ix + 1) * nx, geobox.shape[1])))
            yield Tile((iy, ix), gt[iy, ix], sl)


def grid_coords(geobox: GeoBox) -> dict[str, Any]:
    """CF coordinates of ``geobox`` named ``y``/``x`` (also for geographic CRSs) plus its ``spatial_ref``.

    odc-geo names geographic axes ``latitude``/``longitude``; geosdm's stores always use ``y``/``x`` so every
    layer, tile and reader shares one pair of dimension names (rioxarray and odc-geo read either).
    """
    import xarray as xr
    from odc.geo.xr import xr_coords

    out: dict[str, Any] = {}
    for name, coord in xr_coords(geobox, crs_coord_name="spatial_ref").items():
        new = {"latitude": "y", "longitude": "x"}.get(str(name), str(name))
        dims = (new,) if coord.ndim == 1 else ()
        out[new] = xr.DataArray(coord.values, dims=dims, attrs=coord.attrs, name=new)
    return out
