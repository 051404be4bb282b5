"""Benchmark: projections onto the demo's scenarios against the true future probabilities (issue 20).

The demo region (default preset) has three scenarios (``warm2``, ``warm4``, ``warm2_landuse``) whose true future
probabilities, generated with the species' true response functions, are in ``truth/scenarios.zarr`` (scoring only).
The model is the demo pipeline's (pipelines/demo.yaml: the neural additive model, integrated loss, 30 epochs, the
collinearity filter) fitted on the cube the pipeline builds and the records' effort layer (as in
benchmarks/interactions.py, whose cached fit it shares), then calibrated like the pipeline's evaluate step (Platt on
held-out survey folds, with its interval model). The scenario cubes are built from the demo's scenario inputs onto
that cube (``geosdm.scenarios.build_scenarios``, the pipeline's ``scenarios:`` section). The projection
(:func:`geosdm.project.project`, written with :func:`geosdm.project.write_projection`) has thresholds chosen by
max TSS on the baseline at the training records, MESS against the training table (presences, survey plots and
background points, as the explain step's MESS), and the interval model's spread (standard deviation).

Figures (pooled over the three scenarios):

* ``spearman_change_vs_truth``: Spearman correlation of the predicted and true probability change (scenario -
  baseline, probability of presence in one 100 m cell), pooled over species and the cells inside the training
  range (MESS >= 0); goal >= 0.8. Per scenario in ``per_scenario``.
* ``range_shift_direction_accuracy``: share of (species, scenario) whose predicted probability-weighted centroid
  shift points within 45 degrees of the true one, among those whose true shift exceeds two cells; goal >= 0.8.
* ``mess_flags_error``: correlation (phi) between MESS < 0 at a cell and a large error there (the cell's mean
  absolute error over species in the top 10 % of cells); reported.
* ``throughput_ratio``: pixel-species maps per second of the written projection (baseline + scenarios, every layer
  stored) over those of plain predictions (:func:`geosdm.predict.write_predictions`) of the same cells, the
  baseline and each overlaid scenario cube, measured in this run (alternated, best of two); goal >= 0.9.
  ``throughput_ratio_computed``: the same with both computed in memory (the tile tasks alone, no store writes).

Beside them, to tell where the accuracy goes:

* ``spearman_change_true_model_on_built_cubes``: the demo's true model (its response functions) run on the same
  built baseline and scenario cubes, scored the same way (truth-only diagnosis): what the projection's inputs
  allow; near 1 means the fitted model's response curves, not the projection, set the limit.
* ``*_clamped``: the same projection with ``clamp=True`` (covariates held to the training range);
  ``prevalence_change_corr``: correlation of the predicted and true change of each species' mean probability.
* ``ensemble``: the same figures for the pipeline's settings with ``n_members=--ensemble`` (default 5), fitted and
  calibrated the same way.

Usage::

    python benchmarks/projection.py                # default preset, into benchmarks/.cache
    python benchmarks/projection.py --preset small

The last output line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402
from demo_truth import CACHE, ROOT, _demo, built_inputs  # noqa: E402
from interactions import MODEL, _calibrated_probability, _cell_area, _fitted_probability, _model_dir, _training_table  # noqa: E402

from geosdm.demo import DemoLayout  # noqa: E402
from geosdm.project import BASELINE  # noqa: E402


def _with_futures(layout: DemoLayout, preset: str) -> DemoLayout:
    """The demo with its scenario inputs and truth (a demo generated before they existed gets them copied from a
    fresh, identical generation: same preset and seed give the same files)."""
    if layout.scenarios_truth_zarr.exists() and layout.scenarios.exists():
        return layout
    from geosdm.demo import generate

    tmp = CACHE / f"demo-{preset}-futures"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = generate(tmp, preset=preset, seed=0)
    shutil.copytree(fresh.scenarios, layout.scenarios, dirs_exist_ok=True)
    shutil.copytree(fresh.scenarios_truth_zarr, layout.scenarios_truth_zarr, dirs_exist_ok=True)
    shutil.copy(fresh.scenarios_json, layout.scenarios_json)
    shutil.copy(fresh.root / "region.json", layout.root / "region.json")
    shutil.rmtree(tmp, ignore_errors=True)
    return layout


def _scenario_cubes(layout: DemoLayout, cube: str) -> Any:
    """The pipeline's scenarios section built onto the built cube (cached, resumable)."""
    from geosdm.pipeline import load_pipeline
    from geosdm.scenarios import build_scenarios

    os.environ["GEOSDM_DEMO_DIR"] = str(layout.root)
    preset = layout.region()["preset"]
    cfg = load_pipeline(ROOT / "pipelines" / ("demo.yaml" if preset == "default" else "demo-small.yaml")).scenarios
    cfg = cfg.model_copy(update={"baseline": cube, "output": str(layout.root / "scenario-cubes")})  # type: ignore[union-attr]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reports = build_scenarios(cfg)
    print(f"scenario cubes {cfg.output}: {sorted(reports)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return cfg


def _angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cos = (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def _accuracy(stored: xr.Dataset, layout: DemoLayout, names: list[str]) -> dict[str, Any]:
    """The accuracy figures of a written projection against the demo's true futures (scoring only)."""
    from scipy.stats import spearmanr

    from geosdm.project import range_table

    truth = xr.open_zarr(layout.scenarios_truth_zarr)
    base_truth = xr.open_zarr(layout.truth_zarr)["probability"].load()
    species = [str(s) for s in base_truth["species"].values]
    per: dict[str, Any] = {}
    xs, ys, mess_flag, big_err = [], [], [], []
    for s in names[1:]:
        true_change = (truth["probability"].sel(scenario=s).load() - base_truth).values
        pred = stored["probability"].sel(scenario=s, species=species).values.astype(np.float64)
        pred_change = stored["change"].sel(scenario=s, species=species).values.astype(np.float64)
        mess = stored["mess"].sel(scenario=s).values
        inside = (mess >= 0)[None] & np.isfinite(pred_change) & np.isfinite(true_change)
        rho = float(spearmanr(pred_change[inside], true_change[inside]).statistic)
        per[s] = {"spearman_change_vs_truth": rho, "share_inside_training_range": float(np.mean(mess >= 0)),
                  "spearman_all_cells": float(spearmanr(
                      pred_change[np.isfinite(pred_change)], true_change[np.isfinite(pred_change)]).statistic)}
        xs.append(pred_change[inside])
        ys.append(true_change[inside])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            err = np.nanmean(np.abs(pred - truth["probability"].sel(scenario=s).values), axis=0)
        ok = np.isfinite(err) & np.isfinite(mess)
        mess_flag.append(mess[ok] < 0)
        big_err.append(err[ok] > np.quantile(err[ok], 0.9))
    spearman = float(spearmanr(np.concatenate(xs), np.concatenate(ys)).statistic)
    f, e = np.concatenate(mess_flag).astype(float), np.concatenate(big_err).astype(float)
    phi = float(np.corrcoef(f, e)[0, 1]) if f.std() > 0 and e.std() > 0 else float("nan")

    ranges = range_table(stored)
    info = json.loads(layout.scenarios_json.read_text())
    cell = float(layout.region()["target_grid"]["resolution"])
    pred_v, true_v, keys = [], [], []
    for s in names[1:]:
        r = ranges[ranges.scenario == s].set_index("species")
        base = ranges[ranges.scenario == "baseline"].set_index("species")
        for sp in species:
            t = np.asarray(info[s]["species"][sp]["centroid_shift_m"], dtype=float)
            if np.hypot(*t) > 2 * cell:
                pred_v.append([r.loc[sp, "centroid_x"] - base.loc[sp, "centroid_x"],
                               r.loc[sp, "centroid_y"] - base.loc[sp, "centroid_y"]])
                true_v.append(t)
                keys.append(f"{s}:{sp}")
    angles = _angle(np.asarray(pred_v), np.asarray(true_v)) if pred_v else np.array([])
    direction = float(np.mean(angles <= 45)) if angles.size else float("nan")

    true_prev = xr.open_zarr(layout.truth_zarr)["probability"].mean(("y", "x")).values
    prev = stored["probability"].sel(species=species).mean(("y", "x")).values.astype(np.float64)
    pc, tc = [], []
    for i, s in enumerate(names[1:], 1):
        pc.append(prev[i] - prev[0])
        tc.append(truth["probability"].sel(scenario=s).mean(("y", "x")).values - true_prev)
    prevalence_corr = float(np.corrcoef(np.concatenate(pc), np.concatenate(tc))[0, 1])
    return {"spearman": spearman, "direction": direction, "angles": angles, "phi": phi, "per": per,
            "ranges": ranges, "species": species, "prevalence_corr": prevalence_corr}


def _true_model_change(layout: DemoLayout, cube: str, scen_cfg: Any, stored: xr.Dataset, names: list[str]) -> float:
    """Diagnosis, truth only: the demo's true model (:class:`geosdm.demo.TrueModel`) run on the built baseline and
    scenario cubes; the Spearman of its change with the true change inside the training range. What the
    projection's inputs (the built cubes) allow: near 1 means the fitted model, not the projection, sets the limit."""
    from scipy.stats import spearmanr

    from geosdm.demo import TrueModel
    from geosdm.scenarios import open_scenario

    true_model = TrueModel.from_layout(layout)
    drivers = true_model.feature_names_

    def prob(ds: xr.Dataset) -> np.ndarray:
        p = true_model.predict_proba({v: ds[v].values.ravel() for v in drivers})
        return p.T.reshape(len(true_model.species_), ds.sizes["y"], ds.sizes["x"])

    truth = xr.open_zarr(layout.scenarios_truth_zarr)
    base_truth = xr.open_zarr(layout.truth_zarr)["probability"].load()
    base = prob(xr.open_zarr(cube))
    xs, ys = [], []
    for s in names[1:]:
        change = prob(open_scenario(cube, scen_cfg.path(s))) - base
        true_change = (truth["probability"].sel(scenario=s).load() - base_truth).values
        inside = (stored["mess"].sel(scenario=s).values >= 0)[None] & np.isfinite(change) & np.isfinite(true_change)
        xs.append(change[inside])
        ys.append(true_change[inside])
    return float(spearmanr(np.concatenate(xs), np.concatenate(ys)).statistic)


def _thresholds_and_reference(model: Any, cube: str, table: pd.DataFrame, area: float) -> tuple[Any, Any]:
    """Max-TSS thresholds on the baseline map at the training records; the MESS/clamping reference (the explain
    step's: the training table)."""
    from geosdm.explain import reference_from
    from geosdm.predict import predict
    from geosdm.project import baseline_thresholds

    thresholds = baseline_thresholds(predict(model, cube, area=area).probability, table, rule="max_tss")
    return thresholds, reference_from(table, list(model.feature_names_), model=model)


def _ensemble(layout: DemoLayout, inputs: Any, scen_cfg: Any, table: pd.DataFrame, area: float,
              args: argparse.Namespace) -> dict[str, Any]:
    """The same projection with an ensemble of ``--ensemble`` members (the pipeline's settings otherwise), fitted
    and calibrated like the pipeline's model: its accuracy figures."""
    from geosdm.models import load_model
    from geosdm.project import open_projection, project, write_projection

    params = {**MODEL, "n_members": int(args.ensemble)}
    src = _model_dir(layout, "ensemble", params)
    calibrated = src.with_name(src.name + "-calibrated")
    if args.refit or not (calibrated / "config.json").is_file():
        _fitted_probability(layout, "ensemble", params, args.refit)
        _calibrated_probability(layout, "ensemble", params, args.refit)
    model = load_model(calibrated)
    thresholds, reference = _thresholds_and_reference(model, inputs.cube, table, area)
    out = CACHE / "projection-bench-ensemble"
    write_projection(project(model, inputs.cube, scen_cfg, area=area, thresholds=thresholds, reference=reference),
                     str(out), overwrite=True)
    names = [BASELINE, *scen_cfg.futures]
    acc = _accuracy(open_projection(str(out)), layout, names)
    clamped = _accuracy(open_projection(str(_clamped(model, inputs.cube, scen_cfg, area, thresholds, reference,
                                                     "projection-bench-ensemble-clamped"))), layout, names)
    return {"n_members": int(args.ensemble), "spearman_change_vs_truth": acc["spearman"],
            "range_shift_direction_accuracy": acc["direction"], "median_angle_error_deg": float(np.median(acc["angles"])),
            "range_shift_direction_accuracy_clamped": clamped["direction"],
            "per_scenario": {s: v["spearman_change_vs_truth"] for s, v in acc["per"].items()}}


def _clamped(model: Any, cube: str, scen_cfg: Any, area: float, thresholds: Any, reference: Any, name: str) -> Path:
    """The projection with the covariates clamped to the training range (``clamp=True``), written for comparison."""
    from geosdm.project import project, write_projection

    out = CACHE / name
    write_projection(project(model, cube, scen_cfg, area=area, thresholds=thresholds, reference=reference,
                             clamp=True), str(out), overwrite=True)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from geosdm.models import load_model
    from geosdm.predict import predict, write_predictions
    from geosdm.project import open_projection, project, write_projection
    from geosdm.scenarios import open_scenario

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", default=None, help="an existing demo folder (default: generate --preset into .cache)")
    p.add_argument("--preset", default="default", choices=["small", "default"])
    p.add_argument("--refit", action="store_true")
    p.add_argument("--ensemble", type=int, default=5, help="members of the ensemble also scored (0: skip)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    layout = _with_futures(_demo(args), args.preset)
    inputs = built_inputs(layout)
    scen_cfg = _scenario_cubes(layout, inputs.cube)
    src = _model_dir(layout, "pipeline", MODEL)
    calibrated = src.with_name(src.name + "-calibrated")
    if args.refit or not (calibrated / "config.json").is_file():  # fitted and calibrated as interactions.py does
        _fitted_probability(layout, "pipeline", MODEL, args.refit)
        _calibrated_probability(layout, "pipeline", MODEL, args.refit)
    model = load_model(calibrated)
    area = _cell_area(layout)
    table = pd.read_parquet(_training_table(layout))
    t0 = time.perf_counter()
    thresholds, reference = _thresholds_and_reference(model, inputs.cube, table, area)
    print(f"thresholds (max TSS) and MESS reference in {time.perf_counter() - t0:.0f} s", flush=True)

    out = CACHE / "projection-bench"
    proj = project(model, inputs.cube, scen_cfg, area=area, thresholds=thresholds, reference=reference)
    names = [str(s) for s in proj["scenario"].values]
    n_maps = len(names) * proj.sizes["species"] * proj.sizes["y"] * proj.sizes["x"]
    plain = CACHE / "projection-bench-plain"
    cubes = {s: inputs.cube if s == "baseline" else open_scenario(inputs.cube, scen_cfg.path(s)) for s in names}

    def plain_compute() -> None:  # plain predictions of the same cells, computed in memory
        dask.compute(*[predict(model, cubes[s], area=area, packed=True).probability.data.sum() for s in names])

    # alternated, best of two (the machine is shared): written stores end to end, and the tile tasks alone
    t_proj = t_plain = t_proj_c = t_plain_c = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        reports = write_projection(proj, str(out), overwrite=True)
        t_proj = min(t_proj, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for s in names:
            write_predictions(model, cubes[s], str(plain / f"{s}.zarr"), area=area, overwrite=True)
        t_plain = min(t_plain, time.perf_counter() - t0)
        t0 = time.perf_counter()
        dask.compute(*[proj[v].data.sum() for v in proj.data_vars if v != "threshold"])
        t_proj_c = min(t_proj_c, time.perf_counter() - t0)
        t0 = time.perf_counter()
        plain_compute()
        t_plain_c = min(t_plain_c, time.perf_counter() - t0)
    print(f"projection of {len(names)} maps x {proj.sizes['species']} species, {len(proj.data_vars)} layers: "
          f"{t_proj:.1f} s written ({t_proj_c:.1f} s computed); plain predictions of the same cells: {t_plain:.1f} s "
          f"written ({t_plain_c:.1f} s computed)", flush=True)

    acc = _accuracy(open_projection(str(out)), layout, names)
    clamped = _accuracy(open_projection(str(_clamped(model, inputs.cube, scen_cfg, area, thresholds, reference,
                                                     "projection-bench-clamped"))), layout, names)
    ens = _ensemble(layout, inputs, scen_cfg, table, area, args) if args.ensemble >= 2 else None
    bound = _true_model_change(layout, inputs.cube, scen_cfg, open_projection(str(out)), names)
    spearman, direction, angles, phi, per, ranges, species = (
        acc[k] for k in ("spearman", "direction", "angles", "phi", "per", "ranges", "species"))

    pixel_maps = n_maps
    result = {
        "preset": layout.region()["preset"], "scenarios": names[1:], "species": len(species),
        "oracle_inputs": False,
        "spearman_change_vs_truth": spearman,
        "range_shift_direction_accuracy": direction,
        "n_shifting": int(angles.size),
        "median_angle_error_deg": float(np.median(angles)) if angles.size else None,
        "clamped": False,
        "spearman_change_true_model_on_built_cubes": bound,
        "spearman_change_vs_truth_clamped": clamped["spearman"],
        "range_shift_direction_accuracy_clamped": clamped["direction"],
        "prevalence_change_corr": acc["prevalence_corr"], "prevalence_change_corr_clamped": clamped["prevalence_corr"],
        "ensemble": ens,
        "mess_flags_error": phi,
        "throughput_ratio": float(t_plain / t_proj),
        "throughput_ratio_computed": float(t_plain_c / t_proj_c),
        "projection_seconds": round(t_proj, 2), "plain_prediction_seconds": round(t_plain, 2),
        "projection_compute_seconds": round(t_proj_c, 2), "plain_compute_seconds": round(t_plain_c, 2),
        "projection_pixel_species_per_s": round(pixel_maps / t_proj),
        "plain_pixel_species_per_s": round(pixel_maps / t_plain),
        "layers": sorted(map(str, proj.data_vars)), "tiles": reports["baseline"].n_tiles,
        "per_scenario": per,
        "mean_range_change_pct": {s: float(ranges.loc[ranges.scenario == s, "range_change_pct"].mean())
                                  for s in names[1:]},
    }
    result["goals"] = {"spearman_change_0.8": spearman >= 0.8, "direction_0.8": direction >= 0.8,
                       "throughput_0.9": result["throughput_ratio"] >= 0.9}
    emit(result)
    return result


if __name__ == "__main__":
    main()
