"""Figures for reports: importance bars with their spread, response curves with the training range shaded,
attribution and extrapolation maps. Each function returns a matplotlib ``Figure`` (Agg backend, nothing shown)
that :func:`geosdm.report.write_report` embeds; maps are coarsened on the fly so a large lazy layer costs
little.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from geosdm.errors import InputError, MissingVariableError

__all__ = ["covariate_units", "plot_attribution", "plot_importance", "plot_mess", "plot_response"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_importance(importance: xr.Dataset, species: str | None = None, *, top: int = 15,
                    title: str | None = None) -> Any:
    """Horizontal bars of mean permutation importance with the spread over repeats (± 1 sd and each repeat).

    ``species=None`` averages over species (the community view).

    Example
    -------
    >>> fig = plot_importance(permutation_importance(model, sites), "plant_01")  # doctest: +SKIP
    """
    plt = _plt()
    imp = importance["importance"]
    if "region" in imp.dims:
        raise InputError("plot_importance needs a global importance; select one region first (.sel(region=...))")
    if species is not None:
        if species not in imp["species"].values:
            raise MissingVariableError(f"species {species!r} is not in the importance result")
        reps = imp.sel(species=species)
    else:
        reps = imp.mean("species")
    mean = reps.mean("repeat").to_series().sort_values(ascending=False).iloc[:top]
    order = list(mean.index)[::-1]
    sd = reps.std("repeat").to_series().reindex(order).fillna(0)
    fig, ax = plt.subplots(figsize=(5.5, 0.3 * len(order) + 1.2), layout="constrained")
    pos = np.arange(len(order))
    ax.barh(pos, mean.reindex(order).values, xerr=sd.values, color="#4c72b0", alpha=0.85, ecolor="black", capsize=2)
    for i, v in enumerate(order):
        ax.plot(reps.sel(variable=v).values, np.full(reps.sizes["repeat"], i), "k.", ms=2, alpha=0.6)
    ax.set_yticks(pos, order, fontsize=8)
    ax.set_xlabel(f"permutation importance ({importance.attrs.get('geosdm:scoring', '')})")
    ax.set_title(title or (f"{species}" if species else "mean over species"), fontsize=10)
    return fig


def plot_response(curves: xr.Dataset, species: str, variables: Sequence[str] | None = None, *, ice: bool = True,
                  ncols: int = 3, truth: dict[str, np.ndarray] | None = None,
                  units: Mapping[str, str] | None = None) -> Any:
    """Partial dependence (thick) and ICE curves (thin) of one species, training range shaded.

    ``truth`` optionally maps a variable to known response values on its grid (drawn dashed, centred).
    ``units`` maps a variable to its unit (e.g. from the cube's ``units`` attrs, :func:`covariate_units`), shown
    on its x axis. The y axis says the curves' scale: presence probability (over the area the curves were
    computed for) or log-intensity.

    Example
    -------
    >>> fig = plot_response(response_curves(model, sites, species=["plant_01"]), "plant_01")  # doctest: +SKIP
    """
    plt = _plt()
    if species not in curves["species"].values:
        raise MissingVariableError(f"species {species!r} is not in the response curves")
    names = list(curves["variable"].values) if variables is None else list(variables)
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, min(ncols, len(names)), figsize=(3.2 * min(ncols, len(names)), 2.5 * nrows),
                             squeeze=False, layout="constrained")
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    probability = curves.attrs.get("geosdm:scale", curves["partial_dependence"].attrs.get("units")) == "probability"
    area = curves.attrs.get("geosdm:area_m2")
    ylabel = (f"presence probability{f' over {area:g} m²' if area else ''}" if probability
              else "log-intensity (model scale)")
    for ax, v in zip(axes.ravel(), names):
        c = curves.sel(species=species, variable=v)
        x = c["value"].values
        ok = np.isfinite(x)
        if ice and "ice" in c:
            ax.plot(x[ok], c["ice"].values[:, ok].T, color="grey", lw=0.4, alpha=0.35)
        pdv = c["partial_dependence"].values[ok]
        ax.plot(x[ok], pdv, color="#c44e52", lw=2)
        lo, hi = float(c["train_min"]), float(c["train_max"])
        if np.isfinite(lo) and np.isfinite(hi):
            ax.axvspan(lo, hi, color="#55a868", alpha=0.12, lw=0, label="training range")
        if truth is not None and v in truth:
            t = np.asarray(truth[v], dtype=float)[ok]
            ax.plot(x[ok], t - np.nanmean(t) + np.nanmean(pdv), "k--", lw=1, label="truth")
        labels = c["label"].values[ok]
        if v in curves.attrs.get("geosdm:categorical", []):
            ax.set_xticks(x[ok], labels, rotation=45, fontsize=7)
        ax.set_title(v, fontsize=9)
        unit = (units or {}).get(v)
        if unit and v not in curves.attrs.get("geosdm:categorical", []):
            ax.set_xlabel("fraction of the cell" if unit == "1" and v.startswith("lc_") else
                          ("unitless" if unit == "1" else unit), fontsize=7)
        if probability:
            ax.set_ylim(bottom=0)
        ax.tick_params(labelsize=7)
    for row in axes:
        row[0].set_ylabel(ylabel, fontsize=8)
    fig.suptitle(species, fontsize=10)
    return fig


def covariate_units(cube: xr.Dataset | Mapping[str, Any]) -> dict[str, str]:
    """``{variable: units}`` from a cube's variable attributes (``units`` as the cube builder writes them)."""
    out = {}
    for name, var in (cube.data_vars.items() if isinstance(cube, xr.Dataset) else cube.items()):
        attrs = getattr(var, "attrs", var if isinstance(var, Mapping) else {})
        if attrs.get("units") is not None:
            out[str(name)] = str(attrs["units"])
    return out


def _coarse(da: xr.DataArray, max_pixels: int) -> xr.DataArray:
    factor = int(np.ceil(max(da.sizes["y"], da.sizes["x"]) / max_pixels))
    return da.coarsen(y=factor, x=factor, boundary="trim").mean() if factor > 1 else da


def plot_attribution(attribution: xr.Dataset, species: str, variable: str | None = None, *,
                     groups: Mapping[str, Sequence[str]] | None = None, top: int = 8, max_pixels: int = 400) -> Any:
    """Map of one species' attribution to ``variable`` (diverging, symmetric), or with ``variable=None``
    the map of the covariate (or group) with the largest ``|attribution|`` in each cell: the local driver.

    Parameters
    ----------
    attribution
        Attribution cube (:func:`geosdm.explain.attribution_cube`, or the store it was written to).
    species
        The species (a data variable of the cube).
    variable
        A covariate to map; None: the dominant driver.
    groups
        ``{name: [covariates]}`` summed before choosing the dominant one (attributions add up; e.g.
        :func:`geosdm.explain.variable_groups`): collinear covariates otherwise split the map between them.
    top
        Drivers shown in the legend (by area); the others are drawn grey as "other".
    max_pixels
        Longer side of the coarsened map.

    Example
    -------
    >>> fig = plot_attribution(attribution_cube(model, cube, species=["plant_01"]), "plant_01")  # doctest: +SKIP
    """
    plt = _plt()
    if species not in attribution.data_vars:
        raise MissingVariableError(f"species {species!r} is not in the attribution cube; it has "
                                   f"{[str(v) for v in attribution.data_vars]}")
    a = attribution[species]
    if variable is not None:
        from geosdm.report.maps import layer_map

        fig, ax = plt.subplots(figsize=(4.6, 3.8), layout="constrained")
        layer = _coarse(a.sel(variable=variable), max_pixels).compute()
        lim = float(np.nanpercentile(np.abs(layer.values), 99)) if np.isfinite(layer.values).any() else 1.0
        return layer_map(layer, title=f"{species}: attribution to {variable}", cmap="RdBu_r", vmin=-lim, vmax=lim,
                         label="log-intensity", max_pixels=max_pixels, ax=ax)
    if groups:
        known = set(map(str, a["variable"].values))
        parts = {g: [v for v in vs if v in known] for g, vs in groups.items()}
        a = xr.concat([a.sel(variable=vs).sum("variable", skipna=False) for vs in parts.values() if vs],
                      dim="variable").assign_coords(variable=[g for g, vs in parts.items() if vs])
    small = _coarse(np.abs(a), max_pixels).compute()
    values = small.values
    valid = np.isfinite(values).all(axis=0)
    idx = np.where(valid, np.argmax(np.where(np.isfinite(values), values, -np.inf), axis=0), -1)
    names = [str(v) for v in small["variable"].values]
    present, counts = np.unique(idx[idx >= 0], return_counts=True)
    shown = [int(i) for i in present[np.argsort(-counts)][: max(int(top), 1)]]
    img = np.full(idx.shape, np.nan)
    for k, i in enumerate(shown):
        img[idx == i] = k
    other = valid & ~np.isin(idx, shown)
    img[other] = len(shown)
    from matplotlib.colors import ListedColormap

    base = plt.get_cmap("tab10" if len(shown) <= 10 else "tab20")
    colors = [base(k % base.N) for k in range(len(shown))] + [(0.75, 0.75, 0.75, 1.0)]
    fig, ax = plt.subplots(figsize=(5.4, 3.8), layout="constrained")
    x, y = small["x"].values, small["y"].values
    ax.imshow(img, extent=(x.min(), x.max(), y.min(), y.max()), origin="upper" if y[0] > y[-1] else "lower",
              cmap=ListedColormap(colors), vmin=-0.5, vmax=len(shown) + 0.5, interpolation="nearest")
    labels = [names[i] for i in shown] + (["other"] if other.any() else [])
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[k]) for k in range(len(labels))]
    ax.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(f"{species}: dominant driver{' group' if groups else ''} (max |attribution|)", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def plot_mess(extrapolation: xr.Dataset, *, max_pixels: int = 400, floor: float = -100.0,
              exclude: Sequence[str] = (), limit: float | None = None) -> Any:
    """Map of the MESS in diverging colours centred on 0: red outside the training range (extrapolation),
    blue inside it, white at its edge.

    The colour range is symmetric, ``±limit`` (None: the 99th percentile of ``|MESS|``, kept within
    [10, 100]), values beyond it clipped (and never below ``floor``), so a map whose cells sit between -5 and
    40 is not one flat colour on a -100..100 scale. ``exclude`` leaves variables out of the minimum (from the
    ``similarity`` layers): class fractions, whose training minimum is their floor 0, put every cell without a
    class at the edge of the range (similarity 0) and make the MESS 0 everywhere.

    Example
    -------
    >>> fig = plot_mess(mess(reference, "cube.zarr"), exclude=["lc_1", "lc_2"])  # doctest: +SKIP
    """
    from matplotlib.colors import TwoSlopeNorm

    from geosdm.report.maps import layer_map

    layer = extrapolation["mess"]
    dropped: list[str] = []
    if exclude and "similarity" in extrapolation:
        names = [str(v) for v in extrapolation["variable"].values]
        keep = [v for v in names if v not in set(exclude)]
        dropped = [v for v in names if v in set(exclude)]
        if keep and dropped:
            layer = extrapolation["similarity"].sel(variable=keep).min("variable", skipna=False)
    layer = _coarse(layer, max_pixels).clip(min=floor).compute()
    values = np.abs(layer.values[np.isfinite(layer.values)])
    lim = float(limit) if limit is not None else float(np.clip(np.percentile(values, 99) if values.size else 100, 10, 100))
    title = "MESS (< 0: outside the training range)" + ("\nclass fractions left out" if dropped else "")
    return layer_map(layer, title=title, cmap="RdBu", norm=TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim),
                     label="environmental similarity (%)", max_pixels=max_pixels)
