"""Benchmark: multi-species deep SDM vs MaxEnt and scikit-learn baselines on the NCEAS regions.

Protocol (../shared/data/README.md; Elith et al. 2006/2020): fit on presence-only records + background, predict
at the presence/absence sites of each species' own group, ROC AUC per species, mean per region and over all
species. geosdm models run with 3 seeds (mean ± sd); the baselines in the same run (MaxEnt is deterministic
here; the sklearn baselines use seed 0).

One geosdm configuration (``CONFIG``) is used for every region. It was chosen with ``--tune``, which never reads
the test sites: 4-fold spatial-block CV of the training data, scoring held-out presences of each species
against held-out records of the other species (target-group AUC, a stand-in for surveyed absences) and
against held-out background points.

Usage::

    python benchmarks/nceas.py --data ../shared/data/nceas                   # full run (MaxEnt ~2,000 CPU s)
    python benchmarks/nceas.py --data ../shared/data/nceas --quick           # 8 species a region, 1 seed
    python benchmarks/nceas.py --data ../shared/data/nceas --tune            # choose CONFIG by spatial CV

The last output line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from geosdm.datasets import load_nceas
from geosdm.datasets.nceas import NCEASRegion
from geosdm.models import MultiSpeciesSDM
from geosdm.models.baselines import (
    GradientBoostingBaseline,
    LogisticQuadraticBaseline,
    MaxEntBaseline,
    elapid_backend,
)

#: The geosdm configuration used on every region, chosen by --tune (round 3 below: TUNE_BASE + the best of
#: CANDIDATES, {"dropout": 0.2}) on spatial CV of the training data only; docs/benchmarks.md lists every round.
CONFIG: dict[str, Any] = {
    "network": "mlp", "loss": "deepmaxent", "hidden": 250, "n_blocks": 2, "dropout": 0.2,
    "epochs": 100, "batch_size": 256, "lr": 1e-3, "weight_decay": 0.0, "patience": 10, "val_size": 0.2,
    "background_weight": 0.0, "n_members": 5,
}

#: Base of the last tuning round (rounds 1-2 chose background_weight=0 and n_members=5).
TUNE_BASE: dict[str, Any] = {**CONFIG, "dropout": 0.0}

#: Changes to TUNE_BASE compared by --tune (round 3).
CANDIDATES: list[dict[str, Any]] = [
    {},
    {"background_weight": 0.05},
    {"background_weight": 0.02},
    {"n_members": 10},
    {"dropout": 0.2},
    {"background_weight": 0.05, "dropout": 0.2},
]

BASELINES: dict[str, Callable[..., Any]] = {
    "maxent": MaxEntBaseline,
    "logistic_quadratic": LogisticQuadraticBaseline,
    "gradient_boosting": GradientBoostingBaseline,
}


def _species(region: NCEASRegion, limit: int | None) -> list[str]:
    names = region.species
    if limit is None or limit >= len(names):
        return names
    step = len(names) / limit
    return [names[int(i * step)] for i in range(limit)]


def evaluate(region: NCEASRegion, predict: Callable[[pd.DataFrame], pd.DataFrame], species: Sequence[str]) -> dict[str, float]:
    """AUC per species at its group's PA sites (one prediction over all test sites)."""
    scores = predict(region.test_env)
    out = {}
    for s in species:
        env, y = region.evaluation_sites(s)
        keep = region.test_pa[s].notna().to_numpy()
        if y.min() == y.max():
            continue
        out[s] = float(roc_auc_score(y, scores[s].to_numpy()[keep]))
    return out


def run_geosdm(region: NCEASRegion, species: Sequence[str], seed: int, config: Mapping[str, Any],
               table: pd.DataFrame | None = None) -> tuple[MultiSpeciesSDM, float, float]:
    """Fit one multi-species model; returns it with wall and CPU seconds."""
    model = MultiSpeciesSDM(covariates=list(region.covariates), species=list(species), seed=seed, **config)
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(region.training_table() if table is None else table)
    return model, time.perf_counter() - t0, time.process_time() - c0


def run_baseline(name: str, region: NCEASRegion, species: Sequence[str]) -> tuple[dict[str, float], float, float, list[str]]:
    model = BASELINES[name](covariates=list(region.covariates), species=list(species), seed=0)
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(region.training_table())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return evaluate(region, model.predict, species), wall, cpu, list(getattr(model, "notes_", []))


# ------------------------------------------------------------------------------------------------- tuning
def _cv_scores(region: NCEASRegion, species: Sequence[str], config: Mapping[str, Any], seed: int,
               n_folds: int = 4) -> dict[str, float]:
    """Spatial-block CV on the training data: held-out presences vs other species' records / background."""
    from geosdm.records.cv import SpatialBlockKFold

    table = region.training_table()
    xy = table[["x", "y"]].to_numpy()
    span = float(max(np.ptp(xy[:, 0]), np.ptp(xy[:, 1])))
    folds = SpatialBlockKFold(n_folds, block_size=span / 8, seed=seed).fold_ids(xy)
    tg, bg = [], []
    for k in range(n_folds):
        train, test = table[folds != k], table[folds == k]
        model, _, _ = run_geosdm(region, species, seed, config, table=train)
        scores = model.predict(test, log=True)
        kind, sp = test["kind"].astype(str).to_numpy(), test["species"].astype(str).to_numpy()
        pres_sites = test["siteid"].astype(str).to_numpy()
        for s in model.species_:
            pos = (kind == "presence_only") & (sp == s)
            if pos.sum() < 2:
                continue
            here = set(pres_sites[pos])
            other = (kind == "presence_only") & (sp != s) & ~np.isin(pres_sites, list(here))
            back = kind == "background"
            f = scores[s].to_numpy()
            if other.sum() >= 2:
                tg.append(roc_auc_score(np.r_[np.ones(pos.sum()), np.zeros(other.sum())], np.r_[f[pos], f[other]]))
            bg.append(roc_auc_score(np.r_[np.ones(pos.sum()), np.zeros(back.sum())], np.r_[f[pos], f[back]]))
    return {"cv_auc_target_group": float(np.mean(tg)), "cv_auc_background": float(np.mean(bg))}


def tune(regions: list[NCEASRegion], limit: int | None, seeds: int, candidates: list[dict[str, Any]],
         base: Mapping[str, Any], n_folds: int = 4) -> dict[str, Any]:
    """Score each candidate (changes to ``base``) by spatial CV of the training data (averaged over ``seeds``
    fold draws and initialisations); pick the best by target-group AUC."""
    rows = []
    for i, cand in enumerate(candidates):
        cfg = {**base, **cand}
        for region in regions:
            t0 = time.perf_counter()
            runs = [_cv_scores(region, _species(region, limit), cfg, seed, n_folds) for seed in range(seeds)]
            res = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
            rows.append({"candidate": i, "changes": json.dumps(cand), "region": region.region, **res,
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(rows[-1]), flush=True)
    df = pd.DataFrame(rows)
    summary = df.groupby(["candidate", "changes"])[["cv_auc_target_group", "cv_auc_background"]].mean()
    print(summary.round(4).to_string(), flush=True)
    best = int(summary["cv_auc_target_group"].idxmax()[0])
    return {"best_candidate": best, "best_changes": candidates[best],
            "table": summary.reset_index().round(4).to_dict(orient="records")}


# --------------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "nceas"))
    p.add_argument("--regions", nargs="+", default=None, help="regions (default: every region folder found)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--species", type=int, default=None, help="use this many species per region (evenly spaced)")
    p.add_argument("--quick", action="store_true", help="8 species per region and 1 seed (development)")
    p.add_argument("--baselines", default="maxent,logistic_quadratic,gradient_boosting",
                   help="comma-separated baselines to run ('' for none)")
    p.add_argument("--config", default=None,
                   help="JSON overriding CONFIG (with --tune: TUNE_BASE), e.g. '{\"epochs\": 50}'")
    p.add_argument("--tune", action="store_true", help="compare CANDIDATES by spatial CV of the training data")
    p.add_argument("--candidates", default=None, help="JSON list of config changes for --tune (default CANDIDATES)")
    p.add_argument("--folds", type=int, default=4, help="spatial CV folds for --tune")
    p.add_argument("--tune-seeds", type=int, default=1, help="fold draws / initialisations averaged by --tune")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    limit = 8 if args.quick and args.species is None else args.species
    seeds = 1 if args.quick and args.seeds == 3 else args.seeds
    root = Path(args.data)
    names = args.regions or sorted(d.name for d in root.iterdir() if (d / "train_po.parquet").is_file())
    regions = [load_nceas(root, r) for r in names]
    config = {**CONFIG, **json.loads(args.config)} if args.config else dict(CONFIG)
    if args.tune:
        config = {**TUNE_BASE, **json.loads(args.config)} if args.config else dict(TUNE_BASE)
        cands = json.loads(args.candidates) if args.candidates else CANDIDATES
        result = tune(regions, limit, seeds=args.tune_seeds, candidates=cands, base=config, n_folds=args.folds)
        print(json.dumps(result))
        return result

    baselines = [b for b in args.baselines.split(",") if b]
    print(f"elapid backend: {elapid_backend()}; geosdm config: {json.dumps(config)}; seeds: {seeds}", flush=True)
    per_region: dict[str, Any] = {}
    pooled: dict[str, dict[str, float]] = {}  # model -> "region/species" -> AUC (geosdm: mean over seeds)
    pooled_seeds: list[dict[str, float]] = [{} for _ in range(seeds)]
    fit_times: dict[str, dict[str, float]] = {}
    for region in regions:
        species = _species(region, limit)
        res: dict[str, Any] = {"n_species": len(species)}
        seed_aucs, walls, cpus = [], [], []
        for seed in range(seeds):
            model, wall, cpu = run_geosdm(region, species, seed, config)
            aucs = evaluate(region, lambda X, m=model: m.predict(X, log=True), species)
            seed_aucs.append(aucs)
            walls.append(wall)
            cpus.append(cpu)
            pooled_seeds[seed].update({f"{region.region}/{s}": a for s, a in aucs.items()})
            print(f"{region.region} geosdm seed {seed}: mean AUC {np.mean(list(aucs.values())):.4f} "
                  f"fit {wall:.1f} s wall / {cpu:.1f} s CPU (best epoch {model.training_.best_epoch})", flush=True)
        means = [float(np.mean(list(a.values()))) for a in seed_aucs]
        res.update({"auc_geosdm": float(np.mean(means)), "auc_geosdm_sd": float(np.std(means, ddof=1)) if seeds > 1 else 0.0,
                    "fit_seconds_geosdm": float(np.mean(walls)), "fit_cpu_seconds_geosdm": float(np.mean(cpus))})
        pooled.setdefault("geosdm", {}).update(
            {f"{region.region}/{s}": float(np.mean([a[s] for a in seed_aucs])) for s in seed_aucs[0]})
        fit_times.setdefault("geosdm", {})[region.region] = float(np.mean(walls))
        for name in baselines:
            aucs, wall, cpu, notes = run_baseline(name, region, species)
            res[f"auc_{name}"] = float(np.mean(list(aucs.values())))
            res[f"fit_seconds_{name}"], res[f"fit_cpu_seconds_{name}"] = wall, cpu
            if notes:
                res[f"notes_{name}"] = notes
            pooled.setdefault(name, {}).update({f"{region.region}/{s}": a for s, a in aucs.items()})
            fit_times.setdefault(name, {})[region.region] = wall
            print(f"{region.region} {name}: mean AUC {res[f'auc_{name}']:.4f} fit {wall:.1f} s wall / {cpu:.1f} s CPU"
                  + (f"; notes: {notes}" if notes else ""), flush=True)
        if baselines:
            res["auc_best_baseline"] = max(res[f"auc_{b}"] for b in baselines)
            res["best_baseline"] = max(baselines, key=lambda b: res[f"auc_{b}"])
        if "maxent" in baselines:
            res["auc_maxent"] = res["auc_maxent"]
            res["fit_speedup_vs_maxent"] = res["fit_seconds_maxent"] / res["fit_seconds_geosdm"]
            res["fit_cpu_speedup_vs_maxent"] = res["fit_cpu_seconds_maxent"] / res["fit_cpu_seconds_geosdm"]
        per_region[region.region] = res
        print(f"{region.region}: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items() if not k.startswith('notes')})}", flush=True)

    overall_seed = [float(np.mean(list(d.values()))) for d in pooled_seeds]
    out: dict[str, Any] = {
        "regions": per_region,
        "auc_geosdm_overall": float(np.mean(overall_seed)),
        "auc_geosdm_overall_sd": float(np.std(overall_seed, ddof=1)) if seeds > 1 else 0.0,
        "n_species": len(pooled["geosdm"]),
        "seeds": seeds,
        "config": config,
        "elapid_backend": elapid_backend(),
    }
    for name in baselines:
        out[f"auc_{name}_overall"] = float(np.mean(list(pooled[name].values())))
    if baselines:
        out["auc_best_baseline_overall"] = max(out[f"auc_{b}_overall"] for b in baselines)
    if "maxent" in baselines:
        out["auc_maxent_overall"] = out["auc_maxent_overall"]
        speed = [r["fit_speedup_vs_maxent"] for r in per_region.values()]
        out["fit_speedup_vs_maxent"] = float(min(speed))
        out["fit_speedup_vs_maxent_total"] = float(sum(fit_times["maxent"].values()) / sum(fit_times["geosdm"].values()))
        out["fit_cpu_speedup_vs_maxent"] = float(min(r["fit_cpu_speedup_vs_maxent"] for r in per_region.values()))
    for region, res in per_region.items():
        out[region] = {k: res[k] for k in ("auc_geosdm", "auc_geosdm_sd", "auc_maxent", "auc_best_baseline",
                                           "best_baseline", "fit_speedup_vs_maxent") if k in res}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
