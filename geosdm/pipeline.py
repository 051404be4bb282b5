"""Run declarative pipelines (``pipelines/*.yaml``) step by step: demo -> serve -> search -> cube -> ...

Each step reads the previous step's stored output, so a step can be rerun or resumed alone. The library
never prints: progress and summaries go to an ``on_event(step, message, data)`` callback (the CLI prints).
Nothing in the library imports this module.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from geosdm._yaml import read_yaml
from geosdm.cube.config import CubeConfig
from geosdm.models.config import TrainConfig
from geosdm.evaluate.run import EvaluateConfig
from geosdm.evaluate.sites import MapEvaluateConfig
from geosdm.explain.run import ExplainConfig
from geosdm.interactions.run import InteractionsConfig
from geosdm.predict.run import PredictConfig
from geosdm.project.run import ProjectConfig
from geosdm.records.inputs import RecordsInput
from geosdm.scenarios.config import ScenariosConfig
from geosdm.errors import InputError

__all__ = ["PipelineConfig", "PipelineResult", "load_pipeline", "run_pipeline", "pipeline_dirs", "find_pipeline"]

log = logging.getLogger(__name__)
Event = Callable[[str, str, dict[str, Any]], None]
STEPS = ("demo", "serve", "search", "cube", "scenarios", "records", "train", "evaluate", "predict", "evaluate_map",
         "explain", "interactions", "project", "report")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DemoStep(_Frozen):
    preset: Literal["small", "default"] = "default"
    seed: int = 0
    out: str = "demo-output"


class ServeStep(_Frozen):
    asset_hrefs: Literal["http", "s3"] = "http"
    upload: bool = True


class SearchStep(_Frozen):
    """Search the served STAC API for each source (cloud limit only where a source has a cloud property)."""

    sources: tuple[str, ...] = ("demo-sentinel-2-l2a", "demo-landsat-c2-l2")
    datetime: str | None = None
    max_cloud: float | None = Field(default=None, ge=0, le=100)


class EffortStep(_Frozen):
    """An observer-effort layer made from the records (:func:`geosdm.records.record_density`), for ``bias_cube``."""

    output: str
    bandwidth: float = Field(default=10.0, ge=0)  # Gaussian sigma in cells
    kinds: tuple[str, ...] = ("presence_only",)
    floor: float = Field(default=0.01, gt=0)


class RecordsStep(_Frozen):
    """Species records -> validated training table with background points, covariates and spatial folds.

    ``inputs``: record files, as paths or mappings with reading options (:class:`geosdm.records.RecordsInput`).
    ``background: given`` uses the inputs' own background rows (read with ``kind: background``) instead of
    drawing ``n_background`` points.
    """

    inputs: tuple[str | RecordsInput, ...]
    output: str
    cube: str | None = None  # default: the cube step's output
    n_background: int = Field(default=10_000, ge=0)
    background: Literal["uniform", "target_group", "bias", "given"] = "uniform"
    n_folds: int = Field(default=5, ge=2)
    block_size: float = Field(default=5_000.0, gt=0)
    buffer: float = Field(default=0.0, ge=0)
    seed: int = 0
    effort: EffortStep | None = None  # also write the records' target-group density (an observer-bias layer)


class BinaryMaps(_Frozen):
    """Binary presence maps in the report: the threshold rule (geosdm.evaluate's rules on the map's values at
    the training records, see geosdm.report.sections.binary_thresholds) or a fixed ``value``."""

    rule: Literal["max_tss", "sens_eq_spec", "p10_training_presence", "fixed_cumulative", "fixed"] = "max_tss"
    value: float | None = Field(default=None, ge=0, description="The threshold of rule 'fixed' (in [0, 1]), or the "
                                "percent of rule 'fixed_cumulative' (default 10).")


class ReportStep(_Frozen):
    """The run's HTML report: the run log, maps of a few species, and each later step's figures and summary."""

    output: str
    title: str = "geosdm run"
    n_maps: int = Field(default=6, ge=0, description="Species probability maps shown (spread over the species).")
    color_scale: Literal["per_map", "fixed"] = Field(
        default="per_map", description="'per_map': each map's colours span its own range (a rare species is not "
                                       "drawn empty); 'fixed': one 0-1 probability scale for every map.")
    binary: BinaryMaps | None = Field(default=None, description="Also draw binary presence maps of the mapped species.")
    odmap: bool = Field(default=True, description="ODMAP protocol table in the report and odmap.csv beside it.")


class PlanHints(_Frozen):
    """What ``geosdm plan`` cannot read from a pipeline that has not run: species before a model exists."""

    species: int | None = Field(default=None, gt=0)
    workers: tuple[int, ...] = (1, 16, 64, 256)


class PipelineConfig(_Frozen):
    """A pipeline: which steps run and their configuration (unknown keys are rejected)."""

    name: str
    demo: DemoStep | None = None
    serve: ServeStep | None = None
    search: SearchStep | None = None
    cube: CubeConfig | None = None
    scenarios: ScenariosConfig | None = None  # scenario cubes on the cube's grid (docs/scenarios.md)
    records: RecordsStep | None = None
    train: TrainConfig | None = None
    evaluate: EvaluateConfig | None = None
    predict: PredictConfig | None = None
    evaluate_map: MapEvaluateConfig | None = None
    explain: ExplainConfig | None = None
    interactions: InteractionsConfig | None = None
    project: ProjectConfig | None = None  # the model onto the scenario cubes (docs/scenarios.md)
    report: ReportStep | None = None
    plan: PlanHints | None = None  # hints for `geosdm plan`; no step runs from it


@dataclass
class PipelineResult:
    """What each step produced (summaries keyed by step name)."""

    config: PipelineConfig
    outputs: dict[str, Any] = field(default_factory=dict)


def pipeline_dirs() -> list[Path]:
    """Folders holding shipped pipelines: ``$GEOSDM_PIPELINES`` entries, then the checkout's ``pipelines/``, then
    the installed package's ``geosdm/pipelines`` (a wheel ships them there; :func:`geosdm.resources.shipped_dirs`)."""
    from geosdm.resources import shipped_dirs

    dirs = [Path(p) for p in os.environ.get("GEOSDM_PIPELINES", "").split(os.pathsep) if p]
    dirs += shipped_dirs("pipelines")
    return [d for d in dirs if d.is_dir()]


def find_pipeline(name_or_path: str | os.PathLike[str]) -> Path:
    """A pipeline YAML by path, or by name in :func:`pipeline_dirs`."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    for d in pipeline_dirs():
        for cand in (d / f"{name_or_path}.yaml", d / str(name_or_path)):
            if cand.is_file():
                return cand
    raise InputError(f"pipeline {str(name_or_path)!r} not found as a file or in {[str(d) for d in pipeline_dirs()]}")


def load_pipeline(path: str | os.PathLike[str], *, env: dict[str, str] | None = None) -> PipelineConfig:
    """Read a pipeline YAML, substitute ``${VAR:-default}`` from the environment, validate once."""
    p = find_pipeline(path)
    raw = read_yaml(p, what="pipeline", env=env)
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as err:
        raise InputError(f"invalid pipeline {str(p)!r}:\n{err}") from None


def _noop(step: str, message: str, data: dict[str, Any]) -> None:
    log.info("[%s] %s", step, message)


def run_pipeline(
    config: PipelineConfig,
    *,
    steps: tuple[str, ...] | None = None,
    on_event: Event | None = None,
    progress: bool = False,
    client: Any | None = None,
) -> PipelineResult:
    """Run the configured steps in order (``steps`` restricts them). Services stay up for the later steps."""
    log_lines: list[str] = []

    def emit(step: str, message: str, data: dict[str, Any]) -> None:
        log_lines.append(f"[{step}] {message}")
        (on_event or _noop)(step, message, data)

    wanted = [s for s in STEPS if getattr(config, s) is not None and (steps is None or s in steps)]
    result = PipelineResult(config)
    with contextlib.ExitStack() as stack:
        served = None
        for step in wanted:
            if step == "demo":
                result.outputs["demo"] = _run_demo(config.demo, emit)  # type: ignore[arg-type]
            elif step == "serve":
                served = stack.enter_context(_serve(config, emit))
                result.outputs["serve"] = served
            elif step == "search":
                result.outputs["search"] = _run_search(config, served, emit)
            elif step == "cube":
                result.outputs["cube"] = _run_cube(config.cube, served, emit, progress, client)  # type: ignore[arg-type]
            elif step == "scenarios":
                result.outputs["scenarios"] = _run_scenarios(config, served, emit, progress, client)
            elif step == "records":
                result.outputs["records"] = _run_records(config, emit)
            elif step == "train":
                result.outputs["train"] = _run_train(config.train, emit)  # type: ignore[arg-type]
            elif step == "evaluate":
                result.outputs["evaluate"] = _run_evaluate(config.evaluate, result.outputs.get("train"), emit)  # type: ignore[arg-type]
            elif step == "predict":
                evaluated = result.outputs.get("evaluate")  # predict with the calibrated model when there is one
                model = getattr(evaluated, "model", None) or result.outputs.get("train")
                result.outputs["predict"] = _run_predict(config.predict, model, emit, progress, client)  # type: ignore[arg-type]
            elif step == "evaluate_map":
                result.outputs["evaluate_map"] = _run_evaluate_map(config.evaluate_map, emit)  # type: ignore[arg-type]
            elif step == "explain":
                result.outputs["explain"] = _run_explain(config.explain, result.outputs.get("train"), emit, progress, client)  # type: ignore[arg-type]
            elif step == "interactions":
                result.outputs["interactions"] = _run_interactions(config.interactions, emit, progress, client)  # type: ignore[arg-type]
            elif step == "project":
                result.outputs["project"] = _run_project(config, emit, progress, client)
            elif step == "report":
                result.outputs["report"] = _run_report(config, log_lines, emit)
    return result


def _run_demo(step: DemoStep, emit: Event) -> Any:
    from geosdm.demo import generate

    emit("demo", f"generating the {step.preset!r} demo region (seed {step.seed}) in {step.out}", {})
    layout = generate(step.out, preset=step.preset, seed=step.seed)
    region = layout.region()
    emit("demo", f"demo region ready: {sum(region['n_items'].values())} STAC items, {region['n_species']} species, "
                 f"{region['n_presence_only']} presence-only records, {region['n_survey_plots']} survey plots",
         {"region": region})
    return layout


@contextlib.contextmanager
def _serve(config: PipelineConfig, emit: Event) -> Iterator[Any]:
    from geosdm.services import serve_demo

    if config.demo is None:
        raise InputError("the serve step needs a demo step (what to serve)")
    opts = config.serve or ServeStep()
    with serve_demo(config.demo.out, asset_hrefs=opts.asset_hrefs, upload=opts.upload) as served:
        emit("serve", f"STAC API {served.stac_url} | HTTP {served.http_url} | S3 {served.s3_endpoint} (bucket {served.bucket})",
             {"stac_url": served.stac_url})
        yield served


def _run_search(config: PipelineConfig, served: Any, emit: Event) -> dict[str, list[str]]:
    from geosdm.demo import DemoLayout
    from geosdm.sources import load_source
    from geosdm.stac import search

    if served is None:
        raise InputError("the search step needs the serve step (a STAC API to search)")
    step = config.search or SearchStep()
    region = DemoLayout.at(config.demo.out).region()  # type: ignore[union-attr]
    found: dict[str, list[str]] = {}
    for name in step.sources:
        src = load_source(name, url=served.stac_url)
        items = search(src, bbox=region["bbox_lonlat"], datetime=step.datetime if src.composite else None, max_cloud=step.max_cloud)
        found[name] = [i.id for i in items]
        clouds = [i.properties.get("eo:cloud_cover") for i in items]
        limit = f" with {src.cloud_property} <= {step.max_cloud}" if src.cloud_property and step.max_cloud is not None else ""
        spread = f" (cloud cover {min(clouds):.0f}-{max(clouds):.0f}%)" if clouds and None not in clouds else ""
        emit("search", f"{src.collection}: {len(items)} items{limit}{spread}", {"source": name, "items": found[name]})
    return found


def _run_cube(cube: CubeConfig, served: Any, emit: Event, progress: bool, client: Any | None) -> Any:
    from geosdm.cube import build_cube

    if served is not None:  # sources without their own url/catalog search the served STAC API
        specs = tuple(s if (s.url or s.catalog or s.load().kind != "stac-api") else s.model_copy(update={"url": served.stac_url})
                      for s in cube.sources)
        cube = cube.model_copy(update={"sources": specs})
    emit("cube", f"building {cube.output.path} ({len(cube.sources)} sources)", {})
    report = build_cube(cube, progress=progress, client=client)
    emit("cube", f"cube {report.path}: {len(report.variables)} variables over {report.n_tiles} tiles "
                 f"({report.n_skipped} resumed) in {report.seconds:.1f} s; items used {report.items}; "
                 f"failed items {report.failures or 'none'}", {"report": report})
    return report


def _run_scenarios(config: PipelineConfig, served: Any, emit: Event, progress: bool, client: Any | None,
                   names: list[str] | None = None) -> Any:
    from geosdm.scenarios import build_scenarios

    step = config.scenarios
    assert step is not None
    baseline = step.baseline or (config.cube.output.path if config.cube else None)
    if baseline is None:
        raise InputError("the scenarios step needs `scenarios.baseline` (a cube path) or a cube step")
    emit("scenarios", f"building {len(names or step.futures)} scenario(s) on {baseline} -> {step.output}", {})
    reports = build_scenarios(step, baseline=baseline, names=names, client=client, progress=progress,
                              source_url=served.stac_url if served is not None else None)
    for name, r in reports.items():
        emit("scenarios", f"scenario {name} ({r.period}) {r.path}: {len(r.variables)} covariates replaced "
                          f"({', '.join(f'{s}: {len(v)}' for s, v in r.sources.items())}) over {r.n_tiles} tiles "
                          f"({r.n_skipped} resumed) in {r.seconds:.1f} s", {"report": r})
    return reports


def _run_records(config: PipelineConfig, emit: Event) -> Any:
    import pandas as pd

    from geosdm.records import read_inputs, training_table, write_records

    step = config.records
    assert step is not None
    cube = step.cube or (config.cube.output.path if config.cube else None)
    if cube is None:
        raise InputError("the records step needs `cube:` (a cube path) or a cube step")
    frames = read_inputs(step.inputs)
    for p, f in zip(step.inputs, frames):
        kinds = {str(k): int(v) for k, v in f["kind"].value_counts().items() if v}
        emit("records", f"read {len(f)} records from {p if isinstance(p, str) else p.path} ({kinds})", {})
    tt = training_table(
        pd.concat(frames, ignore_index=True), cube, n_background=step.n_background, background=step.background,
        n_folds=step.n_folds, block_size=step.block_size, buffer=step.buffer, seed=step.seed,
    )
    write_records(tt.table, step.output, metadata={"covariates": ",".join(tt.covariates)})
    if step.effort is not None:
        from geosdm.records import cube_source, record_density, write_effort

        e = step.effort
        density = record_density(tt.table, cube_source(cube).geobox, bandwidth=e.bandwidth, kinds=e.kinds,
                                 floor=e.floor)
        write_effort(density, e.output)
        emit("records", f"observer-effort layer {e.output}: density of {density.attrs['n_records']} {'/'.join(e.kinds)} "
                        f"records, smoothed over {e.bandwidth:g} cells", {})
    summary = tt.summary()
    emit("records", f"training table {step.output}: {summary['rows']} rows {summary['kinds']}, {summary['species']} species, "
                    f"{summary['covariates']} covariates; dropped {summary['dropped'] or 'nothing'}; "
                    f"covariates left out for gaps: {list(summary['excluded_covariates']) or 'none'}", {"summary": summary})
    return tt


def _run_train(cfg: TrainConfig, emit: Event) -> Any:
    from geosdm.models.config import train_from_config

    emit("train", f"training {cfg.model.get('network', 'mlp')} / {cfg.model.get('loss', 'deepmaxent')} on {cfg.table or cfg.records}", {})
    model = train_from_config(cfg)
    hist = getattr(model, "history_", None) or []
    last = hist[-1] if hist else {}
    from geosdm.records import CovariateSelection

    selection = CovariateSelection.load(cfg.output)
    if selection is not None:
        emit("train", f"collinearity filter: {selection.summary()}", {"selection": selection.to_dict()})
    emit("train", f"model saved to {cfg.output}: {len(model.species_)} species, {len(model.feature_names_)} covariates"
                  + (f", last epoch {last}" if last else ""), {"model": cfg.output})
    return model


def _run_predict(cfg: PredictConfig, model: Any, emit: Event, progress: bool, client: Any | None) -> Any:
    from geosdm.predict.run import run_prediction

    emit("predict", f"predicting over {cfg.cube} -> {cfg.output}", {})
    report = run_prediction(cfg, model=model, client=client, progress=progress)
    unc = (f", uncertainty {cfg.uncertainty_path}" if report.uncertainty is not None
           else f", uncertainty skipped: {report.uncertainty_skipped}" if report.uncertainty_skipped else "")
    emit("predict", f"probability cube {cfg.zarr_path} ({report.write.n_tiles} tiles){unc}, {len(report.cogs)} COGs, "
                    f"STAC {report.stac.collection if report.stac else 'none'} in {report.seconds:.1f} s", {"report": report})
    return report


def _run_evaluate(cfg: EvaluateConfig, model: Any, emit: Event) -> Any:
    from geosdm.evaluate import run_evaluation

    emit("evaluate", f"held-out spatial folds of {cfg.table} -> {cfg.output}", {})
    report = run_evaluation(cfg, model=model)
    for line in report.lines():
        emit("evaluate", line, {"report": report})
    return report


def _run_evaluate_map(cfg: MapEvaluateConfig, emit: Event) -> Any:
    from geosdm.evaluate.sites import run_map_evaluation

    emit("evaluate_map", f"the map {cfg.predictions} at the survey sites -> {cfg.output}", {})
    report = run_map_evaluation(cfg)
    for line in report.lines():
        emit("evaluate_map", line, {"report": report})
    return report


def _run_explain(cfg: ExplainConfig, model: Any, emit: Event, progress: bool, client: Any | None) -> Any:
    from geosdm.explain.run import run_explain

    emit("explain", f"explaining {cfg.model or 'the trained model'} on {cfg.table} -> {cfg.output}", {})
    report = run_explain(cfg, model=model, client=client, progress=progress)
    emit("explain", "; ".join(f"{k}: {v}" for k, v in report.summary().items() if v is not None), {"report": report})
    return report


def _run_interactions(cfg: InteractionsConfig, emit: Event, progress: bool, client: Any | None) -> Any:
    from geosdm.interactions.run import run_interactions

    emit("interactions", f"interaction maps from {cfg.predictions} + {cfg.edges} -> {cfg.output}", {})
    report = run_interactions(cfg, client=client, progress=progress)
    s = report.summary()
    emit("interactions", f"{s['edges']} interactions, unmatched nodes {s['unmatched_nodes'] or 'none'}, leakage "
                         f"fitted for {s['leakage_estimated']} consumers ({s['associations']}); {s['tiles']} tiles "
                         f"({s['resumed']} resumed), {s['cogs']} COGs, STAC {s['stac']} in {s['seconds']:.1f} s",
         {"report": report})
    return report


def _run_project(config: PipelineConfig, emit: Event, progress: bool, client: Any | None) -> Any:
    """The project step, its unset inputs taken from the other steps (geosdm.project.pipeline_defaults)."""
    from geosdm.project.run import pipeline_defaults, run_projection

    if config.scenarios is None:
        raise InputError("the project step needs a scenarios step (the scenario cubes to project onto)")
    cfg = pipeline_defaults(config)
    emit("project", f"projecting {cfg.model} onto {len(cfg.names or config.scenarios.futures)} scenario(s) -> "
                    f"{cfg.output}", {})
    report = run_projection(cfg, scenarios=config.scenarios, client=client, progress=progress)
    s = report.summary()
    emit("project", f"{len(report.stores)} stores ({sum(s['resumed'].values())} tiles resumed), mean range change "
                    f"{ {k: round(v, 1) for k, v in s['mean_range_change_pct'].items()} } %, mean centroid shift "
                    f"{ {k: round(v) for k, v in s['mean_shift_m'].items()} } m, {s['cogs']} COGs, STAC {s['stac']} "
                    f"in {s['seconds']:.1f} s", {"report": report})
    return report


def _step_sections(title: str, folder: Path, skip: Sequence[str] = ()) -> list[Any]:
    """A report section from a step's output folder: its ``summary.json`` scalars and its PNG figures (but
    ``skip``, file names drawn elsewhere in the report)."""
    import json

    import pandas as pd

    from geosdm.report import Section

    if not folder.is_dir():
        return []
    tables, names = [], []
    summary = folder / "summary.json"
    if summary.is_file():
        data = json.loads(summary.read_text())
        flat = {k: v for k, v in data.items() if isinstance(v, (int, float, str, bool)) or v is None}
        if flat:
            tables.append(pd.DataFrame({"value": [str(v) for v in flat.values()]}, index=list(flat)))
            names.append("summary")
    figures = sorted(f for f in folder.glob("*.png") if f.name not in set(skip))
    if not (tables or figures):
        return []
    return [Section(title, figures=figures, captions=[f.stem.replace("_", " ") for f in figures], tables=tables,
                    table_titles=names)]


def _uncertainty_section(path: str, pick: Sequence[str]) -> Any:
    """Where the maps are unsure: the 90 % interval's width, mean over species and for the mapped species."""
    from geosdm.io import open_layers
    from geosdm.report import Section, layer_map, layer_maps

    unc = open_layers(path)
    width = (unc["q95"] - unc["q05"]).rename("interval width")
    how = ("the true probability's spread around the map, from the interval model fitted on neighbouring "
           "held-out survey plots" if unc.attrs.get("geosdm:intervals") == "model"
           else "the spread of the ensemble members")
    figs = [layer_map(width.mean("species"), title="mean over species", cmap="magma", vmax=None,
                      label="90 % interval width")]
    figs += layer_maps(width, list(pick), cmap="magma", vmax=None, label="90 % interval width")
    return Section("Where the maps are unsure",
                   text=f"Width of the 90 % interval of the presence probability ({how}); wide where the model "
                        f"cannot tell. Layers mean, sd, q05, q50, q95 in {path}.",
                   figures=figs, captions=["all species", *pick])


def _run_report(config: PipelineConfig, log_lines: list[str], emit: Event) -> Any:
    from geosdm.report import Section, layer_maps, write_report
    from geosdm.report.sections import binary_section, binary_thresholds, mess_section, nodata_text

    step = config.report
    assert step is not None
    sections = [Section("Run", text=list(log_lines))]
    scale = {"vmin": 0.0, "vmax": 1.0} if step.color_scale == "fixed" else {}
    scale_text = ("All maps share one 0-1 colour scale." if scale else
                  "Each map's colours span that map's own range (0 to its 99.5th percentile, in its colour bar), so "
                  "a rare species is not drawn empty; the report step's `color_scale: fixed` draws them on one "
                  "0-1 scale.")
    threshold_text = None
    if config.predict is not None and step.n_maps:
        from geosdm.predict import open_predictions

        prob = open_predictions(config.predict.zarr_path).probability
        names = [str(s) for s in prob["species"].values]
        pick = [names[int(i)] for i in _spread(len(names), step.n_maps)]
        sections.append(Section(
            "Predicted presence probability",
            text=[f"{len(pick)} of {len(names)} species ({prob.attrs.get('long_name', 'presence probability')}); "
                  f"the probability cube is {config.predict.zarr_path} (COGs and STAC Items beside it). Axes in "
                  f"km of the grid's CRS (named under each map), with a scale bar.", scale_text,
                  nodata_text(prob.sel(species=pick[0]))],
            figures=layer_maps(prob, pick, **scale), captions=pick,
        ))
        if step.binary is not None:
            table = config.records.output if config.records is not None else getattr(config.train, "table", None)
            if table is None and step.binary.rule != "fixed":
                raise InputError("binary maps need the training table (a records or train step) for the threshold "
                                 "rule; or use `rule: fixed` with `value:`")
            thresholds = binary_thresholds(prob, table, pick, step.binary.rule, step.binary.value)  # type: ignore[arg-type]
            sections.append(binary_section(prob, thresholds))
            finite = thresholds["threshold"].dropna()
            threshold_text = (f"{thresholds['rule'].iloc[0]} on the map's values at the training records: "
                              f"{', '.join(f'{s} {v:.3g}' for s, v in finite.items())}")
        if config.predict.uncertainty and Path(config.predict.uncertainty_path).exists():
            sections.append(_uncertainty_section(config.predict.uncertainty_path, pick))
    if config.interactions is not None and step.n_maps:
        from geosdm.io import open_layers

        layers = open_layers(f"{config.interactions.output.rstrip('/')}/interactions.zarr")
        if "enemy_any" in layers:
            reg = layers["enemy_any"]
            dim = str(reg.dims[0])
            names = [str(s) for s in reg[dim].values]
            pick = [names[i] for i in _spread(len(names), min(step.n_maps, 4))]
            sections.append(Section(
                "Pest regulation potential", text="Probability that at least one natural enemy of the pest is "
                                                  "present, under the co-occurrence model fitted on the surveys.",
                figures=layer_maps(reg, pick, **scale), captions=pick))
            unc_path = Path(config.interactions.output) / "uncertainty.zarr"
            if unc_path.exists():
                width = open_layers(str(unc_path)).get("enemy_any_width")
                shown = [p for p in pick if width is not None and p in set(map(str, width[dim].values))]
                if shown:
                    sections.append(Section(
                        "Where the regulation maps are unsure",
                        text="Width of the 90 % interval of the probability that a natural enemy is present, from "
                             "joint samples of the species maps (their interval model and error correlation) and of "
                             f"the co-occurrence fit (survey bootstraps). Layers *_mean, *_sd, *_q05, *_q95 in {unc_path}.",
                        figures=layer_maps(width, shown, cmap="magma", vmax=None, label="90 % interval width"),
                        captions=shown))
    mess_store = Path(config.explain.output) / "mess.zarr" if config.explain is not None else None
    if mess_store is not None and mess_store.exists():  # drawn here (readable), not the explain step's PNG
        sections.append(mess_section(mess_store, config.explain.cube))  # type: ignore[union-attr]
    if config.project is not None and Path(config.project.output).is_dir():
        from geosdm.project.report import projection_sections

        sections += projection_sections(config.project.output, n_maps=min(step.n_maps, 4))
    for name in ("evaluate", "evaluate_map", "explain", "interactions"):
        cfg = getattr(config, name, None)
        if cfg is not None and getattr(cfg, "output", None):
            skip = ("mess.png",) if name == "explain" and mess_store is not None and mess_store.exists() else ()
            sections += _step_sections(name.replace("_", " ").capitalize(), Path(cfg.output), skip)
    if step.odmap:
        from geosdm.report.odmap import odmap_table, write_odmap
        from geosdm.report.sections import odmap_section

        odmap = odmap_table(config, threshold=threshold_text)
        csv = write_odmap(odmap, Path(step.output).parent / "odmap.csv")
        sections.append(odmap_section(odmap, csv.name))
        emit("report", f"ODMAP protocol table {csv}", {"odmap": str(csv)})
    path = write_report(step.output, step.title, sections, subtitle=f"pipeline {config.name!r}")
    emit("report", f"report {path} ({len(sections)} sections)", {"path": str(path)})
    return path


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``k >= n``)."""
    if k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})
