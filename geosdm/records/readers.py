"""Read species records (CSV, Parquet/GeoParquet, GBIF / Darwin Core downloads) into the records schema.

Column names are matched case-insensitively against common aliases (``decimalLongitude`` -> ``x``,
``scientificName`` -> ``species``, ``eventDate`` -> ``date``, ``siteid`` -> ``plot_id``...); lon/lat columns
imply EPSG:4326. Anything not recognised is kept as an extra column. A file with projected coordinates and no CRS
is an error, never a guess.
"""

from __future__ import annotations

import csv
import logging
import zipfile
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import IO, Any, Final, Literal

import numpy as np
import pandas as pd

from geosdm.errors import DataSourceError, InputError
from geosdm.records.schema import KINDS, conform, crs_string

__all__ = [
    "ALIASES",
    "GBIF_COLUMNS",
    "read_gbif",
    "read_records",
    "read_records_csv",
    "read_records_parquet",
    "records_from_frame",
]

log = logging.getLogger(__name__)

#: Source column names recognised for each schema column (first match wins, case-insensitive).
ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "species": ("species", "scientificName", "scientific_name", "species_name", "taxon", "taxon_name", "spid"),
    "x": ("x", "decimalLongitude", "longitude", "lon", "long", "lng"),
    "y": ("y", "decimalLatitude", "latitude", "lat"),
    "crs": ("crs", "epsg"),
    "kind": ("kind",),
    "value": ("value", "occ", "occurrence", "presence", "abundance"),
    "plot_id": ("plot_id", "plotid", "plot", "site_id", "siteid", "site", "survey_id", "eventID"),
    "plot_area_m2": ("plot_area_m2", "area_m2", "plot_area"),
    "effort": ("effort",),
    "date": ("date", "eventDate", "observation_date"),
    "dataset": ("dataset", "datasetName", "dataset_name", "datasetKey"),
}
_LONLAT: Final = frozenset({"decimallongitude", "longitude", "lon", "long", "lng"})

#: Columns kept from GBIF occurrence downloads (all others are skipped while reading).
GBIF_COLUMNS: Final = (
    "gbifID",
    "datasetKey",
    "datasetName",
    "occurrenceID",
    "basisOfRecord",
    "species",
    "scientificName",
    "taxonRank",
    "decimalLongitude",
    "decimalLatitude",
    "coordinateUncertaintyInMeters",
    "occurrenceStatus",
    "individualCount",
    "eventDate",
    "eventID",
    "countryCode",
)

Kind = Literal["presence_only", "presence_absence", "count", "background"]


def _match_columns(columns: list[str], rename: Mapping[str, str] | None) -> dict[str, str]:
    """Map source column -> schema column using ``rename`` first, then :data:`ALIASES`."""
    mapping: dict[str, str] = {}
    for src, dst in (rename or {}).items():
        if src not in columns:
            raise InputError(f"rename maps column {src!r}, which is absent; the table has {columns}")
        mapping[src] = dst
    lower = {c.lower(): c for c in columns}
    for target, aliases in ALIASES.items():
        if target in mapping.values():
            continue
        for alias in aliases:
            src = lower.get(alias.lower())
            if src is not None and src not in mapping:
                mapping[src] = target
                break
    return mapping


def records_from_frame(
    frame: pd.DataFrame,
    *,
    crs: Any | None = None,
    kind: Kind | None = None,
    dataset: str | None = None,
    rename: Mapping[str, str] | None = None,
    source: str = "table",
) -> pd.DataFrame:
    """Turn any table of species observations into a records table (see :mod:`geosdm.records.schema`).

    Parameters
    ----------
    frame
        Source table; columns are matched against :data:`ALIASES` (case-insensitive).
    crs
        CRS of the coordinates when the table has no ``crs`` column; lon/lat column names imply EPSG:4326.
    kind
        Observation kind for every row when the table has no ``kind`` column. Without either, rows are
        presence-only when there is no value column, and an error otherwise (the kind would be a guess).
        ``"background"`` rows carry no species (a species column is cleared).
    dataset
        Data-set name for rows without one (default: ``source``).
    rename
        Explicit ``{source column: schema column}`` mapping, applied before the aliases.
    source
        Name of the input, used in messages and as the default data-set name.

    Returns
    -------
    pandas.DataFrame
        Records table: schema columns first, then the unmatched source columns.

    Raises
    ------
    InputError
        No usable coordinates, unknown CRS, or an ambiguous kind.

    Example
    -------
    >>> df = pd.DataFrame({"species": ["a"], "decimalLongitude": [3.1], "decimalLatitude": [43.6]})
    >>> records_from_frame(df)[["species", "x", "y", "crs", "kind", "value"]].iloc[0].tolist()
    ['a', 3.1, 43.6, 'EPSG:4326', 'presence_only', 1.0]
    """
    if kind is not None and kind not in KINDS:
        raise InputError(f"kind={kind!r} is not one of {list(KINDS)}")
    mapping = _match_columns([str(c) for c in frame.columns], rename)
    # drop schema-named columns that an alias or rename replaces, so renaming cannot create duplicates
    clashes = [c for c in frame.columns if c in mapping.values() and c not in mapping]
    out = frame.drop(columns=clashes).rename(columns=mapping)
    for coord in ("x", "y"):
        if coord not in out.columns:
            raise InputError(
                f"{source}: no {coord} coordinate column among {list(frame.columns)}; name it "
                f"{' / '.join(ALIASES[coord][:3])} or pass rename={{'<column>': '{coord}'}}"
            )
    if "crs" not in out.columns:
        lonlat = any(src.lower() in _LONLAT for src, dst in mapping.items() if dst == "x")
        if crs is None and not lonlat:
            raise InputError(
                f"{source}: coordinates x/y have no CRS (no 'crs' column and no lon/lat column names); "
                "pass crs='EPSG:<code>' (e.g. 'EPSG:2154' for Lambert-93) or add a 'crs' column"
            )
        out["crs"] = crs_string(crs if crs is not None else "EPSG:4326")
    elif crs is not None:
        out["crs"] = out["crs"].fillna(crs_string(crs))
    if "kind" in out.columns:
        if kind is not None:
            raise InputError(f"{source}: has a 'kind' column and kind={kind!r} was also given; drop one of them")
    elif kind is not None:
        out["kind"] = kind
        if kind == "background" and "species" in out.columns:
            out["species"] = pd.NA  # background points belong to no species (e.g. NCEAS 'pseudo1')
    elif "value" not in out.columns:
        out["kind"] = "presence_only"
    else:
        raise InputError(
            f"{source}: has a value column but no 'kind' column; pass kind='presence_only', "
            "'presence_absence' or 'count' (or add a 'kind' column)"
        )
    if "value" not in out.columns:
        out["value"] = np.where(out["kind"].astype(str) == "background", 0.0, 1.0)
    if "dataset" not in out.columns:
        out["dataset"] = dataset or source
    elif dataset is not None:
        out["dataset"] = out["dataset"].fillna(dataset)
    return conform(out)


def _sniff_sep(first_line: str) -> str:
    if "\t" in first_line:
        return "\t"
    if ";" in first_line and "," not in first_line:
        return ";"
    return ","


def read_records_csv(
    path: str | PathLike[str],
    *,
    crs: Any | None = None,
    kind: Kind | None = None,
    dataset: str | None = None,
    rename: Mapping[str, str] | None = None,
    sep: str | None = None,
) -> pd.DataFrame:
    """Read a delimited text file (``,``, ``;`` or tab, sniffed from the header) into a records table.

    See :func:`records_from_frame` for ``crs``, ``kind``, ``dataset`` and ``rename``. GBIF simple downloads
    (tab-separated, ``occurrenceStatus`` column) are routed to :func:`read_gbif`.
    """
    p = _existing(path)
    with p.open("r", encoding="utf-8-sig") as fh:
        header = fh.readline()
    sep = sep or _sniff_sep(header)
    if sep == "\t" and "decimalLongitude" in header and "gbifID" in header:
        return read_gbif(p, dataset=dataset)
    frame = pd.read_csv(p, sep=sep, encoding="utf-8-sig", low_memory=False)
    return records_from_frame(frame, crs=crs, kind=kind, dataset=dataset, rename=rename, source=p.name)


def read_records_parquet(
    path: str | PathLike[str],
    *,
    crs: Any | None = None,
    kind: Kind | None = None,
    dataset: str | None = None,
    rename: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Read Parquet or GeoParquet into a records table.

    GeoParquet point geometries give ``x``/``y`` and their CRS; plain Parquet takes the CRS from a ``crs``
    column, the file metadata key ``geosdm:crs`` or ``crs=``.
    """
    import pyarrow.parquet as pq

    p = _existing(path)
    meta = pq.read_schema(p).metadata or {}
    if b"geo" in meta:
        import geopandas as gpd

        gdf = gpd.read_parquet(p)
        geom = gdf.geometry
        if not (geom.geom_type == "Point").all():
            raise InputError(f"{p.name}: GeoParquet geometries must all be points; found {sorted(set(geom.geom_type))}")
        frame = pd.DataFrame(gdf.drop(columns=gdf.geometry.name))
        if "x" not in frame.columns or "y" not in frame.columns:
            frame["x"], frame["y"] = geom.x.to_numpy(), geom.y.to_numpy()
        if crs is None and "crs" not in frame.columns and gdf.crs is not None:
            crs = gdf.crs.to_wkt() if gdf.crs.to_epsg() is None else f"EPSG:{gdf.crs.to_epsg()}"
    else:
        frame = pd.read_parquet(p)
        if crs is None and b"geosdm:crs" in meta:
            crs = meta[b"geosdm:crs"].decode()
    return records_from_frame(frame, crs=crs, kind=kind, dataset=dataset, rename=rename, source=p.name)


def _gbif_table(handle: IO[bytes] | Path) -> pd.DataFrame:
    return pd.read_csv(
        handle,
        sep="\t",
        quoting=csv.QUOTE_NONE,
        dtype=str,
        usecols=lambda c: c in GBIF_COLUMNS,
        keep_default_na=False,
        na_values=[""],
        encoding="utf-8",
    )


def read_gbif(path: str | PathLike[str], *, dataset: str | None = None) -> pd.DataFrame:
    """Read a GBIF occurrence download: Darwin Core Archive (zip with ``occurrence.txt``), simple CSV download
    (zip with one tab-separated ``<key>.csv``) or an extracted ``occurrence.txt`` / ``.csv``.

    Coordinates are WGS84 lon/lat (EPSG:4326). Kind: rows of a data set (``datasetKey``) that reports any
    ``occurrenceStatus=ABSENT`` are ``presence_absence`` (value 1 present, 0 absent); other rows are
    ``presence_only``. ``individualCount`` and ``coordinateUncertaintyInMeters`` are kept as
    ``individual_count`` and ``coordinate_uncertainty_m`` (metres).

    Raises
    ------
    DataSourceError
        The archive has no occurrence table.
    """
    p = _existing(path)
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            member = next((n for n in names if Path(n).name == "occurrence.txt"), None)
            if member is None:
                tables = [n for n in names if n.lower().endswith((".csv", ".txt")) and "/" not in n.strip("/")]
                tables = [n for n in tables if Path(n).name not in {"verbatim.txt", "citations.txt", "rights.txt"}]
                if len(tables) != 1:
                    raise DataSourceError(
                        f"{p.name}: no occurrence.txt and not exactly one table in the archive ({names}); "
                        "give a GBIF DwC-A or simple-CSV download zip"
                    )
                member = tables[0]
            with zf.open(member) as fh:
                raw = _gbif_table(fh)
    else:
        raw = _gbif_table(p)
    for col in ("decimalLongitude", "decimalLatitude"):
        if col not in raw.columns:
            raise InputError(f"{p.name}: GBIF table lacks {col!r}; export a download with coordinates")
    frame = pd.DataFrame(
        {
            "species": raw["species"] if "species" in raw.columns else pd.Series(pd.NA, index=raw.index),
            "x": pd.to_numeric(raw["decimalLongitude"], errors="coerce"),
            "y": pd.to_numeric(raw["decimalLatitude"], errors="coerce"),
            "crs": "EPSG:4326",
        }
    )
    key = raw["datasetKey"] if "datasetKey" in raw.columns else pd.Series(dataset or p.stem, index=raw.index)
    frame["dataset"] = raw["datasetName"].fillna(key) if "datasetName" in raw.columns else key
    status = raw.get("occurrenceStatus", pd.Series(pd.NA, index=raw.index, dtype="string")).str.upper()
    absent = (status == "ABSENT").fillna(False).to_numpy(dtype=bool)
    survey_sets = set(key[absent])
    is_survey = key.isin(survey_sets).to_numpy()
    frame["kind"] = np.where(is_survey, "presence_absence", "presence_only")
    frame["value"] = np.where(absent, 0.0, 1.0)
    if "eventID" in raw.columns:
        frame["plot_id"] = raw["eventID"]
    if "eventDate" in raw.columns:
        frame["date"] = raw["eventDate"]
    if "individualCount" in raw.columns:
        frame["individual_count"] = pd.to_numeric(raw["individualCount"], errors="coerce")
    if "coordinateUncertaintyInMeters" in raw.columns:
        frame["coordinate_uncertainty_m"] = pd.to_numeric(raw["coordinateUncertaintyInMeters"], errors="coerce")
    for extra in ("gbifID", "basisOfRecord", "occurrenceStatus", "scientificName", "taxonRank", "countryCode"):
        if extra in raw.columns:
            frame[extra] = raw[extra]
    if dataset is not None:
        frame["dataset"] = frame["dataset"].fillna(dataset)
    return conform(frame)


Format = Literal["csv", "parquet", "gbif"]


def _existing(path: str | PathLike[str]) -> Path:
    p = Path(path)
    if not p.is_file():
        raise DataSourceError(f"records file {str(p)!r} does not exist or is not a file; check the path")
    return p


def read_records(
    path: str | PathLike[str],
    *,
    format: Format | None = None,
    crs: Any | None = None,
    kind: Kind | None = None,
    dataset: str | None = None,
    rename: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Read a records file of any supported format into the records schema.

    Parameters
    ----------
    path
        ``.csv``/``.tsv``/``.txt`` (delimited text), ``.parquet``/``.geoparquet``, a GBIF download ``.zip``
        or ``occurrence.txt``.
    format
        Force ``"csv"``, ``"parquet"`` or ``"gbif"`` instead of guessing from the file name.
    crs, kind, dataset, rename
        See :func:`records_from_frame` (``crs``/``kind``/``rename`` are not used for GBIF downloads).

    Returns
    -------
    pandas.DataFrame
        A records table (see :mod:`geosdm.records.schema`).

    Example
    -------
    >>> recs = read_records("demo/records/presence_only.csv")  # doctest: +SKIP
    """
    p = _existing(path)
    suffix = p.suffix.lower()
    if format is None:
        if suffix == ".zip" or p.name == "occurrence.txt":
            format = "gbif"
        elif suffix in {".parquet", ".geoparquet", ".pq"}:
            format = "parquet"
        elif suffix in {".csv", ".tsv", ".txt"}:
            format = "csv"
        else:
            raise InputError(f"cannot tell the format of {p.name!r}; pass format='csv', 'parquet' or 'gbif'")
    if format == "gbif":
        return read_gbif(p, dataset=dataset)
    if format == "parquet":
        return read_records_parquet(p, crs=crs, kind=kind, dataset=dataset, rename=rename)
    if format == "csv":
        return read_records_csv(p, crs=crs, kind=kind, dataset=dataset, rename=rename)
    raise InputError(f"format={format!r} is not one of 'csv', 'parquet', 'gbif'")
