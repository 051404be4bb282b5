"""Report sections built from a run's stored outputs: binary maps with their threshold rule, the MESS map,
the no-data explanation and the ODMAP protocol table.

The threshold rules are :mod:`geosdm.evaluate`'s (:func:`~geosdm.evaluate.threshold_max_tss`,
:func:`~geosdm.evaluate.threshold_at_sensitivity`), applied to the *written map's* values at the training
records (the map's own area and calibration, not the model's unit), so the threshold fits the map it cuts.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

from geosdm.errors import InputError
from geosdm.report.html import Section
from geosdm.report.maps import NODATA_COLOR, binary_map

__all__ = ["RULES", "binary_section", "binary_thresholds", "mess_section", "nodata_text", "odmap_section"]

ThresholdRule = Literal["max_tss", "sens_eq_spec", "p10_training_presence", "fixed_cumulative", "fixed"]
#: Rule name -> how the report names it.
RULES = {
    "max_tss": "max TSS",
    "sens_eq_spec": "sensitivity = specificity",
    "p10_training_presence": "10th-percentile training presence",
    "fixed_cumulative": "fixed cumulative value",
    "fixed": "fixed threshold",
}


def binary_thresholds(prob: xr.DataArray, table: str | PathLike[str] | pd.DataFrame, species: Sequence[str],
                      rule: ThresholdRule = "max_tss", value: float | None = None) -> pd.DataFrame:
    """One presence threshold per species for the ``(species, y, x)`` probability map ``prob``.

    ``max_tss``: the threshold maximising sensitivity + specificity - 1 of the map's values at the species'
    presence/absence survey plots (presences against background points when it has no survey absence);
    ``p10_training_presence``: the value that keeps 90 % of the species' training presences (all record kinds)
    above it, i.e. the 10th percentile of the map at them; ``sens_eq_spec``: where sensitivity equals
    specificity (same data as ``max_tss``); ``fixed_cumulative``: Maxent's fixed cumulative value ``value`` (%,
    default 10) of the species' map (the cells holding the lowest ``value`` % of its summed probability are
    absent); ``fixed``: ``value`` for every species.

    Returns
    -------
    pandas.DataFrame
        Indexed by species: ``rule``, ``threshold``, ``tss``, ``sensitivity``, ``specificity``, ``n_presence``,
        ``n_absence`` and ``against`` (what the presences were compared with).
    """
    from geosdm.evaluate import (
        Threshold,
        threshold_at_sensitivity,
        threshold_fixed_cumulative,
        threshold_max_tss,
        threshold_sens_eq_spec,
        tss,
    )
    from geosdm.evaluate.sites import values_at_sites

    if rule not in RULES:
        raise InputError(f"threshold rule {rule!r} is not one of {sorted(RULES)}")
    if rule == "fixed_cumulative" and value is not None and not 0 < float(value) < 100:
        raise InputError("the 'fixed_cumulative' threshold rule takes `value:` as a percent in (0, 100), e.g. 10")
    if rule == "fixed" and (value is None or not 0 <= float(value) <= 1):
        raise InputError("the 'fixed' threshold rule needs `value:` in [0, 1]")
    t = table if isinstance(table, pd.DataFrame) else pd.read_parquet(table, columns=["species", "x", "y", "crs",
                                                                                       "kind", "value"])
    t = t.reset_index(drop=True)
    kind = t["kind"].astype(str).to_numpy()
    key = ["x", "y", "crs"]
    sites = t[key].drop_duplicates().reset_index(drop=True)
    site_of = t[key].merge(sites.reset_index(), on=key, how="left")["index"].to_numpy()
    values, _ = values_at_sites(prob.sel(species=list(species)), sites)
    background = np.flatnonzero(kind == "background")
    rows = []
    for s in species:
        mine = (t["species"].astype(str).to_numpy() == s)
        pres = np.flatnonzero(mine & (kind != "background") & (t["value"].to_numpy(dtype="float64") > 0))
        absent = np.flatnonzero(mine & (kind == "presence_absence") & (t["value"].to_numpy(dtype="float64") == 0))
        score = values[s].to_numpy()[site_of]
        if rule in ("max_tss", "sens_eq_spec") and absent.size:
            surveyed = np.flatnonzero(mine & (kind == "presence_absence"))
            y, p, against = (t["value"].to_numpy()[surveyed] > 0).astype(int), score[surveyed], "survey absences"
            n_pres, n_abs = int(y.sum()), int((y == 0).sum())
        else:
            idx = np.r_[pres, background]
            y, p, against = np.r_[np.ones(pres.size), np.zeros(background.size)], score[idx], "background points"
            n_pres, n_abs = int(pres.size), int(background.size)
        ok = np.isfinite(p)
        y, p = y[ok], p[ok]
        if rule == "max_tss":
            th = threshold_max_tss(y, p)
        elif rule == "sens_eq_spec":
            th = threshold_sens_eq_spec(y, p)
        elif rule == "p10_training_presence":
            th = threshold_at_sensitivity(y, p, sensitivity=0.9)
        else:
            thr = (threshold_fixed_cumulative(prob.sel(species=s).values, percent=10.0 if value is None else value)
                   if rule == "fixed_cumulative" else float(value))  # type: ignore[arg-type]
            pos, neg = p[y == 1], p[y == 0]
            sens = float((pos >= thr).mean()) if pos.size else float("nan")
            spec = float((neg < thr).mean()) if neg.size else float("nan")
            th = Threshold(thr, tss(y, p, threshold=thr), sens, spec)
        rows.append({"species": s, "rule": RULES[rule], "threshold": th.threshold, "tss": th.tss,
                     "sensitivity": th.sensitivity, "specificity": th.specificity, "n_presence": n_pres,
                     "n_absence": n_abs, "against": against})
    return pd.DataFrame(rows).set_index("species")


def binary_section(prob: xr.DataArray, thresholds: pd.DataFrame) -> Section:
    """Binary presence/absence maps of the species in ``thresholds``, each titled with its rule and value."""
    rules = sorted(set(thresholds["rule"]))
    figs = [binary_map(prob.sel(species=s), float(r.threshold), title=str(s), rule=str(r.rule))
            for s, r in thresholds.iterrows() if np.isfinite(r.threshold)]
    shown = [str(s) for s, r in thresholds.iterrows() if np.isfinite(r.threshold)]
    text = [f"Presence where the map's probability is at least the species' threshold, chosen by the "
            f"{' / '.join(rules)} rule on the map's own values at the training records (threshold rules of "
            f"geosdm.evaluate). The table gives each threshold with the sensitivity, specificity and TSS it "
            f"gives there; grey cells have no data."]
    missing = [str(s) for s, r in thresholds.iterrows() if not np.isfinite(r.threshold)]
    if missing:
        text.append(f"No threshold for {', '.join(missing)}: too few presences or absences to apply the rule.")
    return Section("Binary presence maps", text=text, figures=figs, captions=shown,
                   tables=[thresholds], table_titles=["thresholds"])


def nodata_text(layer: xr.DataArray) -> str:
    """The sentence explaining no-data cells, with their share of one ``(y, x)`` layer."""
    frac = float(layer.isnull().mean())
    share = f" ({frac:.1%} of this map)" if frac > 0 else " (none on this map)"
    return (f"Grey cells ({NODATA_COLOR}, 'no data' in the legend) have no prediction{share}: a covariate has no "
            "value there (a gap in the satellite composites, e.g. persistent cloud, or a nodata cell of an input "
            "layer), and the model does not guess.")


def mess_section(mess: str | PathLike[str] | xr.Dataset, cube: str | PathLike[str] | xr.Dataset | None = None
                 ) -> Section:
    """The MESS map, readable: diverging colours centred on 0 over the continuous covariates (class fractions,
    when the cube names them, left out: at their floor 0 they pin the MESS to 0 everywhere)."""
    from geosdm.explain.plots import plot_mess
    from geosdm.io import open_layers

    ds = mess if isinstance(mess, xr.Dataset) else open_layers(str(mess))
    fractions: list[str] = []
    if cube is not None:
        from geosdm.explain.importance import composition_groups
        from geosdm.io.zarr import open_cube

        c = cube if isinstance(cube, xr.Dataset) else open_cube(str(cube))
        names = [str(v) for v in ds["variable"].values] if "variable" in ds.coords else None
        fractions = [v for g in composition_groups(c, names).values() for v in g]
    fig = plot_mess(ds, exclude=fractions)
    below = float((ds["mess"] < 0).sum()) / max(float(ds["mess"].notnull().sum()), 1.0)
    text = ("Multivariate environmental similarity (MESS, Elith et al. 2010): negative (red) where a cell lies "
            "outside the training data's range of at least one covariate, so the model extrapolates there; blue "
            f"inside it; the colour range is clipped symmetrically around 0. {below:.1%} of the map has MESS < 0.")
    if fractions:
        text += (f" Class fractions ({len(fractions)} layers) are left out of the minimum: a cell with none of a "
                 "class sits at the edge of that fraction's range (similarity 0), not outside it.")
    return Section("Where the model extrapolates", text=text, figures=[fig], captions=["MESS"])


def odmap_section(table: pd.DataFrame, csv_name: str = "odmap.csv") -> Section:
    """The ODMAP protocol table (:func:`geosdm.report.odmap.odmap_table`) as a report section."""
    from geosdm.report.odmap import NOT_FILLED

    n_missing = int(table["value"].str.startswith(NOT_FILLED).sum())
    shown = table.copy()
    shown.attrs["geosdm:table_class"] = "text"
    return Section(
        "ODMAP protocol",
        text=f"The ODMAP protocol (Zurell et al. 2020: Overview, Data, Model, Assessment, Prediction) filled from "
             f"this run's configuration and outputs; {n_missing} of {len(table)} elements the run cannot know say "
             f"'{NOT_FILLED}'. The same table is in {csv_name} beside this report.",
        tables=[shown.set_index("section")], table_titles=[""])

