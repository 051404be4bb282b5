"""One call for a whole evaluation step: held-out folds -> metrics -> calibration -> truth -> figures and tables.

Layout under ``output`` (a folder): ``summary.json`` (headline figures), ``species_metrics.csv`` (per species,
macro, micro, per fold; raw and cross-fitted calibrated probabilities), ``top_k.csv``, ``boyce.csv``,
``calibration.csv`` (the fitted calibrator per species), ``truth.csv`` (when a truth is given), the figures
(``reliability_*.png``, ``roc_auc.png``...) and ``index.html`` showing them. The pipeline's evaluate step and
``geosdm evaluate run`` both call :func:`run_evaluation`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from geosdm.errors import InputError

if TYPE_CHECKING:
    from geosdm.evaluate.survey import SurveyEvaluation
    from geosdm.evaluate.truth import TruthEvaluation
    from geosdm.models import MultiSpeciesSDM
    from geosdm.models.calibration import HeldOut, SpeciesCalibrator

__all__ = ["EvaluateConfig", "EvaluationReport", "run_evaluation"]

log = logging.getLogger(__name__)


class EvaluateConfig(BaseModel):
    """An evaluation step (frozen; unknown keys are rejected).

    Attributes
    ----------
    model
        Model folder written by ``MultiSpeciesSDM.save`` (the train step's output).
    table
        Training table (Parquet from the records step: records, background, covariates, ``fold``).
    output
        Folder for the tables, figures and ``summary.json``.
    cube
        Covariate cube: covariates missing from the table, and the grid predicted for the truth comparison.
    bias_cube, log_bias
        Where to read the model's observer-bias covariates when the table lacks them (as the train step did),
        and whether to take their log.
    cv
        ``"folds"``: one refit per spatial fold predicts the held-out fold; ``"prefit"``: the fitted model
        predicts the table, which must then be independent of its training data.
    calibration
        Method fitted on the held-out surveys (cross-fitted for the metrics, on all folds for the saved model):
        ``"platt"``, ``"isotonic"``, ``"temperature"`` or ``"auto"`` (lowest held-out Brier score); None:
        evaluate the raw probabilities only.
    detection, per_species, min_presences
        As for :func:`geosdm.models.calibration.calibrate`.
    calibrated_model
        Folder to save the calibrated model to (None: not saved); point the predict step at it.
    top_k, n_bins
        ``K`` of the top-K F1; probability bins of the ECE and reliability curves.
    truth
        Zarr store with the true ``probability`` (and ``occurrence``) per ``(species, y, x)`` on the cube's grid
        (the demo's ``truth/truth.zarr``).
    truth_cube
        Cube predicted for the truth comparison (default: ``cube``).
    area
        Area (m²) of the probabilities compared with the truth (default: the grid's cell area, the truth's unit).
    uncertainty, mc_dropout
        With a truth: the coverage of the 90% interval of the ensemble members (and ``mc_dropout`` passes per
        member) when the model has at least two samples.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    table: str
    output: str
    cube: str | None = None
    bias_cube: str | None = None
    log_bias: bool = False
    cv: Literal["folds", "prefit"] = "folds"
    calibration: Literal["platt", "isotonic", "temperature", "auto"] | None = "platt"
    detection: Literal["auto", "none"] = "auto"
    per_species: bool = True
    min_presences: int = Field(default=5, ge=0)
    calibrated_model: str | None = None
    top_k: tuple[int, ...] = (1, 5, 10, 25)
    n_bins: int = Field(default=10, ge=2)
    truth: str | None = None
    truth_cube: str | None = None
    area: float | None = Field(default=None, gt=0)
    uncertainty: bool = True
    mc_dropout: int = Field(default=0, ge=0)

    @classmethod
    def from_yaml(cls, path: str | PathLike[str], *, section: str | None = "evaluate") -> EvaluateConfig:
        """Load from a YAML file (a pipeline's ``evaluate:`` section, or a file holding the config itself), with
        ``${VAR:-default}`` substituted from the environment as pipelines are."""
        from geosdm._yaml import model_from_yaml

        return model_from_yaml(cls, path, section=section, what="evaluate")


@dataclass
class EvaluationReport:
    """What an evaluation step found and wrote."""

    survey: SurveyEvaluation
    held_out_folds: pd.DataFrame
    calibrator: SpeciesCalibrator | None = None
    truth: dict[str, TruthEvaluation] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    #: The model calibrated on all held-out folds (in memory; also saved to ``calibrated_model`` when set).
    model: MultiSpeciesSDM | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """Headline figures as flat JSON scalars: ``held_out_<raw|calibrated>_<metric>`` (macro over species),
        ``f1_top<K>_<kind>``, ``boyce_macro``, ``truth_<raw|calibrated>_<metric>`` (pooled over cells and
        species), calibration details and run time."""
        head = self.survey.headline()
        out: dict[str, Any] = {"calibration": self.survey.calibration, "held_out_folds": len(self.held_out_folds)}
        for kind in ("raw", "calibrated"):
            out |= {f"held_out_{kind}_{k}": v for k, v in head.get(kind, {}).items()}
        out |= {f"f1_top{key.split('@')[1]}_{key.split('@')[0]}": v for key, v in head["f1_top_k"].items()}
        out["boyce_macro"] = head["boyce_macro"]
        for name, ev in self.truth.items():
            out |= {f"truth_{name}_{k}": round(float(v), 5) for k, v in ev.pooled.items()
                    if not k.startswith("macro_") and k != "n_cells" and np.isfinite(v)}
        if self.truth:
            out["truth_area_m2"] = next(iter(self.truth.values())).extra.get("area_m2")
        if self.calibrator is not None:
            det = self.calibrator.detection
            out["calibration_target"] = self.calibrator.target
            out["detection_mean"] = round(float(np.mean(list(det.values()))), 4) if det else None
            out["calibration_fallback_species"] = len(self.calibrator.fallback)
        out["seconds"] = self.seconds
        return out

    def lines(self) -> list[str]:
        """The summary as short printable lines (for the CLI and the pipeline's progress output)."""
        def fmt(d: dict[str, Any] | None) -> str:
            if not d:
                return "-"
            return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items()
                             if v is not None)

        head = self.survey.headline()
        out = [f"held-out surveys ({len(self.held_out_folds)} folds), macro over species:"]
        out += [f"  {k:<10} {fmt(head[k])}" for k in ("raw", "calibrated") if k in head]
        out.append(f"  top-K F1: {fmt(head.get('f1_top_k'))}; Boyce index (presence-only): {head.get('boyce_macro')}")
        keys = ("ece", "ece_quantile", "ece_occurrence", "mae", "roc_auc", "coverage_90", "mean_predicted",
                "mean_true")
        for name, ev in self.truth.items():
            out.append(f"against the truth, {name}: {fmt({k: ev.pooled[k] for k in keys if k in ev.pooled})}")
        if self.calibrator is not None:
            out.append(f"calibration: {self.calibrator.method}, target {self.calibrator.target}, "
                       f"{len(self.calibrator.fallback)} species on the shared map")
        return out

    def tables(self) -> dict[str, pd.DataFrame]:
        """The report's tables by file name."""
        out = {"species_metrics": self.survey.species, "top_k": self.survey.top_k, "boyce": self.survey.boyce,
               "held_out_folds": self.held_out_folds}
        if self.calibrator is not None:
            out["calibration"] = self.calibrator.summary()
        if self.truth:
            out["truth"] = pd.concat({k: v.species.set_index("species") for k, v in self.truth.items()},
                                     names=["probability", "species"])
        return out

    def figures(self) -> dict[str, Any]:
        """Reliability diagrams (held-out surveys; truth), per-species AUC and ECE, the summary table."""
        from geosdm.evaluate.plots import metric_table_figure, reliability_diagram, species_metric_plot
        from geosdm.evaluate.tables import summary

        figs = {"reliability_surveys": reliability_diagram(
            self.survey.reliability, title="Held-out surveys", ylabel="observed detection frequency")}
        if self.truth:
            figs["reliability_truth"] = reliability_diagram(
                {k: v.reliability for k, v in self.truth.items()}, title="Against the true probability",
                ylabel="mean true probability")
        figs["roc_auc"] = species_metric_plot(self.survey.species, "roc_auc", title="Held-out ROC AUC per species")
        figs["ece"] = species_metric_plot(self.survey.species, "ece", title="Held-out ECE per species")
        rows = []
        for kind, t in self.survey.species.groupby("probability", sort=False):
            rows.append(summary(t, metrics=["roc_auc", "pr_auc", "tss_max", "brier", "log_loss", "ece"])
                        .rename(index=lambda r, k=kind: f"{k} {r}"))
        figs["metrics_summary"] = metric_table_figure(pd.concat(rows), title="Held-out survey metrics")
        return figs

    def write(self, out_dir: str | PathLike[str], *, figures: bool = True) -> dict[str, str]:
        """Write tables, figures, ``index.html`` and ``summary.json`` to ``out_dir``; returns the paths."""
        from geosdm.evaluate.plots import save_figures

        text = [f"calibration: {self.survey.calibration or 'none'}; held-out folds: {len(self.held_out_folds)}"]
        written = save_figures(out_dir, self.figures() if figures else {}, self.tables(), title="geosdm evaluation",
                               text=text)
        path = Path(out_dir) / "summary.json"
        path.write_text(json.dumps(self.summary(), indent=2, default=str))
        self.files = {k: str(v) for k, v in written.items()} | {"summary": str(path)}
        return self.files


def _with_bias(table: pd.DataFrame, model: MultiSpeciesSDM, cfg: EvaluateConfig) -> pd.DataFrame:
    """Add the model's observer-bias covariates the table lacks (read from ``bias_cube`` or ``cube``)."""
    names = [b for b in (model.get_params().get("bias_covariates") or ()) if b not in table.columns]
    if not names:
        return table
    source = cfg.bias_cube or cfg.cube
    if source is None:
        raise InputError(f"the model's bias covariates {names} are not in the table; set bias_cube: (the train "
                         "step's bias_cube) or cube:")
    from geosdm.records import extract_bias

    return extract_bias(source, table, names, log=cfg.log_bias)


def _cell_area(cube: str) -> float:
    import xarray as xr

    from geosdm.io.zarr import quiet_zarr

    with quiet_zarr():
        ds = xr.open_zarr(cube)
    res = ds.odc.geobox.resolution
    return abs(float(res.x) * float(res.y))


def _truth(cfg: EvaluateConfig, model: MultiSpeciesSDM, calibrated: MultiSpeciesSDM | None) -> dict[str, Any]:
    import xarray as xr

    from geosdm.evaluate.truth import compare_with_truth
    from geosdm.io.zarr import quiet_zarr
    from geosdm.predict import predict
    from geosdm.predict.uncertainty import has_dropout, n_members, predict_uncertainty

    cube = cfg.truth_cube or cfg.cube
    if cube is None:
        raise InputError("a truth comparison needs a cube to predict over; set cube: or truth_cube:")
    area = cfg.area or _cell_area(cube)
    with quiet_zarr():
        truth = xr.open_zarr(cfg.truth)
    out = {"raw": compare_with_truth(predict(model, cube, area=area, calibration=False).probability, truth,
                                     n_bins=cfg.n_bins)}
    best = calibrated if calibrated is not None else model
    unc = None
    samples = n_members(best) * max(1, cfg.mc_dropout if has_dropout(best) else 0)
    if cfg.uncertainty and samples >= 2:
        unc = predict_uncertainty(best, cube, area=area, mc_dropout=cfg.mc_dropout if has_dropout(best) else 0,
                                  quantiles=(0.05, 0.95))
    if calibrated is not None or unc is not None:
        name = "calibrated" if calibrated is not None else "raw"
        out[name] = compare_with_truth(predict(best, cube, area=area).probability, truth, uncertainty=unc,
                                       n_bins=cfg.n_bins)
    for ev in out.values():
        ev.extra["area_m2"] = area
    return out


def run_evaluation(
    config: EvaluateConfig,
    *,
    model: MultiSpeciesSDM | None = None,
    table: pd.DataFrame | None = None,
    held_out: HeldOut | None = None,
    write: bool = True,
) -> EvaluationReport:
    """Evaluate a model on held-out spatial folds, calibrate it, compare it with a truth, write the report.

    Parameters
    ----------
    config
        The step's configuration.
    model
        An in-memory fitted model to use instead of loading ``config.model``.
    table
        An in-memory training table instead of reading ``config.table``.
    held_out
        Precomputed held-out predictions (skips the per-fold refits).
    write
        Write tables, figures and ``summary.json`` under ``config.output``.

    Returns
    -------
    EvaluationReport

    Example
    -------
    >>> cfg = EvaluateConfig(model="out/model", table="out/records/training.parquet", output="out/evaluation",
    ...                      cube="out/cube.zarr", calibrated_model="out/model-calibrated")  # doctest: +SKIP
    >>> run_evaluation(cfg).summary()["held_out"]["calibrated"]["ece"]  # doctest: +SKIP
    """
    from geosdm.evaluate.survey import evaluate_held_out
    from geosdm.models import load_model
    from geosdm.models.calibration import calibrate, held_out_predictions

    t0 = time.perf_counter()
    if model is None:
        model = load_model(config.model)
    if held_out is None:
        if table is None:
            if not Path(config.table).exists():
                raise InputError(f"training table {config.table!r} does not exist; run the records step first")
            table = pd.read_parquet(config.table)
        table = _with_bias(table, model, config)
        held_out = held_out_predictions(model, table, cube=config.cube, cv=config.cv)
    survey = evaluate_held_out(held_out, calibration=config.calibration, detection=config.detection,
                               per_species=config.per_species, min_presences=config.min_presences,
                               top_k=config.top_k, n_bins=config.n_bins)
    calibrated = None
    if config.calibration:
        calibrated = calibrate(model, method=config.calibration, detection=config.detection,
                               per_species=config.per_species, min_presences=config.min_presences,
                               held_out=held_out)
        if config.calibrated_model:
            calibrated.save(config.calibrated_model)
            log.info("calibrated model saved to %s", config.calibrated_model)
    report = EvaluationReport(survey, held_out.folds, calibrated.calibrator_ if calibrated is not None else None,
                              model=calibrated)
    if config.truth:
        report.truth = _truth(config, model, calibrated)
    report.seconds = round(time.perf_counter() - t0, 3)
    if write:
        report.write(config.output)
    return report
