"""Evaluation of species distribution models: metrics, reliability, held-out folds, truth, figures.

Typical use::

    from geosdm.evaluate import roc_auc, expected_calibration_error, species_metrics, EvaluateConfig, run_evaluation
    roc_auc(observed, probability)                             # one species
    species_metrics(Y, P, folds=sites["fold"])                 # per species, macro, micro, per fold
    run_evaluation(EvaluateConfig(model="model/", table="training.parquet", output="evaluation/",
                                  calibrated_model="model-calibrated/"))
    evaluate_map_at_sites("predictions/probability.zarr", survey_records)  # the written map at survey sites

Calibration itself (fitting and applying calibrators) lives in :mod:`geosdm.models.calibration`; uncertainty
layers in :mod:`geosdm.predict.uncertainty`. Importing this package imports neither torch nor matplotlib.
"""

from __future__ import annotations

from geosdm.evaluate.metrics import (
    Threshold,
    binary_curve,
    boyce_index,
    brier_score,
    f1_top_k,
    log_loss,
    pr_auc,
    roc_auc,
    threshold_at_sensitivity,
    threshold_fixed_cumulative,
    threshold_max_tss,
    threshold_sens_eq_spec,
    tss,
)
from geosdm.evaluate.plots import metric_table_figure, reliability_diagram, save_figures, species_metric_plot
from geosdm.evaluate.reliability import (
    bin_edges,
    curve_from_sums,
    ece_from_sums,
    expected_calibration_error,
    reliability_curve,
    reliability_sums,
)
from geosdm.evaluate.run import EvaluateConfig, EvaluationReport, run_evaluation
from geosdm.evaluate.sites import MapEvaluateConfig, MapSiteEvaluation, evaluate_map_at_sites, run_map_evaluation
from geosdm.evaluate.survey import SurveyEvaluation, cross_calibrated, evaluate_held_out
from geosdm.evaluate.tables import METRICS, boyce_table, species_metrics, summary, top_k_table
from geosdm.evaluate.truth import TruthEvaluation, compare_with_truth

__all__ = [
    "METRICS",
    "EvaluateConfig",
    "EvaluationReport",
    "MapEvaluateConfig",
    "MapSiteEvaluation",
    "SurveyEvaluation",
    "Threshold",
    "TruthEvaluation",
    "bin_edges",
    "binary_curve",
    "boyce_index",
    "boyce_table",
    "brier_score",
    "compare_with_truth",
    "cross_calibrated",
    "curve_from_sums",
    "ece_from_sums",
    "evaluate_held_out",
    "expected_calibration_error",
    "evaluate_map_at_sites",
    "f1_top_k",
    "log_loss",
    "metric_table_figure",
    "pr_auc",
    "reliability_curve",
    "reliability_diagram",
    "reliability_sums",
    "roc_auc",
    "run_evaluation",
    "run_map_evaluation",
    "save_figures",
    "species_metric_plot",
    "species_metrics",
    "summary",
    "threshold_at_sensitivity",
    "threshold_fixed_cumulative",
    "threshold_max_tss",
    "threshold_sens_eq_spec",
    "top_k_table",
    "tss",
]
