"""One call for a projection step: the baseline and every scenario written tile by tile, ranges, COGs and STAC.

Layout under ``output``: ``<scenario>.zarr`` per scenario and ``baseline.zarr`` (``(species, y, x)`` layers:
probability, change, change_class, spread; ``(y, x)``: richness, richness_change, mess, most_dissimilar; with a
network ``(pest | crop, y, x)``: enemy_any, pest_any and their change), each with ``.progress`` resume markers;
``ranges.csv`` / ``summary.json`` (range size and centroid shift per species and scenario);
``cogs/<scenario>/<variable>[_<layer>].tif``; ``stac/collection.json`` with one Item per scenario whose properties
carry ``geosdm:scenario`` and the scenario's period. :func:`open_projection` reads the stores back as one
``(scenario, species, y, x)`` Dataset.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr
from pydantic import BaseModel, ConfigDict, Field

from geosdm.errors import InputError
from geosdm.project.lazy import BASELINE

__all__ = ["ProjectConfig", "ProjectionReport", "ThresholdRule", "run_projection", "write_projection", "pipeline_defaults",
           "open_projection", "range_table"]

log = logging.getLogger(__name__)

#: Storage per layer (probabilities as uint8, signed changes and codes as float16, MESS float32).
DTYPES = {"probability": "uint8", "change": "float16", "change_class": "float16", "spread": "uint8",
          "richness": "float32", "richness_change": "float32", "mess": "float32", "most_dissimilar": "float16",
          "enemy_any": "uint8", "pest_any": "uint8", "enemy_any_change": "float16", "pest_any_change": "float16"}
#: Layers of the baseline store (no change from itself).
_BASELINE_SKIP = ("change", "richness_change", "enemy_any_change", "pest_any_change")


class ThresholdRule(BaseModel):
    """How the presence threshold of each species is chosen on the baseline map (geosdm.evaluate's rules at the
    training records; see :func:`geosdm.project.baseline_thresholds`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: Literal["max_tss", "p10_training_presence", "fixed"] = "max_tss"
    value: float | None = Field(default=None, ge=0, le=1)


class ProjectConfig(BaseModel):
    """A projection step: a model onto a baseline cube and its scenario cubes (unknown keys are rejected)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = Field(default=None, description="Model folder (default in a pipeline: the predict step's).")
    baseline: str | None = Field(default=None, description="Baseline cube (default: the scenarios' baseline / the "
                                                           "pipeline's cube).")
    scenarios: str | None = Field(default=None, description="YAML with a `scenarios:` section (default in a pipeline: "
                                                            "its own scenarios step).")
    names: tuple[str, ...] | None = Field(default=None, description="Scenarios to project (default: all).")
    output: str
    area: float | None = Field(default=None, gt=0)
    table: str | None = Field(default=None, description="Training table: thresholds and the MESS reference.")
    threshold: ThresholdRule | None = Field(default_factory=ThresholdRule)
    predictions: str | None = Field(default=None, description="The baseline's probability store of the same model "
                                    "and area (the predict step's), read for the thresholds instead of predicting.")
    mess: bool = True
    clamp: bool = Field(default=False, description="Hold covariates within the training table's range before "
                        "predicting (MaxEnt's clamping) instead of extrapolating the response curves; needs `table`.")
    spread: bool = True
    edges: str | None = None
    nodes: str | None = None
    associations: str | None = Field(default=None, description="associations.json of an interactions step.")
    tile_shape: tuple[int, int] | None = None
    chunk_shape: tuple[int, int] | None = None
    cogs: bool = True
    cog_variables: tuple[str, ...] = ("probability", "change", "change_class", "mess", "spread")
    per_layer: bool = False
    stac: bool = True
    collection_id: str = "geosdm-projections"
    storage_options: dict[str, Any] | None = None

    def store(self, name: str) -> str:
        return f"{self.output.rstrip('/')}/{name}.zarr"

    @classmethod
    def from_yaml(cls, path: str | Path, *, section: str | None = "project") -> ProjectConfig:
        from geosdm._yaml import model_from_yaml

        return model_from_yaml(cls, path, section=section, what="project")


@dataclass
class ProjectionReport:
    """What a projection step wrote."""

    stores: dict[str, Any]  # scenario -> WriteReport
    ranges: pd.DataFrame
    thresholds: dict[str, float] = field(default_factory=dict)
    cogs: list[Any] = field(default_factory=list)
    stac: str | None = None
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        r = self.ranges
        scen = [s for s in r["scenario"].unique() if s != BASELINE] if len(r) else []
        return {"scenarios": scen, "tiles": {k: v.n_tiles for k, v in self.stores.items()},
                "resumed": {k: v.n_resumed for k, v in self.stores.items()}, "cogs": len(self.cogs),
                "stac": self.stac, "seconds": self.seconds,
                "mean_range_change_pct": {s: float(r.loc[r.scenario == s, "range_change_pct"].mean()) for s in scen},
                "mean_shift_m": {s: float(r.loc[r.scenario == s, "centroid_shift_m"].mean()) for s in scen}}


def _network(config: ProjectConfig) -> tuple[Any, Any]:
    if config.edges is None:
        return None, None
    from geosdm.interactions import Associations, read_network

    net = read_network(config.edges, config.nodes)
    assoc = None
    if config.associations:
        d = json.loads(Path(config.associations).read_text())
        assoc = Associations(dict(d.get("leakage") or {}), dict(d.get("odds_ratio") or {}),
                             source=str(d.get("source", "surveys")))
    return net, assoc


def write_projection(proj: xr.Dataset, output: str, *, identity: dict[str, Any] | None = None,
                     chunk_shape: tuple[int, int] | None = None, storage_options: dict[str, Any] | None = None,
                     client: Any = None, progress: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Write the lazy projection ``proj`` (from :func:`geosdm.project.project`) as one store per scenario,
    ``<output>/<scenario>.zarr``, with the one layer writer (:func:`geosdm.io.write_layers`: one shard per tile,
    resumable with markers); every store's tiles come from the same tile tasks (computed once). Returns
    ``scenario -> WriteReport``."""
    import dask

    from geosdm.io.layers import write_layers
    from geosdm.io.tasks import connect

    if "://" not in output:
        Path(output).mkdir(parents=True, exist_ok=True)
    info = proj.attrs.get("geosdm:scenarios", {})
    delayed = {}
    for s in map(str, proj["scenario"].values):
        ds = proj.sel(scenario=s).drop_vars("scenario")
        keep = [v for v in ds.data_vars if v != "threshold" and ds[v].dims[-2:] == ("y", "x")
                and not (s == BASELINE and v in _BASELINE_SKIP)]
        ds = ds[keep]
        attrs = {k: v for k, v in proj.attrs.items() if k != "geosdm:scenarios"}
        attrs["title"] = f"geosdm projection: {s}"
        if s == BASELINE:
            attrs["geosdm:scenario"] = {"name": BASELINE}
        else:
            sc = info.get(s, {})
            attrs["geosdm:scenario"] = {"name": s, **sc}
            if sc.get("period"):
                a, b = str(sc["period"]).split("-")
                attrs["geosdm:period"] = f"{a}-01-01/{b}-12-31"
        if "threshold" in proj:
            attrs["geosdm:thresholds"] = {str(k): (None if not np.isfinite(v) else float(v)) for k, v in
                                          zip(proj["species"].values, proj["threshold"].values)}
        delayed[s] = write_layers(ds, f"{output.rstrip('/')}/{s}.zarr",
                                  dtypes={str(v): DTYPES.get(str(v), "float32") for v in ds.data_vars},  # type: ignore[misc]
                                  attrs=attrs, identity={**(identity or {"graph": dask.base.tokenize(ds)}), "scenario": s},
                                  chunk_shape=chunk_shape, storage_options=storage_options, overwrite=overwrite,
                                  desc=f"project {s}", compute=False)
    with connect(client) as c:
        if c is not None:
            futures = c.compute(list(delayed.values()))
            results = c.gather(futures)
        elif progress:
            from dask.diagnostics import ProgressBar

            with ProgressBar():
                results = dask.compute(*delayed.values())
        else:
            results = dask.compute(*delayed.values())
    return dict(zip(delayed, results))


def open_projection(output: str, *, storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """The stores of a projection run as one lazy Dataset ``(scenario, species, y, x)`` (baseline first)."""
    from geosdm.io.layers import open_layers

    root = output.rstrip("/")
    f = Path(f"{root}/summary.json")
    summary = json.loads(f.read_text()) if "://" not in root and f.is_file() else {}
    names = [BASELINE, *summary.get("scenarios", [])]
    if "://" not in root and not summary:
        names = [BASELINE] + sorted(p.name[:-5] for p in Path(root).glob("*.zarr") if p.name != f"{BASELINE}.zarr")
    parts = [open_layers(f"{root}/{n}.zarr", storage_options=storage_options) for n in names]
    return xr.concat(parts, dim=pd.Index(names, name="scenario"), data_vars="all", coords="minimal",
                     compat="override", join="outer", combine_attrs="drop_conflicts")


def range_table(output_or_projection: str | xr.Dataset, *, cell_area_m2: float | None = None) -> pd.DataFrame:
    """Per scenario and species: range size (cells at or above the baseline threshold, km²), expected range
    (sum of probabilities, km²), their change from the baseline (%), and the probability-weighted centroid and its
    shift from the baseline (metres, bearing in degrees clockwise from grid north)."""
    ds = open_projection(output_or_projection) if isinstance(output_or_projection, str) else output_or_projection
    gbox = ds.odc.geobox
    cell = cell_area_m2 or abs(float(gbox.resolution.x) * float(gbox.resolution.y))
    xs, ys = ds["x"].values.astype(np.float64), ds["y"].values.astype(np.float64)
    rows = []
    has_cls = "change_class" in ds
    for s in map(str, ds["scenario"].values):
        p = ds["probability"].sel(scenario=s).values.astype(np.float64)  # (species, y, x)
        w = np.nan_to_num(p)
        tot = w.sum(axis=(1, 2))
        cx = (w.sum(axis=1) * xs[None, :]).sum(axis=1) / np.maximum(tot, 1e-12)
        cy = (w.sum(axis=2) * ys[None, :]).sum(axis=1) / np.maximum(tot, 1e-12)
        rng = np.full(len(tot), np.nan)
        if has_cls:
            c = ds["change_class"].sel(scenario=s).values
            rng = ((c == 1) | (c == 2)).sum(axis=(1, 2)).astype(float) * cell / 1e6
        for i, sp in enumerate(map(str, ds["species"].values)):
            rows.append({"scenario": s, "species": sp, "range_km2": rng[i], "expected_range_km2": tot[i] * cell / 1e6,
                         "centroid_x": cx[i], "centroid_y": cy[i]})
    t = pd.DataFrame(rows)
    base = t[t.scenario == BASELINE].set_index("species")
    b = base.loc[t["species"]]
    t["range_change_pct"] = 100 * (t["range_km2"].to_numpy() - b["range_km2"].to_numpy()) / np.where(
        b["range_km2"].to_numpy() > 0, b["range_km2"].to_numpy(), np.nan)
    t["expected_range_change_pct"] = 100 * (t["expected_range_km2"].to_numpy() / b["expected_range_km2"].to_numpy() - 1)
    dx = t["centroid_x"].to_numpy() - b["centroid_x"].to_numpy()
    dy = t["centroid_y"].to_numpy() - b["centroid_y"].to_numpy()
    t["centroid_shift_m"] = np.hypot(dx, dy)
    t["shift_bearing_deg"] = np.where(t["centroid_shift_m"] > 0, np.degrees(np.arctan2(dx, dy)) % 360, np.nan)
    return t


def _stac(config: ProjectConfig, reports: dict[str, Any], cogs: dict[str, list[Any]]) -> str:
    """One Item per scenario (its store and COGs; ``geosdm:scenario``, ``geosdm:scenario_period``,
    start/end datetimes of the period) in one Collection, hrefs relative as :func:`geosdm.predict.write_stac`."""
    import fsspec
    from pystac.utils import make_relative_href

    from geosdm.io.layers import open_layers
    from geosdm.predict.stac import prediction_collection, prediction_item

    items = []
    for s in reports:
        store = config.store(s)
        info = open_layers(store, storage_options=config.storage_options).attrs.get("geosdm:scenario", {})
        item = prediction_item(store, cogs.get(s, []), item_id=f"{config.collection_id}-{s}",
                               collection_id=config.collection_id, storage_options=config.storage_options)
        item.properties["geosdm:scenario"] = s
        item.properties["geosdm:scenario_period"] = info.get("period")
        if info.get("description"):
            item.properties["geosdm:scenario_description"] = info["description"]
        items.append(item)
    coll = prediction_collection(items, collection_id=config.collection_id,
                                 description="geosdm projections onto scenarios")
    root = str(Path(config.output).resolve() / "stac") if "://" not in config.output else f"{config.output}/stac"
    coll.normalize_hrefs(root)
    for item in items:
        start = item.get_self_href()
        for asset in item.assets.values():
            asset.href = make_relative_href(asset.href, start)
        for link in item.links:
            if link.rel == "alternate":
                link.target = make_relative_href(link.get_href(), start)
    opts = (config.storage_options or {}) if "://" in root else {}
    for obj in (*items, coll):
        with fsspec.open(obj.get_self_href(), "w", **opts) as f:
            f.write(json.dumps(obj.to_dict(include_self_link=False, transform_hrefs=True), indent=1))
    return coll.get_self_href()


def run_projection(config: ProjectConfig, *, model: Any = None, scenarios: Any = None, client: Any = None,
                   progress: bool = False, overwrite: bool = False) -> ProjectionReport:
    """Project a model onto its scenarios as ``config`` says: thresholds on the baseline, the stores (resumable),
    the range table, COGs and STAC.

    ``model``: an in-memory model instead of ``config.model``; ``scenarios``: a
    :class:`geosdm.scenarios.ScenariosConfig` (or mapping name -> store) instead of reading ``config.scenarios``.
    """
    import warnings

    from geosdm.predict.model import as_model, model_fingerprint
    from geosdm.project.lazy import baseline_thresholds, project
    from geosdm.scenarios import ScenariosConfig

    t0 = time.perf_counter()
    if model is None and config.model is None:
        raise InputError("no model: set `model:` (a folder written by MultiSpeciesSDM.save) or pass model=")
    m = as_model(model if model is not None else config.model)
    if scenarios is None:
        if config.scenarios is None:
            raise InputError("no scenarios: set `scenarios:` (a YAML with a scenarios section) or pass scenarios=")
        scenarios = ScenariosConfig.from_yaml(config.scenarios)
    baseline = config.baseline or (scenarios.baseline if isinstance(scenarios, ScenariosConfig) else None)
    if baseline is None:
        raise InputError("no baseline cube: set `baseline:` (or `scenarios.baseline`)")
    out = config.output.rstrip("/")
    table = None
    if config.table is not None and (config.mess or config.threshold is not None):
        table = pd.read_parquet(config.table)
    thresholds = None
    if config.threshold is not None and (table is not None or config.threshold.rule == "fixed"):
        from geosdm.predict import open_predictions, predict

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prob = (open_predictions(config.predictions).probability if config.predictions
                    else predict(m, baseline, area=config.area, tile_shape=config.tile_shape).probability)
            tab = table if table is not None else pd.DataFrame(columns=["species", "x", "y", "crs", "kind", "value"])
            thresholds = baseline_thresholds(prob, tab, rule=config.threshold.rule, value=config.threshold.value)
    reference = None
    if (config.mess or config.clamp) and table is not None:
        from geosdm.explain import reference_from

        reference = reference_from(table, list(m.feature_names_), model=m)  # as the explain step's MESS
    elif config.clamp:
        warnings.warn("project: clamp is on but no training table is given, so covariates are not held to the "
                      "training range and the maps extrapolate the response curves; set `table` (or clamp: false)",
                      UserWarning, stacklevel=2)  # run_projection goes on without: the other layers need no table
    net, assoc = _network(config)
    proj = project(m, baseline, scenarios, names=config.names, area=config.area, thresholds=thresholds,
                   reference=reference, mess=config.mess, clamp=config.clamp and reference is not None,
                   spread=config.spread, network=net, associations=assoc,
                   tile_shape=config.tile_shape)
    from geosdm.io.zarr import content_identity

    stores = proj.attrs["geosdm:scenarios"]
    identity = {"model": model_fingerprint(m),
                "baseline": content_identity(str(baseline), list(m.feature_names_)) if isinstance(baseline, str) else "",
                "scenarios": {k: v["store"] for k, v in stores.items()},
                "thresholds": None if thresholds is None else [float(v) for v in thresholds.fillna(-1).values],
                "settings": config.model_dump(exclude={"output", "cogs", "cog_variables", "per_layer", "stac",
                                                      "collection_id", "storage_options"})}
    reports = write_projection(proj, out, identity=identity, chunk_shape=config.chunk_shape,
                               storage_options=config.storage_options, client=client, progress=progress,
                               overwrite=overwrite)
    ranges = range_table(_reopen(out, list(reports)))
    names = [s for s in reports if s != BASELINE]
    if "://" not in out:
        ranges.to_csv(f"{out}/ranges.csv", index=False)
        Path(f"{out}/summary.json").write_text(json.dumps({
            "scenarios": names, "model_hash": model_fingerprint(m), "baseline": str(baseline),
            "thresholds": None if thresholds is None else {k: (None if not np.isfinite(v) else float(v))
                                                           for k, v in thresholds.items()},
            "scenario_info": stores, "spread": proj.attrs.get("geosdm:spread"),
            "clamped": proj.attrs.get("geosdm:clamped", []),
            "species": json.loads(ranges.to_json(orient="records"))}, indent=1))
    report = ProjectionReport(reports, ranges, {} if thresholds is None else
                              {str(k): float(v) for k, v in thresholds.items()})
    if config.cogs:
        from geosdm.predict.cog import export_cogs

        per: dict[str, list[Any]] = {}
        for s in reports:
            have = set(map(str, xr.open_zarr(config.store(s), zarr_format=3).data_vars))
            per[s] = []
            for v in config.cog_variables:
                if v in have:
                    per[s] += export_cogs(config.store(s), f"{out}/cogs/{s}", variable=v, per_layer=config.per_layer,
                                          multiband=True, storage_options=config.storage_options, client=client)
            report.cogs += per[s]
        if config.stac:
            report.stac = _stac(config, reports, per)
    elif config.stac:
        report.stac = _stac(config, reports, {})
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _reopen(out: str, names: list[str]) -> xr.Dataset:
    from geosdm.io.layers import open_layers

    parts = [open_layers(f"{out}/{n}.zarr") for n in names]
    return xr.concat(parts, dim=pd.Index(names, name="scenario"), data_vars="all", coords="minimal",
                     compat="override", join="outer", combine_attrs="drop_conflicts")


def pipeline_defaults(pipeline: Any) -> ProjectConfig:
    """The pipeline's ``project:`` section with what it leaves unset taken from the other steps: the model and
    area of the predict step (and its probability store for the thresholds), the scenarios' baseline (else the
    cube), the records' training table (thresholds, MESS), the interactions step's network and fitted
    associations (regulation and pest-pressure change)."""
    cfg: ProjectConfig = pipeline.project
    pred, inter = pipeline.predict, pipeline.interactions
    scen = pipeline.scenarios
    update: dict[str, Any] = {}
    if cfg.model is None and pred is not None:
        update["model"] = pred.model
    if cfg.area is None and pred is not None and pred.area is not None:
        update["area"] = pred.area
    if cfg.baseline is None:
        update["baseline"] = (scen.baseline if scen is not None and scen.baseline else
                              pipeline.cube.output.path if pipeline.cube is not None else None)
    if cfg.table is None and pipeline.records is not None:
        update["table"] = pipeline.records.output
    model = update.get("model", cfg.model)
    if (cfg.predictions is None and pred is not None and pred.model == model
            and update.get("area", cfg.area) == pred.area and Path(pred.zarr_path).exists()):
        update["predictions"] = pred.zarr_path
    if cfg.edges is None and inter is not None:
        update |= {"edges": inter.edges, "nodes": inter.nodes}
        assoc = Path(inter.output) / "associations.json"
        if cfg.associations is None and assoc.is_file():
            update["associations"] = str(assoc)
    if cfg.tile_shape is None and pred is not None and pred.tile_shape is not None:
        update["tile_shape"] = pred.tile_shape
    return cfg.model_copy(update=update)
