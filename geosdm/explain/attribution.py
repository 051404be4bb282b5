"""Attributions of each species' log-intensity to the covariates: at points, and lazily over a cube.

Integrated gradients (Sundararajan et al. 2017) explain ``f(x) - f(baseline)``, the log-intensity of a cell
relative to the *baseline* environment (the training mean of every covariate), as a sum of one term per
covariate: ``sum_v A_v(x) = f(x) - f(baseline)`` up to the quadrature error of ``steps`` nodes (completeness).
Gradients are taken with torch autograd through the encoder's standardisation (:mod:`geosdm.explain._torch`),
so each attribution is in log-intensity units and belongs to one cube variable; one-hot columns of a
categorical covariate are summed to that covariate, and a patch network's ``k x k`` window of a variable to
that variable. ``method="gradient_x_input"`` is the one-step ``(x - baseline) * gradient(x)`` (cheaper, not
complete).

:func:`attribution_cube` is lazy: one task per tile (the cube's shards, or smaller so a tile's block stays
under ``max_block_mb``), the model sent once as one graph key, a halo for patch networks, as in
:func:`geosdm.predict.predict`. The result has one data variable per species, each ``(variable, y, x)``, so
:func:`geosdm.io.write_layers` writes it like predictions and :func:`geosdm.predict.export_cogs` gives one
multi-band COG per species (one band per covariate).

Cost: one forward pass over ``steps`` path points and one backward pass per species for every cell; explain
the species you need (``species=``) on a CPU, all of them on a GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import pandas as pd
import xarray as xr

from geosdm.errors import InputError, MissingVariableError
from geosdm.predict.model import ModelInputs, as_model, model_fingerprint, model_inputs

if TYPE_CHECKING:
    from geosdm.models import MultiSpeciesSDM

__all__ = ["attribute", "attribution_cube", "attribution_species", "METHODS"]

log = logging.getLogger(__name__)

#: Attribution methods.
METHODS = ("integrated_gradients", "gradient_x_input")


def _species_index(model: MultiSpeciesSDM, species: Sequence[str] | str | None) -> list[int]:
    if species is None:
        return list(range(len(model.species_)))
    names = [species] if isinstance(species, str) else list(species)
    unknown = [s for s in names if s not in model.species_]
    if unknown:
        raise MissingVariableError(
            f"species {unknown} are not modelled; the model has {list(model.species_)[:20]}"
            f"{' ...' if len(model.species_) > 20 else ''}. Pass species= from model.species_"
        )
    if not names:
        raise InputError("species=[] selects nothing; pass None for all species or a list of names")
    return [list(model.species_).index(s) for s in names]


def _check(method: str, steps: int) -> None:
    if method not in METHODS:
        raise InputError(f"method={method!r} is unknown; choose one of {list(METHODS)}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"steps={steps!r} must be a positive int (Gauss-Legendre nodes; 16-64 is typical)")


def _run(model: MultiSpeciesSDM, columns: Mapping[str, np.ndarray], patches: np.ndarray | None, *,
         species: list[int], method: str, steps: int, baseline: Mapping[str, float] | None,
         batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Attributions ``(S, n, V)``, ``f(x)`` and ``f(b)`` ``(S, n)`` (NaN for invalid rows) and the valid mask."""
    import torch

    from geosdm.explain._torch import RawInputNetwork, integrated_gradients
    from geosdm.models.trainer import resolve_device, threads

    net = RawInputNetwork(model).to(resolve_device(getattr(model, "device", "cpu")))
    n = len(next(iter(columns.values()))) if columns else len(patches)  # type: ignore[arg-type]
    n_v = len(net.variables)
    attr = np.full((len(species), n, n_v), np.nan, dtype=np.float32)
    fx = np.full((len(species), n), np.nan, dtype=np.float32)
    fb = np.full((len(species), n), np.nan, dtype=np.float32)
    per = max(1, int(batch_size) // (1 if method == "gradient_x_input" else int(steps)))
    valid_all = np.zeros(n, dtype=bool)
    with threads(getattr(model, "n_threads", None)), torch.enable_grad():
        for s in range(0, n, per):
            sl = slice(s, min(n, s + per))
            x = net.inputs({c: np.asarray(v)[sl] for c, v in columns.items()},
                           None if patches is None else patches[sl])
            ok = np.flatnonzero(x.valid)
            valid_all[sl] = x.valid
            if not ok.size:
                continue
            b = net.baseline(x, baseline)
            a, f_x, f_b = integrated_gradients(net, x, b, species=species, steps=int(steps), method=method)
            idx = s + ok
            attr[:, idx] = a.cpu().numpy()[:, ok]
            fx[:, idx] = f_x.T.cpu().numpy()[:, ok]
            fb[:, idx] = f_b.T.cpu().numpy()[:, ok]
    return attr, fx, fb, valid_all


def attribute(
    model: MultiSpeciesSDM | str | PathLike[str],
    X: pd.DataFrame | Mapping[str, np.ndarray],
    *,
    species: Sequence[str] | str | None = None,
    method: str = "integrated_gradients",
    steps: int = 32,
    baseline: Mapping[str, float] | None = None,
    patches: np.ndarray | None = None,
    batch_size: int = 16_384,
) -> xr.Dataset:
    """Attributions of each species' log-intensity to each covariate at the rows of ``X`` (eager).

    Parameters
    ----------
    model
        Fitted ``MultiSpeciesSDM`` or its folder.
    X
        Covariates per point (DataFrame or column mapping) holding the model's columns.
    species
        Species to explain (default: all).
    method
        ``"integrated_gradients"`` (complete up to quadrature error) or ``"gradient_x_input"``.
    steps
        Gauss-Legendre nodes along the path (integrated gradients).
    baseline
        Raw baseline value per numeric covariate (default: the training means).
    patches
        Raw patches ``(n, C, k, k)`` of the model's patch variables (patch networks only).
    batch_size
        Path points (rows x steps) per forward/backward pass.

    Returns
    -------
    xarray.Dataset
        ``attribution`` ``(species, point, variable)`` in log-intensity units, ``log_intensity`` ``f(x)`` and
        ``baseline_log_intensity`` ``f(baseline)`` ``(species, point)``; NaN where an input is missing. The
        completeness residual is ``f(x) - f(baseline) - attribution.sum("variable")``.

    Example
    -------
    >>> a = attribute(model, table.sample(500), species=["plant_01"])  # doctest: +SKIP
    >>> a.attribution.sel(species="plant_01").mean("point")  # doctest: +SKIP
    """
    m = as_model(model)
    _check(method, steps)
    sp = _species_index(m, species)
    inputs = model_inputs(m)
    if inputs.patch_variables and patches is None:
        raise InputError(f"this patch network needs patches= (n, C, k, k) of {list(inputs.patch_variables)}; "
                         "cut them with geosdm.records.extract_patches or use attribution_cube over a cube")
    if isinstance(X, pd.DataFrame):
        from geosdm.models.features import check_columns

        check_columns(X, inputs.columns)
    else:
        missing = [c for c in inputs.columns if c not in X]
        if missing:
            raise MissingVariableError(f"X lacks covariate column(s) {missing} needed by the model")
    columns = {c: np.asarray(X[c]) for c in inputs.columns}
    attr, fx, fb, _ = _run(m, columns, patches, species=sp, method=method, steps=steps, baseline=baseline,
                           batch_size=batch_size)
    names = [m.species_[i] for i in sp]
    index = X.index if isinstance(X, pd.DataFrame) else np.arange(attr.shape[1])
    variables = list(dict.fromkeys(inputs.columns + inputs.patch_variables))
    return xr.Dataset(
        {"attribution": (("species", "point", "variable"), attr, {"units": "log-intensity", "method": method}),
         "log_intensity": (("species", "point"), fx),
         "baseline_log_intensity": (("species", "point"), fb)},
        coords={"species": names, "point": np.asarray(index), "variable": variables},
        attrs={"geosdm:method": method, "geosdm:steps": int(steps)},
    )


# ------------------------------------------------------------------------------------------------ cube


def _attribution_block(model: MultiSpeciesSDM, data: np.ndarray, *, inputs: ModelInputs, species: tuple[int, ...],
                       method: str, steps: int, baseline: Mapping[str, float] | None, batch_size: int,
                       residual: bool) -> np.ndarray:
    """``(S, V [+ 1], by, bx)`` attributions of one tile's core cells (NaN where an input is NaN)."""
    data = np.asarray(data, dtype=np.float32)
    h = inputs.halo
    n_var, py, px = data.shape
    by, bx = py - 2 * h, px - 2 * h
    core = data[:, h : py - h, h : px - h]
    n_v = len(inputs.variables)
    out = np.full((len(species), n_v + int(residual), by * bx), np.nan, dtype=np.float32)
    cells = np.flatnonzero(np.isfinite(core).all(axis=0).ravel())
    if cells.size:
        flat = core.reshape(n_var, -1)
        names = inputs.variables
        columns = {c: flat[names.index(c), cells] for c in inputs.columns}
        patches = None
        if inputs.patch_variables:
            from numpy.lib.stride_tricks import sliding_window_view

            k = 2 * h + 1
            pos = [names.index(v) for v in inputs.patch_variables]
            windows = sliding_window_view(data[pos], (k, k), axis=(1, 2))  # (C, by, bx, k, k), a view
            iy, ix = np.divmod(cells, bx)
            patches = np.ascontiguousarray(windows[:, iy, ix].transpose(1, 0, 2, 3))
        attr, fx, fb, _ = _run(model, columns, patches, species=list(species), method=method, steps=steps,
                               baseline=baseline, batch_size=batch_size)
        out[:, :n_v, cells] = attr.transpose(0, 2, 1)
        if residual:
            out[:, n_v, cells] = fx - fb - attr.sum(axis=2)
    return out.reshape(len(species), -1, by, bx)


def _baseline_values(model: MultiSpeciesSDM, species: list[int],
                     baseline: Mapping[str, float] | None) -> tuple[dict[str, float], list[float]]:
    """The baseline's raw covariate values and its log-intensity per species (one forward pass, no data)."""
    import torch

    from geosdm.explain._torch import RawInputNetwork

    net = RawInputNetwork(model)
    cols = {c: np.array([float(model.encoder_.means[c])], dtype=np.float32) for c in net.numeric}
    for c in net.categorical:
        cols[c] = np.array([model.encoder_.categories[c][0]], dtype=object)
    k = net.patch_size
    patches = net.patch_mean.numpy()[None, :, None, None] * np.ones((1, 1, k, k), np.float32) if k else None
    x = net.inputs(cols, patches)
    b = net.baseline(x, baseline)
    with torch.no_grad():
        f = net(b.num, b.cat, b.patch)[0].numpy()
    values = {c: float(v) for c, v in zip(net.numeric, b.num[0].tolist())}
    return values, [float(f[i]) for i in species]


def attribution_cube(
    model: MultiSpeciesSDM | str | PathLike[str],
    cube: xr.Dataset | str | PathLike[str],
    *,
    species: Sequence[str] | str | None = None,
    method: str = "integrated_gradients",
    steps: int = 32,
    baseline: Mapping[str, float] | None = None,
    residual: bool = False,
    tile_shape: tuple[int, int] | None = None,
    max_block_mb: float = 256.0,
    storage_options: Mapping[str, Any] | None = None,
    batch_size: int = 16_384,
) -> xr.Dataset:
    """Lazy attribution cube: per species, the attribution of its log-intensity to each covariate.

    Parameters
    ----------
    model
        Fitted ``MultiSpeciesSDM`` or its folder.
    cube
        Covariate cube (Dataset or Zarr path/URL) holding the model's variables on ``(y, x)``.
    species
        Species to explain (default: all; each costs one backward pass per cell and step).
    method, steps, baseline, batch_size
        As in :func:`attribute`.
    residual
        Add ``completeness_residual`` ``(species, y, x)``: ``f(x) - f(baseline) - sum of attributions``.
    tile_shape
        Cells (y, x) per task and output chunk (default: the cube's shards, halved until a tile's block of
        ``species x variables`` float32 maps is under ``max_block_mb``).
    max_block_mb
        Memory bound of one tile's output block (MiB).
    storage_options
        fsspec options to open a remote cube.

    Returns
    -------
    xarray.Dataset
        One float32 data variable per species (named by the species), dims ``(variable, y, x)``, Dask chunks
        ``(V, *tile)``; NaN where an input is NaN. Attrs: method, steps, baseline values and the baseline
        log-intensity per species (``geosdm:baseline_log_intensity``), the model hash.

    Raises
    ------
    MissingVariableError
        Unknown species, or the cube lacks a model variable.
    InputError
        Bad ``method``/``steps``, a species named like a coordinate, or tiles smaller than a patch halo.

    Example
    -------
    >>> attr = attribution_cube(model, "cube.zarr", species=["plant_01"], steps=32)  # doctest: +SKIP
    >>> write_layers(attr, "attribution.zarr", identity=attr.attrs)  # doctest: +SKIP
    """
    from geosdm.predict.lazy import georeferenced, model_key, open_input, with_halo
    from geosdm.predict.stac import period_attrs

    m = as_model(model)
    _check(method, steps)
    sp = _species_index(m, species)
    names = [m.species_[i] for i in sp]
    clash = [s for s in names if s in ("variable", "y", "x", "spatial_ref", "species", "completeness_residual")]
    if clash:
        raise InputError(f"species {clash} are named like a coordinate of the attribution cube; rename them "
                         "before fitting")
    inputs = model_inputs(m)
    variables = inputs.variables
    stacked, ds, tile = open_input(cube, variables, tile_shape=tile_shape, storage_options=storage_options)
    n_layers = len(sp) * (len(variables) + int(residual))
    ty, tx = tile
    while tile_shape is None and n_layers * ty * tx * 4 / 2**20 > max_block_mb and min(ty, tx) > 16:
        ty, tx = max(16, ty // 2), max(16, tx // 2)
    if (ty, tx) != tile:
        log.info("attribution tiles %s -> %s so a block of %d maps stays under %.0f MiB", tile, (ty, tx), n_layers,
                 max_block_mb)
        stacked, ds, tile = open_input(cube, variables, tile_shape=(ty, tx), storage_options=storage_options)
    core_chunks = stacked.chunks[1:]
    stacked = with_halo(stacked, inputs.halo)
    fp = model_fingerprint(m)
    base_values, base_f = _baseline_values(m, sp, baseline)
    settings = {"method": method, "steps": int(steps), "baseline": base_values, "species": names,
                "residual": bool(residual)}
    token = f"geosdm-attribution-{fp}-{dask.base.tokenize(settings, stacked.name)}"
    n_out = len(variables) + int(residual)
    block = da.map_blocks(
        _attribution_block, model_key(m, fp), stacked, inputs=inputs, species=tuple(sp), method=method,
        steps=int(steps), baseline=dict(baseline) if baseline else None, batch_size=int(batch_size),
        residual=bool(residual), new_axis=0, chunks=((len(sp),), (n_out,), *core_chunks),
        dtype=np.float32, meta=np.empty((0, 0, 0, 0), dtype=np.float32), name=token,
    )
    coords: dict[str, Any] = {"variable": list(variables), "y": ds["y"], "x": ds["x"]}
    if "spatial_ref" in ds.coords:
        coords["spatial_ref"] = ds["spatial_ref"]
    out = xr.Dataset(coords=coords, attrs={
        "geosdm:model_hash": fp, "geosdm:method": method, "geosdm:steps": int(steps),
        "geosdm:baseline": base_values,
        "geosdm:baseline_log_intensity": dict(zip(names, base_f)),
        "geosdm:cube": str(cube) if not isinstance(cube, xr.Dataset) else "<xarray.Dataset>",
        "geosdm:cube_fingerprint": ds.attrs.get("geosdm:fingerprint", ""),
        **period_attrs(ds.attrs),
    })
    what = "integrated gradients" if method == "integrated_gradients" else "gradient x (input - baseline)"
    for i, name in enumerate(names):
        out[name] = xr.DataArray(block[i, : len(variables)], dims=("variable", "y", "x"), attrs={
            "long_name": f"{what} attribution of the log-intensity of {name}", "units": "log-intensity",
            "geosdm:baseline_log_intensity": base_f[i]})
    if residual:
        out["completeness_residual"] = xr.DataArray(block[:, len(variables)], dims=("species", "y", "x"), attrs={
            "long_name": "f(x) - f(baseline) - sum of attributions", "units": "log-intensity"})
        out = out.assign_coords(species=names)
    return georeferenced(out)


def attribution_species(ds: xr.Dataset) -> list[str]:
    """The species of an attribution cube (its ``(variable, y, x)`` data variables).

    Example
    -------
    >>> attribution_species(open_layers("attribution.zarr"))  # doctest: +SKIP
    ['plant_01', 'plant_02']
    """
    return [str(n) for n, v in ds.data_vars.items() if v.dims == ("variable", "y", "x")]
