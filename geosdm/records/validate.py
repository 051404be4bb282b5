"""Validate a records table: every dropped row is counted under one reason, nothing disappears silently.

Reasons are checked in the order of :data:`REASONS`; a row is counted under the first one it fails:

=====================  ==============================================================================
reason                 rows
=====================  ==============================================================================
missing_species        no species name (background rows are exempt)
invalid_value          value not allowed for its kind (PO 1, PA 0/1, count >= 0, background 0) or
                       a non-positive plot area
invalid_coordinates    NaN/inf x or y, lon/lat outside [-180, 180] x [-90, 90], or (0, 0) in lon/lat
swapped_lat_lon        x/y swapped: lat outside +-90 but valid as lon, or outside the grid (or the
                       ``bounds``) while the swapped point is inside it (kept and swapped back with
                       ``fix_swapped=True``)
outside_grid           outside the GeoBox (only with ``geobox=``) or the lon/lat ``bounds=``
coordinate_uncertainty ``coordinate_uncertainty_m`` above ``max_uncertainty_m`` (metres)
duplicate              repeated row (``duplicates="exact"``), or a second presence-only record of
                       the same species and data set in one grid cell (``duplicates="cell"``)
=====================  ==============================================================================

A missing or unknown CRS is an error (:class:`~geosdm.errors.InputError`), not a dropped row.

Swapped coordinates inside the valid lon/lat ranges (France's (46, 3) for (3, 46)) are only found against a
region: the grid (``geobox=``, ``--cube``) or the study area's lon/lat ``bounds=`` (``--bbox``). Without one,
lon/lat records far outside the box that holds the bulk of the others (10th-90th percentiles, widened by
their span) whose swapped point falls inside it are counted in ``report.suspect`` and kept: a minority of
swapped rows stands out against the majority, a file swapped throughout needs the region.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import pandas as pd
from odc.geo import CRS
from odc.geo.geobox import GeoBox

from geosdm.errors import InputError
from geosdm.records.coords import cell_index, transform_xy
from geosdm.records.schema import check_records

__all__ = ["REASONS", "ValidationReport", "validate_records"]

log = logging.getLogger(__name__)

REASONS: Final = (
    "missing_species",
    "invalid_value",
    "invalid_coordinates",
    "swapped_lat_lon",
    "outside_grid",
    "coordinate_uncertainty",
    "duplicate",
)
_EXACT_KEY: Final = ("species", "x", "y", "crs", "kind", "value", "plot_id", "date", "dataset")


@dataclass(frozen=True, eq=False)
class ValidationReport:
    """What :func:`validate_records` kept, dropped (per reason) and fixed.

    Attributes
    ----------
    n_input, n_valid
        Row counts before and after validation.
    dropped
        ``{reason: count}`` for every reason in :data:`REASONS` (zeros included).
    fixed
        ``{reason: count}`` of rows repaired and kept (``swapped_lat_lon`` with ``fix_swapped=True``).
    suspect
        ``{reason: count}`` of rows kept that look wrong but cannot be checked without a region
        (``swapped_lat_lon``: see the module notes); their index labels in ``suspect_index``.
    dropped_index
        ``{reason: index labels}`` of the dropped rows in the input table.
    """

    n_input: int
    n_valid: int
    dropped: Mapping[str, int]
    fixed: Mapping[str, int] = field(default_factory=dict)
    dropped_index: Mapping[str, pd.Index] = field(default_factory=dict, repr=False)
    suspect: Mapping[str, int] = field(default_factory=dict)
    suspect_index: Mapping[str, pd.Index] = field(default_factory=dict, repr=False)

    @property
    def n_dropped(self) -> int:
        """Total number of dropped rows."""
        return int(sum(self.dropped.values()))

    def to_frame(self) -> pd.DataFrame:
        """One row per reason: ``reason``, ``dropped`` and ``fixed`` counts."""
        return pd.DataFrame(
            {
                "reason": list(REASONS),
                "dropped": [int(self.dropped.get(r, 0)) for r in REASONS],
                "fixed": [int(self.fixed.get(r, 0)) for r in REASONS],
            }
        )

    def __str__(self) -> str:
        lines = [f"{self.n_valid} of {self.n_input} records valid, {self.n_dropped} dropped"]
        lines += [f"  dropped {n:>8} {r}" for r, n in self.dropped.items() if n]
        lines += [f"  fixed   {n:>8} {r}" for r, n in self.fixed.items() if n]
        lines += [f"  suspect {n:>8} {r} (kept: far from the other records, among them with x and y swapped; "
                  "give the study region (bounds=, --bbox) or the grid (geobox=, --cube) to drop or fix them)"
                  for r, n in self.suspect.items() if n]
        return "\n".join(lines)


def _check_crs(records: pd.DataFrame) -> dict[str, CRS]:
    crs_col = records["crs"]
    if crs_col.isna().any():
        rows = records.index[crs_col.isna()][:5].tolist()
        raise InputError(
            f"{int(crs_col.isna().sum())} record(s) have no CRS (e.g. index {rows}); set the `crs` column or pass "
            "crs= to read_records(...)"
        )
    out: dict[str, CRS] = {}
    for value in pd.unique(crs_col):
        try:
            out[str(value)] = CRS(str(value))
        except Exception:
            raise InputError(
                f"records use an unknown CRS {str(value)[:80]!r}; fix the `crs` column (e.g. 'EPSG:4326')"
            ) from None
    return out


def _swap_suspects(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Lon/lat points far outside the box of the bulk of the others whose swapped point (y, x) falls inside it."""
    out = np.zeros(x.size, dtype=bool)
    if x.size < 10:
        return out
    (x0, x1), (y0, y1) = np.percentile(x, [10, 90]), np.percentile(y, [10, 90])
    px, py = max(x1 - x0, 1.0), max(y1 - y0, 1.0)  # widened by the span (at least 1 degree)

    def inside(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a >= x0 - px) & (a <= x1 + px) & (b >= y0 - py) & (b <= y1 + py)

    return ~inside(x, y) & inside(y, x)


def _invalid_value(records: pd.DataFrame) -> np.ndarray:
    kind = records["kind"].astype(str).to_numpy()
    value = records["value"].to_numpy(dtype="float64")
    area = records["plot_area_m2"].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore"):
        ok = np.select(
            [kind == "presence_only", kind == "presence_absence", kind == "count", kind == "background"],
            [value == 1, (value == 0) | (value == 1), (value >= 0) & (value == np.round(value)), value == 0],
            default=False,
        )
        ok &= np.isnan(area) | (area > 0)
    return ~ok


def validate_records(
    records: pd.DataFrame,
    *,
    geobox: GeoBox | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    duplicates: Literal["exact", "cell", "keep"] = "exact",
    max_uncertainty_m: float | None = None,
    fix_swapped: bool = False,
    on_invalid: Literal["drop", "raise"] = "drop",
) -> tuple[pd.DataFrame, ValidationReport]:
    """Check a records table and drop the rows that cannot be used, counting each under one reason.

    Parameters
    ----------
    records
        A records table (see :mod:`geosdm.records.schema`).
    geobox
        Grid the records must fall on; enables ``outside_grid``, grid-based swap detection and
        ``duplicates="cell"``.
    bounds
        The study region as lon/lat ``(west, south, east, north)`` when there is no grid yet (e.g. a pipeline's
        ``grid.bbox``): records outside it are dropped (``outside_grid``) and swapped ones found as with a grid.
    duplicates
        ``"exact"`` drops repeated rows, ``"cell"`` also keeps one presence-only record per species, data set
        and grid cell (needs ``geobox``), ``"keep"`` keeps duplicates.
    max_uncertainty_m
        Drop rows whose ``coordinate_uncertainty_m`` (metres, GBIF) exceeds this; rows without it are kept.
    fix_swapped
        Swap x/y back on ``swapped_lat_lon`` rows and keep them (counted in ``report.fixed``).
    on_invalid
        ``"drop"`` returns the valid rows; ``"raise"`` raises :class:`~geosdm.errors.InputError` if any row
        would be dropped.

    Returns
    -------
    (pandas.DataFrame, ValidationReport)
        The valid rows (original index kept) and the report.

    Raises
    ------
    InputError
        Missing or unknown CRS; any invalid row with ``on_invalid="raise"``; ``duplicates="cell"`` without a grid.

    Example
    -------
    >>> valid, report = validate_records(recs, geobox=cube.odc.geobox)  # doctest: +SKIP
    >>> print(report)  # doctest: +SKIP
    """
    check_records(records)
    if duplicates not in ("exact", "cell", "keep"):
        raise InputError(f"duplicates={duplicates!r} must be 'exact', 'cell' or 'keep'")
    if duplicates == "cell" and geobox is None:
        raise InputError("duplicates='cell' needs the grid: pass geobox= (e.g. cube.odc.geobox)")
    crs_map = _check_crs(records)
    region = geobox
    if region is None and bounds is not None:
        try:
            w, s, e, nn = (float(v) for v in bounds)
        except (TypeError, ValueError):
            raise InputError(f"bounds={bounds!r} is not 4 numbers; give (west, south, east, north) in lon/lat"
                             ) from None
        if not (-180 <= w < e <= 180 and -90 <= s < nn <= 90):
            raise InputError(f"bounds={bounds!r} is not a lon/lat box (west < east in [-180, 180], south < north in "
                             "[-90, 90]); give (west, south, east, north) in degrees")
        region = GeoBox.from_bbox((w, s, e, nn), "EPSG:4326", shape=(1, 1), tight=True)
    n = len(records)
    reason = np.full(n, "", dtype=object)

    def mark(mask: np.ndarray, name: str) -> None:
        reason[mask & (reason == "")] = name

    kind = records["kind"].astype(str).to_numpy()
    no_species = records["species"].isna().to_numpy() & (kind != "background")
    if no_species.any() and no_species.sum() == (kind != "background").sum():
        raise InputError(
            f"none of the {int(no_species.sum())} observation records has a species name, so every one would be "
            "dropped: the source has no species column under a known name (species, scientificName, taxon ...); "
            "rename it (read_records(rename={'<column>': 'species'})) or, for one column per species, use "
            "species_columns"
        )
    mark(no_species, "missing_species")
    mark(_invalid_value(records), "invalid_value")

    x = records["x"].to_numpy(dtype="float64").copy()
    y = records["y"].to_numpy(dtype="float64").copy()
    crs_col = records["crs"].astype(str).to_numpy()
    finite = np.isfinite(x) & np.isfinite(y)
    mark(~finite, "invalid_coordinates")
    swapped = np.zeros(n, dtype=bool)
    for crs_value, crs in crs_map.items():
        sel = (crs_col == crs_value) & finite
        if crs.geographic:
            bad = sel & ((np.abs(x) > 180) | (np.abs(y) > 90) | ((x == 0) & (y == 0)))
            swap = bad & (np.abs(y) <= 180) & (np.abs(x) <= 90) & ~((x == 0) & (y == 0))
            swapped |= swap
            mark(bad & ~swap, "invalid_coordinates")
    suspect = np.zeros(n, dtype=bool)
    if region is not None:
        row, col, inside = np.full(n, -1), np.full(n, -1), np.zeros(n, dtype=bool)
        sw_inside = np.zeros(n, dtype=bool)
        for crs_value in crs_map:
            sel = (crs_col == crs_value) & finite
            gx, gy = transform_xy(x[sel], y[sel], crs_value, region.crs)
            row[sel], col[sel], inside[sel] = cell_index(region, gx, gy)
            sx, sy = transform_xy(y[sel], x[sel], crs_value, region.crs)
            sw_inside[sel] = cell_index(region, sx, sy)[2]
        swapped |= finite & ~inside & sw_inside
    else:
        geo = np.isin(crs_col, [v for v, c in crs_map.items() if c.geographic]) & finite & (reason == "") & ~swapped
        suspect[geo] = _swap_suspects(x[geo], y[geo])
    fixed: dict[str, int] = {}
    if fix_swapped:
        keep = swapped & (reason == "")
        x[keep], y[keep] = y[keep].copy(), x[keep].copy()
        fixed["swapped_lat_lon"] = int(keep.sum())
        if region is not None and keep.any():
            for crs_value in crs_map:
                sel = keep & (crs_col == crs_value)
                gx, gy = transform_xy(x[sel], y[sel], crs_value, region.crs)
                row[sel], col[sel], inside[sel] = cell_index(region, gx, gy)
    else:
        mark(swapped, "swapped_lat_lon")
    if region is not None:
        mark(finite & ~inside, "outside_grid")
    if max_uncertainty_m is not None:
        if "coordinate_uncertainty_m" not in records.columns:
            raise InputError(
                "max_uncertainty_m was given but the records have no 'coordinate_uncertainty_m' column "
                "(GBIF coordinateUncertaintyInMeters); drop the option or add the column"
            )
        unc = records["coordinate_uncertainty_m"].to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(invalid="ignore"):
            mark(unc > float(max_uncertainty_m), "coordinate_uncertainty")

    out = records.copy()
    if fix_swapped:
        out["x"], out["y"] = x, y
    ok = reason == ""
    if duplicates != "keep":
        candidates = out[ok]
        dup = np.zeros(n, dtype=bool)
        dup[np.flatnonzero(ok)] = candidates.duplicated(subset=list(_EXACT_KEY), keep="first").to_numpy()
        if duplicates == "cell":
            po = ok & ~dup & (kind == "presence_only")
            key = pd.DataFrame(
                {
                    "species": out["species"].to_numpy()[po],
                    "dataset": out["dataset"].to_numpy()[po],
                    "row": row[po],
                    "col": col[po],
                }
            )
            dup[np.flatnonzero(po)] = key.duplicated(keep="first").to_numpy()
        mark(dup, "duplicate")

    ok = reason == ""
    counts = {r: int((reason == r).sum()) for r in REASONS}
    dropped_index = {r: records.index[reason == r] for r in REASONS if counts[r]}
    suspect &= ok
    report = ValidationReport(
        n_input=n, n_valid=int(ok.sum()), dropped=counts, fixed=fixed, dropped_index=dropped_index,
        suspect={"swapped_lat_lon": int(suspect.sum())} if suspect.any() else {},
        suspect_index={"swapped_lat_lon": records.index[suspect]} if suspect.any() else {},
    )
    if suspect.any():
        log.warning("records validation: %d record(s) look like swapped lon/lat (e.g. index %s), kept; give the "
                    "study region (bounds=, --bbox) or the grid to check them", int(suspect.sum()),
                    records.index[suspect][:5].tolist())
    if report.n_dropped:
        if on_invalid == "raise":
            raise InputError(
                f"records failed validation:\n{report}\nFix the source rows (see report.dropped_index) or "
                "validate with on_invalid='drop' to drop and count them."
            )
        log.warning("records validation: %s", str(report).replace("\n", ";"))
    return out[ok], report
