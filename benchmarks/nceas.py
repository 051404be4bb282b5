"""Benchmark: multi-species deep SDM vs MaxEnt and scikit-learn baselines on the NCEAS regions.

Protocol (../shared/data/README.md; Elith et al. 2006/2020): fit on presence-only records + background, predict
at the presence/absence sites of each species' own group, ROC AUC per species, mean per region and over all
species. geosdm models run with 3 seeds (mean ± sd); the baselines in the same run (MaxEnt is deterministic
here; the sklearn baselines use seed 0).

Backgrounds. geosdm's ``CONFIG`` (``loss="deepmaxent"``, ``background_weight=0``) drops the 10,000 random
background points and softmaxes over the recorded sites of all species of the region: a target-group
background. Each baseline is therefore fitted twice: on the random background (``maxent``, ...) and on that
same target-group background (``maxent_target_group``, ...; :func:`target_group_table`, built with geosdm's own
site builder). ``auc_best_baseline_overall`` is the best of all of them. MaxEnt is elapid's ``MaxentModel``
with its defaults; with python-glmnet (pinned in the ``baselines`` extra) it fits Maxent's regularisation path,
and the run reports how each species was fitted (``solvers_maxent``). No input is an oracle: every model sees
only the training records and background points (``"oracle_inputs": false``).

One geosdm configuration (``CONFIG``) is used for every region. It was chosen with ``--tune``, which never reads
the test sites: 4-fold spatial-block CV of the training data, scoring held-out presences of each species
against held-out records of the other species (target-group AUC, a stand-in for surveyed absences) and
against held-out background points.

Usage::

    python benchmarks/nceas.py --data ../shared/data/nceas                   # full run (~46 min on 2 cores)
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
from geosdm.models.sites import build_sites
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

#: Baselines: name -> (estimator, background). "random": the region's 10,000 background points; "target_group":
#: the recorded sites of all species, the background geosdm's softmax uses (target_group_table).
BASELINES: dict[str, tuple[Callable[..., Any], str]] = {
    "maxent": (MaxEntBaseline, "random"),
    "logistic_quadratic": (LogisticQuadraticBaseline, "random"),
    "gradient_boosting": (GradientBoostingBaseline, "random"),
    "maxent_target_group": (MaxEntBaseline, "target_group"),
    "logistic_quadratic_target_group": (LogisticQuadraticBaseline, "target_group"),
    "gradient_boosting_target_group": (GradientBoostingBaseline, "target_group"),
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


def target_group_table(region: NCEASRegion) -> pd.DataFrame:
    """Presence-only records + a target-group background: one ``background`` row per recorded site of any species.

    The sites are those geosdm's DeepMaxent softmax runs over at ``background_weight=0``: geosdm's own site
    builder (``build_sites``, the step ``MultiSpeciesSDM.fit`` uses) groups the region's presence-only records
    by data set and location, over every species of the region (also those left out by ``--species``), and each
    site takes the covariates of its first record. A species' own sites are part of its background, as in the
    softmax. The random background points are not used.
    """
    presence = region.presence.reset_index(drop=True)
    sites = build_sites(presence, columns=[])
    if not (sites.frame["family"] == "po").all():
        raise RuntimeError(f"NCEAS {region.region}: presence records gave non-presence sites")
    bg = presence.iloc[sites.frame["row0"].to_numpy()].reset_index(drop=True)
    n = len(bg)
    bg["kind"] = pd.Categorical(["background"] * n, dtype=presence["kind"].dtype)
    bg["species"] = pd.array([pd.NA] * n, dtype=presence["species"].dtype)
    bg["value"] = 0.0
    bg["dataset"] = pd.array([f"NCEAS-{region.region}-target-group"] * n, dtype=presence["dataset"].dtype)
    bg = bg[list(region.background.columns)]  # the random background's columns (no ``group``)
    return pd.concat([presence, bg], ignore_index=True)


def run_baseline(name: str, region: NCEASRegion, species: Sequence[str], table: pd.DataFrame | None = None
                 ) -> tuple[dict[str, float], float, float, Any]:
    """Fit one baseline on ``table`` (default: the region's training table); AUCs, wall and CPU s, the model."""
    cls, _ = BASELINES[name]
    model = cls(covariates=list(region.covariates), species=list(species), seed=0)
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(region.training_table() if table is None else table)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return evaluate(region, model.predict, species), wall, cpu, model


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
    p.add_argument("--baselines", default=",".join(BASELINES),
                   help=f"comma-separated baselines to run ('' for none; default all: {','.join(BASELINES)})")
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
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        p.error(f"unknown baseline(s) {unknown}; choose from {list(BASELINES)}")
    print(f"elapid backend: {elapid_backend()}; geosdm config: {json.dumps(config)}; seeds: {seeds}", flush=True)
    per_region: dict[str, Any] = {}
    pooled: dict[str, dict[str, float]] = {}  # model -> "region/species" -> AUC (geosdm: mean over seeds)
    pooled_seeds: list[dict[str, float]] = [{} for _ in range(seeds)]
    fit_times: dict[str, dict[str, float]] = {}
    solvers: dict[str, dict[str, str]] = {}  # MaxEnt baseline -> "region/species" -> how elapid fitted it
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
        tables = {"random": region.training_table()}
        if any(BASELINES[b][1] == "target_group" for b in baselines):
            tables["target_group"] = target_group_table(region)
            res["n_background_target_group"] = int((tables["target_group"]["kind"] == "background").sum())
        for name in baselines:
            aucs, wall, cpu, fitted = run_baseline(name, region, species, tables[BASELINES[name][1]])
            notes = list(getattr(fitted, "notes_", []))
            if hasattr(fitted, "solvers_"):
                res[f"solvers_{name}"] = pd.Series(fitted.solvers_).value_counts().to_dict()
                solvers.setdefault(name, {}).update({f"{region.region}/{s}": v for s, v in fitted.solvers_.items()})
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
            res["fit_speedup_vs_maxent"] = res["fit_seconds_maxent"] / res["fit_seconds_geosdm"]
            res["fit_cpu_speedup_vs_maxent"] = res["fit_cpu_seconds_maxent"] / res["fit_cpu_seconds_geosdm"]
        per_region[region.region] = res
        print(f"{region.region}: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items() if not k.startswith(('notes', 'solvers'))})}", flush=True)

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
        best = max(baselines, key=lambda b: out[f"auc_{b}_overall"])
        out["auc_best_baseline_overall"] = out[f"auc_{best}_overall"]
        out["best_baseline_overall"] = best
        out["auc_margin_vs_best_baseline"] = out["auc_geosdm_overall"] - out["auc_best_baseline_overall"]
        out["auc_goal_met"] = bool(out["auc_margin_vs_best_baseline"] >= 0.01)  # geosdm >= best baseline + 0.01
    if "maxent" in baselines:
        # MaxEnt's total fit seconds (all species, all regions; random background) / geosdm's total fit seconds
        # (per region the mean over seeds), both wall time in this run
        out["fit_speedup_vs_maxent"] = float(sum(fit_times["maxent"].values()) / sum(fit_times["geosdm"].values()))
        out["fit_seconds_maxent_total"] = float(sum(fit_times["maxent"].values()))
        out["fit_seconds_geosdm_total"] = float(sum(fit_times["geosdm"].values()))
        out["fit_speedup_vs_maxent_min_region"] = float(min(r["fit_speedup_vs_maxent"] for r in per_region.values()))
        out["fit_cpu_speedup_vs_maxent"] = float(sum(r["fit_cpu_seconds_maxent"] for r in per_region.values())
                                                 / sum(r["fit_cpu_seconds_geosdm"] for r in per_region.values()))
    if "maxent_target_group" in baselines:
        out["fit_speedup_vs_maxent_target_group"] = float(sum(fit_times["maxent_target_group"].values())
                                                          / sum(fit_times["geosdm"].values()))
    for name, per_species in solvers.items():
        out[f"solvers_{name}"] = pd.Series(per_species).value_counts().to_dict()
    out["oracle_inputs"] = False
    for region, res in per_region.items():
        out[region] = {k: res[k] for k in ("auc_geosdm", "auc_geosdm_sd", "auc_maxent", "auc_maxent_target_group",
                                           "auc_best_baseline", "best_baseline", "fit_speedup_vs_maxent") if k in res}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
