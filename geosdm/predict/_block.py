"""Inference on one in-memory block: valid cells only, in batches, patches cut from the block's halo.

A block is the stack ``(V, by + 2h, bx + 2h)`` of the variables a model reads (:class:`ModelInputs` order),
with a halo of ``h = patch size // 2`` cells on every side for patch networks (NaN beyond the grid). A cell is
valid when every input variable is finite there; only valid cells go through the network, so blocks with no
valid cell (sea, outside the region) cost no inference at all.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from geosdm.io.layers import UINT8_NODATA
from geosdm.predict.model import ModelInputs, probability_inplace

if TYPE_CHECKING:
    from geosdm.models import MultiSpeciesSDM

__all__ = ["BlockOutput", "predict_block"]

#: One CUDA forward at a time per process: the estimator moves its network to the device and back per call,
#: which threads sharing one model must not interleave. CPU forwards run concurrently.
_CUDA_LOCK = threading.Lock()


def _uses_cuda(model: MultiSpeciesSDM) -> bool:
    import torch

    device = str(getattr(model, "device", "auto"))
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def _forward(model: MultiSpeciesSDM, columns: dict[str, np.ndarray], patches: np.ndarray | None) -> np.ndarray:
    n = len(next(iter(columns.values()))) if columns else len(patches)  # type: ignore[arg-type]
    X: Any = columns
    if not columns:  # patch-only network: rows still need a length
        import pandas as pd

        X = pd.DataFrame(index=pd.RangeIndex(n))
    if _uses_cuda(model):
        with _CUDA_LOCK:
            return model.decision_function(X, patches=patches, batch_size=n)
    return model.decision_function(X, patches=patches, batch_size=n)


@dataclass(frozen=True)
class BlockOutput:
    """One output of :func:`predict_block`: ``"log_intensity"`` or ``"probability"`` (link and offset), and
    whether probabilities come packed as storage ``uint8`` (``round(250 p)``, 255 = nodata)."""

    kind: Literal["log_intensity", "probability"]
    link: str = "cloglog"
    offset: float = 0.0
    packed: bool = False

    @property
    def dtype(self) -> type:
        return np.uint8 if self.packed else np.float32

    @property
    def fill(self) -> float | int:
        return UINT8_NODATA if self.packed else np.nan


def _finish(f: np.ndarray, spec: BlockOutput, *, last: bool) -> np.ndarray:
    """One batch ``(b, species)`` of log-intensities as ``spec`` wants it (in place in ``f`` when ``last``)."""
    if spec.kind == "log_intensity":
        return f
    p = probability_inplace(f if last else f.copy(), spec.link, spec.offset)
    if not spec.packed:
        return p
    np.multiply(p, np.float32(250.0), out=p)  # p is in [0, 1]: no clipping; NaN cannot occur on valid cells
    np.rint(p, out=p)
    return p.astype(np.uint8)


def predict_block(model: MultiSpeciesSDM, data: np.ndarray, *, inputs: ModelInputs,
                  outputs: Sequence[BlockOutput] = (BlockOutput("log_intensity"),),
                  batch_size: int = 4_096) -> list[np.ndarray]:
    """``outputs`` of a block's core cells, each ``(species, by, bx)`` (nodata where any input is NaN).

    Each batch's log-intensities are turned into every output while they are in cache (probability link,
    uint8 packing), then transposed into place, so a tile costs one output array per output and nothing else.

    Parameters
    ----------
    model
        Fitted ``MultiSpeciesSDM``.
    data
        ``(V, by + 2h, bx + 2h)`` float32 stack of ``inputs.variables`` with halo ``h = inputs.halo``.
    inputs
        What the model reads (:func:`geosdm.predict.model.model_inputs`).
    outputs
        What to return, in order (default: the log-intensity).
    batch_size
        Cells per forward pass (bounds memory: patches take ``batch_size * C * k * k * 4`` bytes).
    """
    h = inputs.halo
    n_var, py, px = data.shape
    by, bx = py - 2 * h, px - 2 * h
    core = data[:, h : py - h, h : px - h]
    n_sp = len(model.species_)
    cells = np.flatnonzero(np.isfinite(core).all(axis=0).ravel())
    dense = cells.size == by * bx  # every cell valid: slices (views) instead of fancy indexing
    outs = [np.empty((n_sp, by * bx), dtype=o.dtype) if dense else np.full((n_sp, by * bx), o.fill, dtype=o.dtype)
            for o in outputs]
    if cells.size == 0:
        return [o.reshape(n_sp, by, bx) for o in outs]
    names = inputs.variables
    flat = core.reshape(n_var, -1)
    col_pos = [names.index(c) for c in inputs.columns]
    windows: Any = None
    if inputs.patch_variables:
        from numpy.lib.stride_tricks import sliding_window_view

        k = int(model.patch_["size"])
        pos = [names.index(v) for v in inputs.patch_variables]
        windows = sliding_window_view(data[pos], (k, k), axis=(1, 2))  # (C, by, bx, k, k), a view
    for start in range(0, cells.size, int(batch_size)):
        stop = min(start + int(batch_size), cells.size)
        sel: slice | np.ndarray = slice(start, stop) if dense else cells[start:stop]
        columns = {c: flat[p, sel] for c, p in zip(inputs.columns, col_pos)}  # views when dense
        patches = None
        if windows is not None:
            iy, ix = np.divmod(np.arange(start, stop) if dense else cells[start:stop], bx)
            patches = np.ascontiguousarray(windows[:, iy, ix].transpose(1, 0, 2, 3))
        f = _forward(model, columns, patches)
        for out, spec, i in zip(outs, outputs, range(len(outputs))):
            v = _finish(f, spec, last=i == len(outputs) - 1)
            for r in range(0, v.shape[0], 4096):  # transpose in row blocks: 4x faster than one strided copy
                rows = slice(r, r + 4096)
                if dense:
                    out[:, start + r : start + min(r + 4096, v.shape[0])] = v[rows].T
                else:
                    out[:, sel[rows]] = v[rows].T  # type: ignore[index]
    return [o.reshape(n_sp, by, bx) for o in outs]
