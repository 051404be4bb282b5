"""Inference on one in-memory block: valid cells only, in batches, patches cut from the block's halo.

A block is the stack ``(V, by + 2h, bx + 2h)`` of the variables a model reads (:class:`ModelInputs` order),
with a halo of ``h = patch size // 2`` cells on every side for patch networks (NaN beyond the grid). A cell is
valid when every input variable is finite there; only valid cells go through the network, so blocks with no
valid cell (sea, outside the region) cost no inference at all.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from geosdm.predict._model import ModelInputs

if TYPE_CHECKING:
    from geosdm.models import MultiSpeciesSDM

__all__ = ["predict_block"]

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


def predict_block(model: MultiSpeciesSDM, data: np.ndarray, *, inputs: ModelInputs,
                  batch_size: int = 8_192) -> np.ndarray:
    """Log-intensity ``(species, by, bx)`` of a block's core cells (NaN where any input is NaN).

    Parameters
    ----------
    model
        Fitted ``MultiSpeciesSDM``.
    data
        ``(V, by + 2h, bx + 2h)`` float32 stack of ``inputs.variables`` with halo ``h = inputs.halo``.
    inputs
        What the model reads (:func:`geosdm.predict._model.model_inputs`).
    batch_size
        Cells per forward pass (bounds memory: patches take ``batch_size * C * k * k * 4`` bytes).
    """
    h = inputs.halo
    n_var, py, px = data.shape
    by, bx = py - 2 * h, px - 2 * h
    core = data[:, h : py - h, h : px - h]
    n_sp = len(model.species_)
    out = np.full((n_sp, by * bx), np.nan, dtype=np.float32)
    cells = np.flatnonzero(np.isfinite(core).all(axis=0).ravel())
    if cells.size == 0:
        return out.reshape(n_sp, by, bx)
    names = inputs.variables
    flat = core.reshape(n_var, -1)
    col_pos = [names.index(c) for c in inputs.columns]
    windows: Any = None
    if inputs.patch_variables:
        from numpy.lib.stride_tricks import sliding_window_view

        k = int(model.patch_["size"])
        pos = [names.index(v) for v in inputs.patch_variables]
        windows = sliding_window_view(data[pos], (k, k), axis=(1, 2))  # (C, by, bx, k, k), a view
    dense = cells.size == by * bx  # every cell valid: slices (views) instead of fancy indexing
    for start in range(0, cells.size, int(batch_size)):
        stop = min(start + int(batch_size), cells.size)
        sel: slice | np.ndarray = slice(start, stop) if dense else cells[start:stop]
        columns = {c: flat[p, sel] for c, p in zip(inputs.columns, col_pos)}  # views when dense
        patches = None
        if windows is not None:
            iy, ix = np.divmod(np.arange(start, stop) if dense else cells[start:stop], bx)
            patches = np.ascontiguousarray(windows[:, iy, ix].transpose(1, 0, 2, 3))
        f = _forward(model, columns, patches)
        for r in range(0, f.shape[0], 4096):  # transpose in row blocks: 4x faster than one strided copy
            rows = slice(r, r + 4096)
            if dense:
                out[:, start + r : start + min(r + 4096, f.shape[0])] = f[rows].T
            else:
                out[:, sel[rows]] = f[rows].T  # type: ignore[index]
    return out.reshape(n_sp, by, bx)
