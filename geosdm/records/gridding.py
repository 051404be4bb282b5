"""Put records on the grid: reproject, find each record's cell, aggregate per species and cell.

Aggregation follows the integrated-SDM likelihoods (docs/architecture.md): presence-only records become counts
per cell (a thinned Poisson process); presence/absence plots in one cell combine into one detection (any
presence) over the summed surveyed area, since P(no detection) = prod exp(-A_i λ) = exp(-(sum A_i) λ); counts add
up over the summed area (Poisson(sum A_i λ)).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from odc.geo.geobox import GeoBox

from geosdm.errors import InputError
from geosdm.records.coords import cell_centres, cell_index, records_xy
from geosdm.records.schema import check_records, conform, crs_string

__all__ = ["aggregate_to_cells", "assign_cells", "rasterize_counts", "to_crs"]


def to_crs(records: pd.DataFrame, crs: Any) -> pd.DataFrame:
    """Copy of ``records`` with x/y reprojected to ``crs`` (each row from its own ``crs``).

    Example
    -------
    >>> lamb = to_crs(recs, "EPSG:2154")  # doctest: +SKIP
    """
    check_records(records)
    target = crs_string(crs)
    x, y = records_xy(records, target)
    out = records.copy()
    out["x"], out["y"] = x, y
    out["crs"] = pd.Series(target, index=out.index, dtype="string")
    return out


def assign_cells(records: pd.DataFrame, geobox: GeoBox) -> pd.DataFrame:
    """Copy of ``records`` with ``row`` and ``col`` (int64) of the grid cell holding each record.

    Raises
    ------
    InputError
        When a record lies outside the grid (validate first: ``validate_records(records, geobox=geobox)``).
    """
    check_records(records)
    x, y = records_xy(records, geobox.crs)
    row, col, inside = cell_index(geobox, x, y)
    if not inside.all():
        raise InputError(
            f"{int((~inside).sum())} of {len(records)} records lie outside the grid {tuple(geobox.shape)} "
            f"({geobox.crs}); drop them first with validate_records(records, geobox=geobox)"
        )
    out = records.copy()
    out["row"], out["col"] = row, col
    return out


def aggregate_to_cells(records: pd.DataFrame, geobox: GeoBox) -> pd.DataFrame:
    """Aggregate records to grid cells: one row per data set, kind, species and cell.

    Parameters
    ----------
    records
        Validated records table (all rows inside the grid).
    geobox
        Target grid (the cube's ``cube.odc.geobox``).

    Returns
    -------
    pandas.DataFrame
        A records table on the grid: ``x``/``y`` are cell centres in the grid CRS, plus ``row``, ``col``,
        ``n_records`` and ``n_plots``. ``value`` is the number of records (presence-only), 1 if any plot
        detected the species else 0 (presence/absence), or the summed count (count); ``plot_area_m2`` and
        ``effort`` are sums over the cell's records (NaN when all are unknown); ``date`` is the latest date;
        ``plot_id`` is ``<NA>``. Background rows are aggregated like presence-only rows (value stays 0).

    Example
    -------
    >>> cells = aggregate_to_cells(valid, cube.odc.geobox)  # doctest: +SKIP
    """
    on_grid = assign_cells(records, geobox)
    key = ["dataset", "kind", "species", "row", "col"]
    frame = on_grid[[*key, "value", "plot_area_m2", "effort", "plot_id", "date"]].copy()
    frame["kind"] = frame["kind"].astype(str)
    grouped = frame.groupby(key, sort=True, dropna=False)
    agg = grouped.agg(
        value_sum=("value", "sum"),
        value_max=("value", "max"),
        n_records=("value", "size"),
        plot_area_m2=("plot_area_m2", lambda s: s.sum(min_count=1)),
        effort=("effort", lambda s: s.sum(min_count=1)),
        n_plots=("plot_id", "nunique"),
        date=("date", "max"),
    ).reset_index()
    kind = agg["kind"].to_numpy()
    agg["value"] = np.select(
        [kind == "presence_only", kind == "presence_absence", kind == "count"],
        [agg["n_records"].to_numpy(dtype="float64"), agg["value_max"], agg["value_sum"]],
        default=0.0,
    )
    x, y = cell_centres(geobox, agg["row"].to_numpy(), agg["col"].to_numpy())
    out = pd.DataFrame(
        {
            "species": agg["species"],
            "x": x,
            "y": y,
            "crs": crs_string(geobox.crs),
            "kind": agg["kind"],
            "value": agg["value"],
            "plot_id": pd.NA,
            "plot_area_m2": agg["plot_area_m2"],
            "effort": agg["effort"],
            "date": agg["date"],
            "dataset": agg["dataset"],
            "row": agg["row"].astype("int64"),
            "col": agg["col"].astype("int64"),
            "n_records": agg["n_records"].astype("int64"),
            "n_plots": agg["n_plots"].astype("int64"),
        }
    )
    return conform(out)


def rasterize_counts(
    records: pd.DataFrame,
    geobox: GeoBox,
    *,
    species: list[str] | None = None,
    kinds: tuple[str, ...] = ("presence_only",),
) -> xr.DataArray:
    """Number of records per species and cell as a dense ``(species, y, x)`` int32 DataArray on ``geobox``.

    Parameters
    ----------
    records
        Validated records table (all rows inside the grid).
    geobox
        Target grid.
    species
        Species layers to build, in order (default: all species of the selected kinds, sorted).
    kinds
        Record kinds counted (default presence-only; use ``("presence_absence",)`` with value 1 rows for
        survey detections).

    Returns
    -------
    xarray.DataArray
        ``(species, y, x)`` counts with the grid's ``spatial_ref`` coordinate. Memory: n_species x ny x nx x 4 B.
    """
    from geosdm.grid import grid_coords

    sel = records[records["kind"].astype(str).isin(kinds) & (records["value"] > 0)]
    names = sorted(sel["species"].dropna().unique()) if species is None else list(species)
    on_grid = assign_cells(sel[sel["species"].isin(names)], geobox)
    ny, nx = geobox.shape
    counts = np.zeros((len(names), ny, nx), dtype=np.int32)
    code = pd.Categorical(on_grid["species"], categories=names).codes
    np.add.at(counts, (code, on_grid["row"].to_numpy(), on_grid["col"].to_numpy()), 1)
    return xr.DataArray(
        counts,
        dims=("species", "y", "x"),
        coords={"species": names, **grid_coords(geobox)},
        attrs={"units": "records per cell", "long_name": "record counts"},
        name="record_count",
    )
