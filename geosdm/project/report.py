"""The report's projection section: change maps per scenario, gain/loss maps, range changes and extrapolation."""

from __future__ import annotations

from os import PathLike
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["projection_sections"]


def _spread_pick(names: list[str], k: int) -> list[str]:
    if k >= len(names):
        return names
    return [names[round(i * (len(names) - 1) / max(k - 1, 1))] for i in range(k)]


def projection_sections(output: str | PathLike[str], *, n_maps: int = 4) -> list[Any]:
    """Report sections of a projection run (:func:`geosdm.project.run_projection` output folder): the probability
    change of the species that shift most, per scenario (diverging colours centred on 0), their gain / loss /
    stable classes, the change of expected richness and of pest regulation, the MESS per scenario and the
    range-size / centroid-shift table."""
    from matplotlib.colors import ListedColormap, TwoSlopeNorm

    from geosdm.project.lazy import BASELINE, CHANGE_CLASSES
    from geosdm.project.run import open_projection
    from geosdm.report import Section, layer_map

    ds = open_projection(str(output))
    scen = [str(s) for s in ds["scenario"].values if str(s) != BASELINE]
    if not scen:
        return []
    ranges_path = f"{str(output).rstrip('/')}/ranges.csv"
    ranges = pd.read_csv(ranges_path) if not str(output).startswith(("s3://", "http")) else None
    info = ds.attrs.get("geosdm:scenario", {})
    sections = []
    change = ds["change"].sel(scenario=scen)
    mean_abs = np.abs(change).mean(("y", "x")).compute()
    order = mean_abs.max("scenario").to_series().sort_values(ascending=False)
    pick = [str(s) for s in order.index[: max(n_maps, 1)]]
    figs, caps = [], []
    for sp in pick:
        for s in scen:
            layer = change.sel(scenario=s, species=sp).compute()
            lim = float(np.nanmax(np.abs(layer.values))) or 1e-3
            figs.append(layer_map(layer, title=f"{sp}: {s}", cmap="RdBu", label="probability change",
                                  norm=TwoSlopeNorm(0.0, -lim, lim)))
            caps.append(f"{sp}, {s}")
    text = [f"Change of the presence probability from the baseline (scenario - baseline; blue: more likely, red: "
            f"less likely) for the {len(pick)} species whose maps change most, under each scenario: "
            f"{', '.join(scen)}. Stores {output}/<scenario>.zarr (COGs and STAC Items with geosdm:scenario beside "
            "them)."]
    sections.append(Section("Projections: where the species go", text=text, figures=figs, captions=caps))
    if "change_class" in ds:
        cmap = ListedColormap(["#f0f0f0", "#4d9221", "#2166ac", "#d6604d"])
        figs, caps = [], []
        for sp in pick[:2]:
            for s in scen:
                figs.append(layer_map(ds["change_class"].sel(scenario=s, species=sp), title=f"{sp}: {s}", cmap=cmap,
                                      vmin=-0.5, vmax=3.5, label=" / ".join(CHANGE_CLASSES.values())))
                caps.append(f"{sp}, {s}")
        sections.append(Section(
            "Range gain and loss", text="Presence after the species' threshold chosen on the baseline map (max TSS at "
                                        "the training records, geosdm.evaluate's rule): 0 absent in both, 1 stable "
                                        "presence, 2 gained, 3 lost.", figures=figs, captions=caps,
            tables=[ranges[ranges.scenario != BASELINE].round(3)] if ranges is not None else [],
            table_titles=["range size (km2) and centroid shift (m) per species and scenario"]))
    figs, caps = [], []
    for s in scen:
        layer = ds["richness_change"].sel(scenario=s).compute()
        lim = float(np.nanmax(np.abs(layer.values))) or 1e-3
        figs.append(layer_map(layer, title=f"richness: {s}", cmap="RdBu", label="expected species", 
                              norm=TwoSlopeNorm(0.0, -lim, lim)))
        caps.append(f"expected richness change, {s}")
        if "enemy_any_change" in ds:
            reg = ds["enemy_any_change"].sel(scenario=s).mean(str(ds["enemy_any_change"].dims[1])).compute()
            lim = float(np.nanmax(np.abs(reg.values))) or 1e-3
            figs.append(layer_map(reg, title=f"regulation: {s}", cmap="RdBu", label="P(enemy present | pest)",
                                  norm=TwoSlopeNorm(0.0, -lim, lim)))
            caps.append(f"pest regulation change (mean over pests), {s}")
    sections.append(Section("Projections: richness and pest regulation", text=(
        "Change of the expected number of species (sum of the presence probabilities) and, with an interaction "
        "network, of the probability that a pest has at least one natural enemy (mean over pests)."),
        figures=figs, captions=caps))
    if "mess" in ds:
        figs = []
        for s in scen:
            layer = ds["mess"].sel(scenario=s).compute()
            lim = float(np.nanpercentile(np.abs(layer.values), 98)) or 1.0
            figs.append(layer_map(layer, title=f"MESS: {s}", cmap="RdBu", label="MESS (%)",
                                  norm=TwoSlopeNorm(0.0, -lim, lim)))
        below = {s: float((ds["mess"].sel(scenario=s) < 0).mean()) for s in scen}
        sections.append(Section("Projections: where the scenarios leave the training data", text=(
            "MESS of each scenario's covariates against the training data: red (< 0) where the projection "
            "extrapolates; share of the map below 0: " + ", ".join(f"{s} {v:.1%}" for s, v in below.items())),
            figures=figs, captions=scen))
    del info
    return sections
