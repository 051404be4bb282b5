"""Lazy projections of a fitted model onto scenario cubes: one Dask task per tile for the baseline and every scenario.

A tile task reads the model's covariates of the tile from the baseline cube once, swaps in each scenario's replaced
covariates (read from the scenario stores of :mod:`geosdm.scenarios`, nothing copied), runs the model on each
(:func:`geosdm.predict.lazy.predict_block`, the calibrator as in :func:`geosdm.predict.predict`), and derives in
the same task: the change from the baseline, the gain / loss / stable classes after per-species thresholds chosen
on the baseline, the expected richness, the spread (90 % interval width from the calibrated model's interval model,
else from the ensemble members via :func:`geosdm.predict.uncertainty.uncertainty_block`) and the MESS against the
training data (:func:`geosdm.explain.extrapolation.mess_block`, as :func:`geosdm.explain.mess` per tile).
With ``clamp=True``, covariates outside the training data's range are held at its edge before the model sees them
(clamping, as MaxEnt projects by default), so a scenario's new climates get the response at the edge of what was
observed rather than the network's extrapolation of it; MESS, computed on the unclamped values, shows where either
happens.
Interaction layers (pest regulation, pest pressure) follow from
the projected probabilities with :func:`geosdm.interactions.interaction_layers`. Nothing is computed here.
"""

from __future__ import annotations

import dataclasses
import operator
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from geosdm.errors import InputError

if TYPE_CHECKING:
    from geosdm.explain import Reference
    from geosdm.models import MultiSpeciesSDM

__all__ = ["project", "baseline_thresholds", "scenario_stores", "CHANGE_CLASSES", "BASELINE"]

#: Name of the baseline along the ``scenario`` dim.
BASELINE = "baseline"
#: Codes of ``change_class``: absent in both, present in both (stable), gained, lost.
CHANGE_CLASSES = {0: "absent", 1: "stable", 2: "gain", 3: "loss"}


@dataclass(frozen=True)
class _Reader:
    """How a tile task reads variables of one store: straight from Zarr (path) or from a lazily opened Dataset."""

    path: str | None
    ds: Any
    storage_options: Mapping[str, Any] | None

    def read(self, variables: tuple[str, ...], window: tuple[slice, slice]) -> np.ndarray:
        if not variables:
            return np.empty((0, window[0].stop - window[0].start, window[1].stop - window[1].start), np.float32)
        if self.path is not None:
            from geosdm.io.zarr import read_window

            return np.array(read_window(self.path, variables, window, storage_options=self.storage_options),
                            dtype=np.float32)  # a copy: read_window's result is cached
        return np.stack([np.asarray(self.ds[v].variable[window].values, dtype=np.float32) for v in variables])


def _reader(src: str | xr.Dataset, variables: tuple[str, ...], storage_options: Mapping[str, Any] | None) -> _Reader:
    from geosdm.io.zarr import quiet_zarr, raw_readable

    if isinstance(src, xr.Dataset):
        return _Reader(None, src[list(variables)] if variables else src, None)
    with quiet_zarr():
        ds = xr.open_dataset(str(src), engine="zarr", chunks=None, cache=False, zarr_format=3,
                             storage_options=dict(storage_options) if storage_options else None)
    if raw_readable(ds, variables):
        return _Reader(str(src), None, storage_options)
    return _Reader(None, ds[list(variables)], None)


@dataclass(frozen=True)
class _Scenario:
    name: str
    rows: tuple[int, ...]  # positions in the model's variables replaced by the scenario
    replaced: tuple[str, ...]
    reader: _Reader | None
    reference: Any = None  # the MESS reference of the replaced variables the reference holds
    reference_rows: tuple[int, ...] = ()  # their positions in the reference's variables


@dataclass(frozen=True)
class _Plan:
    inputs: Any  # geosdm.predict.model.ModelInputs
    base: _Reader
    scenarios: tuple[_Scenario, ...]
    link: str
    offset: float
    calibrate: bool
    spread: str | None  # "model" | "samples" | None
    thresholds: tuple[float, ...] | None
    reference_rows: tuple[int, ...]
    reference_vars: tuple[str, ...]
    batch_size: int
    mess: bool = True
    clamp: tuple[tuple[int, float, float], ...] = ()  # (row in the model's variables, low, high) held to [low, high]


def _clamped(data: np.ndarray, bounds: tuple[tuple[int, float, float], ...]) -> np.ndarray:
    """``data`` ``(variable, y, x)`` with the bounded rows clipped to their training range (a copy when any)."""
    if not bounds:
        return data
    out = data.copy()
    for row, low, high in bounds:
        np.clip(out[row], low, high, out=out[row])  # NaN stays NaN
    return out


def scenario_stores(scenarios: Any, names: Sequence[str] | None = None) -> dict[str, str | xr.Dataset]:
    """``name -> scenario store`` from a :class:`geosdm.scenarios.ScenariosConfig` (its ``<output>/<name>.zarr``)
    or a mapping of names to stores; ``names`` picks some (an unknown name is an :class:`InputError`)."""
    from geosdm.scenarios import ScenariosConfig

    if isinstance(scenarios, ScenariosConfig):
        wanted = list(names) if names is not None else list(scenarios.futures)
        return {n: scenarios.path(n) for n in wanted}  # path() raises InputError for an unknown name
    if isinstance(scenarios, Mapping):
        stores = {str(k): v for k, v in scenarios.items()}
        wanted = list(names) if names is not None else list(stores)
        if unknown := [n for n in wanted if n not in stores]:
            raise InputError(f"no scenario named {unknown}; the configuration declares {list(stores)}")
        return {n: stores[n] for n in wanted}
    raise InputError(f"scenarios must be a ScenariosConfig or a mapping name -> store, got {type(scenarios).__name__}")


def _tile(model: MultiSpeciesSDM, reference: Reference | None, *, plan: _Plan,
          window: tuple[slice, slice]) -> dict[str, np.ndarray]:
    """Every output of one tile: ``probability``/``change``/... ``(scenario, species, y, x)``, ``mess``...
    ``(scenario, y, x)``; scenario 0 is the baseline."""
    from geosdm.predict.lazy import BlockOutput, predict_block

    names = plan.inputs.variables
    base = plan.base.read(names, window)
    stacks = [base]
    for sc in plan.scenarios:
        data = base.copy()
        if sc.rows:
            data[list(sc.rows)] = sc.reader.read(sc.replaced, window)  # type: ignore[union-attr]
        stacks.append(data)
    spec = (BlockOutput("probability", plan.link, plan.offset),)
    error = getattr(getattr(model, "calibrator_", None), "error", None)
    probs, spreads, mess, dissimilar = [], [], [], []
    for raw in stacks:
        data = _clamped(raw, plan.clamp)
        if plan.spread == "samples":
            from geosdm.predict.uncertainty import uncertainty_block

            u = uncertainty_block(model, data, inputs=plan.inputs, offset=plan.offset, quantiles=(0.5,),
                                  calibrate=plan.calibrate, batch_size=plan.batch_size)
            p = u[0]
            spreads.append(u[1])
        else:
            p = predict_block(model, data, inputs=plan.inputs, outputs=spec, batch_size=plan.batch_size)[0]
            if plan.calibrate:
                p = model.calibrator_.transform(p, axis=0, out=p)  # type: ignore[attr-defined]
            if plan.spread == "model":
                spreads.append(np.asarray(error.sd(p), np.float32))
        probs.append(np.asarray(p, dtype=np.float32))
    if reference is not None and plan.mess:  # per-variable similarity once on the baseline; a scenario recomputes only the
        from geosdm.explain.extrapolation import mess_block  # variables it replaces

        sim = mess_block(reference, base[list(plan.reference_rows)], per_variable=True)[2:]
        for data, sc in zip(stacks, (None, *plan.scenarios)):
            s_sim = sim
            if sc is not None and sc.reference is not None:
                s_sim = sim.copy()
                s_sim[list(sc.reference_rows)] = mess_block(
                    sc.reference, data[[plan.reference_rows[i] for i in sc.reference_rows]], per_variable=True)[2:]
            bad = ~np.isfinite(s_sim).all(axis=0)
            filled = np.where(np.isfinite(s_sim), s_sim, np.inf)
            low, idx = filled.min(axis=0), filled.argmin(axis=0).astype(np.float32)
            low[bad], idx[bad] = np.nan, np.nan
            mess.append(low.astype(np.float32))
            dissimilar.append(idx)
    P = np.stack(probs)
    valid = np.isfinite(P).all(axis=1)
    richness = np.where(valid, np.nan_to_num(P).sum(axis=1), np.nan).astype(np.float32)
    q = np.rint(P * np.float32(250.0))  # the change of the stored (uint8, 1/250) maps: exact, and it compresses
    out = {"probability": P, "change": (q - q[:1]) / np.float32(250.0), "richness": richness,
           "richness_change": richness - richness[:1]}
    if plan.thresholds is not None:
        pres = P >= np.asarray(plan.thresholds, np.float32)[None, :, None, None]
        one, two, three, zero = (np.uint8(v) for v in (1, 2, 3, 0))
        cls = np.where(pres, np.where(pres[:1], one, two), np.where(pres[:1], three, zero)).astype(np.float32)
        cls[np.isnan(P)] = np.nan
        out["change_class"] = cls
    if spreads:
        out["spread"] = np.stack(spreads).astype(np.float32)
    if mess:
        out["mess"], out["most_dissimilar"] = np.stack(mess), np.stack(dissimilar)
    return out


_LONG = {
    "probability": "presence probability",
    "change": "change of presence probability from the baseline (scenario - baseline, in steps of 1/250)",
    "change_class": "range change after the baseline threshold: 0 absent, 1 stable presence, 2 gain, 3 loss",
    "richness": "expected number of species present (sum of presence probabilities)",
    "richness_change": "change of expected richness from the baseline",
    "spread": "standard deviation of the true presence probability around the map (interval model) or of the "
              "ensemble members' probabilities",
    "mess": "multivariate environmental similarity (MESS) to the training data; < 0: extrapolation",
    "most_dissimilar": "index of the most dissimilar variable (MESS)",
}


def baseline_thresholds(probability: xr.DataArray, table: str | PathLike[str] | pd.DataFrame, *,
                        rule: str = "max_tss", value: float | None = None) -> pd.Series:
    """Per-species presence thresholds chosen on the baseline map with geosdm.evaluate's threshold rules
    (``max_tss`` at the survey plots, else presences against background; ``p10_training_presence``; ``fixed``),
    applied to the map's values at the training records (:func:`geosdm.report.sections.binary_thresholds`)."""
    from geosdm.report.sections import binary_thresholds

    species = [str(s) for s in probability["species"].values]
    table_ = binary_thresholds(probability, table, species, rule, value)  # type: ignore[arg-type]
    return table_["threshold"].astype(float)


def project(
    model: MultiSpeciesSDM | str | PathLike[str],
    baseline: str | PathLike[str] | xr.Dataset,
    scenarios: Any,
    *,
    names: Sequence[str] | None = None,
    area: float | None = None,
    thresholds: Mapping[str, float] | pd.Series | None = None,
    reference: Reference | None = None,
    spread: bool = True,
    network: Any = None,
    associations: Any = None,
    mess: bool = True,
    clamp: bool = False,
    tile_shape: tuple[int, int] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    batch_size: int = 4_096,
    calibration: bool = True,
) -> xr.Dataset:
    """Lazy projection of ``model`` onto the baseline cube and its scenarios: ``(scenario, species, y, x)``.

    Parameters
    ----------
    model
        A fitted ``MultiSpeciesSDM`` or its folder (per-cell networks; patch networks are not projected yet).
    baseline
        The baseline cube (Zarr path/URL or Dataset) the scenarios were built on.
    scenarios
        A :class:`geosdm.scenarios.ScenariosConfig` (its stores ``<output>/<name>.zarr``) or a mapping name ->
        scenario store (path or Dataset from :func:`geosdm.scenarios.build_scenario`).
    names
        Scenarios to project (default: all); an unknown name raises :class:`InputError`.
    area
        Area in m² of the probabilities (cloglog link), as in :func:`geosdm.predict.predict`.
    thresholds
        Per-species presence thresholds chosen on the baseline (:func:`baseline_thresholds`): adds
        ``change_class`` (0 absent, 1 stable, 2 gain, 3 loss). None: no classes.
    reference
        The training data (:func:`geosdm.explain.reference_from`): adds ``mess`` and ``most_dissimilar`` per
        scenario, and gives the ranges ``clamp`` holds the covariates to. None: neither.
    mess
        Add the MESS layers when ``reference`` is given (False: the reference only clamps).
    clamp
        Hold each numeric covariate of ``reference`` within its training range before predicting, baseline and
        scenarios alike (MaxEnt's clamping): beyond the data the response stays at its edge value; needs
        ``reference`` (an :class:`InputError` without). The baseline's map then differs from a plain
        :func:`geosdm.predict.predict` only where the baseline itself is outside the training range (MESS < 0).
        Default False: the network's own extrapolation, flagged by MESS (on the demo's futures neither is better:
        docs/scenarios.md).
    spread
        Add ``spread`` (90 % interval width) when the model has an interval model (calibrated) or >= 2 members.
    network, associations
        An interaction network (:func:`geosdm.interactions.read_network` or a match) and fitted co-occurrence
        parameters: adds ``enemy_any``/``pest_any`` (regulation / pest pressure) per scenario and their change.
    tile_shape, storage_options, batch_size, calibration
        As in :func:`geosdm.predict.predict`.

    Returns
    -------
    xarray.Dataset
        Coordinates ``scenario`` (``baseline`` first, then the scenarios), ``species``, ``y``, ``x`` (and
        ``pest``/``crop`` with a network); float32 ``probability``, ``change``, [``change_class``], ``richness``,
        ``richness_change``, [``spread``], [``mess``, ``most_dissimilar``] and, with a network, ``enemy_any``,
        ``pest_any`` and ``*_change``. Attrs ``geosdm:scenarios`` (name -> period, description, replaced).

    Raises
    ------
    InputError
        Unknown scenario name, a patch network, ``thresholds`` missing species, ``clamp=True`` without
        ``reference``.
    GridError
        A scenario store on another grid than the baseline (from :func:`geosdm.scenarios.open_scenario`).

    Warns
    -----
    ScenarioCovariateWarning
        A scenario replaces covariates the model does not use.

    Example
    -------
    >>> cfg = ScenariosConfig.from_yaml("pipelines/demo.yaml")  # doctest: +SKIP
    >>> proj = project("demo-output/model", "demo-output/cube.zarr", cfg, area=1e4)  # doctest: +SKIP
    >>> proj.change.sel(scenario="warm4", species="plant_01").plot()  # doctest: +SKIP
    """
    from geosdm.predict.lazy import georeferenced, model_key, open_input
    from geosdm.predict.model import area_offset, as_model, model_fingerprint, model_inputs
    from geosdm.predict.uncertainty import n_members
    from geosdm.scenarios import check_model_scenario, open_scenario, scenario_info

    m = as_model(model)
    stores = scenario_stores(scenarios, names)
    if not stores:
        raise InputError("no scenario to project; give at least one")
    if BASELINE in stores:
        raise InputError(f"a scenario may not be named {BASELINE!r} (the projection's name for the baseline)")
    inputs = model_inputs(m)
    if inputs.halo:
        raise InputError("patch networks are not projected yet (a tile would need its neighbours' halo from every "
                         "scenario store); use a per-cell network")
    variables = inputs.variables
    stacked, base_ds, (ty, tx) = open_input(baseline, variables, tile_shape=tile_shape,
                                            storage_options=storage_options)
    base_src: str | xr.Dataset = baseline if isinstance(baseline, xr.Dataset) else str(baseline)
    plans, info = [], {}
    for name, store in stores.items():
        overlaid = open_scenario(baseline, store, storage_options=dict(storage_options) if storage_options else None)
        check_model_scenario(m, overlaid, name=name, stacklevel=3)
        sinfo = scenario_info(overlaid)
        replaced = [v for v in overlaid.attrs["geosdm:stores"]["replaced"] if v in variables]
        src = store if isinstance(store, xr.Dataset) else str(store)
        plans.append(_Scenario(name, tuple(variables.index(v) for v in replaced), tuple(replaced),
                               _reader(src, tuple(replaced), storage_options) if replaced else None))
        info[name] = {"period": sinfo.get("period"), "description": sinfo.get("description", ""),
                      "replaced": list(overlaid.attrs["geosdm:stores"]["replaced"]), "used": replaced,
                      "store": overlaid.attrs["geosdm:stores"]["scenario"]}
    species = [str(s) for s in m.species_]
    thr = None
    if thresholds is not None:
        t = pd.Series(thresholds, dtype=float)
        if missing := [s for s in species if s not in t.index]:
            raise InputError(f"thresholds lack species {missing[:5]}...; give one per model species")
        thr = tuple(float(t[s]) if np.isfinite(t[s]) else np.inf for s in species)
    cal = getattr(m, "calibrator_", None)
    calibrate = bool(calibration and cal is not None)
    kind = None
    if spread:
        kind = "model" if calibrate and getattr(cal, "error", None) is not None else (
            "samples" if n_members(m) >= 2 else None)
    ref_vars = tuple(reference.variables) if reference is not None else ()
    if clamp and reference is None:
        raise InputError("clamp=True needs the training data's ranges: pass reference=geosdm.explain.reference_from("
                         "table, model.feature_names_, model=model), or clamp=False")
    if reference is not None and (missing := [v for v in ref_vars if v not in variables]):
        raise InputError(f"the MESS reference has variables {missing} the model does not read; build it from "
                         "model.feature_names_")
    bounds = tuple((variables.index(v), float(vals[0]), float(vals[-1])) for v, vals in reference.numeric.items()
                   ) if reference is not None and clamp else ()
    if reference is not None:
        from geosdm.explain import Reference

        for i, sc in enumerate(plans):
            rows = tuple(j for j, v in enumerate(ref_vars) if v in sc.replaced)
            if rows:
                sub = Reference({ref_vars[j]: reference.numeric[ref_vars[j]] for j in rows if ref_vars[j] in
                                 reference.numeric},
                                {ref_vars[j]: reference.categories[ref_vars[j]] for j in rows if ref_vars[j] in
                                 reference.categories})
                order = tuple(ref_vars.index(v) for v in sub.variables)
                plans[i] = dataclasses.replace(sc, reference=sub, reference_rows=order)
    plan = _Plan(inputs, _reader(base_src, variables, storage_options), tuple(plans), m.link_,
                 area_offset(m, area) if m.link_ == "cloglog" else 0.0, calibrate, kind, thr,
                 tuple(variables.index(v) for v in ref_vars), ref_vars, int(batch_size), bool(mess), bounds)
    fp = model_fingerprint(m)
    token = dask.base.tokenize(fp, stacked.name, stores, dataclass_token(plan), reference)
    mkey = model_key(m, fp)
    rkey = dask.delayed(reference, name=f"geosdm-project-reference-{token}", traverse=False, pure=True)
    ychunks, xchunks = stacked.chunks[1], stacked.chunks[2]
    y0s, x0s = np.cumsum((0, *ychunks)), np.cumsum((0, *xchunks))
    n_s, n_sp = len(stores) + 1, len(species)
    shapes: dict[str, tuple[int, ...]] = {"probability": (n_s, n_sp), "change": (n_s, n_sp), "richness": (n_s,),
                                          "richness_change": (n_s,)}
    if thr is not None:
        shapes["change_class"] = (n_s, n_sp)
    if kind is not None:
        shapes["spread"] = (n_s, n_sp)
    if reference is not None and mess:
        shapes["mess"] = shapes["most_dissimilar"] = (n_s,)
    task = dask.delayed(_tile, pure=True)
    pkey = dask.delayed(plan, name=f"geosdm-project-plan-{token}", traverse=False, pure=True)
    grid: dict[str, list[list[da.Array]]] = {k: [] for k in shapes}
    for iy in range(len(ychunks)):
        rows: dict[str, list[da.Array]] = {k: [] for k in shapes}
        for ix in range(len(xchunks)):
            window = (slice(int(y0s[iy]), int(y0s[iy + 1])), slice(int(x0s[ix]), int(x0s[ix + 1])))
            t = task(mkey, rkey, plan=pkey, window=window, dask_key_name=f"geosdm-project-{token}-{iy}-{ix}")
            for k, lead in shapes.items():
                part = dask.delayed(operator.getitem, pure=True)(t, k, dask_key_name=f"geosdm-project-{k}-{token}-{iy}-{ix}")
                rows[k].append(da.from_delayed(part, (*lead, ychunks[iy], xchunks[ix]), dtype=np.float32,
                                               meta=np.empty((0,) * (len(lead) + 2), np.float32)))
        for k in shapes:
            grid[k].append(rows[k])
    coords: dict[str, Any] = {"scenario": [BASELINE, *stores], "species": species, "y": base_ds["y"],
                              "x": base_ds["x"]}
    if "spatial_ref" in base_ds.coords:
        coords["spatial_ref"] = base_ds["spatial_ref"]
    area_m2 = float(area) if area is not None else float(m.area_unit_m2_)
    attrs = {"geosdm:model_hash": fp, "geosdm:link": m.link_, "geosdm:area_m2": area_m2,
             "geosdm:cube": str(baseline) if not isinstance(baseline, xr.Dataset) else "<xarray.Dataset>",
             "geosdm:cube_fingerprint": base_ds.attrs.get("geosdm:fingerprint", ""),
             "geosdm:scenarios": info, "geosdm:spread": kind or "none",
             "geosdm:clamped": [variables[row] for row, _, _ in bounds],  # held to their training range
             "geosdm:tile_shape": [int(ty), int(tx)]}
    if calibrate:
        attrs["geosdm:calibration"] = cal.method  # type: ignore[union-attr]
    out = xr.Dataset(coords=coords, attrs=attrs)
    for k, lead in shapes.items():
        dims = ("scenario", "species", "y", "x") if len(lead) == 2 else ("scenario", "y", "x")
        vattrs: dict[str, Any] = {"long_name": _LONG[k], "units": "%" if k == "mess" else "1"}
        if k == "change_class":
            vattrs |= {"flag_values": list(CHANGE_CLASSES), "flag_meanings": " ".join(CHANGE_CLASSES.values())}
        if k == "most_dissimilar":
            vattrs |= {"flag_values": list(range(len(ref_vars))), "flag_meanings": " ".join(ref_vars)}
        if k == "spread":
            vattrs["geosdm:intervals"] = kind
        out[k] = xr.DataArray(da.block(grid[k]), dims=dims, attrs=vattrs)
    if thr is not None:
        out["threshold"] = xr.DataArray(np.asarray([t if np.isfinite(t) else np.nan for t in thr], np.float32),
                                        dims=("species",), attrs={"long_name": "presence threshold (baseline)"})
    if network is not None:
        out = _with_interactions(out, network, associations)
    return georeferenced(out)


def dataclass_token(plan: _Plan) -> Any:
    """What identifies a plan in the graph's token (readers by their source, not their objects)."""
    return (plan.inputs, plan.base.path, [(s.name, s.rows, s.reader.path if s.reader else None) for s in plan.scenarios],
            plan.link, plan.offset, plan.calibrate, plan.spread, plan.thresholds, plan.reference_vars, plan.batch_size,
            plan.mess, plan.clamp)


def _with_interactions(out: xr.Dataset, network: Any, associations: Any) -> xr.Dataset:
    """Add pest regulation (``enemy_any``: P(>= 1 enemy | pest)) and pest pressure (``pest_any``) per scenario
    and their change from the baseline (:func:`geosdm.interactions.interaction_layers` on each scenario's map)."""
    from geosdm.interactions import interaction_layers

    layers = []
    for s in out["scenario"].values:
        prob = out["probability"].sel(scenario=s).drop_vars("scenario")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lay = interaction_layers(prob, network, associations=associations, independent=False, edges=False)
        layers.append(lay[[v for v in ("enemy_any", "pest_any") if v in lay.data_vars]])
    stacked = xr.concat(layers, dim=pd.Index(list(out["scenario"].values), name="scenario"),
                        coords="minimal", compat="override")
    for v in stacked.data_vars:
        base = stacked[v].isel(scenario=0)
        out[v] = stacked[v].assign_attrs(stacked[v].attrs)
        out[f"{v}_change"] = (stacked[v] - base).assign_attrs(
            long_name=f"change from the baseline of: {stacked[v].attrs.get('long_name', v)}", units="1")
    return out
