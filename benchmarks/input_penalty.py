"""Benchmark: choosing the network and ``input_penalty`` (group lasso on the inputs) without looking at the truth.

On the default demo region, on the cube the demo pipeline builds and the records' effort layer (``--inputs built``,
the default; ``oracle``: the truth's layers, the inputs before issue 17), with the covariates the demo pipeline's
collinearity filter keeps (``|r| < 0.7``,
``PREFER`` first), one integrated model (``demo_truth.CONFIG``, one member) is fitted per network (``mlp``: the
residual MLP; ``additive``: the neural additive model, ``hidden`` 32) and candidate penalty, and scored on
held-out presence/absence surveys: one refit per spatial fold predicts that fold's plots
(``geosdm.models.calibration.held_out_predictions``), and the pair with the lowest held-out log loss is
chosen. The truth is used only afterwards, to report what the choice does to the explanations: top-3 recall
of the permutation importance against the true model's (as in ``benchmarks/explain.py``), and the Spearman correlation of the log-intensities and the Pearson correlation of
the per-cell probabilities with the true probabilities at 5,000 cells.

Usage::

    python benchmarks/input_penalty.py                    # mlp and additive x 0, 1e-4, 3e-4, 1e-3, 3e-3
    python benchmarks/input_penalty.py --networks additive --candidates 0 3e-4
    # then the collinearity filter's threshold for the chosen pair (demo_truth.MAX_CORRELATION: 0.75)
    python benchmarks/input_penalty.py --networks additive --candidates 3e-4 --max-correlations 0.6 0.65 0.7 0.75 0.8 0.85 0.9

The network and penalty were chosen at ``|r| < 0.7``; the filter's threshold was then chosen the same way for that
pair (``--max-correlations``). The last output line is one JSON object with ``chosen`` (network, penalty and
threshold) and, per candidate, the
held-out scores and the truth diagnostics.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_truth import (  # noqa: E402
    ADDITIVE, CONFIG, PREFER, _demo, _table, add_demo_arguments, demo_inputs, truth_at_cells, truth_covariates,
)
from explain import _importance_top, _recall  # noqa: E402  (the same rankings as benchmarks/explain.py)

from geosdm.demo import TrueModel  # noqa: E402
from geosdm.evaluate import evaluate_held_out  # noqa: E402
from geosdm.explain import permutation_importance, top_variables  # noqa: E402
from geosdm.models import MultiSpeciesSDM  # noqa: E402
from geosdm.models.calibration import held_out_predictions  # noqa: E402
from geosdm.predict.model import model_probability  # noqa: E402
from geosdm.records import select_training_covariates  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(p)
    p.add_argument("--networks", nargs="+", default=["mlp", "additive"], choices=["mlp", "additive"])
    p.add_argument("--candidates", type=float, nargs="+", default=[0.0, 1e-4, 3e-4, 1e-3, 3e-3])
    p.add_argument("--max-correlations", type=float, nargs="+", default=[0.7],
                   help="collinearity-filter thresholds tried (|r| between kept covariates), e.g. 0.7 0.75 0.8")
    p.add_argument("--points", type=int, default=5_000)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    t_all = time.perf_counter()
    layout = _demo(args)
    inputs = demo_inputs(layout, "built" if args.inputs == "both" else args.inputs)[0]  # the headline inputs
    table, all_covariates = _table(layout, inputs, args.n_background, args.seed)
    true_grid = xr.open_zarr(layout.truth_zarr)  # scoring only: the truth model reads the true covariate values
    grid = xr.open_zarr(inputs.cube)
    results: dict[str, Any] = {}
    for max_corr in args.max_correlations:
        selection = select_training_covariates(table, all_covariates, threshold=max_corr, prefer=PREFER)
        covariates = list(selection.selected)
        print(selection.summary(), flush=True)
        cells_grid = grid[covariates].load()
        flat = {v: cells_grid[v].values.ravel() for v in covariates}
        valid = np.flatnonzero(np.all([np.isfinite(a) for a in flat.values()], axis=0))
        cells = np.random.default_rng(args.seed).choice(valid, size=min(args.points, valid.size), replace=False)
        X = pd.DataFrame({v: a[cells] for v, a in flat.items()})  # what the models read
        X_true = truth_at_cells(true_grid, cells, truth_covariates(true_grid), X)
        truth = TrueModel.from_layout(layout, covariates=covariates)
        scored = {"n_repeats": 5, "seed": args.seed}
        truth_top = _importance_top(permutation_importance(truth, X_true, **scored))
        p_true = truth.predict_proba(X_true)
        for network in args.networks:
            for lam in args.candidates:
                t0 = time.perf_counter()
                arch = ADDITIVE if network == "additive" else {}
                model = MultiSpeciesSDM(loss="integrated", covariates=covariates, bias_covariates=["log_bias"],
                                        seed=args.seed,
                                        **{**CONFIG, "n_members": 1, "input_penalty": lam, **arch}).fit(table)
                held = evaluate_held_out(held_out_predictions(model, table)).headline()["raw"]
                found = top_variables(permutation_importance(model, X, **scored), 3)
                recall = float(np.mean(list(_recall(truth_top, found).values())))
                f = model.decision_function(X)
                cols = [truth.species_.index(s) for s in model.species_]
                rho = float(np.mean([spearmanr(f[:, i], p_true[:, j])[0] for i, j in enumerate(cols)]))
                p_cell = model_probability(model, X, area=truth.area_unit_m2_)
                r = float(np.mean([np.corrcoef(p_cell[:, i], p_true[:, j])[0, 1] for i, j in enumerate(cols)]))
                key = f"{network} {lam:g}" + (f" r<{max_corr:g}" if len(args.max_correlations) > 1 else "")
                results[key] = {"network": network, "input_penalty": lam, "max_correlation": max_corr,
                                "n_covariates": len(covariates), "held_out": held, "top3_recall": recall,
                                "spearman_truth_cells": rho, "pearson_truth_cells": r,
                                "seconds": round(time.perf_counter() - t0, 1)}
                print(f"{network}, input_penalty {lam:g}, |r| < {max_corr:g} ({len(covariates)} covariates): "
                      f"held-out {json.dumps(held)}; top-3 recall {recall:.3f}, Spearman {rho:.3f}, Pearson of "
                      f"probabilities {r:.3f} ({results[key]['seconds']} s)", flush=True)
    best = min(results.values(), key=lambda v: v["held_out"]["log_loss"])
    out = {"preset": layout.region()["preset"], "inputs": inputs.name, "oracle_inputs": False,
           "criterion": "held-out survey log loss",
           "chosen": {k: best[k] for k in ("network", "input_penalty", "max_correlation")}, "candidates": results,
           "config": {**CONFIG, "n_members": 1},
           "seconds": round(time.perf_counter() - t_all, 1)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
