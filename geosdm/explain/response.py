"""Response curves: partial dependence (PD) and individual conditional expectation (ICE) per species and variable.

For a variable ``v`` and a grid of values ``g``, ICE curves set ``v = g`` at each of ``n_ice`` points, all other
covariates kept, and read the model's log-intensity (or probability); the PD curve is the mean over all
``n_pd`` evaluation points (Friedman 2001; Goldstein et al. 2015). The grid spans the training data's range of
``v`` widened by ``extend`` (a fraction of it) on both sides, and the training range is returned, so plots can
shade where the model interpolates and show where it extrapolates. Categorical covariates get one grid point
per training category (``value`` is the category's index, ``label`` its name).

Plain PD varies one covariate with all others held, which asks the model about environments that do not
exist when covariates are collinear (``bio01`` and ``bio05`` with ``|r| = 1``) or compositional (land-cover
fractions summing to 1). Two on-manifold variants keep the data's structure while ``v`` moves:

* ``linked={group: [members]}`` (e.g. :func:`geosdm.explain.correlated_groups`): the other members ``u`` of
  ``v``'s group follow it along their least-squares line, ``u' = u + b_uv (g - v)``: the response to the shared
  gradient (e.g. temperature, whichever member the model leans on);
* ``compositions=[[members]]``: the other parts of ``v``'s composition are rescaled so each row's sum is kept,
  ``u' = u (S - g) / (S - v)``: "more of class v at the expense of the others, proportionally"; the grid is
  clipped to ``[0, max S]``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from geosdm.errors import InputError, MissingVariableError
from geosdm.predict.model import as_model, model_inputs, model_probability

if TYPE_CHECKING:
    from geosdm.models import MultiSpeciesSDM

__all__ = ["on_manifold_inputs", "response_curves", "training_ranges"]

log = logging.getLogger(__name__)


def training_ranges(X: pd.DataFrame | Mapping[str, Any], variables: Sequence[str]) -> dict[str, tuple[float, float]]:
    """``{variable: (min, max)}`` of the finite values of numeric ``variables`` in ``X`` (e.g. the training table).

    Example
    -------
    >>> training_ranges(table, ["bio01"])  # doctest: +SKIP
    {'bio01': (8.9, 13.1)}
    """
    out = {}
    for v in variables:
        vals = pd.to_numeric(pd.Series(np.asarray(X[v])), errors="coerce").to_numpy(dtype="float64")
        vals = vals[np.isfinite(vals)]
        if vals.size:
            out[v] = (float(vals.min()), float(vals.max()))
    return out


def response_curves(
    model: MultiSpeciesSDM | str | PathLike[str],
    X: pd.DataFrame | Mapping[str, Any],
    *,
    variables: Sequence[str] | None = None,
    species: Sequence[str] | None = None,
    n_grid: int = 50,
    n_pd: int = 1_000,
    n_ice: int = 50,
    extend: float = 0.1,
    train_ranges: Mapping[str, tuple[float, float]] | None = None,
    scale: Literal["log_intensity", "probability"] = "log_intensity",
    area: float | None = None,
    linked: Mapping[str, Sequence[str]] | None = None,
    compositions: Sequence[Sequence[str]] | None = None,
    seed: int | None = 0,
    max_rows: int = 262_144,
) -> xr.Dataset:
    """Partial dependence and ICE curves of each species on each covariate.

    Parameters
    ----------
    model
        Fitted ``MultiSpeciesSDM`` (point network) or its folder.
    X
        Points whose other covariates are kept (typically the training sites); also gives the training range
        unless ``train_ranges`` is given.
    variables
        Covariates to vary (default: all the model reads).
    species
        Species (default: all).
    n_grid
        Grid points per numeric variable.
    n_pd, n_ice
        Points averaged for the PD curve and points drawn as ICE curves (sampled from ``X``).
    extend
        Widen the grid beyond the training range by this fraction of it on both sides (0: training range).
    train_ranges
        ``{variable: (min, max)}`` of the training data (default: ``X``'s range).
    scale
        ``"log_intensity"`` (the model's ``f``, additive like a logit) or ``"probability"`` (``predict_proba``
        at the model's unit area, or over ``area`` m²; uncalibrated: the model's own response).
    area
        m² of the probabilities (``scale="probability"``; None: the model's unit area).
    linked
        Groups of collinear covariates that move together (module docstring); a variable in one moves its
        group.
    compositions
        Groups of fractions whose row sum is kept (module docstring).
    seed
        Seed of the PD/ICE samples.
    max_rows
        Rows per forward pass.

    Returns
    -------
    xarray.Dataset
        ``partial_dependence`` ``(species, variable, point)``, ``ice`` ``(species, variable, sample, point)``;
        coords ``value`` ``(variable, point)`` (grid values; NaN pads shorter grids), ``label`` (category
        names for categorical variables), ``train_min``/``train_max`` ``(variable)`` and ``in_range``
        ``(variable, point)`` (False where the model extrapolates).

    Raises
    ------
    InputError
        A patch network, a bad scale or grid, or no valid point.
    MissingVariableError
        Unknown variables or species, or ``X`` lacks a covariate.

    Example
    -------
    >>> rc = response_curves(model, sites, variables=["bio01", "slope"], species=["plant_01"])  # doctest: +SKIP
    >>> rc.partial_dependence.sel(species="plant_01", variable="bio01").plot(x="value")  # doctest: +SKIP
    """
    m = as_model(model)
    inputs = model_inputs(m)
    if inputs.patch_variables:
        raise InputError("response curves need a point network (mlp, or fusion without patches); a patch network's "
                         "response to a cell value depends on its neighbours: use attribution_cube instead")
    if scale not in ("log_intensity", "probability"):
        raise InputError(f"scale={scale!r} must be 'log_intensity' or 'probability'")
    if int(n_grid) < 2 or int(n_pd) < 1 or int(n_ice) < 0 or not float(extend) >= 0:
        raise InputError("n_grid must be >= 2, n_pd >= 1, n_ice >= 0 and extend >= 0")
    names = list(inputs.columns)
    variables = list(names if variables is None else variables)
    bad = [v for v in variables if v not in names]
    if bad:
        raise MissingVariableError(f"variables {bad} are not model covariates; the model reads {names}")
    sp_names = list(m.species_) if species is None else list(species)
    unknown = [s for s in sp_names if s not in m.species_]
    if unknown:
        raise MissingVariableError(f"species {unknown} are not modelled; pass names from model.species_")
    sp_idx = [list(m.species_).index(s) for s in sp_names]
    from geosdm.explain.importance import _frame_columns

    cols = _frame_columns(X, names)
    n = len(next(iter(cols.values())))
    f0 = m.decision_function(cols)
    valid = np.flatnonzero(np.isfinite(f0).all(axis=1))
    if not valid.size:
        raise InputError("X has no row with every covariate finite; pass valid training sites")
    rng = np.random.default_rng(seed)
    pd_rows = rng.choice(valid, size=min(int(n_pd), valid.size), replace=False)
    ice_pos = rng.choice(len(pd_rows), size=min(int(n_ice), len(pd_rows)), replace=False)
    cats = m.encoder_.categories
    follow = _followers(cols, pd_rows, names, linked, compositions, cats)
    ranges = dict(train_ranges) if train_ranges is not None else training_ranges(X, [
        v for v in variables if v not in cats])
    n_points = max([int(n_grid)] + [len(cats[v]) for v in variables if v in cats])
    values = np.full((len(variables), n_points), np.nan)
    labels = np.full((len(variables), n_points), "", dtype=object)
    in_range = np.zeros((len(variables), n_points), dtype=bool)
    tmin = np.full(len(variables), np.nan)
    tmax = np.full(len(variables), np.nan)
    pdv = np.full((len(sp_idx), len(variables), n_points), np.nan, dtype=np.float32)
    ice = np.full((len(sp_idx), len(variables), len(ice_pos), n_points), np.nan, dtype=np.float32)
    base = {c: v[pd_rows] for c, v in cols.items()}
    for vi, v in enumerate(variables):
        if v in cats:
            grid: list[Any] = list(cats[v])
            values[vi, : len(grid)] = np.arange(len(grid))
            labels[vi, : len(grid)] = [str(g) for g in grid]
            in_range[vi, : len(grid)] = True
        else:
            if v not in ranges:
                raise InputError(f"no training range for {v!r}: X has no finite value of it; pass train_ranges=")
            lo, hi = ranges[v]
            tmin[vi], tmax[vi] = lo, hi
            pad = (hi - lo) * float(extend)
            g0, g1 = lo - pad, hi + pad
            if follow.get(v, ("",))[0] == "composition":
                g0, g1 = max(g0, 0.0), min(g1, float(np.nanmax(follow[v][2])))
            grid = list(np.linspace(g0, g1, int(n_grid)))
            values[vi, : len(grid)] = grid
            labels[vi, : len(grid)] = [f"{g:.6g}" for g in grid]
            in_range[vi, : len(grid)] = (np.asarray(grid) >= lo) & (np.asarray(grid) <= hi)
        k = len(grid)
        per = max(1, int(max_rows) // len(pd_rows))
        out = np.empty((k, len(pd_rows), len(sp_idx)), dtype=np.float32)
        for s in range(0, k, per):
            chunk = grid[s : s + per]
            batch = {c: np.tile(b, len(chunk)) for c, b in base.items()}
            if v in cats:
                batch[v] = np.repeat(np.array(chunk, dtype=object), len(pd_rows))
            else:
                batch[v] = np.repeat(np.asarray(chunk, dtype=np.float32), len(pd_rows))
                if v in follow:
                    _move(batch, v, follow[v], base[v], len(chunk))
            if scale == "probability":
                f = model_probability(m, batch, area=area, calibration=False)
            else:
                f = m.decision_function(batch)
            out[s : s + len(chunk)] = f.reshape(len(chunk), len(pd_rows), -1)[..., sp_idx]
        pdv[:, vi, :k] = np.nanmean(out, axis=1).T
        ice[:, vi, :, :k] = out[:, ice_pos].transpose(2, 1, 0)
    ds = xr.Dataset(
        {"partial_dependence": (("species", "variable", "point"), pdv, {"units": scale}),
         "ice": (("species", "variable", "sample", "point"), ice, {"units": scale})},
        coords={"species": sp_names, "variable": variables, "point": np.arange(n_points),
                "value": (("variable", "point"), values), "label": (("variable", "point"), labels.astype(str)),
                "train_min": (("variable",), tmin), "train_max": (("variable",), tmax),
                "in_range": (("variable", "point"), in_range), "sample": np.arange(len(ice_pos))},
        attrs={"geosdm:scale": scale, **({"geosdm:area_m2": float(area)} if area is not None and scale == "probability"
                                         else {}), "geosdm:n_pd": int(len(pd_rows)), "geosdm:extend": float(extend),
               "geosdm:categorical": [v for v in variables if v in cats], "geosdm:n_rows": int(n),
               "geosdm:linked": {v: list(f[1]) for v, f in follow.items() if f[0] == "linked" and v in variables},
               "geosdm:composition": {v: list(f[1]) for v, f in follow.items()
                                      if f[0] == "composition" and v in variables}},
    )
    return ds


def on_manifold_inputs(
    X: pd.DataFrame | Mapping[str, Any],
    variable: str,
    grid: Sequence[float] | np.ndarray,
    *,
    linked: Mapping[str, Sequence[str]] | None = None,
    compositions: Sequence[Sequence[str]] | None = None,
    reference: pd.DataFrame | Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """The inputs an on-manifold partial dependence of ``variable`` evaluates: every row of ``X`` once per value of
    ``grid`` (grid-major), ``variable`` set to that value and its followers moved as :func:`response_curves` moves
    them (module docstring), so another model (e.g. a known truth) can be asked about the same environments.

    Parameters
    ----------
    X
        Rows to move (every column is kept; the moved ones become float32, as in :func:`response_curves`).
    variable
        The numeric covariate set to each grid value.
    grid
        Its values.
    linked, compositions
        As in :func:`response_curves`.
    reference
        Rows the linked groups' least-squares slopes are fitted on (default ``X``), e.g. the points of the
        :func:`response_curves` call whose intervention is repeated on other values; a composition always keeps
        each row of ``X``'s own sum.

    Returns
    -------
    dict
        ``{column: array of len(grid) * len(X)}``: grid value ``i`` at rows ``i * len(X)`` to ``(i + 1) * len(X)``.

    Raises
    ------
    MissingVariableError
        ``variable`` or a group member is not a column of ``X`` (or of ``reference``).
    InputError
        A covariate in two groups.

    Example
    -------
    >>> batch = on_manifold_inputs(sites, "bio01", [8.0, 10.0, 12.0], linked={"temperature": ["bio01", "bio05"]})
    ... # doctest: +SKIP
    >>> truth.decision_function(batch).reshape(3, len(sites), -1).mean(axis=1)  # doctest: +SKIP
    """
    from geosdm.explain.importance import _frame_columns

    names = list(X.columns) if isinstance(X, pd.DataFrame) else list(X)
    if variable not in names:
        raise MissingVariableError(f"{variable!r} is not a column of X {names[:30]}")
    cols = _frame_columns(X, names)
    n = len(cols[variable])
    if reference is None:
        follow = _followers(cols, np.arange(n), names, linked, compositions, {})
    else:
        ref_names = list(reference.columns) if isinstance(reference, pd.DataFrame) else list(reference)
        ref = _frame_columns(reference, [c for c in ref_names if c in names])
        follow = _followers(ref, np.arange(max((len(a) for a in ref.values()), default=0)), list(ref), linked,
                            None, {})
        own = _followers(cols, np.arange(n), names, None, compositions, {})
        if both := sorted(set(follow) & set(own)):
            raise InputError(f"{both[0]!r} is in two linked/composition groups; put each covariate in one")
        follow.update(own)
    g = np.asarray(grid, dtype=np.float32).ravel()
    batch = {c: np.tile(a, len(g)) for c, a in cols.items()}
    batch[variable] = np.repeat(g, n)
    if variable in follow:
        _move(batch, variable, follow[variable], cols[variable], len(g))
    return batch


def _followers(cols: Mapping[str, np.ndarray], rows: np.ndarray, names: Sequence[str],
               linked: Mapping[str, Sequence[str]] | None, compositions: Sequence[Sequence[str]] | None,
               cats: Mapping[str, Any]) -> dict[str, tuple[str, list[str], np.ndarray]]:
    """Per variable: how the others move with it (``"linked"``: slopes; ``"composition"``: row sums)."""
    out: dict[str, tuple[str, list[str], np.ndarray]] = {}
    groups = [("linked", list(m)) for m in (linked or {}).values()]
    groups += [("composition", list(m)) for m in (compositions or [])]
    for kind, members in groups:
        bad = [u for u in members if u not in names or u in cats]
        if bad:
            raise MissingVariableError(f"{kind} group names {bad}, not numeric covariates of the model {list(names)}")
        if len(members) < 2:
            continue
        values = {u: np.asarray(cols[u], dtype="float64")[rows] for u in members}
        for v in members:
            if v in out:
                raise InputError(f"{v!r} is in two linked/composition groups; put each covariate in one")
            others = [u for u in members if u != v]
            if kind == "linked":
                x = values[v] - values[v].mean()
                var = float((x * x).mean())
                slopes = np.array([float((x * (values[u] - values[u].mean())).mean()) / var if var > 0 else 0.0
                                   for u in others])
                out[v] = (kind, others, slopes)
            else:
                out[v] = (kind, others, sum(values[u] for u in members))
    return out


def _move(batch: dict[str, np.ndarray], v: str, follow: tuple[str, list[str], np.ndarray], v0: np.ndarray,
          k: int) -> None:
    """Move ``v``'s followers in ``batch`` (``k`` grid points x rows, grid-major) for its new values."""
    kind, others, info = follow
    g = batch[v].astype(np.float64)
    old = np.tile(np.asarray(v0, dtype=np.float64), k)
    if kind == "linked":
        for u, b in zip(others, info):
            batch[u] = (np.asarray(batch[u], dtype=np.float64) + b * (g - old)).astype(np.float32)
        return
    total = np.tile(info, k)
    g = np.minimum(g, total)
    batch[v] = g.astype(np.float32)
    rest = total - old
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(rest > 0, (total - g) / rest, np.nan)
    for u in others:
        u0 = np.asarray(batch[u], dtype=np.float64)
        batch[u] = np.where(rest > 0, u0 * factor, (total - g) / len(others)).astype(np.float32)
