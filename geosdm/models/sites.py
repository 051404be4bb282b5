"""Records tables -> training sites: one row per data set and location, one target column per species.

The integrated-SDM likelihood (docs/architecture.md) needs, per data set, the observations at each site:

* presence-only (``kind="presence_only"``): record counts per species at each location (``po``);
* background points (``kind="background"``): zero counts, shared by every presence-only data set (``background``);
* presence/absence (``kind="presence_absence"``): 1 if any visit detected the species, with the summed surveyed
  area (``pa``; species not surveyed at a site are NaN);
* counts (``kind="count"``): summed counts and summed area (``count``).

Sites are keyed by data set and location (grid cell when a grid is given, else exact coordinates; surveys by
``plot_id`` when present).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from geosdm.errors import InputError

__all__ = ["DatasetSpec", "Sites", "build_sites", "site_records"]

log = logging.getLogger(__name__)

_FAMILY = {"presence_only": "po", "background": "background", "presence_absence": "pa", "count": "count"}


@dataclass(frozen=True)
class DatasetSpec:
    """One data set of the joint likelihood: name, family (po, pa, count, background), number of sites."""

    name: str
    family: str
    n_sites: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "n_sites": self.n_sites}


@dataclass
class Sites:
    """Training sites as aligned arrays (rows = sites).

    Attributes
    ----------
    frame
        One row per site: ``dataset``, ``family``, ``x``, ``y`` (common CRS), ``row0`` (index of the site's
        first record in the input table), ``fold`` (when the input had one), plus the covariate columns.
    targets
        ``(n, n_species)`` float32: counts (po, count), 0/1 (pa), 0 (background), NaN where not observed.
    area
        ``(n, n_species)`` float64 surveyed area in m² (pa, count; NaN when unknown), NaN elsewhere.
    datasets
        The data sets in the order of the ``dataset_index`` column.
    """

    frame: pd.DataFrame
    targets: np.ndarray
    area: np.ndarray
    species: list[str]
    datasets: list[DatasetSpec] = field(default_factory=list)
    crs: str | None = None

    @property
    def dataset_index(self) -> np.ndarray:
        names = {d.name: i for i, d in enumerate(self.datasets)}
        return self.frame["dataset"].map(names).to_numpy(dtype=np.int64)

    def subset(self, keep: np.ndarray) -> Sites:
        """Rows where ``keep`` is True (dataset site counts updated; empty data sets kept)."""
        frame = self.frame[keep].reset_index(drop=True)
        counts = frame["dataset"].value_counts()
        specs = [DatasetSpec(d.name, d.family, int(counts.get(d.name, 0))) for d in self.datasets]
        return Sites(frame, self.targets[keep], self.area[keep], self.species, specs, self.crs)


def _common_crs(table: pd.DataFrame, crs: str | None) -> str | None:
    if crs is not None or "crs" not in table.columns:
        return crs
    values = table["crs"].dropna()
    return None if values.empty else str(values.value_counts().index[0])


def _location_keys(table: pd.DataFrame, crs: str | None, geobox: Any | None) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """x/y in the common CRS and a location key per row (cell when a grid is given)."""
    if "crs" in table.columns and crs is not None:
        from geosdm.records.coords import records_xy

        x, y = records_xy(table, crs)
    else:
        x = table["x"].to_numpy(dtype="float64", na_value=np.nan)
        y = table["y"].to_numpy(dtype="float64", na_value=np.nan)
    if geobox is not None:
        from geosdm.records.coords import cell_centres, cell_index

        row, col, inside = cell_index(geobox, x, y)
        cx, cy = cell_centres(geobox, row, col)
        x, y = np.where(inside, cx, x), np.where(inside, cy, y)
    key = pd.Series(np.char.add(np.char.add(x.astype(str), "_"), y.astype(str)), index=table.index)
    return x, y, key


def build_sites(
    table: pd.DataFrame,
    *,
    species: Sequence[str] | None = None,
    columns: Sequence[str] = (),
    crs: str | None = None,
    geobox: Any | None = None,
) -> Sites:
    """Group a records table (schema columns + covariates) into training sites.

    Parameters
    ----------
    table
        Records table with ``kind``, ``species``, ``value``, ``x``, ``y`` (and ``crs``, ``dataset``,
        ``plot_id``, ``plot_area_m2``, ``fold`` when present) plus covariate columns.
    species
        Species to model (default: every species with a presence-only, presence/absence or count record).
    columns
        Extra columns copied to the site frame from each site's first record (covariates, bias covariates).
    crs
        Common CRS of the site coordinates (default: the most frequent CRS of the table).
    geobox
        Grid of the cube: records in one cell form one site.

    Raises
    ------
    InputError
        When the table lacks schema columns or has no usable records.
    """
    need = [c for c in ("kind", "species", "value", "x", "y") if c not in table.columns]
    if need:
        raise InputError(
            f"records table lacks column(s) {need}; build it with geosdm.records.read_records(...) and "
            "geosdm.records.extract_covariates(...), or call fit(X, Y) with a covariate frame and a target frame"
        )
    table = table.reset_index(drop=True)
    kind = table["kind"].astype(str)
    unknown = sorted(set(kind) - set(_FAMILY))
    if unknown:
        raise InputError(f"records column 'kind' has unknown value(s) {unknown}; use one of {sorted(_FAMILY)}")
    family = kind.map(_FAMILY)
    obs = family != "background"
    names = sorted(pd.unique(table.loc[obs, "species"].dropna().astype(str))) if species is None else list(species)
    if not names:
        raise InputError("records table has no species records (only background rows); add presence records")
    crs = _common_crs(table, crs)
    x, y, loc = _location_keys(table, crs, geobox)
    dataset = table["dataset"].astype("string").fillna("unnamed") if "dataset" in table.columns else None
    if dataset is None:
        dataset = pd.Series(family.map({"po": "presence_only", "pa": "presence_absence", "count": "count"}),
                            dtype="string")
    dataset = dataset.where(family != "background", "background").astype(str)
    key = dataset + "|" + loc
    if "plot_id" in table.columns:
        plot = table["plot_id"].astype("string")
        use_plot = family.isin(["pa", "count"]) & plot.notna()
        key = key.where(~use_plot, dataset + "|plot|" + plot.fillna(""))

    codes, uniques = pd.factorize(key, sort=False)
    n_sites, n_sp = len(uniques), len(names)
    sp_index = {s: i for i, s in enumerate(names)}
    sp = table["species"].astype("string").map(sp_index).to_numpy(dtype="float64", na_value=np.nan)
    value = table["value"].to_numpy(dtype="float64", na_value=np.nan)
    area = (table["plot_area_m2"].to_numpy(dtype="float64", na_value=np.nan)
            if "plot_area_m2" in table.columns else np.full(len(table), np.nan))
    fam = family.to_numpy()
    first = np.full(n_sites, len(table), dtype=np.int64)
    np.minimum.at(first, codes, np.arange(len(table)))
    site_family = fam[first]

    targets = np.full((n_sites, n_sp), np.nan, dtype=np.float64)
    targets[np.isin(site_family, ["po", "background"])] = 0.0
    area_out = np.full((n_sites, n_sp), np.nan, dtype=np.float64)
    rec = np.isfinite(sp) & (fam != "background")
    r_site, r_sp, r_val = codes[rec], sp[rec].astype(np.int64), value[rec]
    r_fam, r_area = fam[rec], area[rec]
    po = r_fam == "po"
    np.add.at(targets, (r_site[po], r_sp[po]), np.where(np.isfinite(r_val[po]), r_val[po], 1.0))
    for fam_name, combine in (("pa", np.fmax), ("count", None)):
        sel = r_fam == fam_name
        if not sel.any():
            continue
        s, j, v, a = r_site[sel], r_sp[sel], r_val[sel], r_area[sel]
        start = np.isnan(targets[s, j])
        targets[s[start], j[start]] = 0.0
        if combine is None:
            np.add.at(targets, (s, j), v)
        else:
            np.fmax.at(targets, (s, j), v)
        ok = np.isfinite(a)
        area_out[s[ok], j[ok]] = 0.0
        np.add.at(area_out, (s[ok], j[ok]), a[ok])

    frame = pd.DataFrame({
        "dataset": dataset.to_numpy()[first],
        "family": site_family,
        "x": x[first],
        "y": y[first],
        "row0": first,
    })
    if "fold" in table.columns:
        frame["fold"] = table["fold"].to_numpy()[first]
    for c in columns:
        frame[c] = table[c].iloc[first].reset_index(drop=True)
    specs: list[DatasetSpec] = []
    counts = frame.groupby("dataset", sort=False)["family"].agg(["first", "size"])
    for name, (fam_name, size) in counts.iterrows():
        specs.append(DatasetSpec(str(name), str(fam_name), int(size)))
    specs.sort(key=lambda d: (["po", "pa", "count", "background"].index(d.family), d.name))
    mixed = frame.groupby("dataset")["family"].nunique()
    if (mixed > 1).any():
        raise InputError(
            f"data set(s) {list(mixed[mixed > 1].index)} mix observation kinds; give each kind its own `dataset` name"
        )
    log.info("built %d sites for %d species from %d records (%s)", n_sites, n_sp, len(table),
             {d.name: d.n_sites for d in specs})
    return Sites(frame, targets.astype(np.float32), area_out, names, specs, crs)


def site_records(sites: Sites) -> pd.DataFrame:
    """The sites as a records-schema table (one ``background`` row per site) for patch extraction."""
    from geosdm.records.schema import conform

    if sites.crs is None:
        raise InputError("sites have no CRS; give the records a `crs` column to extract patches from a cube")
    frame = pd.DataFrame({"x": sites.frame["x"], "y": sites.frame["y"], "crs": sites.crs, "kind": "background",
                          "value": 0.0, "dataset": "sites"})
    return conform(frame)
