"""The species-records schema: one pandas table for presence-only, presence/absence, count and background rows.

A *records table* is a :class:`pandas.DataFrame` with the columns of :data:`COLUMNS` (in that order, with the
dtypes of :data:`DTYPES`), followed by any extra columns a source carries (covariates, ``group``,
``basisOfRecord``...). One row is one observation of one species at one point:

============== ================ =====================================================================
column         dtype            meaning
============== ================ =====================================================================
species        string           taxon name or code; ``<NA>`` only for ``kind="background"``
x, y           float64          coordinates in ``crs`` (lon/lat degrees for EPSG:4326, else CRS units)
crs            string           CRS of x/y, normalised to ``"EPSG:<code>"`` (WKT when it has no code)
kind           category         ``presence_only``, ``presence_absence``, ``count`` or ``background``
value          float64          1 for presence-only; 0/1 for presence/absence; >= 0 for counts; 0 for
                                background
plot_id        string           survey plot or site id (``<NA>`` for opportunistic records)
plot_area_m2   float64          surveyed area of the plot in m² (NaN when unknown)
effort         float64          sampling effort (visits, minutes, trap-nights...; NaN when unknown)
date           datetime64[ns]   observation date, UTC without time zone (NaT when unknown)
dataset        string           source data set (GBIF datasetKey or name, survey scheme...)
============== ================ =====================================================================

Tables are written as Parquet (or GeoParquet) with :func:`write_records` and read back with
:func:`geosdm.records.read_records`.
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from odc.geo import CRS

from geosdm.errors import InputError, MissingVariableError

__all__ = [
    "COLUMNS",
    "NON_COVARIATES",
    "DTYPES",
    "KINDS",
    "KIND_DTYPE",
    "REQUIRED",
    "check_records",
    "conform",
    "crs_string",
    "empty_records",
    "write_records",
]

#: Observation kinds, in the category order used by the ``kind`` column.
KINDS: Final = ("presence_only", "presence_absence", "count", "background")
KIND_DTYPE: Final = pd.CategoricalDtype(list(KINDS))

#: Schema columns and their meaning (see the module docstring for units).
COLUMNS: Final[dict[str, str]] = {
    "species": "taxon name or code (<NA> for background rows)",
    "x": "x / longitude in `crs` units",
    "y": "y / latitude in `crs` units",
    "crs": "CRS of x/y as 'EPSG:<code>' or WKT",
    "kind": "presence_only | presence_absence | count | background",
    "value": "1 (presence-only), 0/1 (presence/absence), count >= 0, 0 (background)",
    "plot_id": "survey plot / site id",
    "plot_area_m2": "surveyed plot area in m²",
    "effort": "sampling effort (source units)",
    "date": "observation date (UTC, tz-naive)",
    "dataset": "source data set name or key",
}

#: Columns of records and training tables that are never covariates: the schema, gridding and site bookkeeping,
#: folds and the Darwin Core columns readers keep (``row``/``col`` would otherwise pass for numeric covariates).
NON_COVARIATES: Final[frozenset[str]] = frozenset({
    *COLUMNS, "row", "col", "fold", "n_records", "n_plots", "visit", "siteid", "group", "record", "row0", "family",
    "occurrenceID", "basisOfRecord", "coordinateUncertaintyInMeters", "countryCode", "gbifID",
})

DTYPES: Final[dict[str, Any]] = {
    "species": pd.StringDtype(),
    "x": np.dtype("float64"),
    "y": np.dtype("float64"),
    "crs": pd.StringDtype(),
    "kind": KIND_DTYPE,
    "value": np.dtype("float64"),
    "plot_id": pd.StringDtype(),
    "plot_area_m2": np.dtype("float64"),
    "effort": np.dtype("float64"),
    "date": np.dtype("datetime64[ns]"),
    "dataset": pd.StringDtype(),
}

#: Columns a source must provide (the others default to missing values).
REQUIRED: Final = ("x", "y", "crs", "kind", "value")


def crs_string(crs: Any) -> str:
    """Normalise a CRS-like value (``"EPSG:2154"``, ``2154``, WKT, pyproj/odc CRS) to ``"EPSG:<code>"`` or WKT.

    Raises
    ------
    InputError
        When the value is not a CRS pyproj understands.

    Example
    -------
    >>> crs_string(4326)
    'EPSG:4326'
    """
    if crs is None or (isinstance(crs, float) and np.isnan(crs)) or crs is pd.NA:
        raise InputError("CRS is missing; give one such as 'EPSG:4326' (lon/lat) or 'EPSG:2154' (Lambert-93)")
    try:
        parsed = CRS(int(crs) if isinstance(crs, (int, np.integer)) else crs)
    except Exception as err:  # pyproj raises several types
        raise InputError(f"CRS {crs!r} is not understood ({err}); give e.g. 'EPSG:4326' or a WKT string") from None
    return f"EPSG:{parsed.epsg}" if parsed.epsg is not None else parsed.wkt


def empty_records() -> pd.DataFrame:
    """An empty records table with the schema's columns and dtypes."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in DTYPES.items()})


def _to_datetime(values: pd.Series) -> pd.Series:
    """ISO 8601 dates (full, partial or ``start/end`` intervals) to tz-naive UTC ``datetime64[ns]``."""
    if pd.api.types.is_datetime64_any_dtype(values):
        out = pd.to_datetime(values, utc=True)
    else:
        text = values.astype("string").str.split("/", n=1).str[0].str.strip()
        out = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    return out.dt.tz_convert(None).astype("datetime64[ns]")


def _clean_strings(values: pd.Series) -> pd.Series:
    """Strip whitespace, empty -> <NA>, as pandas ``string`` dtype (work done once per distinct value)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    clean = pd.array([str(u).strip() for u in uniques], dtype="string")
    clean[clean == ""] = pd.NA
    return pd.Series(clean.take(codes, allow_fill=True), index=values.index, dtype="string")


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """Coerce a table that already uses the schema's column names to the schema's dtypes and column order.

    Missing optional columns are added with missing values; extra columns are kept after the schema columns.
    CRS strings are normalised with :func:`crs_string`; dates are parsed as ISO 8601 (unparseable -> NaT).

    Raises
    ------
    MissingVariableError
        When a column of :data:`REQUIRED` is absent.
    InputError
        When ``kind`` holds values other than :data:`KINDS` or ``x``/``y``/``value`` are not numeric.
    """
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise MissingVariableError(
            f"records table lacks column(s) {missing}; it has {list(frame.columns)}. "
            "Read files with geosdm.records.read_records(...) or pass crs=/kind= to records_from_frame(...)."
        )
    out = frame.copy()
    for name, dtype in DTYPES.items():
        if name not in out.columns:
            out[name] = pd.Series(pd.NA if dtype == pd.StringDtype() else np.nan, index=out.index, dtype=dtype)
            continue
        col = out[name]
        if name == "kind":
            bad = sorted(set(col.dropna().astype(str)) - set(KINDS))
            if bad:
                raise InputError(f"records column 'kind' has unknown value(s) {bad}; use one of {list(KINDS)}")
            out[name] = col.astype(str).where(col.notna(), None).astype(KIND_DTYPE)
        elif name == "date":
            out[name] = _to_datetime(col)
        elif name == "crs":
            uniq = {v: crs_string(v) for v in pd.unique(col.dropna())}
            out[name] = col.map(uniq).astype(dtype)
        elif dtype == pd.StringDtype():
            out[name] = _clean_strings(col)
        else:
            try:
                out[name] = pd.to_numeric(col, errors="raise").astype(dtype)
            except (TypeError, ValueError):
                raise InputError(
                    f"records column {name!r} must be numeric; found values like {col.dropna().iloc[:3].tolist()}. "
                    "Fix the source file or map the right column with rename=."
                ) from None
    extras = [c for c in out.columns if c not in DTYPES]
    return out[[*DTYPES, *extras]]


def check_records(frame: pd.DataFrame) -> None:
    """Raise when ``frame`` does not follow the records schema (columns and dtypes); return None otherwise.

    Raises
    ------
    MissingVariableError
        A schema column is absent.
    InputError
        A schema column has the wrong dtype (run :func:`conform` first).
    """
    missing = [c for c in DTYPES if c not in frame.columns]
    if missing:
        raise MissingVariableError(
            f"records table lacks schema column(s) {missing}; build it with geosdm.records.read_records(...) or "
            "records_from_frame(...), or run geosdm.records.conform(table)."
        )
    wrong = {c: str(frame[c].dtype) for c, d in DTYPES.items() if frame[c].dtype != d}
    if wrong:
        raise InputError(f"records columns have unexpected dtypes {wrong}; run geosdm.records.conform(table) first")


def write_records(
    records: pd.DataFrame,
    path: str | PathLike[str],
    *,
    geoparquet: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a records table to Parquet (``geoparquet=True``: GeoParquet with point geometry; needs one CRS).

    Parameters
    ----------
    records
        A records table (see :mod:`geosdm.records.schema`).
    path
        Output ``.parquet`` file; parent folders are created.
    geoparquet
        Also write a ``geometry`` column and GeoParquet metadata (all rows must share one CRS).
    metadata
        Extra key/value pairs stored in the Parquet file metadata.

    Returns
    -------
    Path
        The written file.
    """
    check_records(records)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    final, out = out, out.with_name(out.name + ".part")  # written aside, then renamed: never half a file
    if geoparquet:
        import geopandas as gpd

        crss = records["crs"].dropna().unique()
        if len(crss) != 1:
            raise InputError(
                f"GeoParquet needs one CRS per file; records have {list(crss)}. Reproject first "
                "(geosdm.records.to_crs(records, 'EPSG:...')) or write plain Parquet (geoparquet=False)."
            )
        gdf = gpd.GeoDataFrame(records, geometry=gpd.points_from_xy(records["x"], records["y"]), crs=str(crss[0]))
        gdf.to_parquet(out, index=False)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(records, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta.update({f"geosdm:{k}".encode(): str(v).encode() for k, v in (metadata or {}).items()})
        pq.write_table(table.replace_schema_metadata(meta), out)
    out.replace(final)
    return final
