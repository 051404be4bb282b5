"""Uncertainty of interaction maps, propagated by joint samples of the species and of the co-occurrence fit.

An interaction layer is a non-linear function of several species' probabilities (and of the co-occurrence
parameters): its interval cannot be read from the species' intervals one by one, and errors of species maps
that move together (a shared missing covariate, a consumer fitted on its host's range) widen it. So, per tile
and cell, :func:`interaction_uncertainty` draws ``S`` joint samples and computes the layers of each with the
same per-tile math as :func:`geosdm.interactions.interaction_layers`:

* **species** (``samples="model"``): the true probabilities around the mapped ones from the calibrated model's
  interval model (:class:`geosdm.models.intervals.ErrorModel`), ``p_s = ppf(p̂_s, Φ(z_s))`` with ``z ~ N(0, R)``,
  a Gaussian copula whose correlation ``R`` between the species' errors was estimated without the truth from
  neighbouring held-out survey plots (``ErrorModel.correlation``). Without an interval model
  (``samples="members"``) the ensemble members' calibrated probabilities are the samples (their deviations are
  correlated across species as the members' fits are; they measure only how the fit moves with its seed).
* **co-occurrence parameters**: one :class:`~geosdm.interactions.Associations` per sample, refitted on a
  bootstrap of the survey plots (:func:`association_samples`; the plots resampled with replacement, their
  marginals and detection probabilities kept), cycled when there are fewer sets than samples.

The result has the dims of ``interaction_layers`` (co-occurrence-aware version only) and, per layer ``L``, the
variables ``L_mean`` (mean over samples), ``L_sd``, ``L_q05``/``L_q50``/``L_q95`` (quantiles: those below the
median rounded down and those above rounded up to the uint8 step 1/250, for probability layers) and
``L_width`` (the outermost quantiles' interval width, e.g. of ``[q05, q95]``). One Dask task per tile; samples
are drawn from a generator seeded by ``seed`` and the tile's position, so reruns and resumed writes are
identical. Nothing is computed before writing (:func:`geosdm.io.write_layers` with
:func:`geosdm.interactions.layer_dtypes`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any, Literal

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from scipy import special

from geosdm.errors import InputError
from geosdm.interactions.cooccurrence import Associations, SurveyMatrix, fit_associations
from geosdm.interactions.layers import _LONG_NAMES, Method, _Plan, _prepare, _tile
from geosdm.interactions.network import Network, NetworkMatch
from geosdm.models.intervals import STEP, ErrorModel, outward
from geosdm.predict.uncertainty import quantile_name

if TYPE_CHECKING:
    from geosdm.models import MultiSpeciesSDM

__all__ = ["association_samples", "interaction_uncertainty", "STATS"]

log = logging.getLogger(__name__)

#: Bytes of samples (layers, and the species' draws) held at once in a tile task: rows are processed in strips.
_BUDGET = 128 * 2**20
#: Statistics other than the quantiles, in output order: mean first, sd, quantiles, width last.
STATS = ("mean", "sd")


def association_samples(network: Network | NetworkMatch, surveys: pd.DataFrame | SurveyMatrix,
                        probability: xr.DataArray | xr.Dataset | pd.DataFrame, *, n: int = 16, seed: int = 0,
                        detection: Literal["estimate", "perfect"] | float | Mapping[str, float] = "estimate",
                        **fit: Any) -> list[Associations]:
    """``n`` co-occurrence fits on bootstraps of the survey plots (plots drawn with replacement).

    The marginals at the plots are read once; detection is estimated once on all plots (``detection``) and kept.
    ``fit`` goes to :func:`fit_associations`. The fits are seeded by ``seed`` (same samples on reruns).

    Example
    -------
    >>> sets = association_samples(match, read_records("surveys.parquet"), prob, n=16)  # doctest: +SKIP
    """
    from geosdm.interactions.cooccurrence import survey_inputs

    if int(n) < 1:
        raise InputError(f"n={n} must be >= 1 bootstrap fits")
    net = network.network if isinstance(network, NetworkMatch) else network
    sm, _, marg, dprob = survey_inputs(net, surveys, probability, detection)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    out = []
    m = len(sm.plots)
    for k in range(int(n)):
        idx = rng.integers(0, m, m)
        keys = pd.Index([f"{p}#{j}" for j, p in enumerate(sm.plots.index[idx])], name=sm.plots.index.name)
        boot = SurveyMatrix(sm.plots.iloc[idx].set_axis(keys), sm.visits.iloc[idx].set_axis(keys),
                            sm.detections.iloc[idx].set_axis(keys))
        a = fit_associations(net, boot, marg.iloc[idx].set_axis(keys), detection=dprob, **fit)
        out.append(Associations(a.leakage, a.odds_ratio, a.detection, n_plots=a.n_plots,
                                source=f"surveys (bootstrap {k + 1}/{n}, seed {seed})"))
    return out


def _decode(block: np.ndarray) -> np.ndarray:
    if block.dtype == np.uint8:  # packed storage: round(250 p), 255 = nodata
        return np.where(block == 255, np.nan, block.astype(np.float64) / 250.0)
    return np.clip(block.astype(np.float64), 0.0, 1.0)


def _stats(samples: np.ndarray, quantiles: tuple[float, ...], kinds: np.ndarray) -> np.ndarray:
    """``(n_stats, layers, ...)`` from ``(S, layers, ...)`` samples: mean, sd, quantiles (outward-rounded for
    probability layers), width of the outermost quantiles."""
    with np.errstate(invalid="ignore"):
        mean = samples.mean(axis=0)
        sd = samples.std(axis=0)
        qs = np.quantile(samples, quantiles, axis=0) if quantiles else np.empty((0, *mean.shape))
    prob = kinds[(slice(None),) + (None,) * (samples.ndim - 2)]
    for i, q in enumerate(quantiles):
        if q != 0.5:
            lo, hi = outward(qs[i], qs[i])
            qs[i] = np.where(prob, np.minimum(lo, qs[i]) if q < 0.5 else np.maximum(hi, qs[i]), qs[i])
    width = (qs[-1] - qs[0])[None] if len(quantiles) >= 2 else np.empty((0, *mean.shape))
    return np.concatenate([mean[None], sd[None], qs, width]).astype(np.float32)


def _sample_task(block: np.ndarray, *, plans: tuple[_Plan, ...], error: ErrorModel | None, chol: np.ndarray | None,
                 n_samples: int, quantiles: tuple[float, ...], kinds: np.ndarray, n_layers: int, seed: int,
                 block_info: dict[Any, Any] | None = None) -> np.ndarray:
    """One tile: ``(species, by, bx)`` mapped probabilities (or ``(members, species, by, bx)`` member samples)
    -> ``(n_stats, layers, by, bx)`` float32."""
    loc = block_info[None]["chunk-location"] if block_info else (0, 0, 0)  # type: ignore[index]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(loc[-2]), int(loc[-1])]))
    members = block.ndim == 4
    shape = block.shape[-2:]
    n_q = len(quantiles)
    n_stats = len(STATS) + n_q + (1 if n_q >= 2 else 0)
    out = np.full((n_stats, n_layers, *shape), np.nan, dtype=np.float32)
    S = block.shape[0] if members else int(n_samples)
    per_row = S * shape[1] * (4 * max(n_layers, 1) + 24 * block.shape[-3])  # float32 layers, float64 draws
    rows = max(1, int(_BUDGET // max(1, per_row)))
    for r0 in range(0, shape[0], rows):
        sub = _decode(np.asarray(block[..., r0:r0 + rows, :]))
        if members:
            ps = sub  # (members, species, rows, bx)
        else:
            k = sub.shape[0]
            z = rng.standard_normal((S, k, *sub.shape[1:]))
            if chol is not None:
                z = np.einsum("ij,sj...->si...", chol, z)
            ps = error.ppf(sub[None], special.ndtr(z))  # type: ignore[union-attr]
        samples = np.stack([_tile(ps[s], plan=plans[s % len(plans)]) for s in range(S)])
        out[:, :, r0:r0 + rows] = _stats(samples, quantiles, kinds)
    return out


def _member_probabilities(model: MultiSpeciesSDM, data: np.ndarray, *, inputs: Any, offset: float,
                          species: tuple[int, ...], batch_size: int = 4_096) -> np.ndarray:
    """``(members, species, by, bx)`` calibrated probabilities of the ensemble members over one block's cells."""
    from geosdm.predict.model import probability_inplace
    from geosdm.predict.uncertainty import member_samples

    h = inputs.halo
    n_var, py, px = data.shape
    by, bx = py - 2 * h, px - 2 * h
    core = data[:, h: py - h, h: px - h]
    flat = core.reshape(n_var, -1)
    cells = np.flatnonzero(np.isfinite(core).all(axis=0).ravel())
    col_pos = [inputs.variables.index(c) for c in inputs.columns]
    out: np.ndarray | None = None
    calibrator = getattr(model, "calibrator_", None)
    for start in range(0, cells.size, int(batch_size)):
        sel = cells[start: start + int(batch_size)]
        columns = {c: np.ascontiguousarray(flat[p, sel]) for c, p in zip(inputs.columns, col_pos)}
        p = probability_inplace(member_samples(model, columns, None).astype(np.float32), model.link_, offset)
        if calibrator is not None:
            calibrator.transform(p, axis=-1, out=p)
        if out is None:
            out = np.full((p.shape[0], len(species), by * bx), np.nan, dtype=np.float32)
        out[:, :, sel] = p[:, :, list(species)].transpose(0, 2, 1)
    if out is None:
        from geosdm.predict.uncertainty import n_members

        out = np.full((n_members(model), len(species), by * bx), np.nan, dtype=np.float32)
    return out.reshape(out.shape[0], len(species), by, bx)


def _member_task(model: MultiSpeciesSDM, data: np.ndarray, **kw: Any) -> np.ndarray:
    return _member_probabilities(model, np.asarray(data, dtype=np.float32), **kw)


def _members_stack(model: MultiSpeciesSDM, cube: Any, used: list[str], prob: xr.DataArray, area: float | None,
                   storage_options: Mapping[str, Any] | None) -> da.Array:
    """Lazy ``(members, species, y, x)`` member probabilities on the chunks of ``prob``."""
    from geosdm.predict.model import area_offset, model_fingerprint, model_inputs
    from geosdm.predict.lazy import model_key, open_input, with_halo
    from geosdm.predict.uncertainty import n_members

    if getattr(model, "patch_", None):
        raise InputError("member samples of patch networks are not supported here; calibrate the model "
                         "(geosdm.models.calibration.calibrate) so it has an interval model")
    members = n_members(model)
    if members < 2:
        raise InputError("the model has no interval model and a single network: no samples of the species maps. "
                         "Calibrate it on held-out surveys (calibrate(model, table)) or fit an ensemble")
    inputs = model_inputs(model)
    tile = (int(prob.chunks[1][0]), int(prob.chunks[2][0])) if prob.chunks else None
    stacked, _, _ = open_input(cube, inputs.variables, tile_shape=tile, storage_options=storage_options)
    if stacked.shape[1:] != prob.shape[1:]:
        raise InputError(f"the cube's grid {stacked.shape[1:]} is not the probabilities' {prob.shape[1:]}")
    core = stacked.chunks[1:]
    stacked = with_halo(stacked, inputs.halo)
    offset = area_offset(model, area) if model.link_ == "cloglog" else 0.0
    sp = [list(model.species_).index(s) for s in used]
    fp = model_fingerprint(model)
    token = dask.base.tokenize(fp, stacked.name, offset, tuple(sp))
    return da.map_blocks(_member_task, model_key(model, fp), stacked, inputs=inputs, offset=offset,
                         species=tuple(sp), new_axis=0, chunks=((members,), (len(sp),), *core), dtype=np.float32,
                         meta=np.empty((0, 0, 0, 0), dtype=np.float32), name=f"geosdm-members-{token}")


def interaction_uncertainty(
    probability: xr.Dataset | xr.DataArray | str | PathLike[str],
    network: Network | NetworkMatch,
    *,
    error: ErrorModel | None = None,
    model: MultiSpeciesSDM | str | PathLike[str] | None = None,
    cube: xr.Dataset | str | PathLike[str] | None = None,
    area: float | None = None,
    samples: Literal["auto", "model", "members"] = "auto",
    associations: Associations | Sequence[Associations] | None = None,
    n_samples: int = 32,
    quantiles: Sequence[float] = (0.05, 0.5, 0.95),
    seed: int = 0,
    method: Method = "dependence",
    edges: bool = True,
    regulation: bool = True,
    pest_pressure: bool = True,
    crops: Sequence[str] | None = None,
    sets: Mapping[str, Sequence[str]] | None = None,
    weighted: bool = False,
    aliases: Mapping[str, str] | None = None,
    variable: str = "probability",
    storage_options: dict[str, Any] | None = None,
    cube_storage_options: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Lazy mean, sd, quantile and interval-width layers of the interaction layers over joint samples (module
    docstring).

    Parameters
    ----------
    probability
        The mapped ``(species, y, x)`` probabilities (as for :func:`interaction_layers`): the centre of the
        interval model's samples, and the grid.
    network
        The network or its :class:`NetworkMatch`.
    error
        The interval model (default: ``model.calibrator_.error``).
    model, cube, area
        The fitted model (or its folder): its interval model, or, without one, its ensemble members predicted
        over ``cube`` (same grid as ``probability``) with ``area`` (m², cloglog link; default: the
        probabilities' ``geosdm:area_m2``).
    samples
        ``"model"`` (the interval model with the copula), ``"members"`` (the ensemble members), ``"auto"``:
        ``"model"`` when there is an interval model.
    associations
        One co-occurrence fit (fixed in every sample) or several (e.g. :func:`association_samples`), one per
        sample, cycled; None: strict dependence.
    n_samples
        Samples per cell with ``"model"`` (``"members"``: one per member).
    quantiles
        Levels of the quantile layers, in (0, 1); named by :func:`geosdm.predict.quantile_name`.
    seed
        Seed of the copula draws (with the tile position).
    method, edges, regulation, pest_pressure, crops, sets, weighted, aliases, variable, storage_options
        As for :func:`interaction_layers`.

    Returns
    -------
    xarray.Dataset
        float32 ``<layer>_mean``, ``<layer>_sd``, ``<layer>_q05``..., ``<layer>_width`` on the layer's
        ``(edge | pest | crop | interaction_set, y, x)``, one Dask chunk per tile, ``spatial_ref`` kept; attrs
        ``geosdm:samples`` (``"model"`` / ``"members"``), ``geosdm:n_samples``, ``geosdm:quantiles``,
        ``geosdm:seed``, ``geosdm:error_model``, ``geosdm:association_samples``; per variable ``geosdm:kind``,
        ``geosdm:layer`` and ``geosdm:stat``.

    Raises
    ------
    InputError
        No interval model and no ensemble to sample; bad quantiles or sample counts.

    Example
    -------
    >>> sets = association_samples(match, surveys, prob, n=32)  # doctest: +SKIP
    >>> unc = interaction_uncertainty(prob, match, model="model-calibrated/", associations=sets)  # doctest: +SKIP
    >>> unc.joint_width.sel(edge="plant_01->pest_01").plot()  # doctest: +SKIP
    """
    from geosdm.predict.model import as_model

    qs = tuple(float(q) for q in quantiles)
    if any(not 0 < q < 1 for q in qs) or list(qs) != sorted(set(qs)):
        raise InputError(f"quantiles={list(quantiles)} must be distinct increasing levels in (0, 1)")
    if samples not in ("auto", "model", "members"):
        raise InputError(f"samples={samples!r} must be 'auto', 'model' or 'members'")
    m = as_model(model) if model is not None else None
    if error is None and m is not None:
        error = getattr(getattr(m, "calibrator_", None), "error", None)
    kind = ("model" if error is not None else "members") if samples == "auto" else samples
    if kind == "model" and error is None:
        raise InputError("samples='model' needs an interval model: pass error= or a model calibrated with "
                         "geosdm.models.calibration.calibrate (calibrator_.error)")
    if kind == "members" and (m is None or cube is None):
        raise InputError("no interval model: sampling the ensemble members needs model= and cube=")
    if kind == "model" and int(n_samples) < 2:
        raise InputError(f"n_samples={n_samples} must be >= 2")
    sets_ = list(associations) if isinstance(associations, Sequence) else [associations]
    if not sets_:
        sets_ = [None]
    preps = [_prepare(probability, network, associations=a, method=method, independent=False, edges=edges,
                      regulation=regulation, pest_pressure=pest_pressure, crops=crops, sets=sets, weighted=weighted,
                      aliases=aliases, variable=variable, storage_options=storage_options) for a in sets_]
    prep = preps[0]
    prob, used, variables = prep.prob, prep.used, prep.variables
    plans = tuple(p.plan for p in preps)
    n_layers = sum(n for _, _, n in variables)
    kinds = np.concatenate([np.full(n, not name.endswith("_expected")) for name, _, n in variables])
    if kind == "model":
        stack = prob.sel(species=used).data
        if not isinstance(stack, da.Array):
            stack = da.from_array(stack, chunks=(-1, *(min(512, n) for n in stack.shape[1:])))
        stack = stack.rechunk({0: -1})
        R = error.correlation_for(used)  # type: ignore[union-attr]
        chol = np.linalg.cholesky(R + 1e-9 * np.eye(len(R)))
        chol = None if np.allclose(chol, np.eye(len(R))) else chol
        S = int(n_samples)
    else:
        a_ = float(area) if area is not None else prob.attrs.get("geosdm:area_m2")
        stack = _members_stack(m, cube, used, prob, None if a_ is None else float(a_),  # type: ignore[arg-type]
                               cube_storage_options)
        chol, S = None, int(stack.shape[0])
    n_stats = len(STATS) + len(qs) + (1 if len(qs) >= 2 else 0)
    error_key = error.to_dict() if (error is not None and kind == "model") else None
    token = dask.base.tokenize(stack.name, plans, error_key, S, qs, int(seed))
    chunks = ((n_stats,), (n_layers,), *stack.chunks[-2:])
    tiles = da.map_blocks(
        _sample_task, stack, plans=plans, error=error if kind == "model" else None, chol=chol, n_samples=S,
        quantiles=qs, kinds=kinds, n_layers=n_layers, seed=int(seed),
        **({} if kind == "members" else {"new_axis": 0}),
        chunks=chunks, dtype=np.float32, meta=np.empty((0, 0, 0, 0), dtype=np.float32),
        name=f"geosdm-interaction-uncertainty-{token}")
    how = (f"{S} joint samples of the species' true probabilities from the interval model (Gaussian copula of "
           "the cross-species error correlation)" if kind == "model" else f"the {S} ensemble members' probabilities "
           "(no interval model: the members' spread, not the error against the truth)")
    attrs = {**prep.attrs, "title": "geosdm interaction-likelihood uncertainty",
             "geosdm:samples": kind, "geosdm:n_samples": S, "geosdm:quantiles": list(qs), "geosdm:seed": int(seed),
             "geosdm:association_samples": len(plans), "geosdm:sampling": how,
             **({"geosdm:error_model": {k: v for k, v in error_key.items() if k != "correlation"}}
                if error_key else {}),
             "geosdm:copula": "correlated" if chol is not None else "independent"}
    out = xr.Dataset(coords=prep.coords, attrs=attrs)
    names = [*STATS, *(quantile_name(q) for q in qs), *(["width"] if len(qs) >= 2 else [])]
    start = 0
    for name, dim, n in variables:
        lkind = "expectation" if name.endswith("_expected") else "probability"
        for i, st in enumerate(names):
            what = {"mean": "mean", "sd": "standard deviation"}.get(st, f"{st} quantile")
            if st == "width":
                what = f"width of the {qs[-1] - qs[0]:.0%} interval ({names[2]}-{names[1 + len(qs)]})"
            elif st.startswith("q"):
                what = f"{float(qs[i - len(STATS)]):g} quantile"
            attrs_v = {"long_name": f"{what} of the {_LONG_NAMES[name]} over {how}",
                       "units": "1" if lkind == "probability" else ("weight" if weighted else "count"),
                       "geosdm:kind": lkind if st in ("mean", "width") or st.startswith("q") else "spread",
                       "geosdm:layer": name, "geosdm:stat": st}
            if "spatial_ref" in out.coords:
                attrs_v["grid_mapping"] = "spatial_ref"
            out[f"{name}_{st}"] = xr.DataArray(tiles[i, start:start + n], dims=(dim, "y", "x"), attrs=attrs_v)
        start += n
    return out
