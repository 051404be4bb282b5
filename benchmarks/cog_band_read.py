"""Reading one species of the multi-band probability COG: band-interleaved (geosdm) vs pixel-interleaved (before).

A 42-species uint8 probability store of smooth synthetic maps (``--size`` cells square, 512-cell tiles, a nodata
corner) goes through :func:`geosdm.predict.export_cogs` (band-interleaved, bands named by species); the
pixel-interleaved file that geosdm wrote before is GDAL 3.10's COG driver copy of it (same compression, tiles,
overviews). For each, the median over ``--repeat`` fresh opens of reading one whole band at full resolution:
wall time and the bytes GDAL read from the file (a counting file object through rasterio's ``opener``).

    python benchmarks/cog_band_read.py --size 2048
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from typing import Any

import numpy as np


class CountingFile(io.RawIOBase):
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


def make_store(path: str, size: int, n_species: int, seed: int = 0) -> None:
    import dask.array as da
    import xarray as xr
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_coords
    from scipy.ndimage import gaussian_filter, zoom

    from geosdm.io import write_layers

    grid = GeoBox.from_bbox((400_000, 6_400_000, 400_000 + size * 100, 6_400_000 + size * 100), "EPSG:2154",
                            resolution=100)
    rng = np.random.default_rng(seed)
    coarse = max(size // 16, 8)
    maps = []
    for _ in range(n_species):
        f = zoom(gaussian_filter(rng.normal(size=(coarse, coarse)), 3), size / coarse, order=1)[:size, :size]
        p = (1 / (1 + np.exp(-(8 * f - 2)))).astype(np.float32)
        p[: size // 10, : size // 7] = np.nan  # a sea corner
        maps.append(p)
    ds = xr.Dataset(coords={**xr_coords(grid, crs_coord_name="spatial_ref"),
                            "species": [f"species_{i:02d}" for i in range(n_species)]})
    ds["probability"] = (("species", "y", "x"), da.from_array(np.stack(maps), chunks=(n_species, 512, 512)),
                         {"long_name": "presence probability", "units": "1"})
    write_layers(ds, path, dtypes={"probability": "uint8"}, identity={"benchmark": size})


def read_one_band(path: str, band: int, repeat: int) -> dict[str, float]:
    import rasterio

    times, sizes = [], []
    for _ in range(repeat):
        files: list[CountingFile] = []

        def opener(name: str, mode: str = "rb") -> CountingFile:
            files.append(CountingFile(name))
            return files[-1]

        t0 = time.perf_counter()
        with rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(path, opener=opener) as src:
            src.read(band)
        times.append(time.perf_counter() - t0)
        sizes.append(sum(f.n for f in files))
    return {"ms": round(1000 * statistics.median(times), 1), "mb_read": round(statistics.median(sizes) / 1e6, 3),
            "file_mb": round(os.path.getsize(path) / 1e6, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--species", type=int, default=42)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from rasterio.shutil import copy as gdal_copy

    from geosdm.predict import export_cogs

    with tempfile.TemporaryDirectory(prefix="geosdm-cog-bench-") as tmp:
        store = os.path.join(tmp, "probability.zarr")
        make_store(store, args.size, args.species)
        t0 = time.perf_counter()
        cog = export_cogs(store, tmp, per_layer=False)[0]
        write_band = time.perf_counter() - t0
        pixel = os.path.join(tmp, "pixel.tif")
        t0 = time.perf_counter()
        gdal_copy(cog.path, pixel, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512, PREDICTOR="YES",
                  OVERVIEW_RESAMPLING="AVERAGE", OVERVIEWS="AUTO", BIGTIFF="IF_SAFER")
        write_pixel = time.perf_counter() - t0
        band = args.species // 2
        out = {"size": args.size, "species": args.species, "band": band,
               "band_interleaved": read_one_band(cog.path, band, args.repeat) | {"valid": cog.valid},
               "pixel_interleaved": read_one_band(pixel, band, args.repeat),
               "export_s": round(write_band, 2), "pixel_copy_s": round(write_pixel, 2)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
