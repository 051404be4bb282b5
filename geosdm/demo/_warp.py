"""Numpy-to-numpy reprojection between GeoBoxes (rasterio/GDAL warp), used to render scenes from the world."""

from __future__ import annotations

import numpy as np
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from rasterio.warp import reproject

__all__ = ["warp"]


def warp(
    src: np.ndarray,
    src_gbox: GeoBox,
    dst_gbox: GeoBox,
    resampling: str = "bilinear",
    *,
    nodata: float | int | None = None,
    dst_dtype: np.dtype | None = None,
) -> np.ndarray:
    """Reproject a 2-D (or band-first 3-D) array from ``src_gbox`` onto ``dst_gbox``.

    Pixels of ``dst_gbox`` outside ``src_gbox`` get ``nodata`` (NaN for floats when not given).
    """
    dtype = np.dtype(dst_dtype or src.dtype)
    if nodata is None:
        nodata = np.nan if dtype.kind == "f" else 0
    shape = src.shape[:-2] + tuple(dst_gbox.shape)
    dst = np.full(shape, nodata, dtype=dtype)
    reproject(
        source=np.ascontiguousarray(src),
        destination=dst,
        src_transform=src_gbox.affine,
        src_crs=src_gbox.crs.to_wkt(),
        dst_transform=dst_gbox.affine,
        dst_crs=dst_gbox.crs.to_wkt(),
        resampling=Resampling[resampling],
        src_nodata=nodata,
        dst_nodata=nodata,
        num_threads=2,
    )
    return dst
