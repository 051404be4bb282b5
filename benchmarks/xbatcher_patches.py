"""xbatcher's ``BatchGenerator`` against geosdm's own numpy windows, for k x k covariate patches of a loaded block.

Why this exists: ``xbatcher`` was a declared dependency that nothing imported (issue 21). Its place would be a
sample stream for users who bring their own PyTorch model: patches around every cell of a covariate cube.
geosdm already cuts those windows itself (``geosdm.models._grid``: ``numpy.lib.stride_tricks.sliding_window_view``
on a block loaded once; ``geosdm.records.extract_patches`` for training points). This benchmark measures both on
the same in-memory block (numpy-backed, as a loaded chunk is) and checks they give the same patches:

* **xbatcher**: ``BatchGenerator(ds, input_dims={"y": k, "x": k}, input_overlap={"y": k-1, "x": k-1})``, each
  patch stacked to a ``(channels, k, k)`` array and batched into a torch tensor;
* **numpy**: ``sliding_window_view`` over the block, reshaped into the same ``(batch, channels, k, k)`` tensors.

Usage::

    python benchmarks/xbatcher_patches.py --size 96 --channels 8 --k 9 --batch 512

The last stdout line is one JSON object: ``patches``, ``xbatcher_s``, ``numpy_s``, ``speedup_numpy_vs_xbatcher``,
``patches_per_s_xbatcher``, ``patches_per_s_numpy``, ``identical``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import xarray as xr


def block(size: int, channels: int, seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((channels, size, size)).astype("float32")
    return xr.Dataset({f"v{i}": (("y", "x"), data[i]) for i in range(channels)},
                      coords={"y": np.arange(size), "x": np.arange(size)})


def with_xbatcher(ds: xr.Dataset, k: int, batch: int) -> list[torch.Tensor]:
    import xbatcher

    gen = xbatcher.BatchGenerator(ds, input_dims={"y": k, "x": k}, input_overlap={"y": k - 1, "x": k - 1})
    names = list(ds.data_vars)
    out, buf = [], []
    for patch in gen:
        buf.append(np.stack([patch[v].to_numpy() for v in names]))
        if len(buf) == batch:
            out.append(torch.from_numpy(np.stack(buf)))
            buf = []
    if buf:
        out.append(torch.from_numpy(np.stack(buf)))
    return out


def with_numpy(ds: xr.Dataset, k: int, batch: int) -> list[torch.Tensor]:
    cube = np.stack([ds[v].to_numpy() for v in ds.data_vars])  # (c, y, x), loaded once
    win = np.lib.stride_tricks.sliding_window_view(cube, (k, k), axis=(1, 2))  # (c, ny, nx, k, k) view
    c, ny, nx = win.shape[:3]
    flat = win.transpose(1, 2, 0, 3, 4).reshape(ny * nx, c, k, k)  # one copy
    return [torch.from_numpy(np.ascontiguousarray(flat[i:i + batch])) for i in range(0, len(flat), batch)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--k", type=int, default=9)
    ap.add_argument("--batch", type=int, default=512)
    args = ap.parse_args()
    ds = block(args.size, args.channels)
    t0 = time.perf_counter()
    a = with_xbatcher(ds, args.k, args.batch)
    t_x = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = with_numpy(ds, args.k, args.batch)
    t_n = time.perf_counter() - t0
    n = sum(len(t) for t in b)
    # xbatcher walks x fastest within y, as the numpy reshape does
    identical = len(a) == len(b) and all(torch.equal(p, q) for p, q in zip(a, b))
    print(f"{n} patches of {args.channels}x{args.k}x{args.k}: xbatcher {t_x:.2f} s, numpy {t_n:.3f} s")
    print(json.dumps({"patches": n, "size": args.size, "channels": args.channels, "k": args.k, "batch": args.batch,
                      "xbatcher_s": round(t_x, 3), "numpy_s": round(t_n, 4),
                      "speedup_numpy_vs_xbatcher": round(t_x / t_n, 1),
                      "patches_per_s_xbatcher": round(n / t_x), "patches_per_s_numpy": round(n / t_n),
                      "identical": identical}))


if __name__ == "__main__":
    main()
