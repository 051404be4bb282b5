"""Permutation importance of covariates (single or grouped), per species, globally or per region.

A variable (or a group of variables, permuted together with one row permutation so their joint structure is
kept) is important for a species when shuffling it across the evaluation points changes the model's
prediction there: by default its log-intensity ``f`` (``scale="log_intensity"``, the scale on which the
species' responses add up), or the presence probability a map shows (``scale="probability"``, over ``area``
m², calibrated when the model is; biomod2 scores its probabilities). On the probability scale a variable that
only moves ``f`` where the species is absent anyway (from very to extremely unlikely) does not count; on the
``f`` scale it weighs as much as one that decides where the species lives. Scores, per species:

* ``"correlation"`` (default, needs no labels): ``1 - Pearson(pred, pred_permuted)``, the SDM convention of
  biomod2;
* ``"mse"``: mean of ``(pred - pred_permuted)^2`` (on the log-intensity scale of an additive model it is twice
  the variance of the variable's contribution over the points);
* ``"auc"``: drop of the ROC AUC between presences and background/absences (``y`` labels, e.g. from
  :func:`labels_from_records`; the same on either scale).

Each permutation is repeated ``n_repeats`` times with its own seed; the spread over repeats is reported. With
``regions`` (a label per point), rows are permuted within their region and scored there, so importance can
differ between regions or spatial blocks. Correlated covariates share importance: permuting one of them
leaves the others to carry the signal, which grouped importance (``groups=``) avoids.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from geosdm.errors import InputError, MissingVariableError
from geosdm.predict.model import area_offset, as_model, model_inputs, model_probability
from geosdm.records.collinearity import correlation_matrix

if TYPE_CHECKING:
    from geosdm.models import MultiSpeciesSDM

__all__ = ["SCALES", "SCORINGS", "composition_groups", "correlated_groups", "labels_from_records", "permutation_importance", "top_variables",
           "variable_groups"]

log = logging.getLogger(__name__)

#: Permutation importance scores.
SCORINGS = ("correlation", "mse", "auc")
#: Scales the permuted predictions are compared on.
SCALES = ("log_intensity", "probability")

_SOURCE_GROUPS: tuple[tuple[str, str], ...] = (
    (r"^bio\d+", "climate"),
    (r"^(tas|tmin|tmax|pr|prec|clim)_", "climate"),
    (r"^s2_", "sentinel-2"),
    (r"^(ls|landsat)_", "landsat"),
    (r"^lc_", "land cover"),
    (r"^(elevation|slope|aspect|dem|tpi|twi|roughness)", "terrain"),
)


def variable_groups(names: Sequence[str], *, scheme: Literal["source"] | Mapping[str, str] = "source",
                    singletons: bool = True) -> dict[str, list[str]]:
    """Group covariates by the source they come from (or by regular expressions).

    Parameters
    ----------
    names
        Covariate names (e.g. ``model.feature_names_``).
    scheme
        ``"source"``: ``bioNN`` -> climate, ``s2_*`` -> sentinel-2, ``ls_*`` -> landsat, ``lc_*`` -> land
        cover, elevation/slope/... -> terrain; or a mapping ``{regex: group name}`` tried in order.
    singletons
        Keep covariates matching no rule as groups of their own (else leave them out).

    Example
    -------
    >>> variable_groups(["bio01", "bio12", "s2_ndvi_jja", "elevation", "lc_3"])
    {'climate': ['bio01', 'bio12'], 'sentinel-2': ['s2_ndvi_jja'], 'terrain': ['elevation'], 'land cover': ['lc_3']}
    """
    rules = _SOURCE_GROUPS if scheme == "source" else tuple(dict(scheme).items())  # type: ignore[arg-type]
    if not isinstance(scheme, Mapping) and scheme != "source":
        raise InputError(f"scheme={scheme!r} must be 'source' or a mapping {{regex: group name}}")
    out: dict[str, list[str]] = {}
    for n in names:
        group = next((g for pattern, g in rules if re.search(pattern, n)), None)
        if group is None and not singletons:
            continue
        out.setdefault(group or n, []).append(n)
    return out


def correlated_groups(X: pd.DataFrame | Mapping[str, Any], variables: Sequence[str], *, threshold: float = 0.9,
                      ) -> dict[str, list[str]]:
    """Groups of near-collinear covariates: complete-linkage clusters whose members all have ``|r| >= threshold``.

    Permuting such a group together (``permutation_importance(..., groups=...)``) measures what the model
    takes from the shared signal, which no single member's permutation shows when its twins stay in place.
    Groups are named by their first member, with ``+k`` for ``k`` more (``"bio01+4"``); singletons keep their name.

    Parameters
    ----------
    X
        Points to measure correlations on (e.g. cells sampled over the map).
    variables
        Numeric covariates to group.
    threshold
        Minimum absolute Pearson correlation between any two members of a group.

    Example
    -------
    >>> correlated_groups(cells, model.feature_names_, threshold=0.9)  # doctest: +SKIP
    {'bio01+4': ['bio01', 'bio05', 'bio06', 'bio08', 'bio10'], 'slope': ['slope'], ...}
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    if not 0 < float(threshold) <= 1:
        raise InputError(f"threshold={threshold} must be in (0, 1] (an absolute correlation)")
    names = list(variables)
    if len(names) < 2:
        return {n: [n] for n in names}
    r = np.nan_to_num(correlation_matrix(_frame_columns(X, names), names)[0], nan=0.0)
    dist = np.clip(1.0 - np.abs(r), 0.0, None)
    np.fill_diagonal(dist, 0.0)
    labels = fcluster(linkage(squareform(dist, checks=False), method="complete"), t=1.0 - float(threshold),
                      criterion="distance")
    out: dict[str, list[str]] = {}
    for lab in dict.fromkeys(labels):
        members = [n for n, g in zip(names, labels) if g == lab]
        out[members[0] if len(members) == 1 else f"{members[0]}+{len(members) - 1}"] = members
    return out


def composition_groups(cube: xr.Dataset, variables: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Class fractions of one categorical map (cube attrs ``categorical="fraction"``), grouped by map.

    The fractions of one map sum to 1 in every cell, so a species' response to one class is only defined
    against the others: permute them together, and move them together in response curves (``compositions=``).
    Groups are keyed by the layers' ``source`` attribute (else the name prefix, ``lc`` for ``lc_3``).

    Example
    -------
    >>> composition_groups(open_cube("cube.zarr"))  # doctest: +SKIP
    {'demo-landcover': ['lc_1', 'lc_10', ..., 'lc_9']}
    """
    names = [str(v) for v in (variables if variables is not None else cube.data_vars)]
    out: dict[str, list[str]] = {}
    for n in names:
        if n not in cube.data_vars:
            continue
        attrs = cube[n].attrs
        if attrs.get("categorical") == "fraction":
            out.setdefault(str(attrs.get("source") or n.rsplit("_", 1)[0]), []).append(n)
    return {k: v for k, v in out.items() if len(v) > 1}


def labels_from_records(table: pd.DataFrame, species: Sequence[str]) -> np.ndarray:
    """Presence (1) / background-or-absence (0) labels ``(n_rows, n_species)`` of a records table (NaN: unknown).

    A row labels its own species: presence-only records 1, presence/absence and count records 1 when
    ``value > 0`` else 0; background rows are 0 for every species.

    Example
    -------
    >>> y = labels_from_records(table, model.species_)  # doctest: +SKIP
    """
    for col in ("kind", "species", "value"):
        if col not in table.columns:
            raise MissingVariableError(f"table lacks column {col!r}; pass a records/training table "
                                       "(geosdm.records.training_table)")
    kind = table["kind"].astype(str).to_numpy()
    sp = table["species"].astype(object).to_numpy()
    value = pd.to_numeric(table["value"], errors="coerce").to_numpy(dtype="float64")
    y = np.full((len(table), len(species)), np.nan)
    y[kind == "background"] = 0.0
    pos = {s: i for i, s in enumerate(species)}
    rows = np.flatnonzero(kind != "background")
    cols = np.array([pos.get(s, -1) if isinstance(s, str) else -1 for s in sp[rows]], dtype=int)
    keep = cols >= 0
    rows, cols = rows[keep], cols[keep]
    present = np.where(kind[rows] == "presence_only", 1.0, (value[rows] > 0).astype(float))
    y[rows, cols] = present
    return y


def _auc(y: np.ndarray, f: np.ndarray) -> np.ndarray:
    """ROC AUC per column of ``f`` (rows where ``y`` is finite; NaN without both classes)."""
    from scipy.stats import rankdata

    out = np.full(f.shape[1], np.nan)
    for j in range(f.shape[1]):
        ok = np.isfinite(y[:, j]) & np.isfinite(f[:, j])
        pos = y[ok, j] > 0
        n1, n0 = int(pos.sum()), int((~pos).sum())
        if n1 and n0:
            r = rankdata(f[ok, j])
            out[j] = (r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    return out


def _score(f0: np.ndarray, f1: np.ndarray, scoring: str, y: np.ndarray | None, auc0: np.ndarray | None) -> np.ndarray:
    """Importance per species from the original and permuted log-intensities ``(n, S)``."""
    if scoring == "mse":
        return np.nanmean((f0 - f1) ** 2, axis=0)
    if scoring == "auc":
        return auc0 - _auc(y, f1)  # type: ignore[arg-type, operator]
    a = f0 - np.nanmean(f0, axis=0)
    b = f1 - np.nanmean(f1, axis=0)
    den = np.sqrt(np.nansum(a * a, axis=0) * np.nansum(b * b, axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.nansum(a * b, axis=0) / den
    return 1.0 - np.where(den > 0, r, 1.0)


def _frame_columns(X: pd.DataFrame | Mapping[str, Any], columns: Sequence[str]) -> dict[str, np.ndarray]:
    names = list(X.columns) if isinstance(X, pd.DataFrame) else list(X)
    missing = [c for c in columns if c not in names]
    if missing:
        raise MissingVariableError(
            f"X lacks covariate column(s) {missing} needed by the model; it has {names[:30]}. Extract them from the "
            "cube (geosdm.records.extract_covariates) first"
        )
    out = {}
    for c in columns:
        col = X[c]
        out[c] = col.to_numpy() if isinstance(col, pd.Series) and not isinstance(col.dtype, pd.CategoricalDtype) \
            else np.asarray(col, dtype=object) if isinstance(col, pd.Series) else np.asarray(col)
    return out


def _resolve_groups(groups: Mapping[str, Sequence[str]] | Literal["auto"] | None,
                    variables: Sequence[str]) -> dict[str, list[str]]:
    if groups is None:
        return {v: [v] for v in variables}
    if isinstance(groups, str):
        if groups != "auto":
            raise InputError(f"groups={groups!r} must be None, 'auto' or a mapping {{name: [variables]}}")
        return variable_groups(variables)
    out = {str(k): list(v) for k, v in groups.items()}
    unknown = sorted({v for vs in out.values() for v in vs} - set(variables))
    if unknown:
        raise MissingVariableError(f"groups name variables {unknown} the model does not read; it reads "
                                   f"{list(variables)}")
    empty = [k for k, v in out.items() if not v]
    if empty:
        raise InputError(f"groups {empty} are empty; list at least one variable per group")
    return out


def permutation_importance(
    model: MultiSpeciesSDM | str | PathLike[str],
    X: pd.DataFrame | Mapping[str, Any],
    *,
    species: Sequence[str] | None = None,
    groups: Mapping[str, Sequence[str]] | Literal["auto"] | None = None,
    scoring: Literal["correlation", "mse", "auc"] = "correlation",
    scale: Literal["log_intensity", "probability"] = "log_intensity",
    area: float | None = None,
    y: np.ndarray | None = None,
    regions: Sequence[Any] | np.ndarray | str | None = None,
    min_region_points: int = 20,
    n_repeats: int = 5,
    patches: np.ndarray | None = None,
    seed: int | None = 0,
    max_rows: int = 262_144,
) -> xr.Dataset:
    """Permutation importance of each covariate (or group) for each species, with the spread over repeats.

    Parameters
    ----------
    model
        Fitted ``MultiSpeciesSDM`` or its folder.
    X
        Evaluation points: covariates per row (DataFrame or column mapping), e.g. training sites or cells
        sampled from the cube.
    species
        Species to score (default: all).
    groups
        None: each variable alone; ``"auto"``: by source (:func:`variable_groups`); or ``{name: [variables]}``
        permuted together.
    scoring
        ``"correlation"``, ``"mse"`` or ``"auc"`` (module docstring).
    scale
        ``"log_intensity"`` (default: the model's ``f``) or ``"probability"`` (the presence probability over
        ``area``, calibrated when the model has a ``calibrator_``).
    area
        Area in m² of the probabilities (None: the model's unit area; give the map's, e.g. the cell area).
    y
        Labels ``(n, n_model_species)`` for ``scoring="auc"`` (1 presence, 0 background/absence, NaN unknown).
    regions
        A label per row (or the name of a column of ``X``): permute within and score each region separately.
    min_region_points
        Regions with fewer valid points are left out.
    n_repeats
        Permutations per variable (the spread of their scores is the uncertainty).
    patches
        Raw patches ``(n, C, k, k)`` for patch networks (a patch variable's channel is permuted by rows).
    seed
        Seed of the permutations.
    max_rows
        Rows per forward pass (several permutations are stacked into one).

    Returns
    -------
    xarray.Dataset
        ``importance`` ``([region,] species, variable, repeat)``, ``importance_mean`` and ``importance_std``
        ``([region,] species, variable)``, ``n_points`` (per region); with ``"auc"`` also ``score`` (the AUC
        before permutation). ``variable`` holds group names; attrs give the scoring and the group members.

    Raises
    ------
    InputError
        Bad scoring/labels/repeats, or fewer than 3 valid points.
    MissingVariableError
        ``X`` lacks a model covariate, or ``groups``/``species`` name unknown ones.

    Example
    -------
    >>> imp = permutation_importance(model, sites, groups="auto", n_repeats=10)  # doctest: +SKIP
    >>> imp.importance_mean.sel(species="plant_01").to_series().sort_values()  # doctest: +SKIP
    """
    m = as_model(model)
    if scoring not in SCORINGS:
        raise InputError(f"scoring={scoring!r} is unknown; choose one of {list(SCORINGS)}")
    if scale not in SCALES:
        raise InputError(f"scale={scale!r} is unknown; choose one of {list(SCALES)}")
    if isinstance(n_repeats, bool) or not isinstance(n_repeats, (int, np.integer)) or n_repeats < 1:
        raise InputError(f"n_repeats={n_repeats!r} must be a positive int")
    inputs = model_inputs(m)
    variables = list(dict.fromkeys(inputs.columns + inputs.patch_variables))
    if inputs.patch_variables and patches is None:
        raise InputError(f"this patch network needs patches= (n, C, k, k) of {list(inputs.patch_variables)}")
    gmap = _resolve_groups(groups, variables)
    cols = _frame_columns(X, inputs.columns)
    n = len(next(iter(cols.values()))) if cols else len(patches)  # type: ignore[arg-type]
    sp_names = list(m.species_) if species is None else list(species)
    unknown = [s for s in sp_names if s not in m.species_]
    if unknown:
        raise MissingVariableError(f"species {unknown} are not modelled; pass names from model.species_")
    sp_idx = [list(m.species_).index(s) for s in sp_names]
    if scoring == "auc":
        if y is None:
            raise InputError("scoring='auc' needs labels y= (n, n_species); build them with labels_from_records(table, "
                             "model.species_) or use scoring='correlation'")
        y = np.asarray(y, dtype="float64")
        if y.shape != (n, len(m.species_)):
            raise InputError(f"y has shape {y.shape}; expected (n_rows, n_model_species) = {(n, len(m.species_))}")
        y = y[:, sp_idx]

    if scale == "probability" and scoring != "auc":
        area_offset(m, area)  # a bad area fails here, before any work

    def decision(c: Mapping[str, np.ndarray], p: np.ndarray | None) -> np.ndarray:
        if scale == "probability" and scoring != "auc":  # AUC ranks: the same on either scale
            return model_probability(m, c, area=area, patches=p)[:, sp_idx]
        return m.decision_function(c, patches=p)[:, sp_idx]

    f0 = decision(cols, patches)
    valid = np.isfinite(f0).all(axis=1)
    if isinstance(regions, str):
        if not isinstance(X, pd.DataFrame) or regions not in X.columns:
            raise MissingVariableError(f"regions={regions!r} is not a column of X")
        labels = X[regions].astype(str).to_numpy()
    elif regions is not None:
        labels = np.asarray(regions).astype(str)
        if labels.shape != (n,):
            raise InputError(f"regions has {labels.shape} labels; expected one per row of X ({n})")
    else:
        labels = np.full(n, "all")
    names = [r for r in pd.unique(labels[valid]) if r != "" and (labels[valid] == r).sum() >= min_region_points]
    if regions is not None:
        dropped = sorted(set(pd.unique(labels[valid])) - set(names) - {""})
        if dropped:
            log.info("left out %d regions with fewer than %d valid points", len(dropped), min_region_points)
    if not names or valid.sum() < 3:
        raise InputError(f"X has {int(valid.sum())} valid points (rows without NaN covariates"
                         f"{' in regions of at least ' + str(min_region_points) + ' points' if regions is not None else ''}"
                         "); pass more evaluation points")
    members = {r: np.flatnonzero(valid & (labels == r)) for r in names}
    patch_pos = {v: i for i, v in enumerate(inputs.patch_variables)}
    base = int(np.random.SeedSequence().entropy % 2**31) if seed is None else int(seed)
    n_g, n_s = len(gmap), len(sp_idx)
    imp = np.full((len(names), n_s, n_g, int(n_repeats)), np.nan)
    auc0 = {r: _auc(y[idx], f0[idx]) for r, idx in members.items()} if scoring == "auc" else {}  # type: ignore[index]
    rows = np.concatenate(list(members.values()))
    per_call = max(1, int(max_rows) // max(len(rows), 1))
    jobs = [(r, g) for r in range(int(n_repeats)) for g in range(n_g)]
    gnames = list(gmap)
    for start in range(0, len(jobs), per_call):
        batch = jobs[start : start + per_call]
        stacked: dict[str, list[np.ndarray]] = {c: [] for c in cols}
        pstack: list[np.ndarray] = []
        for rep, g in batch:
            perm = rows.copy()
            prng = np.random.default_rng([base, rep])  # one permutation per repeat, shared by the groups
            offset = 0
            for idx in members.values():  # rows are region by region: permute within each region
                perm[offset : offset + len(idx)] = prng.permutation(idx)
                offset += len(idx)
            for c in cols:
                col = cols[c][rows]
                if c in gmap[gnames[g]]:
                    col = cols[c][perm]
                stacked[c].append(col)
            if patches is not None:
                p = patches[rows].copy()
                for v in gmap[gnames[g]]:
                    if v in patch_pos:
                        p[:, patch_pos[v]] = patches[perm, patch_pos[v]]
                pstack.append(p)
        f1 = decision({c: np.concatenate(v) for c, v in stacked.items()},
                      np.concatenate(pstack) if pstack else None).reshape(len(batch), len(rows), n_s)
        offset = 0
        for ri, (r, idx) in enumerate(members.items()):
            part = slice(offset, offset + len(idx))
            offset += len(idx)
            for b, (rep, g) in enumerate(batch):
                imp[ri, :, g, rep] = _score(f0[idx], f1[b, part], scoring, y[idx] if y is not None else None,
                                            auc0.get(r))
    dims = ("region", "species", "variable", "repeat")
    ds = xr.Dataset(
        {"importance": (dims, imp.astype(np.float32)),
         "n_points": (("region",), np.array([len(members[r]) for r in names]))},
        coords={"region": [str(r) for r in names], "species": sp_names, "variable": gnames,
                "repeat": np.arange(int(n_repeats))},
        attrs={"geosdm:scoring": scoring, "geosdm:scale": scale if scoring != "auc" else "log_intensity",
               "geosdm:area_m2": float(area) if area is not None else float(getattr(m, "area_unit_m2_", np.nan)),
               "geosdm:groups": {k: list(v) for k, v in gmap.items()},
               "geosdm:n_repeats": int(n_repeats), "geosdm:seed": seed if seed is not None else -1},
    )
    if scoring == "auc":
        ds["score"] = (("region", "species"), np.array([auc0[r] for r in names], dtype=np.float32))
    ds["importance_mean"] = ds["importance"].mean("repeat")
    ds["importance_std"] = ds["importance"].std("repeat", ddof=1) if n_repeats > 1 else ds["importance"].isel(
        repeat=0) * 0
    return ds if regions is not None else ds.isel(region=0, drop=True)


def top_variables(importance: xr.Dataset, k: int = 3) -> dict[str, list[str]]:
    """The ``k`` most important variables (or groups) of each species, by mean importance (global result).

    Example
    -------
    >>> top_variables(permutation_importance(model, sites), 3)["plant_01"]  # doctest: +SKIP
    ['slope', 'lc_3', 'bio01']
    """
    mean = importance["importance_mean"]
    if "region" in mean.dims:
        raise InputError("top_variables needs a global importance; select one region first (.sel(region=...))")
    out = {}
    for s in mean["species"].values:
        series = mean.sel(species=s).to_series().dropna().sort_values(ascending=False)
        out[str(s)] = [str(v) for v in series.index[:k]]
    return out
