"""Benchmark: the GPU path (issue 16, item 4) — training from Zarr sample stores and tiled prediction, GPU vs CPU.

What is measured (one process; times after imports):

* **training**, for each network ``cnn`` (patch CNN), ``additive`` (neural additive model) and ``mlp`` (residual
  MLP): ``MultiSpeciesSDM(network=..., streaming=True, num_workers=--workers, work_dir=...)`` fitted on a
  records table with ``cube=``, so the estimator writes its Zarr *point store* (and, for the CNN, its *patch
  store* cut around the sites by ``extract_patches``) and trains from them through a torch ``DataLoader`` of
  ``--workers`` processes. Reported per device: ``samples_per_s`` = training sites x epochs / training-loop
  seconds (``model.training_.seconds``: store writing and patch extraction are not in it; they are in
  ``fit_s``), and ``loader_samples_per_s``: the same DataLoader over the same stores for one epoch with no
  model (plus the host-to-device copy on CUDA), the most the training loop could reach if compute were free.
* **GPU busy fraction** while the training loop runs: ``torch.cuda.utilization()`` (NVML; needs ``pynvml``)
  or, without it, ``nvidia-smi --query-gpu=utilization.gpu -lms 100`` sampled in the background, averaged
  over the training-loop window; without either, CUDA kernel time / wall time from ``torch.profiler``;
  otherwise null with the reason. For the CNN the goal is >= 0.8; when it is missed ``starved_by`` says what
  the numbers point at (the data loader, or per-step host overhead).
* **prediction** of a 16-tile block (4 x 4 tiles of ``--tile`` cells) with the trained ``mlp`` and ``additive``
  models: ``write_predictions`` (read covariates from Zarr, forward, uint8 encode, sharded Zarr write) on the
  threaded Dask scheduler; ``cell_species_per_s`` = cells x species / seconds.
* **speed-up** GPU / CPU of each rate. The CPU baseline is the same fit with ``device="cpu"`` and
  ``n_threads=--cpu-threads`` (default: cores minus DataLoader workers), ``--cpu-epochs`` epochs on at most
  ``--cpu-rows`` records (rates per sample, so a shorter baseline is comparable).

On a machine without CUDA the GPU side is skipped: the JSON says ``"cuda": false`` and every speed-up and GPU
busy fraction is null (with ``gpu_busy_reason``).

Inputs:

* ``--demo DIR``: a demo output folder from ``make demo`` (``DIR/cube.zarr`` and ``DIR/records/training.parquet``;
  any folder with that layout works). The 16-tile block is the cube's top-left 4 x 4 tiles of
  ``min(--tile, side // 4)`` cells.
* without ``--demo``: a synthetic covariate cube written to a temporary folder (Zarr v3, one shard per tile,
  ``--side`` x ``--side`` cells of 10 m in EPSG:2154, ``--covariates`` smooth float32 fields, y/x grid from
  ``geosdm.grid.grid_coords``) and a records table on its grid (presence-only records of ``--species``
  species drawn along the covariates, plus uniform background), so the benchmark runs anywhere.

Usage::

    .venv/bin/python benchmarks/gpu.py                 # default size, meant for one H100 (< 5 min)
    .venv/bin/python benchmarks/gpu.py --demo demo-output
    .venv/bin/python benchmarks/gpu.py --tiny          # CPU smoke run used by the test suite (< 30 s)

The last output line is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

NETWORKS = ("cnn", "additive", "mlp")
PREDICT_NETWORKS = ("mlp", "additive")
BUSY_GOAL = 0.8

#: Sizes: ``tiny`` runs on 2 CPU cores in the test suite; ``default`` is meant for one H100 in under 5 minutes.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"side": 64, "tile": 16, "covariates": 4, "species": 4, "presences": 300, "background": 300,
             "epochs": 1, "cpu_epochs": 1, "cpu_rows": 0, "hidden": 16, "additive_hidden": 8, "width": 8,
             "n_blocks": 1, "patch_size": 5, "batch_size": 64, "workers": 1},
    "default": {"side": 2048, "tile": 512, "covariates": 12, "species": 50, "presences": 40_000,
                "background": 20_000, "epochs": 5, "cpu_epochs": 1, "cpu_rows": 10_000, "hidden": 250,
                "additive_hidden": 32, "width": 32, "n_blocks": 2, "patch_size": 15, "batch_size": 256,
                "workers": None},
}


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------------------------- inputs
def _field(row: Any, col: Any, v: int) -> Any:
    """Smooth covariate ``v`` at cells (row, col): closed form, so records and cube agree without reading."""
    import numpy as np

    r, c = np.asarray(row, dtype="float32"), np.asarray(col, dtype="float32")
    return (np.sin(r / (40.0 + 7 * v) + v) * np.cos(c / (55.0 + 5 * v) - v) + 0.1 * v).astype("float32")


def synthetic_inputs(folder: Path, *, side: int, tile: int, covariates: int, species: int, presences: int,
                     background: int, seed: int = 0) -> tuple[Path, Any]:
    """A ``side`` x ``side`` covariate cube (Zarr v3, ``tile`` shards) and a records table on its grid."""
    import numpy as np
    import pandas as pd
    import xarray as xr

    from geosdm.grid import geobox_from_bbox, grid_coords
    from geosdm.records import records_from_frame, uniform_background
    from geosdm.records.coords import cell_centres

    x0, y0, res = 600_000.0, 6_600_000.0, 10.0  # Lambert-93, 10 m (France's grid definition)
    geobox = geobox_from_bbox((x0, y0, x0 + res * side, y0 + res * side), crs="EPSG:2154", resolution=res)
    ny, nx = geobox.shape
    names = [f"cov{v:02d}" for v in range(covariates)]
    rows, cols = np.mgrid[0:ny, 0:nx]
    data = {}
    for v, name in enumerate(names):
        data[name] = xr.DataArray(np.round(_field(rows, cols, v), 3), dims=("y", "x"),
                                  attrs={"units": "1", "long_name": f"synthetic covariate {v}",
                                         "grid_mapping": "spatial_ref"}).chunk({"y": tile, "x": tile})
    del rows, cols
    ds = xr.Dataset(data, coords=grid_coords(geobox))
    cube = folder / "cube.zarr"
    enc = {n: {"chunks": (max(1, tile // 2),) * 2, "shards": (tile, tile)} for n in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(cube, mode="w", zarr_format=3, encoding=enc, consolidated=True)

    # presence-only records: each species prefers its own direction in covariate space
    rng = np.random.default_rng(seed)
    cand = 4 * presences
    r, c = rng.integers(0, ny, cand), rng.integers(0, nx, cand)
    z = np.stack([_field(r, c, v) for v in range(covariates)], axis=1).astype("float64")
    z = (z - z.mean(0)) / (z.std(0) + 1e-9)
    per = max(1, presences // species)
    pick_r, pick_c, sp = [], [], []
    for s in range(species):
        w = np.exp(z @ rng.normal(0.0, 1.5, covariates))
        idx = rng.choice(cand, size=per, replace=True, p=w / w.sum())
        pick_r.append(r[idx]), pick_c.append(c[idx]), sp.extend([f"sp{s:03d}"] * per)
    x, y = cell_centres(geobox, np.concatenate(pick_r), np.concatenate(pick_c))
    po = records_from_frame(pd.DataFrame({"species": sp, "x": x, "y": y, "kind": "presence_only", "value": 1.0,
                                          "dataset": "po"}), crs="EPSG:2154")
    bg = uniform_background(geobox, background, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = pd.concat([po, bg.drop(columns=[k for k in ("row", "col") if k in bg.columns])], ignore_index=True)
    return cube, table


def demo_inputs(folder: Path) -> tuple[Path, Any]:
    import pandas as pd

    from geosdm.errors import InputError

    cube, table = folder / "cube.zarr", folder / "records" / "training.parquet"
    for p in (cube, table):
        if not p.exists():
            raise InputError(f"--demo {str(folder)!r}: {str(p)!r} is missing; run `make demo` "
                             "(or pass its --out folder)")
    return cube, pd.read_parquet(table)


# ------------------------------------------------------------------------------------------- GPU busy
class GpuBusy:
    """Sample the GPU's utilisation (percent of time a kernel was running) in a background thread.

    NVML through ``torch.cuda.utilization`` when ``pynvml`` is importable, else a ``nvidia-smi -lms 100`` child
    process; ``method`` is None (and ``reason`` says why) when neither works.
    """

    def __init__(self, device: Any, interval: float = 0.1) -> None:
        import torch

        self.device, self.interval = device, interval
        self.samples: list[tuple[float, float]] = []
        self.method: str | None = None
        self.reason = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[str] | None = None
        try:
            torch.cuda.utilization(device)
            self.method = "nvml"
        except Exception as e:  # noqa: BLE001 - pynvml missing or NVML unusable
            nvml_error = f"{type(e).__name__}: {e}"
            smi = shutil.which("nvidia-smi")
            if smi:
                self.method, self._smi = "nvidia-smi", smi
            else:
                self.reason = f"torch.cuda.utilization failed ({nvml_error}) and nvidia-smi is not on PATH"

    def _smi_id(self) -> str:
        """nvidia-smi's id of the torch device: CUDA_VISIBLE_DEVICES' entry (an index or a UUID) when set."""
        index = int(self.device.index or 0)
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        return visible[index] if index < len(visible) else str(index)

    def _run_nvml(self) -> None:
        import torch

        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), float(torch.cuda.utilization(self.device))))
            except Exception:  # noqa: BLE001
                pass
            self._stop.wait(self.interval)

    def _run_smi(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                self.samples.append((time.monotonic(), float(line.strip().split(",")[0])))
            except ValueError:
                continue

    def start(self) -> GpuBusy:
        if self.method == "nvml":
            self._thread = threading.Thread(target=self._run_nvml, daemon=True)
        elif self.method == "nvidia-smi":
            cmd = [self._smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                   "-lms", str(int(self.interval * 1000)), "-i", self._smi_id()]
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._thread = threading.Thread(target=self._run_smi, daemon=True)
        if self._thread is not None:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def fraction(self, t0: float, t1: float) -> tuple[float | None, int]:
        """Mean utilisation (0-1) of the samples taken in [t0, t1] and their number."""
        vals = [u for t, u in self.samples if t0 <= t <= t1]
        return (round(sum(vals) / len(vals) / 100.0, 3) if vals else None), len(vals)


def _kernel_seconds(prof: Any) -> float:
    """Total CUDA kernel/copy time recorded by a ``torch.profiler`` run (self device time of every event)."""
    total_us = 0.0
    for ev in prof.key_averages():
        v = getattr(ev, "self_device_time_total", None)
        if v is None:
            v = getattr(ev, "self_cuda_time_total", 0.0)
        total_us += float(v or 0.0)
    return total_us / 1e6


# ------------------------------------------------------------------------------------------- training
def _model(network: str, device: str, size: dict[str, Any], *, work: Path, workers: int, epochs: int,
           threads: int | None, batch_size: int) -> Any:
    from geosdm.models import MultiSpeciesSDM

    hidden = size["additive_hidden"] if network == "additive" else size["hidden"]
    return MultiSpeciesSDM(network=network, loss="integrated", hidden=hidden, n_blocks=size["n_blocks"],
                           width=size["width"], patch_size=size["patch_size"], epochs=epochs,
                           batch_size=batch_size, val_size=0, device=device, n_threads=threads,
                           streaming=True, num_workers=workers, work_dir=str(work), seed=0)


def loader_probe(model: Any, work: Path, *, batch_size: int, workers: int, device: Any) -> dict[str, Any]:
    """One epoch of the fit's DataLoader over its stores with no model (and the copy to ``device``)."""
    import numpy as np
    import torch

    from geosdm.models.data import ZarrSiteDataset

    kw: dict[str, Any] = {}
    if model.patch_ is not None:
        kw = {"patches": work / "patches.zarr", "patch_mean": np.asarray(model.patch_["mean"], dtype="float32"),
              "patch_scale": np.asarray(model.patch_["scale"], dtype="float32")}
    ds = ZarrSiteDataset(work / "points.zarr", batch_size=batch_size, seed=0, **kw)
    cuda = device.type == "cuda"
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers, pin_memory=cuda)
    ds.set_epoch(0)
    rows, first = 0, None
    t0 = time.perf_counter()
    for batch in loader:
        if first is None:
            first = time.perf_counter() - t0
        if cuda:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        rows += int(next(iter(batch.values())).shape[0])
    if cuda:
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    return {"loader_samples_per_s": round(rows / dt, 1) if dt > 0 else None, "loader_rows": rows,
            "loader_first_batch_s": round(first or 0.0, 3)}


def train_one(network: str, device: str, table: Any, cube: Path, size: dict[str, Any], *, work: Path,
              workers: int, epochs: int, threads: int | None, batch_size: int,
              busy: GpuBusy | None) -> tuple[Any, dict[str, Any]]:
    """Fit ``network`` on ``device`` from Zarr stores; rates, timings and (on CUDA) the GPU busy fraction."""
    import torch

    m = _model(network, device, size, work=work, workers=workers, epochs=epochs, threads=threads,
               batch_size=batch_size)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    prof = None
    if cuda and busy is not None and busy.method is None:
        try:
            prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
        except Exception as e:  # noqa: BLE001
            busy.reason += f"; torch.profiler unavailable ({type(e).__name__}: {e})"
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    if prof is not None:
        with prof:
            m.fit(table, cube=str(cube))
    else:
        m.fit(table, cube=str(cube))
    t_end = time.monotonic()
    fit_s = time.perf_counter() - t0
    tr = m.training_
    samples = int(m.n_sites_) * int(tr.epochs_run)
    out: dict[str, Any] = {
        "device": str(dev), "sites": int(m.n_sites_), "epochs": int(tr.epochs_run), "samples": samples,
        "train_s": round(tr.seconds, 3), "fit_s": round(fit_s, 3), "prepare_s": round(fit_s - tr.seconds, 3),
        "samples_per_s": round(samples / tr.seconds, 1) if tr.seconds > 0 else None,
        "threads": threads, "workers": workers, "batch_size": batch_size,
    }
    if cuda:
        out["max_memory_allocated_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
        if busy is not None and busy.method is not None:
            frac, n = busy.fraction(t_end - tr.seconds, t_end)
            out.update(gpu_busy=frac, gpu_busy_samples=n, gpu_busy_method=busy.method)
        elif prof is not None:
            try:
                out.update(gpu_busy=round(min(1.0, _kernel_seconds(prof) / tr.seconds), 3),
                           gpu_busy_method="torch.profiler kernel time / training wall time")
            except Exception as e:  # noqa: BLE001
                out.update(gpu_busy=None, gpu_busy_method=None,
                           gpu_busy_reason=f"profiler summary failed ({type(e).__name__}: {e})")
        else:
            out.update(gpu_busy=None, gpu_busy_method=None, gpu_busy_reason=busy.reason if busy else "not sampled")
    out.update(loader_probe(m, work, batch_size=batch_size, workers=workers, device=dev))
    return m, out


def starved_by(gpu: dict[str, Any]) -> str | None:
    """What keeps the GPU below the goal, read from the measured rates (None when the goal is met or unknown)."""
    busy = gpu.get("gpu_busy")
    if busy is None or busy >= BUSY_GOAL:
        return None
    train, loader = gpu.get("samples_per_s") or 0.0, gpu.get("loader_samples_per_s") or 0.0
    if loader and loader < 1.5 * train:
        return (f"data loading: the DataLoader alone delivers {loader:.0f} samples/s from the Zarr stores "
                f"(training runs at {train:.0f}); more workers (--workers), larger store chunks, or in-memory "
                "training (streaming=False) when the samples fit in memory")
    return (f"host overhead per step: the loader delivers {loader:.0f} samples/s but training takes "
            f"{train:.0f}; small batches of a small network leave the GPU waiting on Python, kernel launches and "
            "the per-step loss read-back; raise --batch-size")


# ----------------------------------------------------------------------------------------- prediction
def predict_block(model: Any, block: Any, tile: int, device: str, out: Path, busy: GpuBusy | None, *,
                  batch: int) -> dict[str, Any]:
    """Write predictions of the 4 x 4-tile ``block`` with ``model`` on ``device``; cells x species / s."""
    import numpy as np
    import torch

    from geosdm.models import UncalibratedWarning
    from geosdm.predict import write_predictions

    model.set_params(device=device)
    if device.startswith("cuda"):  # warm-up: weights to the device, kernels loaded
        model.decision_function({c: np.zeros(256, dtype="float32") for c in model.feature_names_})
        torch.cuda.synchronize()
    t0, m0 = time.perf_counter(), time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UncalibratedWarning)  # relative probabilities are fine for timing
        report = write_predictions(model, block, out, tile_shape=(tile, tile), overwrite=True, batch_size=batch)
    dt = time.perf_counter() - t0
    cells = int(block.sizes["y"] * block.sizes["x"])
    res = {"device": device, "seconds": round(dt, 3), "cells": cells, "species": len(model.species_),
           "cell_species_per_s": round(cells * len(model.species_) / dt, 1), "batch": batch,
           "tiles_written": int(report.n_tiles) - int(report.n_resumed), "empty_tiles": int(report.n_empty)}
    if device.startswith("cuda") and busy is not None and busy.method is not None:
        res["gpu_busy"], _ = busy.fraction(m0, time.monotonic())
    return res


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
    if not a or not b or not a.get(key) or not b.get(key):
        return None
    return round(float(a[key]) / float(b[key]), 2)


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", type=Path, help="demo output folder (cube.zarr, records/training.parquet)")
    p.add_argument("--tiny", action="store_true", help="tiny sizes for the test suite (CPU, < 30 s)")
    p.add_argument("--side", type=int, help="synthetic cube side in cells")
    p.add_argument("--tile", type=int, help="prediction tile side in cells (the block is 4 x 4 tiles)")
    p.add_argument("--covariates", type=int, help="synthetic covariates")
    p.add_argument("--species", type=int, help="synthetic species")
    p.add_argument("--presences", type=int, help="synthetic presence-only records")
    p.add_argument("--background", type=int, help="synthetic background points")
    p.add_argument("--epochs", type=int, help="GPU epochs")
    p.add_argument("--cpu-epochs", type=int, help="CPU baseline epochs")
    p.add_argument("--cpu-rows", type=int, help="records of the CPU baseline (0: all)")
    p.add_argument("--cpu-threads", type=int, help="torch threads of the CPU baseline (default: cores - workers)")
    p.add_argument("--workers", type=int, help="DataLoader worker processes (default: min(8, cores - 2))")
    p.add_argument("--batch-size", type=int, help="training batch size")
    p.add_argument("--hidden", type=int, help="MLP width")
    p.add_argument("--width", type=int, help="CNN channels of the first stage")
    p.add_argument("--patch-size", type=int, help="CNN patch side in cells")
    p.add_argument("--predict-batch", type=int, default=4096,
                   help="cells per forward pass in prediction (write_predictions' batch_size; default 4096)")
    p.add_argument("--networks", default=",".join(NETWORKS), help="comma-separated subset of cnn,additive,mlp")
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU baseline when CUDA is present")
    p.add_argument("--keep", type=Path, help="write the work files here and keep them (default: a temp folder)")
    args = p.parse_args(argv)

    size = dict(SIZES["tiny" if args.tiny else "default"])
    for key in ("side", "tile", "covariates", "species", "presences", "background", "epochs", "cpu_epochs",
                "cpu_rows", "workers", "batch_size", "hidden", "width", "patch_size"):
        if getattr(args, key, None) is not None:
            size[key] = getattr(args, key)
    cores = os.cpu_count() or 1
    workers = size["workers"] if size["workers"] is not None else max(1, min(8, cores - 2))
    cpu_threads = args.cpu_threads or max(1, cores - workers)
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    unknown = set(networks) - set(NETWORKS)
    if unknown:
        p.error(f"unknown networks {sorted(unknown)}; choose from {NETWORKS}")

    t_start = time.perf_counter()
    import torch
    import xarray as xr

    cuda = torch.cuda.is_available()
    result: dict[str, Any] = {
        "benchmark": "gpu", "size": "tiny" if args.tiny else "default", "cuda": cuda,
        "device_name": torch.cuda.get_device_name(0) if cuda else None, "torch": torch.__version__,
        "cpu_count": cores, "workers": workers, "cpu_threads": cpu_threads, "batch_size": size["batch_size"],
        "epochs": {"gpu": size["epochs"] if cuda else None, "cpu": size["cpu_epochs"]},
    }
    tmp = None
    if args.keep:
        folder = args.keep
        folder.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="geosdm-gpu-bench-")
        folder = Path(tmp.name)
    busy: GpuBusy | None = None
    try:
        t0 = time.perf_counter()
        if args.demo:
            cube, table = demo_inputs(args.demo)
            result["input"] = f"demo:{args.demo}"
        else:
            cube, table = synthetic_inputs(folder, side=size["side"], tile=size["tile"],
                                           covariates=size["covariates"], species=size["species"],
                                           presences=size["presences"], background=size["background"])
            result["input"] = "synthetic"
        result["setup_s"] = round(time.perf_counter() - t0, 2)
        result["records"] = len(table)
        cpu_table = table
        if size["cpu_rows"] and len(table) > size["cpu_rows"]:
            cpu_table = table.sample(n=size["cpu_rows"], random_state=0).reset_index(drop=True)
        result["cpu_records"] = len(cpu_table)
        log(f"inputs: {result['input']}, {len(table)} records ({result['setup_s']} s); cuda={cuda} "
            f"workers={workers} cpu_threads={cpu_threads}")

        gpu_dev = None
        if cuda:
            gpu_dev = torch.device("cuda", 0)
            torch.ones(8, 8, device=gpu_dev) @ torch.ones(8, 8, device=gpu_dev)  # context + cuBLAS up front
            torch.nn.functional.conv2d(torch.ones(1, 1, 8, 8, device=gpu_dev), torch.ones(1, 1, 3, 3, device=gpu_dev))
            torch.cuda.synchronize(gpu_dev)
            busy = GpuBusy(gpu_dev).start()
            result["gpu_busy_method"] = busy.method or "torch.profiler (fallback)"
            if busy.reason:
                result["gpu_busy_reason"] = busy.reason
        else:
            result["gpu_busy_method"] = None
            result["gpu_busy_reason"] = "no CUDA device: GPU side skipped"

        train: dict[str, Any] = {}
        models: dict[str, Any] = {}
        for net in networks:
            entry: dict[str, Any] = {"gpu": None, "cpu": None}
            if cuda:
                m, entry["gpu"] = train_one(net, "cuda", table, cube, size, work=folder / f"work-{net}-gpu",
                                            workers=workers, epochs=size["epochs"], threads=1,
                                            batch_size=size["batch_size"], busy=busy)
                models[net] = m
                log(f"train {net} cuda: {entry['gpu']}")
            if not cuda or not args.no_cpu:
                m, entry["cpu"] = train_one(net, "cpu", cpu_table, cube, size, work=folder / f"work-{net}-cpu",
                                            workers=workers, epochs=size["cpu_epochs"], threads=cpu_threads,
                                            batch_size=size["batch_size"], busy=None)
                models.setdefault(net, m)
                log(f"train {net} cpu: {entry['cpu']}")
            entry["speedup"] = _ratio(entry["gpu"], entry["cpu"], "samples_per_s")
            entry["gpu_busy"] = entry["gpu"].get("gpu_busy") if entry["gpu"] else None
            entry["starved_by"] = starved_by(entry["gpu"]) if entry["gpu"] else None
            train[net] = entry
        result["train"] = train

        # the 16-tile block: 4 x 4 tiles from the cube's top-left corner
        ds = xr.open_zarr(cube, decode_coords="all")
        ny, nx = int(ds.sizes["y"]), int(ds.sizes["x"])
        tile = int(min(size["tile"], ny // 4, nx // 4))
        block = ds.isel(y=slice(0, 4 * tile), x=slice(0, 4 * tile))
        predict: dict[str, Any] = {}
        valid: dict[tuple[str, ...], int] = {}
        for net in [n for n in PREDICT_NETWORKS if n in models]:
            m = models[net]
            feats = tuple(m.feature_names_)
            if feats not in valid:  # cells where every input is finite (the only ones the network sees)
                valid[feats] = int(block[list(feats)].to_array().notnull().all("variable").sum())
            entry = {"tiles": 16, "tile_shape": [tile, tile], "valid_cells": valid[feats], "gpu": None, "cpu": None}
            if cuda:
                entry["gpu"] = predict_block(m, block, tile, "cuda", folder / f"pred-{net}-gpu.zarr", busy,
                                             batch=args.predict_batch)
                log(f"predict {net} cuda: {entry['gpu']}")
            m.set_params(n_threads=1)  # one torch thread per Dask thread (the scheduler uses every core)
            entry["cpu"] = predict_block(m, block, tile, "cpu", folder / f"pred-{net}-cpu.zarr", None,
                                         batch=args.predict_batch)
            log(f"predict {net} cpu: {entry['cpu']}")
            entry["speedup"] = _ratio(entry["gpu"], entry["cpu"], "cell_species_per_s")
            predict[net] = entry
        result["predict"] = predict
    finally:
        if busy is not None:
            busy.stop()
        if tmp is not None:
            tmp.cleanup()

    cnn = result["train"].get("cnn", {})
    result["summary"] = {
        **{f"train_samples_per_s_{n}_{d}": (e[d] or {}).get("samples_per_s") for n, e in result["train"].items()
           for d in ("gpu", "cpu")},
        **{f"train_speedup_{n}": e["speedup"] for n, e in result["train"].items()},
        **{f"predict_speedup_{n}": e["speedup"] for n, e in result["predict"].items()},
        "cnn_gpu_busy": cnn.get("gpu_busy"),
        "cnn_gpu_busy_goal_met": (cnn["gpu_busy"] >= BUSY_GOAL) if cnn.get("gpu_busy") is not None else None,
        "cnn_starved_by": cnn.get("starved_by"),
    }
    result["wall_s"] = round(time.perf_counter() - t_start, 2)
    return result


if __name__ == "__main__":
    emit(main())
