"""Record files as configured inputs: a path, or a path with reading options (kind, CRS, wide species columns).

Pipelines list record files under ``records.inputs`` (and the sites of ``evaluate_map``). A plain path is read
with :func:`~geosdm.records.readers.read_records` as it is; a mapping says what the file cannot::

    inputs:
      - records/presence_only.csv                                   # kinds and CRS from the file
      - {path: nceas/NSW/train_po.parquet, kind: presence_only}     # 'occ' = 1 column, no 'kind' column
      - {path: nceas/NSW/train_bg.parquet, kind: background}        # given background points
      - {path: nceas/NSW/test_pa_with_env.parquet, species_columns: ["nsw*"]}   # one 0/1 column per species

``species_columns`` reads a *wide* table (one row per site, one 0/1 column per species, missing = that species
was not surveyed there) into one ``presence_absence`` row per surveyed species and site.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from geosdm.errors import InputError
from geosdm.records.readers import Kind, read_records
from geosdm.records.schema import DTYPES, conform

__all__ = ["RecordsInput", "melt_species", "read_input", "read_inputs"]


class RecordsInput(BaseModel):
    """One record file and how to read it (frozen; unknown keys are rejected).

    Attributes
    ----------
    path
        CSV, Parquet/GeoParquet or GBIF download (see :func:`~geosdm.records.read_records`).
    format, crs, kind, dataset, rename
        As for :func:`~geosdm.records.read_records`. ``kind: background`` rows carry no species.
    species_columns
        Wide tables: the columns (names or glob patterns such as ``"nsw*"``) holding one species each, 0/1 with
        missing values where the species was not surveyed; each surveyed (site, species) becomes one
        ``presence_absence`` row (``kind`` defaults to ``presence_absence``).
    columns
        Extra (non-schema) columns to keep, e.g. ``[group]``; default: all of them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    format: Literal["csv", "parquet", "gbif"] | None = None
    crs: str | None = None
    kind: Kind | None = None
    dataset: str | None = None
    rename: dict[str, str] | None = None
    species_columns: tuple[str, ...] = ()
    columns: tuple[str, ...] | None = None

    def read(self) -> pd.DataFrame:
        """The file as a records table (see :mod:`geosdm.records.schema`)."""
        kind = self.kind or ("presence_absence" if self.species_columns else None)
        if self.species_columns and kind not in ("presence_absence", "count"):
            raise InputError(f"{self.path}: species_columns hold 0/1 surveys or counts; kind={kind!r} cannot use "
                             "them (use presence_absence or count, or drop species_columns)")
        recs = read_records(self.path, format=self.format, crs=self.crs, kind=kind, dataset=self.dataset,
                            rename=self.rename)
        if self.species_columns:
            recs = melt_species(recs, self.species_columns, source=self.path)
        if self.columns is not None:
            extras = [c for c in recs.columns if c not in DTYPES]
            if missing := [c for c in self.columns if c not in extras]:
                raise InputError(f"{self.path}: columns {missing} are not among its extra columns {extras}")
            recs = recs[[*DTYPES, *self.columns]]
        return recs


def _match(columns: Sequence[str], patterns: Sequence[str]) -> list[str]:
    return [c for c in columns if any(fnmatch.fnmatchcase(c, p) for p in patterns)]


def melt_species(records: pd.DataFrame, species_columns: Sequence[str], *, source: str = "table") -> pd.DataFrame:
    """One row per (site, species) with an observation, from a records table of sites with one column per species.

    Parameters
    ----------
    records
        Records table whose rows are sites (``species`` empty) and whose extra columns include the species.
    species_columns
        Column names or glob patterns (``"nsw*"``); values 0/1 (or counts), missing = not surveyed.
    source
        Name of the input, for messages.

    Returns
    -------
    pandas.DataFrame
        Records in site-major order: ``species`` = the column name, ``value`` = its value, every other column of
        the site repeated; the species columns are dropped.

    Example
    -------
    >>> sites = records_from_frame(pd.DataFrame({"lon": [1.0], "lat": [2.0], "sp_a": [1], "sp_b": [None]}),
    ...                            kind="presence_absence")  # doctest: +SKIP
    >>> melt_species(sites, ["sp_*"])[["species", "value"]].values.tolist()  # doctest: +SKIP
    [['sp_a', 1.0]]
    """
    extras = [c for c in records.columns if c not in DTYPES]
    species = _match(extras, species_columns)
    if not species:
        raise InputError(f"{source}: no column matches species_columns {list(species_columns)}; its extra columns "
                         f"are {extras}")
    try:
        obs = records[species].apply(pd.to_numeric, errors="raise").to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError):
        raise InputError(f"{source}: species columns {species} must hold numbers (0/1 or counts), "
                         "missing where not surveyed") from None
    site, sp = np.nonzero(np.isfinite(obs))  # site-major order
    out = records.drop(columns=species).iloc[site].reset_index(drop=True)
    out["species"] = np.asarray(species, dtype=object)[sp]
    out["value"] = obs[site, sp]
    return conform(out)


def read_input(spec: str | RecordsInput) -> pd.DataFrame:
    """Read one configured input (a path, or a :class:`RecordsInput`)."""
    return read_records(spec) if isinstance(spec, str) else spec.read()


def read_inputs(specs: Sequence[str | RecordsInput]) -> list[pd.DataFrame]:
    """Read every configured input, in order."""
    return [read_input(s) for s in specs]
