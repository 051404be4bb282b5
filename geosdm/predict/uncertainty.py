"""Lazy uncertainty layers: mean, standard deviation and quantiles of presence probability over model samples.

The samples are the members of a deep ensemble (``MultiSpeciesSDM(n_members=k)``), and/or ``mc_dropout``
stochastic passes per member with dropout left on at prediction (MC dropout; the model must have been fitted
with ``dropout > 0``). Each sample's log-intensity goes through the probability link (with the area offset)
and the model's ``calibrator_`` (when it has one, as in :func:`geosdm.predict.predict`), then per cell and
species the layers are

* ``mean``: the mean sample probability,
* ``sd``: the standard deviation of the sample probabilities (ddof 0),
* ``q05``, ``q50``, ``q95``...: quantiles of the sample probabilities (linear interpolation between samples),

so ``[q05, q95]`` is the samples' central 90% interval. With few samples (5 members) the outer quantiles are
near the extreme samples. Like :func:`geosdm.predict.predict`, the output is a lazy ``(species, y, x)`` Dataset,
one task per tile (the model is one graph key), written with the one layer writer
(:func:`write_uncertainty` -> :func:`geosdm.io.write_layers`) and exported with
:func:`geosdm.predict.export_cogs` (``variable="sd"``...). MC-dropout masks are drawn from a generator seeded by
``seed`` and the tile's position, so reruns and resumed writes give identical values.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any, Literal

import dask
import dask.array as da
import numpy as np
import xarray as xr

from geosdm.errors import InputError
from geosdm.models.intervals import ErrorModel
from geosdm.predict.model import ModelInputs, area_offset, as_model, model_fingerprint, model_inputs, model_summary

if TYPE_CHECKING:
    from geosdm.io.layers import Dtype, WriteReport
    from geosdm.models import MultiSpeciesSDM

__all__ = ["has_dropout", "member_samples", "n_members", "predict_uncertainty", "quantile_name", "uncertainty_block",
           "write_uncertainty"]


def quantile_name(q: float) -> str:
    """Variable name of a quantile layer: ``q05`` for 0.05, ``q50``, ``q2p5`` for 0.025.

    Example
    -------
    >>> [quantile_name(q) for q in (0.05, 0.5, 0.975)]
    ['q05', 'q50', 'q97p5']
    """
    pct = round(float(q) * 100, 6)
    return f"q{int(pct):02d}" if pct == int(pct) else "q" + f"{pct:g}".replace(".", "p")


def n_members(model: MultiSpeciesSDM) -> int:
    """Members of the model's deep ensemble (1 for a single network)."""
    spec = getattr(model, "network_spec_", {}) or {}
    return int(spec.get("n_members", 1)) if spec.get("name") == "ensemble" else 1


def has_dropout(model: MultiSpeciesSDM) -> bool:
    """Whether the model's network has dropout layers with ``p > 0`` (MC dropout can sample it)."""
    import torch

    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.network_.modules())


def _mc_network(model: MultiSpeciesSDM, generator: Any) -> Any:
    """A private CPU copy of the model's network whose dropout layers stay on, with masks from ``generator``
    (hooks on the copy: the shared model, used by other tile tasks, is never touched)."""
    import torch

    net = copy.deepcopy(model.network_).to("cpu").eval()

    def hook(mod: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        x = args[0]
        keep = 1.0 - float(mod.p)
        return x * torch.bernoulli(torch.full_like(x, keep), generator=generator) / keep

    for mod in net.modules():
        if isinstance(mod, torch.nn.Dropout) and mod.p > 0:
            mod.register_forward_hook(hook)
    return net


def _mc_samples(model: MultiSpeciesSDM, net: Any, columns: Mapping[str, np.ndarray], patches: np.ndarray | None,
                n: int) -> np.ndarray:
    """``(n * members, cells, species)`` log-intensities of ``n`` stochastic passes of ``net``."""
    import torch

    from geosdm.models.networks import Ensemble
    from geosdm.models.trainer import threads

    inputs, _ = model._inputs(columns, patches)  # encoded network inputs (shared with MultiSpeciesSDM)
    batch = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
    outs = []
    with threads(model.n_threads), torch.no_grad():
        for _ in range(int(n)):
            f = net.forward_members(batch) if isinstance(net, Ensemble) else net(batch)[None]
            outs.append(f.float().numpy())
    return np.concatenate(outs)


def member_samples(model: MultiSpeciesSDM, columns: Mapping[str, np.ndarray], patches: np.ndarray | None) -> np.ndarray:
    """``model.predict_members`` at the given cells (one row per ensemble member), under the CUDA lock on a GPU."""
    from geosdm.predict._block import _CUDA_LOCK, _uses_cuda

    if _uses_cuda(model):
        with _CUDA_LOCK:
            return model.predict_members(columns, patches=patches)  # type: ignore[arg-type]
    return model.predict_members(columns, patches=patches)  # type: ignore[arg-type]


def uncertainty_block(model: MultiSpeciesSDM, data: np.ndarray, *, inputs: ModelInputs, offset: float = 0.0,
                      quantiles: Sequence[float] = (0.05, 0.5, 0.95), mc_dropout: int = 0, calibrate: bool = True,
                      seed: int = 0, batch_size: int = 4_096, error: ErrorModel | None = None) -> np.ndarray:
    """``(2 + len(quantiles), species, by, bx)`` float32: mean, sd and quantiles of one block's core cells.

    Parameters
    ----------
    model
        Fitted ``MultiSpeciesSDM`` (an ensemble and/or with dropout).
    data
        ``(V, by + 2h, bx + 2h)`` float32 stack of ``inputs.variables`` with halo ``h = inputs.halo``.
    offset
        Cloglog area offset ``log(area / area_unit_m2_)``.
    mc_dropout
        Stochastic passes per member (0: members only, dropout off); they run on the CPU.
    seed
        Seed of the dropout masks (combine it with the block position for distinct tiles).
    error
        The calibrated model's interval model: ``sd`` and the quantiles are those of the true probability around
        the samples' mean (:class:`geosdm.models.intervals.ErrorModel`); None: those of the samples.
    """
    import torch

    from geosdm.predict.model import probability_inplace

    h = inputs.halo
    n_var, py, px = data.shape
    by, bx = py - 2 * h, px - 2 * h
    core = data[:, h : py - h, h : px - h]
    n_sp, n_out = len(model.species_), 2 + len(quantiles)
    out = np.full((n_out, n_sp, by * bx), np.nan, dtype=np.float32)
    cells = np.flatnonzero(np.isfinite(core).all(axis=0).ravel())
    if cells.size == 0:
        return out.reshape(n_out, n_sp, by, bx)
    flat = core.reshape(n_var, -1)
    col_pos = [inputs.variables.index(c) for c in inputs.columns]
    windows = None
    if inputs.patch_variables:
        from numpy.lib.stride_tricks import sliding_window_view

        k = int(model.patch_["size"])
        pos = [inputs.variables.index(v) for v in inputs.patch_variables]
        windows = sliding_window_view(data[pos], (k, k), axis=(1, 2))
    net = _mc_network(model, torch.Generator().manual_seed(int(seed))) if mc_dropout else None
    calibrator = getattr(model, "calibrator_", None) if calibrate else None
    q = np.asarray(quantiles, dtype="float64")
    for start in range(0, cells.size, int(batch_size)):
        sel = cells[start : start + int(batch_size)]
        columns = {c: np.ascontiguousarray(flat[p, sel]) for c, p in zip(inputs.columns, col_pos)}
        patches = None
        if windows is not None:
            iy, ix = np.divmod(sel, bx)
            patches = np.ascontiguousarray(windows[:, iy, ix].transpose(1, 0, 2, 3))
        f = (_mc_samples(model, net, columns, patches, mc_dropout) if net is not None
             else member_samples(model, columns, patches)).astype(np.float32)  # (samples, b, species)
        p = probability_inplace(f, model.link_, offset)
        if calibrator is not None:
            calibrator.transform(p, axis=-1, out=p)
        mean = p.mean(axis=0)
        if error is not None:
            stats = [mean, error.sd(mean), *error.quantiles(mean, q)]
        else:
            stats = [mean, p.std(axis=0), *np.quantile(p, q, axis=0)]
        for i, s in enumerate(stats):
            out[i][:, sel] = s.T
    return out.reshape(n_out, n_sp, by, bx)


def _tile_task(model: MultiSpeciesSDM, data: np.ndarray, *, inputs: ModelInputs, offset: float,
               quantiles: tuple[float, ...], mc_dropout: int, calibrate: bool, seed: int, batch_size: int,
               error: ErrorModel | None = None, block_info: dict[Any, Any] | None = None) -> np.ndarray:
    loc = block_info[None]["chunk-location"] if block_info else (0, 0, 0)  # type: ignore[index]
    tile_seed = int(np.random.SeedSequence([int(seed), int(loc[-2]), int(loc[-1])]).generate_state(1)[0])
    return uncertainty_block(model, np.asarray(data, dtype=np.float32), inputs=inputs, offset=offset,
                             quantiles=quantiles, mc_dropout=mc_dropout, calibrate=calibrate, seed=tile_seed,
                             batch_size=batch_size, error=error)


def predict_uncertainty(
    model: MultiSpeciesSDM | str | PathLike[str],
    cube: xr.Dataset | str | PathLike[str],
    *,
    area: float | None = None,
    mc_dropout: int = 0,
    quantiles: Sequence[float] = (0.05, 0.5, 0.95),
    calibration: bool = True,
    tile_shape: tuple[int, int] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    batch_size: int = 4_096,
    seed: int = 0,
    intervals: Literal["auto", "model", "samples"] = "auto",
) -> xr.Dataset:
    """Lazy ``mean``, ``sd`` and quantile layers ``(species, y, x)`` of presence probability: the mean over model
    samples, and the spread of the true probability around it (the calibrated model's interval model) or of the
    samples themselves.

    Parameters
    ----------
    model
        A fitted ``MultiSpeciesSDM`` (or its folder) with ``n_members >= 2`` and/or ``dropout > 0``.
    cube
        Covariate cube (Dataset or Zarr path/URL), as for :func:`geosdm.predict.predict`.
    area
        Area in m² of the probabilities (cloglog link; default: the model's unit).
    mc_dropout
        Stochastic forward passes per member with dropout on (0: ensemble members only).
    quantiles
        Probability levels of the quantile layers, in (0, 1); named by :func:`quantile_name`.
    calibration
        Apply the model's ``calibrator_`` to every sample.
    tile_shape, storage_options
        As for :func:`geosdm.predict.predict` (tile = task = output chunk).
    batch_size
        Cells per forward pass inside a tile.
    seed
        Seed of the MC-dropout masks.
    intervals
        ``"model"``: ``sd`` and quantiles of the true probability around the mean, from the interval model fitted
        by :func:`geosdm.models.calibration.calibrate` on held-out surveys (``calibrator_.error``; they cover the
        truth, where the samples' spread measures only how the fit moves with its seed); ``"samples"``: the
        spread of the samples; ``"auto"``: ``"model"`` when the model has one (with ``calibration``).

    Returns
    -------
    xarray.Dataset
        float32 ``mean``, ``sd`` and one variable per quantile on ``(species, y, x)``, chunked by tile, with the
        cube's ``spatial_ref``; NaN where an input is NaN. Attributes record the model hash and the sampling.

    Raises
    ------
    InputError
        Fewer than two samples (one network without MC dropout), ``mc_dropout`` on a model without dropout,
        or quantiles outside (0, 1).

    Example
    -------
    >>> layers = predict_uncertainty("model/", "cube.zarr", quantiles=(0.05, 0.95))  # doctest: +SKIP
    >>> (layers.q95 - layers.q05).sel(species="plant_01").plot()  # doctest: +SKIP
    """
    from geosdm.predict.lazy import georeferenced, model_key, open_input, with_halo

    m = as_model(model)
    qs = tuple(float(q) for q in quantiles)
    if any(not 0 < q < 1 for q in qs):
        raise InputError(f"quantiles={list(quantiles)} must lie in (0, 1), e.g. (0.05, 0.5, 0.95)")
    names = [quantile_name(q) for q in qs]
    if len(set(names)) != len(names):
        raise InputError(f"quantiles={list(quantiles)} repeat a level; give distinct levels")
    n_mc = int(mc_dropout)
    if n_mc < 0:
        raise InputError(f"mc_dropout={mc_dropout} must be >= 0 passes per member")
    if n_mc and not has_dropout(m):
        raise InputError("mc_dropout needs a model fitted with dropout > 0 (MultiSpeciesSDM(dropout=0.1, ...)); "
                         "this one has none. Use its ensemble members (mc_dropout=0) or refit with dropout")
    members = n_members(m)
    n_samples = members * max(1, n_mc)
    if intervals not in ("auto", "model", "samples"):
        raise InputError(f"intervals={intervals!r} must be 'auto', 'model' or 'samples'")
    cal = getattr(m, "calibrator_", None)
    error = getattr(cal, "error", None) if calibration else None
    if intervals == "model" and error is None:
        raise InputError("intervals='model' needs a model calibrated with its interval model "
                         "(geosdm.models.calibration.calibrate(model, table), or `geosdm evaluate` with "
                         "calibration); this one has none: use intervals='samples'")
    if intervals == "samples":
        error = None
    if n_samples < 2 and error is None:
        raise InputError("one network without MC dropout gives a single sample and no spread; fit with "
                         "n_members >= 2 or with dropout > 0 and pass mc_dropout >= 2")
    if int(batch_size) <= 0:
        raise InputError(f"batch_size={batch_size!r} must be a positive number of cells")
    inputs = model_inputs(m)
    stacked, ds, _ = open_input(cube, inputs.variables, tile_shape=tile_shape, storage_options=storage_options)
    fp = model_fingerprint(m)
    core_chunks = stacked.chunks[1:]
    stacked = with_halo(stacked, inputs.halo)
    offset = area_offset(m, area) if m.link_ == "cloglog" else 0.0
    calibrate = bool(calibration and getattr(m, "calibrator_", None) is not None)
    n_sp, n_out = len(m.species_), 2 + len(qs)
    error_key = error.to_dict() if error is not None else None
    token = dask.base.tokenize(fp, stacked.name, offset, qs, n_mc, calibrate, int(seed), int(batch_size), error_key)
    chunks = ((n_out,), (n_sp,), *core_chunks)
    stats = da.map_blocks(
        _tile_task, model_key(m, fp), stacked, inputs=inputs, offset=offset, quantiles=qs, mc_dropout=n_mc,
        calibrate=calibrate, seed=int(seed), batch_size=int(batch_size), error=error, new_axis=0, chunks=chunks,
        dtype=np.float32, meta=np.empty((0, 0, 0, 0), dtype=np.float32), name=f"geosdm-uncertainty-{token}",
    )
    coords: dict[str, Any] = {"species": list(m.species_), "y": ds["y"], "x": ds["x"]}
    if "spatial_ref" in ds.coords:
        coords["spatial_ref"] = ds["spatial_ref"]
    area_m2 = float(area) if area is not None else float(m.area_unit_m2_)
    source = f"{members} ensemble member(s)" + (f" x {n_mc} MC-dropout passes" if n_mc else "")
    attrs = {"geosdm:model_hash": fp, "geosdm:link": m.link_, "geosdm:area_m2": area_m2,
             "geosdm:samples": n_samples, "geosdm:ensemble_members": members, "geosdm:mc_dropout": n_mc,
             "geosdm:calibration": m.calibrator_.method if calibrate else "none",  # type: ignore[attr-defined]
             "geosdm:quantiles": list(qs), "geosdm:seed": int(seed),
             "geosdm:intervals": "model" if error is not None else "samples",
             **({"geosdm:error_model": error_key} if error_key else {}),
             "geosdm:cube": str(cube) if not isinstance(cube, xr.Dataset) else "<xarray.Dataset>",
             "geosdm:cube_fingerprint": ds.attrs.get("geosdm:fingerprint", "")}
    out = xr.Dataset(coords=coords, attrs=attrs)
    dims = ("species", "y", "x")
    what = f"presence probability over {area_m2:g} m2" if m.link_ == "cloglog" else "presence probability"
    long = {"mean": f"mean {what} over {source}", "sd": f"standard deviation of {what} over {source}"}
    long |= {n: f"{q:g} quantile of {what} over {source}" for n, q in zip(names, qs)}
    if error is not None:
        spread = f"the true {what} around the mean (Beta error model, precision {error.precision:.3g})"
        long |= {"sd": f"standard deviation of {spread}"}
        long |= {n: f"{q:g} quantile of {spread}, rounded outward to 1/250" for n, q in zip(names, qs)}
    for i, name in enumerate(["mean", "sd", *names]):
        out[name] = xr.DataArray(stats[i], dims=dims, attrs={"long_name": long[name], "units": "1"})
    return georeferenced(out)


def write_uncertainty(
    model: MultiSpeciesSDM | str | PathLike[str],
    cube: xr.Dataset | str | PathLike[str],
    path: str | PathLike[str],
    *,
    dtype: Dtype = "uint8",
    sd_dtype: Dtype | None = None,
    area: float | None = None,
    mc_dropout: int = 0,
    quantiles: Sequence[float] = (0.05, 0.5, 0.95),
    calibration: bool = True,
    tile_shape: tuple[int, int] | None = None,
    chunk_shape: tuple[int, int] | None = None,
    storage_options: dict[str, Any] | None = None,
    cube_storage_options: dict[str, Any] | None = None,
    client: Any | str | None = None,
    progress: bool = False,
    overwrite: bool = False,
    seed: int = 0,
    compute: bool = True,
    intervals: Literal["auto", "model", "samples"] = "auto",
) -> WriteReport | Any:
    """Write (or resume) the uncertainty layers of :func:`predict_uncertainty` with :func:`geosdm.io.write_layers`.

    Parameters
    ----------
    dtype
        Storage of ``mean`` and the quantiles: ``"uint8"`` (probability 0-250, 255 nodata), ``"float16"``,
        ``"float32"``.
    sd_dtype
        Storage of ``sd`` (default ``"float16"`` when ``dtype="uint8"``: a 0.004 step is coarse for spreads).
    path, chunk_shape, storage_options, cube_storage_options, client, progress, overwrite, compute
        As for :func:`geosdm.predict.write_predictions`.
    intervals
        As for :func:`predict_uncertainty`.

    Returns
    -------
    WriteReport (Delayed when ``compute=False``).

    Example
    -------
    >>> write_uncertainty("model/", "cube.zarr", "uncertainty.zarr", mc_dropout=20)  # doctest: +SKIP
    >>> export_cogs("uncertainty.zarr", "cogs/", variable="sd")  # doctest: +SKIP
    """
    from geosdm.io.layers import write_layers

    valid = ("uint8", "float16", "float32")
    if dtype not in valid or (sd_dtype is not None and sd_dtype not in valid):
        raise InputError(f"dtype={dtype!r}, sd_dtype={sd_dtype!r} must be one of {list(valid)}")
    m = as_model(model)
    ds = predict_uncertainty(m, cube, area=area, mc_dropout=mc_dropout, quantiles=quantiles,
                             calibration=calibration, tile_shape=tile_shape, storage_options=cube_storage_options,
                             seed=seed, intervals=intervals)
    sd = sd_dtype or ("float16" if dtype == "uint8" else dtype)
    dtypes = {str(n): (sd if n == "sd" else dtype) for n in ds.data_vars}
    tile = (int(ds.chunks["y"][0]), int(ds.chunks["x"][0]))
    config = {"dtypes": dtypes, "area_m2": ds.attrs["geosdm:area_m2"], "mc_dropout": int(mc_dropout),
              "quantiles": list(ds.attrs["geosdm:quantiles"]), "calibration": ds.attrs["geosdm:calibration"],
              "seed": int(seed), "tile_shape": list(tile), "intervals": ds.attrs["geosdm:intervals"],
              "error_model": ds.attrs.get("geosdm:error_model")}
    from geosdm.predict.write import cube_identity

    cube_id = cube_identity(cube, ds.attrs, model_inputs(m).variables, cube_storage_options)
    summary = model_summary(m)
    attrs = {"title": "geosdm species distribution uncertainty",
             "geosdm:model_hash": ds.attrs["geosdm:model_hash"],
             "geosdm:model": {k: summary.get(k) for k in ("class", "network", "loss", "link", "calibrated",
                                                          "area_unit_m2")},
             "geosdm:model_path": str(model) if isinstance(model, (str, PathLike)) else None,
             "geosdm:cube": {"path": str(cube) if not isinstance(cube, xr.Dataset) else None, **cube_id},
             "geosdm:config": config,
             **{k: v for k, v in ds.attrs.items() if k in ("geosdm:samples", "geosdm:ensemble_members",
                                                            "geosdm:mc_dropout", "geosdm:intervals",
                                                            "geosdm:error_model")}}
    return write_layers(ds, path, dtypes=dtypes, attrs=attrs,
                        identity={"model": ds.attrs["geosdm:model_hash"], "cube": cube_id, "config": config},
                        chunk_shape=chunk_shape, storage_options=storage_options, client=client, progress=progress,
                        overwrite=overwrite, scratch=True, desc="uncertainty", compute=compute)
