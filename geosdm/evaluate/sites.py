"""Evaluate a predicted map at independent presence/absence sites: the values read off the map, not the model.

The check a map's user makes: at surveyed sites (e.g. the NCEAS test sites), how well does the written
probability cube (``probability.zarr`` of the predict step, uint8-packed or float) separate presences from
absences? Each site is read at the map cell holding it (sites in any CRS; outside the grid or on nodata cells
they have no prediction and are counted, not scored); each species is scored only at the sites where it was
surveyed, with :func:`~geosdm.evaluate.tables.species_metrics` (ROC AUC, PR AUC, TSS, Brier, ECE...).

Layout under ``output``: ``species_metrics.csv``, ``roc_auc.png``, ``index.html`` and ``summary.json``. The
pipeline's ``evaluate_map`` step calls :func:`run_map_evaluation`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from pydantic import BaseModel, ConfigDict, Field

from geosdm.errors import InputError
from geosdm.records.inputs import RecordsInput

__all__ = ["MapEvaluateConfig", "MapSiteEvaluation", "evaluate_map_at_sites", "run_map_evaluation",
           "site_observations", "values_at_sites"]


class MapEvaluateConfig(BaseModel):
    """An ``evaluate_map`` step (frozen; unknown keys are rejected).

    Attributes
    ----------
    predictions
        Probability cube written by the predict step (``<output>/probability.zarr``).
    sites
        Presence/absence record files (paths or :class:`~geosdm.records.RecordsInput` mappings, e.g. a wide
        table with ``species_columns``); only ``presence_absence`` rows are used.
    output
        Folder for ``species_metrics.csv``, the figure and ``summary.json``.
    variable
        The map's variable (``probability``).
    species
        Species to score (default: every map species with surveys).
    n_bins
        Bins of the ECE.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    predictions: str
    sites: tuple[str | RecordsInput, ...]
    output: str
    variable: str = "probability"
    species: tuple[str, ...] | None = None
    n_bins: int = Field(default=10, ge=2)


@dataclass
class MapSiteEvaluation:
    """Metrics of a map at surveyed sites and what was left out."""

    metrics: pd.DataFrame  # species_metrics rows (fold "all"): species, macro, micro
    sites: pd.DataFrame  # one row per site: plot_id, x, y, crs
    observed: pd.DataFrame  # (sites, species) 0/1, NaN = not surveyed
    predicted: pd.DataFrame  # (sites, species) map values, NaN = no prediction
    n_outside: int = 0  # sites outside the map's grid
    n_no_prediction: int = 0  # sites inside the grid on nodata cells
    unmapped_species: list[str] = field(default_factory=list)  # surveyed, but not in the map
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Headline figures: macro means over species, site counts, species left out."""
        macro = self.metrics[self.metrics["species"] == "macro"].iloc[0]
        scored = self.metrics[~self.metrics["species"].isin(["macro", "micro"])]
        return {"n_sites": int(len(self.observed)), "n_species": int(scored["roc_auc"].notna().sum()),
                "n_sites_outside": self.n_outside, "n_sites_no_prediction": self.n_no_prediction,
                **{f"{m}_macro": round(float(macro[m]), 5) for m in ("roc_auc", "pr_auc", "tss_max", "brier")},
                "unmapped_species": self.unmapped_species, "seconds": self.seconds}

    def lines(self) -> list[str]:
        """The summary as short printable lines."""
        s = self.summary()
        return [f"{s['n_species']} species at {s['n_sites']} sites read off the map: ROC AUC {s['roc_auc_macro']:.4f}, "
                f"PR AUC {s['pr_auc_macro']:.4f}, TSS {s['tss_max_macro']:.4f} (macro); sites outside the grid "
                f"{s['n_sites_outside']}, on nodata {s['n_sites_no_prediction']}; species not in the map: "
                f"{s['unmapped_species'] or 'none'}"]


def site_observations(records: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Presence/absence records -> one row per site (``x``, ``y``, ``crs``, ``plot_id``) and a wide 0/1 table.

    A site is a distinct (``plot_id``, ``x``, ``y``, ``crs``); a species recorded twice at a site counts as
    present if it was seen once.
    """
    pa = records[records["kind"].astype(str) == "presence_absence"]
    if pa.empty:
        raise InputError("no presence_absence records among the sites; read the survey files with "
                         "kind: presence_absence (or species_columns for a wide table)")
    key = ["plot_id", "x", "y", "crs"]
    keys = pa[key].astype({"plot_id": "object"}).fillna({"plot_id": ""})
    site_id = keys.groupby(key, sort=False).ngroup().to_numpy()
    sites = pa.iloc[np.unique(site_id, return_index=True)[1]][key].reset_index(drop=True)
    wide = pd.DataFrame({"site": site_id, "species": pa["species"].astype(str).to_numpy(),
                         "value": pa["value"].to_numpy(dtype="float64")})
    observed = wide.pivot_table(index="site", columns="species", values="value", aggfunc="max")
    observed = observed.reindex(range(len(sites)))
    observed.columns = [str(c) for c in observed.columns]
    return sites, observed


def values_at_sites(layer: xr.DataArray, sites: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Values of a ``(lead, y, x)`` map at the cells holding ``sites`` (records-schema ``x``/``y``/``crs``).

    Returns
    -------
    (pandas.DataFrame, numpy.ndarray)
        ``(sites, lead)`` values (NaN outside the grid or on nodata) and the mask of sites inside the grid.
    """
    import odc.geo.xr  # noqa: F401  (the .odc accessor)

    from geosdm.records.coords import cell_index, records_xy

    lead = [d for d in layer.dims if d not in ("y", "x")]
    if len(lead) != 1:
        raise InputError(f"the map must have one leading dimension besides y/x (e.g. species); it has {layer.dims}")
    geobox = layer.odc.geobox
    gx, gy = records_xy(sites, geobox.crs)
    row, col, inside = cell_index(geobox, gx, gy)
    names = [str(v) for v in layer[lead[0]].values]
    out = np.full((len(sites), len(names)), np.nan)
    if inside.any():
        picked = layer.isel(y=xr.DataArray(row[inside], dims="site"), x=xr.DataArray(col[inside], dims="site"))
        out[inside] = np.asarray(picked.transpose("site", lead[0]).values, dtype="float64")
    return pd.DataFrame(out, columns=names), inside


def evaluate_map_at_sites(predictions: str | PathLike[str] | xr.Dataset, records: pd.DataFrame, *,
                          variable: str = "probability", species: Sequence[str] | None = None,
                          n_bins: int = 10) -> MapSiteEvaluation:
    """Score a probability map at presence/absence sites (each species where it was surveyed).

    Example
    -------
    >>> ev = evaluate_map_at_sites("predictions/probability.zarr", read_input(sites))  # doctest: +SKIP
    >>> ev.summary()["roc_auc_macro"]  # doctest: +SKIP
    """
    from geosdm.evaluate.tables import species_metrics
    from geosdm.predict import open_predictions

    ds = predictions if isinstance(predictions, xr.Dataset) else open_predictions(predictions)
    if variable not in ds.data_vars:
        raise InputError(f"the map has no variable {variable!r}; it has {sorted(map(str, ds.data_vars))}")
    sites, observed = site_observations(records)
    values, inside = values_at_sites(ds[variable], sites)
    wanted = list(species) if species is not None else list(observed.columns)
    unmapped = sorted(s for s in wanted if s not in values.columns)
    if species is not None and (absent := [s for s in wanted if s not in observed.columns]):
        raise InputError(f"species {absent} have no presence/absence records at the sites")
    scored = [s for s in wanted if s in values.columns]
    if not scored:
        raise InputError(f"no surveyed species is in the map: sites have {list(observed.columns)[:10]}..., the map "
                         f"{list(values.columns)[:10]}...; check the species names")
    obs, pred = observed[scored], values[scored].set_axis(observed.index)
    metrics = species_metrics(obs, pred, n_bins=n_bins)
    no_pred = inside & values[scored].isna().all(axis=1).to_numpy()
    return MapSiteEvaluation(metrics, sites, obs, pred, int((~inside).sum()), int(no_pred.sum()), unmapped)


def run_map_evaluation(config: MapEvaluateConfig, *, write: bool = True) -> MapSiteEvaluation:
    """The ``evaluate_map`` step: read the sites, score the map there, write tables, figure and summary."""
    from geosdm.records.inputs import read_inputs

    t0 = time.perf_counter()
    if "://" not in config.predictions and not Path(config.predictions).exists():
        raise InputError(f"no probability cube at {config.predictions!r}; run the predict step first")
    records = pd.concat(read_inputs(config.sites), ignore_index=True)
    ev = evaluate_map_at_sites(config.predictions, records, variable=config.variable, species=config.species,
                               n_bins=config.n_bins)
    ev.seconds = round(time.perf_counter() - t0, 3)
    if write:
        from geosdm.evaluate.plots import save_figures, species_metric_plot

        fig = species_metric_plot(ev.metrics, "roc_auc", by=None, title="ROC AUC per species at the survey sites")
        files = save_figures(config.output, {"roc_auc": fig}, {"species_metrics": ev.metrics},
                             title="geosdm map at survey sites", text=ev.lines())
        path = Path(config.output) / "summary.json"
        path.write_text(json.dumps(ev.summary(), indent=2))
        ev.files = {k: str(v) for k, v in files.items()} | {"summary": str(path)}
    return ev
