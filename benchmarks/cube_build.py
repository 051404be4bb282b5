"""Benchmark: build a Sentinel-2 seasonal-median cube with geosdm vs the naive stackstac -> median -> to_zarr.

Both builds get the same input and produce the same output grid:

* the same Items: resolved once per build by ``geosdm.cube.resolve_sources`` from the demo's static catalog
  (the source's ``max_cloud`` applied), one season (default JJA: 3 dates x 2 UTM zones = 6 Items), bands
  B02 B03 B04 B08 B11 B12 plus the SCL mask;
* the same working resolution: 20 m (the native resolution of the demo's Sentinel-2 COGs, so every build
  decodes full-resolution COG blocks, never overviews), in Lambert-93 (EPSG:2154);
* the same SCL rule: clear = classes 4, 5, 6 (vegetation, not vegetated, water);
* the same output grid: the demo's target grid (100 m, EPSG:2154; ``--quick``: 60 m) over the region, each
  output pixel the mean of the working pixels' medians in its block (5 x 5 at 100 m).

What each build does:

* **geosdm** -- ``build_cube`` with one source (``demo-sentinel-2-l2a`` with the composite restricted to the
  one season), ``working_resolution: 20``, default ``mask_buffer: 1``, ``--tile`` x ``--tile`` target pixels
  per tile (one Zarr shard), ``threads: 2``. Per tile and solar day it loads with odc-stac (bilinear for the
  bands, nearest for SCL, both UTM zones mosaicked), masks, takes the median over the season's clear
  observations, block-averages to the target grid, writes 6 medians + 1 valid-count layer (float32, sharded
  Zarr v3). No Dask graph: tiles run one after another in the process.
* **naive** -- what people write first::

      arr = stackstac.stack(items, assets=bands + ["SCL"], epsg=2154, resolution=20, bounds=bbox)
      clear = arr.sel(band="SCL").isin([4, 5, 6])
      med = arr.sel(band=bands).where(clear).median("time")
      med.coarsen(x=5, y=5).mean().to_dataset("band").to_zarr(path, mode="w")

  with stackstac's defaults (float64, nearest resampling for every band, 1024 x 1024 chunks, one time step
  per Item so the two UTM zones are separate time steps that median skips where NaN) and xarray/zarr's
  defaults (Zarr v3, dask chunks as stored chunks, dask's threaded scheduler on all cores). The only
  additions are the two things it fails without: ``proj:epsg`` copied from ``proj:code`` on each Item
  (stackstac reads only ``proj:epsg``) and dropping stackstac's non-serialisable attrs/coordinates.
* **naive_100m** (context, not used for the goals) -- the same stackstac pipeline asked directly for the
  target resolution (``resolution=100``, no coarsen): GDAL then reads the COGs' overviews and picks the
  nearest pixel, so it decodes ~25x fewer pixels and gives a different (aliased) result.

Measures, each build in a fresh subprocess: build seconds (item resolution + load + composite + write, after
imports), output Mpixel/s = target pixels x 6 band-median variables / s (the variables both builds produce;
geosdm's extra valid-count layer is not counted), input MB/s decoded = bytes of source pixels (source dtype:
uint16 bands, uint8 SCL) delivered by the loader on the 20 m working grid / s (geosdm: sum over the tiles'
odc-stac arrays, one per solar day with both zones mosaicked; naive: the stackstac array, one layer per Item
over the whole region, pixels outside an Item's footprint included), peak RSS of the build's process tree
(sampled every 20 ms from outside), and Dask tasks executed (counted by a scheduler callback) per tile.
Memory growth: geosdm on the centre quarter of the region (20 x 20 km of the 40 x 40 km demo) vs the
whole region, same tile shape.

Usage::

    python benchmarks/cube_build.py            # default demo preset (generated once, ~2 min, ~800 MB)
    python benchmarks/cube_build.py --quick    # small preset, for development

The last output line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import du_mb, emit, run_measured  # noqa: E402

HERE = Path(__file__).resolve().parent
BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
MASK = "SCL"
CLEAR = (4, 5, 6)
SEASONS = {"djf": (12, 1, 2), "mam": (3, 4, 5), "jja": (6, 7, 8), "son": (9, 10, 11)}
SEASON_DATES = {"mam": "2024-03-01/2024-05-31", "jja": "2024-06-01/2024-08-31", "son": "2024-09-01/2024-11-30"}
SOURCE = "demo-sentinel-2-l2a"


# --------------------------------------------------------------------------------------------------- set-up
def _quarter(bbox: list[float], res: float) -> list[float]:
    """The centred box of half the width and height (a quarter of the area), on the same pixel grid."""
    x0, y0, x1, y1 = bbox
    w, h = (x1 - x0) / 4, (y1 - y0) / 4
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    snap = lambda v, o: o + round((v - o) / res) * res  # noqa: E731
    return [snap(cx - w, x0), snap(cy - h, y0), snap(cx + w, x0), snap(cy + h, y0)]


def _source_yaml(work: Path, season: str, *, resampling: str | None = None) -> Path:
    """The demo Sentinel-2 source with its composite restricted to one season (so geosdm plans only it);
    ``resampling`` replaces the bands' resampling (the SCL mask stays nearest)."""
    import yaml

    from geosdm.sources import catalog_dirs

    path = next(d / f"{SOURCE}.yaml" for d in catalog_dirs() if (d / f"{SOURCE}.yaml").is_file())
    raw = yaml.safe_load(path.read_text())
    raw["composite"] = {**raw.get("composite", {}), "period": "season", "seasons": {season: list(SEASONS[season])}}
    if resampling:
        for band in BANDS:
            raw["assets"][band]["resampling"] = resampling
    out = work / f"bench-s2-{season}{'-' + resampling if resampling else ''}.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def _config(args: argparse.Namespace, out: str) -> Any:
    from geosdm.cube import CubeConfig

    return CubeConfig.model_validate({
        "grid": {"crs": "EPSG:2154", "resolution": args.res, "bbox": args.bbox},
        "datetime": SEASON_DATES[args.season],
        "sources": [{"source": args.source_yaml, "catalog": args.catalog, "working_resolution": 20}],
        "output": {"path": out, "tile_shape": [args.tile, args.tile]},
        "threads": args.threads,
    })


class TaskCounter:
    """Count the Dask tasks executed by local schedulers (threaded/sync) in this process."""

    def __init__(self) -> None:
        from dask.callbacks import Callback

        self.n = 0

        def pretask(key: Any, dsk: Any, state: Any) -> None:
            self.n += 1

        self.cb = Callback(pretask=pretask)

    def __enter__(self) -> TaskCounter:
        self.cb.register()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cb.unregister()


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


# ---------------------------------------------------------------------------------------------- workers
def worker_geosdm(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    import geosdm.cube._load as load_mod
    from geosdm.cube import build_cube, resolve_sources

    loaded = {"bytes": 0, "calls": 0}
    real = load_mod._load_odc

    def counting(*a: Any, **k: Any) -> dict[str, np.ndarray]:
        out = real(*a, **k)
        loaded["bytes"] += sum(v.nbytes for v in out.values())
        loaded["calls"] += 1
        return out

    load_mod._load_odc = counting  # this benchmark process only: counts the arrays odc-stac returns
    cfg = _config(args, args.out)
    rss0 = _rss_mb()
    with TaskCounter() as tasks:
        t0 = time.perf_counter()
        plans = resolve_sources(cfg)
        report = build_cube(cfg, plans=plans, overwrite=True)
        seconds = time.perf_counter() - t0
    ny, nx = cfg.grid.geobox().shape
    return {
        "seconds": seconds, "out_shape": [ny, nx], "n_tiles": report.n_tiles, "dask_tasks": tasks.n,
        "input_bytes": loaded["bytes"], "odc_loads": loaded["calls"], "variables": report.variables,
        "items": sorted(i.id for p in plans for i in p.items), "rss_before_build_mb": rss0,
        "failures": report.failures, "out_mb_on_disk": du_mb(args.out),
    }


def worker_naive(args: argparse.Namespace, *, resolution: float) -> dict[str, Any]:
    import numpy as np
    import stackstac

    from geosdm.cube import resolve_sources

    cfg = _config(args, args.out)
    rss0 = _rss_mb()
    with TaskCounter() as tasks:
        t0 = time.perf_counter()
        items = [it.clone() for it in resolve_sources(cfg)[0].items]  # the very Items geosdm uses
        for it in items:  # stackstac reads proj:epsg only; the demo (like current STAC) gives proj:code
            it.properties["proj:epsg"] = int(str(it.properties["proj:code"]).split(":")[1])
        arr = stackstac.stack(items, assets=[*BANDS, MASK], epsg=2154, resolution=resolution, bounds=tuple(args.bbox))
        clear = arr.sel(band=MASK).isin(list(CLEAR))
        med = arr.sel(band=list(BANDS)).where(clear).median("time")
        k = int(round(args.res / resolution))
        out = med.coarsen(x=k, y=k).mean() if k > 1 else med
        ds = out.to_dataset("band")
        ds.attrs = {}  # stackstac's attrs (Affine, RasterSpec) and object coords are not serialisable
        ds = ds.drop_vars([c for c in ds.coords if c not in ds.dims])
        for v in ds.data_vars:
            ds[v].attrs = {}
        delayed = ds.to_zarr(args.out, mode="w", compute=False)
        graph_tasks = len(delayed.__dask_graph__())
        delayed.compute()
        seconds = time.perf_counter() - t0
    # decoded input: the stackstac array (items x bands x y x x) in the source dtype (uint16 bands, uint8 SCL)
    n_items, _, ny, nx = arr.shape
    input_bytes = n_items * ny * nx * (2 * len(BANDS) + 1)
    chunks = ds[BANDS[0]].chunks
    return {
        "seconds": seconds, "out_shape": list(ds[BANDS[0]].shape), "dask_tasks": tasks.n, "dask_graph_tasks": graph_tasks,
        "input_bytes": input_bytes, "stack_shape": list(arr.shape), "stack_chunks": [list(c) for c in arr.chunks],
        "out_chunks": [list(c) for c in chunks], "n_out_chunks": int(np.prod([len(c) for c in chunks])),
        "items": sorted(i.id for i in items), "rss_before_build_mb": rss0, "out_mb_on_disk": du_mb(args.out),
    }


# ------------------------------------------------------------------------------------------ orchestrator
def _ensure_demo(path: Path, preset: str) -> Any:
    from geosdm.demo import DemoLayout, generate

    if not (path / "region.json").exists():
        print(f"generating the {preset!r} demo in {path} (once; cached) ...", flush=True)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            generate(path, preset=preset, seed=0)
        print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)
    return DemoLayout.at(path)


def _warm_page_cache(root: Path) -> float:
    """Read every Sentinel-2 COG once so that every measured build finds them in the OS page cache."""
    n = 0
    for f in sorted((root / "cogs" / "sentinel-2-l2a").rglob("*.tif")):
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                n += len(chunk)
    return n / 2**20


def _agreement(geosdm_path: str, naive_path: str, season: str) -> dict[str, float]:
    """How close the two cubes are: mean |difference| of the band medians where both are finite."""
    import numpy as np
    import xarray as xr

    from geosdm.io import open_cube

    a = open_cube(geosdm_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = xr.open_zarr(naive_path)
    diffs, fa, fb = [], [], []
    for band in BANDS:
        va = a[f"s2_{band}_{season}"].values
        vb = b[band].values
        both = np.isfinite(va) & np.isfinite(vb)
        diffs.append(float(np.abs(va[both] - vb[both]).mean()) if both.any() else float("nan"))
        fa.append(float(np.isfinite(va).mean()))
        fb.append(float(np.isfinite(vb).mean()))
    return {"mean_abs_diff": float(np.mean(diffs)), "max_band_mean_abs_diff": float(np.max(diffs)),
            "finite_fraction_geosdm": float(np.mean(fa)), "finite_fraction_naive": float(np.mean(fb))}


def _measure(kind: str, args: argparse.Namespace, bbox: list[float], out: Path, *, repeat: int,
             source_yaml: str | None = None) -> dict[str, Any]:
    """Run one build ``repeat`` times, each in a fresh subprocess; keep the fastest run's figures."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--out", str(out), "--bbox", *map(str, bbox),
           "--res", str(args.res), "--tile", str(args.tile), "--season", args.season, "--threads", str(args.threads),
           "--catalog", args.catalog, "--source-yaml", source_yaml or args.source_yaml]
    runs = []
    for i in range(repeat):
        load = os.getloadavg()[0]
        m = run_measured(cmd, interval=0.02)
        r = {**m.result, "peak_rss_mb": m.peak_rss_mb, "process_wall_s": m.wall_s, "loadavg_1m_before": load}
        print(f"{kind:>14} bbox={bbox} run {i + 1}/{repeat}: {r['seconds']:.1f} s build, peak RSS {m.peak_rss_mb:.0f} MB "
              f"(imports {r['rss_before_build_mb']:.0f} MB), dask tasks {r['dask_tasks']}", flush=True)
        runs.append(r)
    best = min(runs, key=lambda r: r["seconds"])
    best["all_seconds"] = [round(r["seconds"], 2) for r in runs]
    best["all_peak_rss_mb"] = [round(r["peak_rss_mb"], 1) for r in runs]
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)  # memory: the worst run
    return best


def _summary(r: dict[str, Any], n_vars: int) -> dict[str, Any]:
    ny, nx = r["out_shape"]
    return {
        "seconds": round(r["seconds"], 2),
        "output_mpix_per_s": round(ny * nx * n_vars / r["seconds"] / 1e6, 4),
        "input_mb": round(r["input_bytes"] / 2**20, 1),
        "input_mb_per_s": round(r["input_bytes"] / 2**20 / r["seconds"], 1),
        "peak_rss_mb": round(r["peak_rss_mb"], 1),
        "rss_after_imports_mb": round(r["rss_before_build_mb"], 1),
        "dask_tasks": r["dask_tasks"],
        "out_shape": r["out_shape"],
        "all_seconds": r["all_seconds"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small demo preset (development)")
    ap.add_argument("--demo", type=Path, help="demo folder (generated there once; default benchmarks/.cache/demo-<preset>)")
    ap.add_argument("--tile", type=int, help="tile (= shard) side in target pixels (default 100; --quick 25)")
    ap.add_argument("--season", default="jja", choices=["mam", "jja", "son"])
    ap.add_argument("--threads", type=int, default=2, help="geosdm read threads per tile")
    ap.add_argument("--repeat", type=int, default=1, help="runs per build (fastest kept; memory: worst)")
    ap.add_argument("--no-naive-100m", action="store_true", help="skip the naive build at the target resolution")
    ap.add_argument("--no-nearest", action="store_true", help="skip geosdm with nearest resampling for the bands")
    ap.add_argument("--work", type=Path, help="folder for the outputs (default: a temporary folder, removed)")
    # internal: one measured build in this process
    ap.add_argument("--worker", choices=["geosdm", "naive", "naive_100m"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--bbox", type=float, nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--res", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--catalog", help=argparse.SUPPRESS)
    ap.add_argument("--source-yaml", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        warnings.filterwarnings("ignore")
        if args.worker == "geosdm":
            res = worker_geosdm(args)
        else:
            res = worker_naive(args, resolution=20.0 if args.worker == "naive" else args.res)
        emit(res)
        return

    preset = "small" if args.quick else "default"
    args.tile = args.tile or (25 if args.quick else 100)
    demo = _ensure_demo(args.demo or HERE / ".cache" / f"demo-{preset}", preset)
    region = demo.region()["target_grid"]
    args.res = float(region["resolution"])
    args.catalog = str(demo.catalog_json)
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="geosdm-cube-bench-")
        work = Path(tmp.name)
    else:
        work = args.work
        work.mkdir(parents=True, exist_ok=True)
    args.source_yaml = str(_source_yaml(work, args.season))
    full = [float(v) for v in region["bbox"]]
    quarter = _quarter(full, args.res)
    print(f"demo {demo.root} ({preset}); region {full}, quarter {quarter}; target {args.res:g} m, working 20 m; "
          f"tile {args.tile} px; season {args.season}; {os.cpu_count()} cpus", flush=True)
    print(f"page cache: read {_warm_page_cache(demo.root):.0f} MB of Sentinel-2 COGs", flush=True)

    t_all = time.perf_counter()
    naive = _measure("naive", args, full, work / "naive.zarr", repeat=args.repeat)
    geo = _measure("geosdm", args, full, work / "geosdm.zarr", repeat=args.repeat)
    geo_q = _measure("geosdm", args, quarter, work / "geosdm_q.zarr", repeat=args.repeat)
    naive_q = _measure("naive", args, quarter, work / "naive_q.zarr", repeat=args.repeat)
    naive100 = None if args.no_naive_100m else _measure("naive_100m", args, full, work / "naive100.zarr", repeat=args.repeat)
    nearest_yaml = str(_source_yaml(work, args.season, resampling="nearest"))
    geo_nn = None if args.no_nearest else _measure("geosdm", args, full, work / "geosdm_nn.zarr", repeat=args.repeat,
                                                   source_yaml=nearest_yaml)
    if geo["items"] != naive["items"]:
        raise RuntimeError(f"the builds read different Items: {geo['items']} vs {naive['items']}")
    agree = _agreement(str(work / "geosdm.zarr"), str(work / "naive.zarr"), args.season)
    agree100 = _agreement(str(work / "geosdm.zarr"), str(work / "naive100.zarr"), args.season) if naive100 else None

    nv = len(BANDS)
    g, n, gq, nq = (_summary(r, nv) for r in (geo, naive, geo_q, naive_q))
    n100 = _summary(naive100, nv) if naive100 else None
    gnn = _summary(geo_nn, nv) if geo_nn else None
    thr_ratio = g["output_mpix_per_s"] / n["output_mpix_per_s"]
    mem_ratio = g["peak_rss_mb"] / n["peak_rss_mb"]
    growth = g["peak_rss_mb"] / gq["peak_rss_mb"]
    goals = {"throughput_2x": thr_ratio >= 2.0, "memory_half": mem_ratio <= 0.5, "memory_flat_20pct": growth <= 1.2}
    result = {
        "benchmark": "cube_build",
        "preset": preset,
        "season": args.season,
        "items": len(geo["items"]),
        "bands": list(BANDS),
        "target_res_m": args.res,
        "working_res_m": 20.0,
        "tile_px": args.tile,
        "n_tiles": geo["n_tiles"],
        "n_tiles_quarter": geo_q["n_tiles"],
        "output_variables_counted": nv,
        "output_unit": "Mpixel/s = target pixels x band-median variables / build second",
        "geosdm": {**g, "variables_written": len(geo["variables"]), "odc_loads": geo["odc_loads"],
                   "dask_tasks_per_tile": round(geo["dask_tasks"] / geo["n_tiles"], 2), "failures": geo["failures"]},
        "geosdm_quarter": {**gq, "n_tiles": geo_q["n_tiles"]},
        "naive": {**n, "dask_graph_tasks": naive["dask_graph_tasks"], "stack_shape": naive["stack_shape"],
                  "n_out_chunks": naive["n_out_chunks"],
                  "dask_tasks_per_tile_area": round(naive["dask_tasks"] / geo["n_tiles"], 1)},
        "naive_quarter": nq,
        "naive_100m": ({**n100, "stack_shape": naive100["stack_shape"], "agreement_with_geosdm": agree100}
                       if n100 else None),
        "geosdm_nearest": ({**gnn, "agreement_with_naive": _agreement(str(work / "geosdm_nn.zarr"), str(work / "naive.zarr"), args.season)}
                           if gnn else None),
        "agreement_geosdm_vs_naive": agree,
        "throughput_ratio_vs_naive": round(thr_ratio, 3),
        "throughput_ratio_vs_naive_same_resampling": round(gnn["output_mpix_per_s"] / n["output_mpix_per_s"], 3) if gnn else None,
        "input_rate_ratio_vs_naive": round(g["input_mb_per_s"] / n["input_mb_per_s"], 3),
        "peak_memory_ratio_vs_naive": round(mem_ratio, 3),
        "peak_memory_growth_4x": round(growth, 3),
        "naive_peak_memory_growth_4x": round(n["peak_rss_mb"] / nq["peak_rss_mb"], 3),
        "dask_tasks_per_tile": round(geo["dask_tasks"] / geo["n_tiles"], 2),
        "goals_met": goals,
        "cpus": os.cpu_count(),
        "benchmark_wall_s": round(time.perf_counter() - t_all, 1),
    }
    print(f"geosdm {g['output_mpix_per_s']:.3f} Mpix/s, {g['input_mb_per_s']:.0f} MB/s in, peak {g['peak_rss_mb']:.0f} MB; "
          f"naive {n['output_mpix_per_s']:.3f} Mpix/s, {n['input_mb_per_s']:.0f} MB/s in, peak {n['peak_rss_mb']:.0f} MB; "
          f"throughput x{thr_ratio:.2f}, memory x{mem_ratio:.2f}, 4x-area memory growth x{growth:.2f}; goals {goals}", flush=True)
    if tmp is not None:
        tmp.cleanup()
    emit(result)


if __name__ == "__main__":
    main()
