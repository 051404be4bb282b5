"""Quick-look maps of lazy layers for reports: coarsened on the fly, so a country-scale layer costs little.

Each map carries what a reader needs to place and read it: axis ticks in the layer's CRS units (km for
metre grids, degrees for geographic ones), the CRS named under the map, a scale bar, a colour bar over the
map's own range (``vmin``/``vmax`` None: a rare species' 0-0.02 is not drawn as an empty 0-1 map; pass
``vmin=0, vmax=1`` for the fixed view) and, where cells have no value, a legend entry for the no-data colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from geosdm.errors import InputError

__all__ = ["NODATA_COLOR", "binary_map", "color_range", "layer_map", "layer_maps"]

NODATA_COLOR = "#bdbdbd"  # grey: no value (outside the cube's valid cells, e.g. a cloud gap or nodata input)


def _coarse(da: xr.DataArray, max_pixels: int) -> xr.DataArray:
    """Block-mean ``da`` (y, x) so its longer side is at most ``max_pixels`` (lazy until plotted)."""
    factor = int(np.ceil(max(da.sizes["y"], da.sizes["x"]) / max_pixels))
    if factor <= 1:
        return da
    return da.coarsen(y=factor, x=factor, boundary="trim").mean()


def color_range(values: Any, vmin: float | None = None, vmax: float | None = None) -> tuple[float, float]:
    """The colour range of a map: given bounds kept; a missing lower bound is 0 for non-negative layers (else
    the 1st percentile), a missing upper one the 99.5th percentile (so one hot cell does not wash the map out).

    Example
    -------
    >>> color_range(np.array([0.0, 0.01, 0.02]))
    (0.0, 0.01995)
    """
    v = np.asarray(values, dtype="float64")
    v = v[np.isfinite(v)]
    if vmin is None:
        vmin = 0.0 if (not v.size or v.min() >= 0) else float(np.percentile(v, 1))
    if vmax is None:
        vmax = float(np.percentile(v, 99.5)) if v.size else 1.0
    if not vmax > vmin:
        vmax = vmin + (abs(vmin) * 1e-3 or 1e-3)
    return float(vmin), float(vmax)


def _crs_of(da: xr.DataArray) -> Any:
    try:
        import odc.geo.xr  # noqa: F401  (the .odc accessor)

        return da.odc.crs
    except Exception:  # noqa: BLE001 - a layer without a grid mapping: no CRS to name
        return None


def _crs_name(crs: Any) -> str:
    if crs is None:
        return "CRS unknown"
    epsg = getattr(crs, "epsg", None)
    name = getattr(getattr(crs, "proj", None), "name", None)
    code = f"EPSG:{epsg}" if epsg else str(crs)[:40]
    return f"{code} ({name})" if name else code


def _nice(length: float) -> float:
    """1, 2 or 5 x 10^k at most ``length``."""
    if length <= 0:
        return 0.0
    e = 10 ** np.floor(np.log10(length))
    return float(max(m for m in (1, 2, 5) if m * e <= length) * e)


def _axes_and_scalebar(ax: Any, x: np.ndarray, y: np.ndarray, crs: Any) -> None:
    """Ticks in CRS units (km on metre grids), axis labels naming the CRS, and a scale bar in the lower left."""
    from matplotlib.ticker import FuncFormatter

    geographic = bool(getattr(crs, "geographic", False))
    width = float(x.max() - x.min()) or 1.0
    if geographic:
        ax.set_xlabel(f"longitude (°E)\n{_crs_name(crs)}", fontsize=7)
        ax.set_ylabel("latitude (°N)", fontsize=7)
        metres_per_unit = 111_320.0 * np.cos(np.deg2rad(float(np.mean(y))))
    else:
        km = FuncFormatter(lambda v, _: f"{v / 1000:,.0f}" if width >= 5_000 else f"{v / 1000:,.1f}")
        ax.xaxis.set_major_formatter(km)
        ax.yaxis.set_major_formatter(km)
        ax.set_xlabel(f"x (km)\n{_crs_name(crs)}", fontsize=7)
        ax.set_ylabel("y (km)", fontsize=7)
        units = getattr(crs, "units", ("metre",))
        metres_per_unit = 1.0 if (not units or str(units[0]).startswith("met")) else float("nan")
    ax.tick_params(labelsize=6)
    ax.locator_params(nbins=4)
    if not np.isfinite(metres_per_unit):
        return
    metres = _nice(width * metres_per_unit / 4)
    if metres <= 0:
        return
    length = metres / metres_per_unit
    x0 = float(x.min()) + 0.05 * width
    height = float(y.max() - y.min()) or 1.0
    y0 = float(y.min()) + 0.06 * height
    for color, lw in (("white", 5), ("black", 2.5)):
        ax.plot([x0, x0 + length], [y0, y0], color=color, lw=lw, solid_capstyle="butt", zorder=5)
    text = f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"
    ax.text(x0 + length / 2, y0 + 0.03 * height, text, ha="center", va="bottom", fontsize=7, zorder=6,
            bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1})


def _nodata_legend(ax: Any, image: np.ndarray) -> None:
    if not np.isnan(np.asarray(image, dtype="float64")).any():
        return
    import matplotlib.pyplot as plt

    ax.legend([plt.Rectangle((0, 0), 1, 1, color=NODATA_COLOR)], ["no data"], fontsize=6, loc="upper right",
              framealpha=0.8, handlelength=1.2, borderpad=0.3)


def layer_map(da: xr.DataArray, *, title: str | None = None, cmap: Any = "viridis", vmin: float | None = None,
              vmax: float | None = None, label: str = "probability", max_pixels: int = 600, ax: Any = None,
              norm: Any = None) -> Any:
    """A map figure of one ``(y, x)`` layer (e.g. one species' probability), coarsened to ``max_pixels``.

    ``vmin``/``vmax`` None: the map's own range (:func:`color_range`); ``vmin=0, vmax=1`` for the fixed
    probability view. ``norm`` (a matplotlib Normalize) overrides both, e.g. a diverging ``TwoSlopeNorm``.
    Cells without a value are drawn in :data:`NODATA_COLOR`, with a "no data" legend entry when there are any.

    Example
    -------
    >>> fig = layer_map(prob.probability.sel(species="plant_01"))  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if set(da.dims) != {"y", "x"}:
        raise InputError(f"layer_map needs a (y, x) layer; got dims {da.dims}. Select one layer first (.sel)")
    crs = _crs_of(da)
    small = _coarse(da, max_pixels).compute()
    values = np.asarray(small.values, dtype="float64")
    fig = ax.figure if ax is not None else plt.figure(figsize=(4.4, 3.9), layout="constrained")
    ax = ax or fig.add_subplot()
    x, y = small["x"].values, small["y"].values
    dx = abs(float(x[1] - x[0])) if x.size > 1 else 1.0
    dy = abs(float(y[1] - y[0])) if y.size > 1 else 1.0
    extent = (x.min() - dx / 2, x.max() + dx / 2, y.min() - dy / 2, y.max() + dy / 2)
    colormap = plt.get_cmap(cmap).with_extremes(bad=NODATA_COLOR)
    if norm is None:
        lo, hi = color_range(values, vmin, vmax)
        kw: dict[str, Any] = {"vmin": lo, "vmax": hi}
    else:
        lo, hi, kw = norm.vmin, norm.vmax, {"norm": norm}
    im = ax.imshow(np.ma.masked_invalid(values), extent=extent, origin="upper" if y[0] > y[-1] else "lower",
                   cmap=colormap, interpolation="nearest", **kw)
    finite = values[np.isfinite(values)]
    over = bool(finite.size and hi is not None and finite.max() > hi)
    under = bool(finite.size and lo is not None and finite.min() < lo)
    extend = {(True, True): "both", (True, False): "max", (False, True): "min"}.get((over, under), "neither")
    fig.colorbar(im, ax=ax, shrink=0.85, label=label, extend=extend)
    ax.set_title(title if title is not None else str(da.name), fontsize=10)
    _axes_and_scalebar(ax, np.asarray(extent[:2]), np.asarray(extent[2:]), crs)
    _nodata_legend(ax, values)
    return fig


def layer_maps(layers: xr.DataArray, names: Sequence[str], **kwargs: Any) -> list[Any]:
    """One :func:`layer_map` per label of a ``(layer, y, x)`` array (e.g. a few species)."""
    dim = str(layers.dims[0])
    return [layer_map(layers.sel({dim: n}), title=str(n), **kwargs) for n in names]


def binary_map(da: xr.DataArray, threshold: float, *, title: str | None = None, rule: str = "",
               max_pixels: int = 600) -> Any:
    """Presence (value >= ``threshold``) / absence map of one ``(y, x)`` layer, the rule and value in the title.

    Cells are thresholded at full resolution, then the presence share of each coarsened block is rounded
    (majority), so the map shows the thresholded layer, not a thresholded average.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    if set(da.dims) != {"y", "x"}:
        raise InputError(f"binary_map needs a (y, x) layer; got dims {da.dims}. Select one layer first (.sel)")
    crs = _crs_of(da)
    binary = xr.where(da.notnull(), (da >= threshold).astype("float32"), np.nan)
    small = _coarse(binary, max_pixels).compute()
    values = np.where(np.isfinite(small.values), np.round(small.values), np.nan)
    fig, ax = plt.subplots(figsize=(4.4, 3.9), layout="constrained")
    x, y = small["x"].values, small["y"].values
    dx = abs(float(x[1] - x[0])) if x.size > 1 else 1.0
    dy = abs(float(y[1] - y[0])) if y.size > 1 else 1.0
    extent = (x.min() - dx / 2, x.max() + dx / 2, y.min() - dy / 2, y.max() + dy / 2)
    cmap = ListedColormap(["#f7f4e8", "#1b7837"]).with_extremes(bad=NODATA_COLOR)
    ax.imshow(np.ma.masked_invalid(values), extent=extent, origin="upper" if y[0] > y[-1] else "lower", cmap=cmap,
              vmin=0, vmax=1, interpolation="nearest")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("#1b7837", "#f7f4e8", NODATA_COLOR)]
    labels = [f"presence (p ≥ {threshold:.3g})", "absence", "no data"]
    keep = 3 if np.isnan(values).any() else 2
    ax.legend(handles[:keep], labels[:keep], fontsize=6, loc="upper right", framealpha=0.85, handlelength=1.2,
              borderpad=0.3)
    name = title if title is not None else str(da.name)
    ax.set_title(f"{name}\n{rule}: {threshold:.3g}" if rule else name, fontsize=9)
    _axes_and_scalebar(ax, np.asarray(extent[:2]), np.asarray(extent[2:]), crs)
    return fig
