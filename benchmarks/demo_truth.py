"""Benchmark: multi-species SDMs against the known truth of the demo region.

The demo region (``geosdm.demo``) knows each virtual species' true occurrence probability and its realised
occurrence on every cell. Three models with the same network and training settings are fitted:

* **ISDM** — ``loss="integrated"``: presence-only records (observer-biased, with the demo's observer-bias
  layer ``log(bias)`` as a bias covariate, dropped at prediction) + presence/absence surveys (2 visits per plot,
  cloglog with the plot area as offset), one shared intensity;
* **PO-only** — the same on the presence-only records alone (DeepMaxent term + the same bias covariate);
* **PA-only** — the same on the surveys alone (cloglog).

Each is scored on the full grid, per species: ROC AUC of the predicted intensity against the true realised
occurrence, and Spearman correlation with the true occurrence probability; means over species are reported,
and the gains of the ISDM over PO-only and PA-only (in mean Spearman; AUC gains also given).

Inputs (``--inputs``): **built** (the headline) trains on what a user has: the cube the demo pipeline builds
(``pipelines/demo.yaml``'s serve, search, cube and records steps: composited, cloudy, resampled) and, as the
observer-bias covariate, the records step's effort layer (the target-group density of the presence-only records,
``geosdm.records.record_density``); **oracle** (the figures published before issue 17, kept for comparison)
trains on the truth's noise-free covariate layers and its observer-bias layer. ``truth/`` is read only to score.

Usage::

    python benchmarks/demo_truth.py                        # default preset, generated into benchmarks/.cache
    python benchmarks/demo_truth.py --preset small --quick

The last output line is one JSON object with ``spearman_truth_built``, ``isdm_gain_vs_po_built`` (the headline:
``spearman_truth`` and ``isdm_gain_vs_po`` repeat them), their ``*_oracle`` counterparts and ``"oracle_inputs": false``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from geosdm.demo import DemoLayout
from geosdm.models import MultiSpeciesSDM
from geosdm.records import covariate_names, extract_covariates, read_records, training_table

#: Model settings shared by the three fits. Training length is set by early stopping on a spatial validation
#: fold (``epochs`` is only a cap): the survey-only model has few sites, hence few steps per epoch.
CONFIG: dict[str, Any] = {
    "network": "mlp", "hidden": 250, "n_blocks": 2, "epochs": 400, "batch_size": 512, "lr": 1e-3,
    "patience": 10, "val_size": 0.2, "n_members": 5,
}
#: The network and input penalty of the demo pipeline (pipelines/demo.yaml), chosen without the truth by held-out
#: survey log loss among the residual MLP and the neural additive model and five penalties (benchmarks/input_penalty.py).
SELECTED: dict[str, Any] = {"network": "additive", "hidden": 32, "input_penalty": 3e-4}
#: The selected network's architecture alone (``SELECTED`` without the penalty).
ADDITIVE: dict[str, Any] = {k: SELECTED[k] for k in ("network", "hidden")}
CACHE = Path(__file__).resolve().parent / ".cache"
ROOT = Path(__file__).resolve().parents[1]
#: Covariates the collinearity filter keeps first (``prefer_covariates`` of pipelines/demo.yaml): climate,
#: terrain, NDVI and land cover before band reflectances.
PREFER = ("bio01", "bio12", "bio05", "bio06", "bio15", "elevation", "slope", "s2_ndvi_jja", "lc_*")
#: The collinearity filter's threshold (``max_correlation`` of pipelines/demo.yaml), chosen like ``SELECTED``
#: by held-out survey log loss over 0.6 ... 0.9 (``benchmarks/input_penalty.py --networks additive --candidates
#: 3e-4 --max-correlations 0.6 0.65 0.7 0.75 0.8 0.85 0.9``; 0.75: 0.2476, 0.7: 0.2478, 0.8: 0.2510).
MAX_CORRELATION = 0.75


def truth_covariates(grid: xr.Dataset) -> list[str]:
    """The truth cube's covariates: its 2-D layers except QA counts and the observer-bias layer."""
    return [v for v in covariate_names(grid) if v != "bias"]


def truth_at_cells(truth_grid: xr.Dataset, cells: np.ndarray, names: list[str], built: pd.DataFrame) -> pd.DataFrame:
    """The true covariate values ``names`` at flat grid ``cells``, for scoring with the true model, plus the
    built-only columns of ``built`` (layers the truth lacks, e.g. NBR: no species responds to them)."""
    out = pd.DataFrame({v: truth_grid[v].values.ravel()[cells] for v in names})
    for v in built.columns:
        if v not in out:
            out[v] = built[v].to_numpy()
    return out


@dataclass(frozen=True)
class DemoInputs:
    """What a model is trained on: a covariate cube and an observer-bias layer (store and variable)."""

    name: str  # "built" or "oracle"
    cube: str
    covariates: list[str]
    bias_store: str
    bias_variable: str


def built_inputs(layout: DemoLayout) -> DemoInputs:
    """The demo pipeline's own cube and effort layer for ``layout`` (built once by its serve, search, cube and
    records steps, then reused): what a user of the demo has, with nothing read from ``truth/``."""
    from geosdm.pipeline import load_pipeline, run_pipeline

    preset = layout.region()["preset"]
    cube, effort = layout.root / "cube.zarr", layout.root / "records" / "effort.zarr"
    if not (cube / "zarr.json").exists() or not (effort / "zarr.json").exists():
        os.environ["GEOSDM_DEMO_DIR"] = str(layout.root)
        cfg = load_pipeline(ROOT / "pipelines" / ("demo.yaml" if preset == "default" else "demo-small.yaml"))
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_pipeline(cfg, steps=("serve", "search", "cube", "records"))
        print(f"built the demo pipeline's cube and effort layer in {time.perf_counter() - t0:.0f} s", flush=True)
    built = xr.open_zarr(cube)
    return DemoInputs("built", str(cube), covariate_names(built), str(effort), "record_density")


def oracle_inputs(layout: DemoLayout) -> DemoInputs:
    """The truth's noise-free covariates and observer-bias layer (the figures before issue 17; comparison only)."""
    return DemoInputs("oracle", str(layout.truth_zarr), truth_covariates(xr.open_zarr(layout.truth_zarr)),
                      str(layout.truth_zarr), "bias")


def demo_inputs(layout: DemoLayout, which: str) -> list[DemoInputs]:
    """``--inputs`` as a list, the headline (built) first."""
    return [f(layout) for name, f in (("built", built_inputs), ("oracle", oracle_inputs)) if which in (name, "both")]


def check_same_grid(cube: xr.Dataset, truth: xr.Dataset) -> None:
    """Scoring compares cells one to one: the cube must be on the truth's grid."""
    if cube.sizes["y"] != truth.sizes["y"] or cube.sizes["x"] != truth.sizes["x"] or not (
            np.allclose(cube["x"].values, truth["x"].values) and np.allclose(cube["y"].values, truth["y"].values)):
        raise SystemExit("the cube is not on the truth's grid: build it with the demo pipeline's grid")


def _demo(args: argparse.Namespace) -> DemoLayout:
    if args.demo:
        return DemoLayout.at(args.demo)
    from geosdm.demo import generate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return generate(CACHE / f"demo-{args.preset}", preset=args.preset, seed=0)


def _table(layout: DemoLayout, inputs: DemoInputs, n_background: int, seed: int) -> tuple[pd.DataFrame, list[str]]:
    """Training table on ``inputs``' cube (covariates left out for gaps dropped) with its bias layer as
    ``log_bias``; returns the table and the covariates kept."""
    records = pd.concat([read_records(layout.presence_only_csv), read_records(layout.surveys_parquet)],
                        ignore_index=True)
    records = records[records["kind"] != "count"]  # PO + PA (trap counts are a third data set, left out here)
    res = float(layout.region()["target_grid"]["resolution"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tt = training_table(records, inputs.cube, n_background=n_background, n_folds=5, block_size=20 * res,
                            seed=seed, variables=inputs.covariates)
    if tt.excluded:
        print(f"{inputs.name}: covariates left out for gaps: {tt.excluded}", flush=True)
    table = extract_covariates(inputs.bias_store, tt.table, variables=[inputs.bias_variable])
    table["log_bias"] = np.log(np.maximum(table[inputs.bias_variable].to_numpy(dtype="float64"), 1e-6))
    return table.drop(columns=[inputs.bias_variable]), list(tt.covariates)


def _score(model: MultiSpeciesSDM, grid: xr.Dataset, truth: xr.Dataset) -> pd.DataFrame:
    f = model.predict(grid[model.feature_names_], log=True)
    rows = []
    for s in model.species_:
        pred = f.sel(species=s).values.ravel()
        prob = truth["probability"].sel(species=s).values.ravel()
        occ = truth["occurrence"].sel(species=s).values.ravel()
        ok = np.isfinite(pred) & np.isfinite(prob)
        auc = roc_auc_score(occ[ok], pred[ok]) if 0 < occ[ok].sum() < ok.sum() else np.nan
        rows.append({"species": s, "auc_occurrence": auc, "spearman_probability": spearmanr(pred[ok], prob[ok])[0]})
    return pd.DataFrame(rows).set_index("species")


def _fit_and_score(layout: DemoLayout, inputs: DemoInputs, truth: xr.Dataset, config: dict[str, Any],
                   args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    table, covariates = _table(layout, inputs, args.n_background, args.seed)
    grid_all = xr.open_zarr(inputs.cube)
    check_same_grid(grid_all, truth)
    grid = grid_all[covariates].load()
    print(f"[{inputs.name}] training table: {len(table)} rows {table['kind'].value_counts().to_dict()} "
          f"({time.perf_counter() - t0:.1f} s); {len(covariates)} covariates", flush=True)
    kind = table["kind"].astype(str)
    subsets = {
        "isdm": (table, "integrated", ["log_bias"]),
        "po_only": (table[kind.isin(["presence_only", "background"])], "integrated", ["log_bias"]),
        "pa_only": (table[kind == "presence_absence"], "cloglog", []),
    }
    scores: dict[str, pd.DataFrame] = {}
    summary: dict[str, Any] = {}
    for name, (data, loss, bias) in subsets.items():
        model = MultiSpeciesSDM(loss=loss, covariates=covariates, bias_covariates=bias, seed=args.seed, **config)
        model.fit(data)
        scores[name] = _score(model, grid, truth)
        summary[name] = {
            "auc_occurrence": float(scores[name]["auc_occurrence"].mean()),
            "spearman_probability": float(scores[name]["spearman_probability"].mean()),
            "fit_seconds": model.fit_seconds_, "best_epoch": model.training_.best_epoch,
            "bias_coefficient": (float(model.loss_.bias_coef.detach()[0, 0]) if bias else None),
        }
        print(f"[{inputs.name}] {name}: "
              f"{json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in summary[name].items()})}",
              flush=True)
    print(pd.concat({k: v for k, v in scores.items()}, axis=1).round(3).to_string(), flush=True)
    isdm = summary["isdm"]
    return {
        "spearman_truth": isdm["spearman_probability"],
        "auc_truth": isdm["auc_occurrence"],
        "isdm_gain_vs_po": isdm["spearman_probability"] - summary["po_only"]["spearman_probability"],
        "isdm_gain_vs_pa": isdm["spearman_probability"] - summary["pa_only"]["spearman_probability"],
        "isdm_auc_gain_vs_po": isdm["auc_occurrence"] - summary["po_only"]["auc_occurrence"],
        "isdm_auc_gain_vs_pa": isdm["auc_occurrence"] - summary["pa_only"]["auc_occurrence"],
        "n_species": int(len(scores["isdm"])),
        "n_covariates": len(covariates),
        "models": summary,
        "cube": inputs.cube,
        "bias": f"{inputs.bias_store}:{inputs.bias_variable}",
    }


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    """The demo benchmarks' shared options: which demo, which inputs, background size and seed."""
    p.add_argument("--demo", default=None, help="an existing demo folder (default: generate --preset into .cache)")
    p.add_argument("--preset", default="default", choices=["small", "default"])
    p.add_argument("--inputs", default="both", choices=["both", "built", "oracle"],
                   help="built: the pipeline's cube and effort layer (headline); oracle: the truth's layers")
    p.add_argument("--n-background", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(p)
    p.add_argument("--config", default=None, help="JSON overriding CONFIG")
    p.add_argument("--quick", action="store_true", help="at most 40 epochs, 2,000 background points")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    config = {**CONFIG, **(json.loads(args.config) if args.config else {})}
    if args.quick:
        config["epochs"], args.n_background = min(config["epochs"], 40), min(args.n_background, 2000)
    layout = _demo(args)
    truth = xr.open_zarr(layout.truth_zarr)[["probability", "occurrence"]].load()
    runs = {inp.name: _fit_and_score(layout, inp, truth, config, args) for inp in demo_inputs(layout, args.inputs)}
    head = runs.get("built") or runs["oracle"]
    out: dict[str, Any] = {"preset": layout.region()["preset"], "n_species": head["n_species"],
                           "oracle_inputs": "built" not in runs}
    for key in ("spearman_truth", "auc_truth", "isdm_gain_vs_po", "isdm_gain_vs_pa", "isdm_auc_gain_vs_po",
                "isdm_auc_gain_vs_pa"):
        out[key] = head[key]
        out.update({f"{key}_{name}": r[key] for name, r in runs.items()})
    out["goals"] = {"spearman_truth_built >= 0.85": bool(head["spearman_truth"] >= 0.85),
                    "isdm_gain_vs_po_built > 0": bool(head["isdm_gain_vs_po"] > 0)} if "built" in runs else {}
    out["runs"] = runs
    out["config"] = config
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
