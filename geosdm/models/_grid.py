"""Predict over a covariate cube ``xr.Dataset`` ``(y, x)`` -> log-intensities ``(species, y, x)``.

Point networks run cell by cell through ``xr.apply_ufunc`` (a dask-backed cube gives a lazy result, one task
per block). Patch networks need each cell's neighbourhood: they run on in-memory cubes, row band by row band,
cutting ``k x k`` windows with numpy (no xbatcher: slicing a loaded block is 10-40x faster, DESIGN.md);
large or lazy cubes go through the prediction stage (``geosdm.predict``), which hands in-memory blocks here.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import pandas as pd
import xarray as xr

from geosdm.errors import InputError, MissingVariableError
from geosdm.models.features import warn_unseen_inputs

__all__ = ["GridModel", "predict_grid"]


class GridModel(Protocol):
    """What :func:`predict_grid` needs of a fitted model (``MultiSpeciesSDM`` has it): the estimator imports this
    module, so this module names the model's interface instead of importing the estimator back."""

    species_: list[str]
    feature_names_: list[str]
    patch_: dict[str, Any] | None
    encoder_: Any

    def _input_columns(self) -> list[str]: ...

    def _log_intensity(self, X: Any, patches: Any = None) -> np.ndarray: ...


def _columns(model: GridModel) -> list[str]:
    return model._input_columns()


def predict_grid(model: GridModel, ds: xr.Dataset, *, rows_per_batch: int = 64) -> xr.DataArray:
    """Log-intensity of every cell of ``ds`` (NaN where a covariate is NaN).

    Raises
    ------
    MissingVariableError
        ``ds`` lacks covariates of ``model.feature_names_`` (or patch variables).
    InputError
        A patch network is given a dask-backed cube.

    Example
    -------
    >>> f = predict_grid(model, cube)  # doctest: +SKIP
    """
    cols = _columns(model)
    need = cols + (list(model.patch_["variables"]) if model.patch_ else [])
    missing = [c for c in dict.fromkeys(need) if c not in ds.data_vars]
    if missing:
        raise MissingVariableError(
            f"cube lacks variable(s) {missing} needed by model.feature_names_; it has {sorted(map(str, ds.data_vars))}. "
            "Rebuild the cube with them or refit the model on this cube's variables"
        )
    n_sp = len(model.species_)
    if model.patch_:
        out = _patch_grid(model, ds, cols, rows_per_batch)
    else:
        warned: set[str] = set()  # once per covariate over the blocks

        def block(*arrays: np.ndarray) -> np.ndarray:
            shape = arrays[0].shape
            frame = pd.DataFrame({c: np.asarray(a).reshape(-1) for c, a in zip(cols, arrays)})
            warn_unseen_inputs(model.encoder_, frame, columns=cols, what="cube", once=warned)
            return model._log_intensity(frame).reshape(*shape, n_sp)

        out = xr.apply_ufunc(
            block, *[ds[c] for c in cols], output_core_dims=[["species"]], dask="parallelized",
            output_dtypes=[np.float32], dask_gufunc_kwargs={"output_sizes": {"species": n_sp}},
        )
    out = out.assign_coords(species=list(model.species_)).transpose("species", ...)
    out.name = "log_intensity"
    return out


def _patch_grid(model: GridModel, ds: xr.Dataset, cols: list[str], rows_per_batch: int) -> xr.DataArray:
    from numpy.lib.stride_tricks import sliding_window_view

    variables = list(model.patch_["variables"])
    lazy = [v for v in dict.fromkeys(cols + variables) if ds[v].chunks is not None]
    if lazy:
        raise InputError(
            f"cube variables {lazy[:5]} are dask-backed; patch networks predict on in-memory blocks: select a "
            "window and load it (cube.isel(...).load()) or use the prediction stage (geosdm.predict)"
        )
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    k = int(model.patch_["size"])
    lo = k // 2
    stack = np.stack([np.asarray(ds[v].values, dtype=np.float32) for v in variables])
    padded = np.full((len(variables), ny + k - 1, nx + k - 1), np.nan, dtype=np.float32)
    padded[:, lo : lo + ny, lo : lo + nx] = stack
    windows = sliding_window_view(padded, (k, k), axis=(1, 2))  # (C, ny, nx, k, k), a view
    values: dict[str, Any] = {c: np.asarray(ds[c].values) for c in cols}
    out = np.empty((ny, nx, len(model.species_)), dtype=np.float32)
    for r0 in range(0, ny, rows_per_batch):
        r1 = min(ny, r0 + rows_per_batch)
        patches = np.ascontiguousarray(windows[:, r0:r1].reshape(len(variables), -1, k, k).transpose(1, 0, 2, 3))
        frame = pd.DataFrame({c: values[c][r0:r1].reshape(-1) for c in cols}) if cols else pd.DataFrame(
            index=range(patches.shape[0]))
        out[r0:r1] = model._log_intensity(frame, patches).reshape(r1 - r0, nx, -1)
    return xr.DataArray(out, dims=("y", "x", "species"), coords={"y": ds["y"], "x": ds["x"]})
