"""Benchmark: calibrated probabilities and ensemble intervals against the known truth of the demo region.

The demo region (``geosdm.demo``) knows each virtual species' true occurrence probability on every 100 m cell
(``truth/truth.zarr``: ``probability``) and one realised occurrence (``occurrence``). The benchmark

1. builds the training table (presence-only records with an observer-bias covariate, uniform background,
   presence/absence surveys: 2 visits per plot, imperfect detection; 5 spatial folds of 2 km blocks) as
   ``benchmarks/demo_truth.py`` does, on its ``--inputs``: **built** (the headline: the cube the demo pipeline
   builds and the records step's effort layer, the presence-only records' density) and **oracle** (the truth's
   noise-free covariates and observer-bias layer: the figures before issue 17, for comparison);
2. fits the integrated model (``loss="integrated"``, a deep ensemble of ``n_members`` networks);
3. gets held-out survey predictions (one refit per fold predicts that fold's plots) and fits the calibrators
   on them (:func:`geosdm.models.calibration.calibrate`; per species, detection-corrected from the repeat
   visits, species with < 5 detected plots share one map; Platt, isotonic and temperature);
4. predicts every cell over one cell's area (10,000 m², the truth's unit) without and with calibration, and
   the uncertainty layers: ``intervals="model"`` (the headline: the Beta interval model the calibration fits
   on neighbouring held-out plots, :mod:`geosdm.models.intervals`) and ``intervals="samples"`` (``q05``,
   ``q95`` of the ensemble members' calibrated probabilities).

Figures (all cells x all species pooled unless said otherwise):

* ``ece_calibrated`` / ``ece_uncalibrated``: expected calibration error against the true probability, 10
  uniform probability bins: ``ECE = sum_b (n_b / N) |mean predicted_b - mean true probability_b|`` over the
  (cell, species) pairs in bin ``b``; ``*_quantile``: the same with 10 equal-count bins; ``*_occurrence``:
  against the realised occurrence (0/1) instead; ``mae_*``: mean ``|predicted - true probability|`` per cell;
* ``interval_coverage_90``: share of (cell, species) whose true probability lies in the interval model's
  ``[q05, q95]`` (nominal 0.90; goal 0.85-0.95), ``interval_width_90`` its mean width and
  ``interval_width_over_mae`` that width over the mean absolute error of the mean prediction (goal <= 2);
  ``*_samples``: the same for the ensemble members' spread; ``interval_width_over_mae_bound`` (a diagnostic
  that reads the truth): the same ratio for the truth's own 5-95 % quantiles within 50 bins of the mean
  prediction, i.e. about the narrowest 90 % intervals a method seeing only the mean could give;
* held-out survey metrics (macro over species): ROC AUC, Brier and ECE against the observed detections, raw and
  cross-fitted calibrated.

The calibration method reported is chosen without the truth: the one with the lowest cross-fitted held-out
Brier score against the survey detections (``--method auto``, :func:`geosdm.models.calibration.select_method`);
every method's figures are reported too.

Usage::

    python benchmarks/calibration.py                       # default preset, generated into benchmarks/.cache
    python benchmarks/calibration.py --preset small --quick

The last output line is one JSON object with ``ece_calibrated_built`` (goal: ``<= 0.03``; ``ece_calibrated``
repeats it), ``interval_coverage_90_built``, ``interval_width_over_mae_built``, their ``*_oracle`` counterparts,
the fitted ``error_model`` and ``"oracle_inputs": false``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit  # noqa: E402
from demo_truth import (  # noqa: E402  (same demo and table)
    DemoInputs, _demo, _table, add_demo_arguments, check_same_grid, demo_inputs,
)

from geosdm.evaluate import compare_with_truth, evaluate_held_out  # noqa: E402
from geosdm.models import MultiSpeciesSDM  # noqa: E402
from geosdm.models.calibration import calibrate, held_out_predictions, select_method  # noqa: E402
from geosdm.predict import predict  # noqa: E402
from geosdm.predict.uncertainty import predict_uncertainty  # noqa: E402

#: The integrated model of benchmarks/demo_truth.py (early stopping on a spatial fold; 5 ensemble members).
CONFIG: dict[str, Any] = {
    "network": "mlp", "hidden": 250, "n_blocks": 2, "epochs": 400, "batch_size": 512, "lr": 1e-3,
    "patience": 10, "val_size": 0.2, "n_members": 5,
}
METHODS = ("platt", "isotonic", "temperature")


def _round(d: dict[str, Any], n: int = 4) -> dict[str, Any]:
    return {k: round(float(v), n) if isinstance(v, (float, np.floating)) else v for k, v in d.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(p)
    p.add_argument("--method", default="auto", choices=["auto", *METHODS],
                   help="the calibration method reported (auto: lowest cross-fitted held-out survey Brier score)")
    p.add_argument("--config", default=None, help="JSON overriding CONFIG")
    p.add_argument("--quick", action="store_true", help="at most 40 epochs, 2,000 background points, 3 members")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    config = {**CONFIG, **(json.loads(args.config) if args.config else {})}
    if args.quick:
        config["epochs"], config["n_members"] = min(config["epochs"], 40), min(config["n_members"], 3)
        args.n_background = min(args.n_background, 2000)
    t_start = time.perf_counter()
    layout = _demo(args)
    runs = {inp.name: _run(layout, inp, config, args) for inp in demo_inputs(layout, args.inputs)}
    head = runs.get("built") or runs["oracle"]
    out: dict[str, Any] = {"preset": head["preset"], "n_species": head["n_species"],
                           "oracle_inputs": "built" not in runs}
    for key in ("ece_calibrated", "ece_uncalibrated", "interval_coverage_90", "interval_width_90", "mae_calibrated",
                "interval_width_over_mae", "interval_coverage_90_samples", "interval_width_over_mae_bound",
                "interaction_interval_coverage_90", "interaction_interval_width_90",
                "auc_occurrence_calibrated", "method"):
        out[key] = head[key]
        out.update({f"{key}_{name}": r[key] for name, r in runs.items()})
    out["goal_ece_met"] = head["goal_ece_met"]
    out["goal_interval_coverage_met"] = head["goal_interval_coverage_met"]
    out["goal_interval_width_met"] = head["goal_interval_width_met"]
    cov_i = head.get("interaction_interval_coverage_90")
    out["goal_interaction_interval_coverage_met"] = None if cov_i is None else bool(0.85 <= cov_i <= 0.95)
    out["error_model"] = head["error_model"]
    out["runs"] = runs
    out["seconds_total"] = round(time.perf_counter() - t_start, 1)
    emit(out)
    return out


def _binned_interval_bound(mean: xr.DataArray, truth: xr.Dataset, n_bins: int = 50) -> float:
    """Diagnostic (reads the truth): width over MAE of the narrowest-in-practice 90 % intervals any method that
    sees only the mean prediction could give: the truth's own 5-95 % quantiles within 50 quantile bins of the
    mean (pooled over species). A bound for ``interval_width_over_mae``, not a method."""
    p = mean.transpose("species", "y", "x").values.ravel()
    t = truth["probability"].sel(species=mean["species"].values).transpose("species", "y", "x").values.ravel()
    ok = np.isfinite(p) & np.isfinite(t)
    p, t = p[ok], t[ok]
    edges = np.quantile(p, np.linspace(0, 1, n_bins + 1))
    b = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    width = np.zeros_like(p)
    for k in range(n_bins):
        m = b == k
        if m.any():
            width[m] = np.subtract(*np.quantile(t[m], [0.95, 0.05]))
    return float(width.mean() / np.abs(t - p).mean())


def _run(layout: Any, inputs: DemoInputs, config: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    truth = xr.open_zarr(layout.truth_zarr)
    cell_area = float(layout.region()["target_grid"]["resolution"]) ** 2
    t0 = time.perf_counter()
    table, covariates = _table(layout, inputs, args.n_background, args.seed)
    cube = xr.open_zarr(inputs.cube)
    check_same_grid(cube, truth)
    grid = cube[covariates].load().chunk({"y": 200, "x": 200})
    print(f"[{inputs.name}] training table: {len(table)} rows {table['kind'].value_counts().to_dict()} "
          f"({time.perf_counter() - t0:.1f} s); {len(covariates)} covariates; config {json.dumps(config)}", flush=True)

    model = MultiSpeciesSDM(loss="integrated", covariates=covariates, bias_covariates=["log_bias"], seed=args.seed,
                            **config)
    t0 = time.perf_counter()
    model.fit(table)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    held = held_out_predictions(model, table)
    cv_s = time.perf_counter() - t0
    print(f"model fit {fit_s:.1f} s; held-out predictions of {len(held.sites.frame)} survey plots from "
          f"{len(held.folds)} fold refits {cv_s:.1f} s", flush=True)

    truth_eval: dict[str, Any] = {}
    raw = compare_with_truth(predict(model, grid, area=cell_area, calibration=False).probability, truth)
    truth_eval["uncalibrated"] = raw.pooled
    models, evals = {}, {}
    for method in METHODS:
        models[method] = calibrate(model, method=method, held_out=held)
        ev = evals[method] = compare_with_truth(predict(models[method], grid, area=cell_area).probability, truth)
        truth_eval[method] = ev.pooled
        print(f"{method}: {json.dumps(_round({k: v for k, v in ev.pooled.items() if not k.startswith('macro_')}))}",
              flush=True)
    method, selection = ((args.method, {}) if args.method != "auto" else select_method(held))
    print(f"method: {method} (held-out survey Brier by method: {json.dumps(_round(selection, 5))})", flush=True)
    chosen = models[method]
    cal = chosen.calibrator_
    true_det = {s["name"]: s["detection"] for s in json.loads((layout.truth_zarr.parent / "species.json").read_text())}
    det_err = [abs(cal.detection[s] - true_det[s]) for s in cal.species if s in cal.detection and s in true_det]

    t0 = time.perf_counter()
    unc = predict_uncertainty(chosen, grid, area=cell_area, quantiles=(0.05, 0.5, 0.95), intervals="model").load()
    unc_eval = compare_with_truth(unc["mean"], truth, uncertainty=unc)
    unc_s = time.perf_counter() - t0
    unc_samples = predict_uncertainty(chosen, grid, area=cell_area, quantiles=(0.05, 0.5, 0.95),
                                      intervals="samples").load()
    samples_eval = compare_with_truth(unc_samples["mean"], truth, uncertainty=unc_samples)
    bound = _binned_interval_bound(unc["mean"], truth)
    from interactions import demo_interaction_truth, interaction_intervals  # the interactions benchmark's scoring

    truth_i, net, labels, surveys = demo_interaction_truth(layout)
    mean = unc["mean"].chunk({"species": -1, "y": 200, "x": 200})
    inter = interaction_intervals(mean, net, surveys, truth_i, labels, cal.error) if cal.error is not None else {}
    held_eval = evaluate_held_out(held, calibration=method, top_k=(1, 5, 10, 25))
    headline = held_eval.headline()
    held_by_method = {m: (headline if m == method else evaluate_held_out(held, calibration=m, top_k=(5,))
                          .headline())["calibrated"] for m in METHODS}
    print(f"uncertainty ({chosen.network_spec_.get('n_members', 1)} members): "
          f"{json.dumps(_round({k: v for k, v in unc_eval.pooled.items() if not k.startswith('macro_')}))} "
          f"({unc_s:.1f} s)", flush=True)
    print(f"held-out surveys: {json.dumps(headline)}", flush=True)
    print(f"held-out surveys, cross-fitted calibration by method: {json.dumps(held_by_method)}", flush=True)
    per_species = pd.DataFrame({
        "uncalibrated_mae": raw.species.set_index("species")["mae"],
        f"{method}_mae": evals[method].species.set_index("species")["mae"],
        "coverage_90": unc_eval.species.set_index("species")["coverage_90"],
        "detection_est": pd.Series(cal.detection), "detection_true": pd.Series(true_det),
    }).round(3)
    print(per_species.to_string(), flush=True)

    u, c = truth_eval["uncalibrated"], truth_eval[method]
    out = {
        "preset": layout.region()["preset"],
        "n_species": len(model.species_),
        "method": method,
        "method_selection_brier": selection,
        "ece_calibrated": c["ece"],
        "ece_uncalibrated": u["ece"],
        "ece_calibrated_quantile_bins": c["ece_quantile"],
        "ece_uncalibrated_quantile_bins": u["ece_quantile"],
        "ece_calibrated_vs_occurrence": c["ece_occurrence"],
        "ece_uncalibrated_vs_occurrence": u["ece_occurrence"],
        "mae_calibrated": c["mae"],
        "mae_uncalibrated": u["mae"],
        "mean_true_probability": c["mean_true"],
        "mean_calibrated": c["mean_predicted"],
        "mean_uncalibrated": u["mean_predicted"],
        "auc_occurrence_calibrated": c["roc_auc"],
        "auc_occurrence_uncalibrated": u["roc_auc"],
        "interval_coverage_90": unc_eval.pooled["coverage_90"],
        "interval_width_90": unc_eval.pooled["interval_width"],
        "interval_mae_of_mean": unc_eval.pooled["mae"],
        "interval_width_over_mae": unc_eval.pooled["interval_width"] / unc_eval.pooled["mae"],
        "interval_coverage_90_samples": samples_eval.pooled["coverage_90"],
        "interval_width_90_samples": samples_eval.pooled["interval_width"],
        "interval_width_over_mae_bound": bound,
        "error_model": ({**{k: v for k, v in cal.error.to_dict().items() if k != "correlation"},
                         "correlation_pooled": cal.error.correlation_pooled} if cal.error is not None else None),
        "interaction_interval_coverage_90": inter.get("correlated", {}).get("coverage_90"),
        "interaction_interval_width_90": inter.get("correlated", {}).get("width_90"),
        "interaction_intervals": inter,
        "goal_interval_coverage_met": bool(0.85 <= unc_eval.pooled["coverage_90"] <= 0.95),
        "goal_interval_width_met": bool(unc_eval.pooled["interval_width"] <= 2 * unc_eval.pooled["mae"]),
        "ensemble_members": int(model.network_spec_.get("n_members", 1)),
        "other_methods": {m: _round({k: truth_eval[m][k] for k in ("ece", "ece_quantile", "mae")}, 5)
                          for m in METHODS},
        "detection_abs_error_mean": float(np.mean(det_err)) if det_err else None,
        "held_out": headline,
        "held_out_calibrated_by_method": held_by_method,
        "area_m2": cell_area,
        "goal_ece_met": bool(c["ece"] <= 0.03),
        "seconds": {"fit": round(fit_s, 1), "held_out_refits": round(cv_s, 1), "uncertainty": round(unc_s, 1),
                    "total": round(time.perf_counter() - t_start, 1)},
        "config": config,
        "cube": inputs.cube,
        "bias": f"{inputs.bias_store}:{inputs.bias_variable}",
    }
    print(f"[{inputs.name}] {json.dumps({k: out[k] for k in ('ece_calibrated', 'interval_coverage_90', 'interval_width_over_mae', 'interval_coverage_90_samples', 'method')})}",
          flush=True)
    return out


if __name__ == "__main__":
    main()
