"""Quick-look maps of lazy layers for reports: coarsened on the fly, so a country-scale layer costs little."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from geosdm.errors import InputError

__all__ = ["layer_map", "layer_maps"]


def _coarse(da: xr.DataArray, max_pixels: int) -> xr.DataArray:
    """Block-mean ``da`` (y, x) so its longer side is at most ``max_pixels`` (lazy until plotted)."""
    factor = int(np.ceil(max(da.sizes["y"], da.sizes["x"]) / max_pixels))
    if factor <= 1:
        return da
    return da.coarsen(y=factor, x=factor, boundary="trim").mean()


def layer_map(da: xr.DataArray, *, title: str | None = None, cmap: str = "viridis", vmin: float | None = 0.0,
              vmax: float | None = 1.0, label: str = "probability", max_pixels: int = 600, ax: Any = None) -> Any:
    """A map figure of one ``(y, x)`` layer (e.g. one species' probability), coarsened to ``max_pixels``.

    Example
    -------
    >>> fig = layer_map(prob.probability.sel(species="plant_01"))  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if set(da.dims) != {"y", "x"}:
        raise InputError(f"layer_map needs a (y, x) layer; got dims {da.dims}. Select one layer first (.sel)")
    small = _coarse(da, max_pixels).compute()
    fig = ax.figure if ax is not None else plt.figure(figsize=(4.2, 3.6))
    ax = ax or fig.add_subplot()
    x, y = small["x"].values, small["y"].values
    extent = (x.min(), x.max(), y.min(), y.max())
    im = ax.imshow(small.values, extent=extent, origin="upper" if y[0] > y[-1] else "lower", cmap=cmap,
                   vmin=vmin, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label=label)
    ax.set_title(title if title is not None else str(da.name), fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def layer_maps(layers: xr.DataArray, names: Sequence[str], **kwargs: Any) -> list[Any]:
    """One :func:`layer_map` per label of a ``(layer, y, x)`` array (e.g. a few species)."""
    dim = str(layers.dims[0])
    return [layer_map(layers.sel({dim: n}), title=str(n), **kwargs) for n in names]
