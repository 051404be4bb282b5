"""Benchmark: covariates at 1 million points from a Zarr cube.

Compares, in one run and on the same points:

* geosdm  — ``geosdm.records.extract_at(cube_path, x, y)``: points grouped by shard, each shard read once;
* vectorised sel — ``ds.sel(x=xr.DataArray, y=xr.DataArray, method="nearest").compute()`` on the dask cube
  (dask chunks = shards), on ``--sel-points`` points (default: all), scaled to points/s;
* loop — one ``ds.sel(x=xi, y=yi, method="nearest")`` + ``.compute()`` per point, on ``--loop-points``
  points, scaled to points/s.

Peak memory is the peak resident-memory increase of the process while geosdm extracts (sampled every 2 ms),
excluding the input point arrays; it is compared with the cube's uncompressed size.

Usage::

    python benchmarks/extract.py                   # synthetic 30 x 2000 x 2000 float32 cube in a temp folder
    python benchmarks/extract.py --cube cube.zarr  # an existing cube (2-D float variables)

The last output line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import psutil
import xarray as xr

warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)


class PeakRSS:
    """Sample the process RSS in a thread; ``peak - start`` is the extra memory used inside the block."""

    def __init__(self, interval: float = 0.002) -> None:
        self.proc, self.interval, self.peak, self.start = psutil.Process(), interval, 0, 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def build_cube(path: Path, *, n_vars: int, size: int, shard: int, chunk: int, seed: int = 0) -> None:
    """Write a demo-like cube: ``n_vars`` smooth float32 fields with noise, (size, size) cells at 20 m."""
    import dask.array as da
    from odc.geo.xr import xr_zeros

    from geosdm.grid import geobox_from_bbox

    gbox = geobox_from_bbox(
        (700_000, 6_600_000, 700_000 + 20 * size, 6_600_000 + 20 * size), crs="EPSG:2154", resolution=20
    )
    template = xr_zeros(gbox, "float32", chunks=(shard, shard))
    shape = tuple(gbox.shape)
    yy = da.arange(shape[0], chunks=shard, dtype="float32")[:, None]
    xx = da.arange(shape[1], chunks=shard, dtype="float32")[None, :]
    rng = da.random.default_rng(seed)
    data = {}
    for i in range(n_vars):
        field = da.sin(yy / (60 + 7 * i)) * da.cos(xx / (90 + 5 * i)) * (10 + i) + 0.05 * i * yy / shape[0]
        noise = rng.standard_normal(shape, chunks=(shard, shard), dtype="float32") * 0.01
        arr = template.copy(data=(field + noise).astype("float32"))
        arr.attrs = {"units": "1", "long_name": f"synthetic covariate {i}", "grid_mapping": "spatial_ref"}
        data[f"cov{i:02d}"] = arr
    ds = xr.Dataset(data)
    enc = {v: {"chunks": (chunk, chunk), "shards": (shard, shard)} for v in ds.data_vars}
    ds.to_zarr(path, zarr_format=3, mode="w", encoding=enc, consolidated=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cube", type=Path, help="existing Zarr cube (default: build a synthetic one)")
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--sel-points", type=int, default=None, help="points for the vectorised sel (default: all)")
    ap.add_argument("--loop-points", type=int, default=100, help="points for the per-point loop")
    ap.add_argument("--vars", type=int, default=30, help="synthetic cube: variables")
    ap.add_argument("--size", type=int, default=2000, help="synthetic cube: cells per side")
    ap.add_argument("--shard", type=int, default=1000, help="synthetic cube: shard (= dask chunk) side")
    ap.add_argument("--chunk", type=int, default=250, help="synthetic cube: inner chunk side")
    ap.add_argument("--threads", type=int, default=None, help="geosdm decoding threads (default min(4, cpus))")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import odc.geo.xr  # noqa: F401

    from geosdm.records import covariate_names, extract_at

    tmp = None
    if args.cube is None:
        tmp = tempfile.TemporaryDirectory(prefix="geosdm-bench-")
        cube_path = Path(tmp.name) / "cube.zarr"
        t0 = time.perf_counter()
        build_cube(cube_path, n_vars=args.vars, size=args.size, shard=args.shard, chunk=args.chunk, seed=args.seed)
        print(f"built synthetic cube {cube_path} in {time.perf_counter() - t0:.1f} s")
    else:
        cube_path = args.cube
    lazy = xr.open_zarr(cube_path, decode_coords="all")
    names = covariate_names(lazy)
    gbox = lazy.odc.geobox
    cube_mb = sum(lazy[v].size * lazy[v].dtype.itemsize for v in names) / 2**20
    disk_mb = sum(f.stat().st_size for f in Path(cube_path).rglob("*") if f.is_file()) / 2**20
    print(
        f"cube: {len(names)} variables x {tuple(gbox.shape)} = {cube_mb:.0f} MB uncompressed, {disk_mb:.0f} MB on disk"
    )

    rng = np.random.default_rng(args.seed)
    x0, y0, x1, y1 = gbox.extent.boundingbox
    px, py = rng.uniform(x0, x1, args.points), rng.uniform(y0, y1, args.points)

    # 1. geosdm (first, so nothing else has grown the process yet)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        ours = extract_at(cube_path, px, py, variables=names, n_threads=args.threads)
        t_ours = time.perf_counter() - t0
    ours_pps = args.points / t_ours
    print(f"geosdm extract_at: {t_ours:.2f} s, {ours_pps:,.0f} points/s, peak +{mem.extra_mb:.0f} MB")

    # 2. vectorised xarray sel on the dask cube (dask chunks = shards)
    enc = lazy[names[0]].encoding
    shard = enc.get("shards") or enc.get("chunks")
    ds = xr.open_zarr(cube_path, decode_coords="all", chunks={"y": shard[0], "x": shard[1]})[names]
    n_sel = args.sel_points or args.points
    t0 = time.perf_counter()
    sel = ds.sel(x=xr.DataArray(px[:n_sel], dims="p"), y=xr.DataArray(py[:n_sel], dims="p"), method="nearest").compute()
    t_sel = time.perf_counter() - t0
    sel_pps = n_sel / t_sel
    print(f"vectorised sel: {t_sel:.2f} s for {n_sel:,} points, {sel_pps:,.0f} points/s")
    mismatch = sum(int((~np.isclose(ours[v].to_numpy()[:n_sel], sel[v].values, equal_nan=True)).sum()) for v in names)
    del sel

    # 3. per-point loop
    n_loop = args.loop_points
    t0 = time.perf_counter()
    for i in range(n_loop):
        point = ds.sel(x=px[i], y=py[i], method="nearest").compute()
        _ = [float(point[v]) for v in names]
    t_loop = time.perf_counter() - t0
    loop_pps = n_loop / t_loop
    print(f"per-point sel loop: {t_loop:.2f} s for {n_loop} points, {loop_pps:,.1f} points/s")

    result = {
        "points": args.points,
        "variables": len(names),
        "cube_shape": list(gbox.shape),
        "cube_size_mb": round(cube_mb, 1),
        "cube_disk_mb": round(disk_mb, 1),
        "geosdm_seconds": round(t_ours, 3),
        "geosdm_points_per_s": round(ours_pps),
        "vectorized_sel_points": n_sel,
        "vectorized_sel_seconds": round(t_sel, 3),
        "vectorized_sel_points_per_s": round(sel_pps),
        "loop_points": n_loop,
        "loop_seconds": round(t_loop, 3),
        "loop_points_per_s": round(loop_pps, 2),
        "speedup_vs_loop": round(ours_pps / loop_pps, 1),
        "speedup_vs_vectorized_sel": round(ours_pps / sel_pps, 2),
        "peak_memory_mb": round(mem.extra_mb, 1),
        "peak_rss_mb": round(mem.peak / 2**20, 1),
        "values_mismatch_vs_sel": mismatch,
        "cpus": os.cpu_count(),
    }
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
