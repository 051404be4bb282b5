"""The ODMAP protocol table of a run (Zurell et al. 2020, Ecography 43: 1261-1277), filled from the run itself.

ODMAP (Overview, Data, Model, Assessment, Prediction) is the standard protocol for reporting species
distribution models. :func:`odmap_table` fills its elements from a pipeline's configuration (duck-typed: any
object with the pipeline's step attributes, e.g. :class:`geosdm.pipeline.PipelineConfig`) and the outputs its
steps wrote (the model's ``config.json`` and covariate selection, the evaluation ``summary.json``, the
explain step's summary, the prediction store's attributes). An element the run cannot know (authorship,
hypotheses, the taxonomic reference...) says so: ``value`` starts with "not filled by the run" and names
what would fill it. :func:`write_odmap` writes the table as CSV (``odmap.csv`` beside the report).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["NOT_FILLED", "odmap_table", "write_odmap"]

NOT_FILLED = "not filled by the run"
_COLUMNS = ["section", "subsection", "element", "value"]


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _missing(why: str) -> str:
    return f"{NOT_FILLED}: {why}"


def _short(names: Sequence[str], k: int = 12) -> str:
    names = [str(n) for n in names]
    return ", ".join(names[:k]) + (f" ... ({len(names)} in all)" if len(names) > k else "")


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def odmap_table(config: Any, *, threshold: str | None = None, steps: Sequence[str] | None = None) -> pd.DataFrame:
    """The ODMAP elements of a run: one row per element (``section``, ``subsection``, ``element``, ``value``).

    Parameters
    ----------
    config
        The pipeline configuration (attributes ``name``, ``cube``, ``records``, ``train``, ``evaluate``,
        ``predict``, ``explain``... each None when the step is not configured).
    threshold
        How binary maps were made (the rule and values), when the report drew any.
    steps
        The steps that ran (default: the configured ones).

    Example
    -------
    >>> odmap_table(load_pipeline("pipelines/demo-small.yaml")).query("section == 'Model'")  # doctest: +SKIP
    """
    get = lambda name: getattr(config, name, None)  # noqa: E731
    cube, records, train, evaluate, predict, explain, inter = (get(n) for n in (
        "cube", "records", "train", "evaluate", "predict", "explain", "interactions"))
    model_dir = Path(train.output) if train is not None and getattr(train, "output", None) else None
    mcfg = _json(model_dir / "config.json") if model_dir else {}
    params = mcfg.get("params", {})
    selection = _json(model_dir / "covariate_selection.json") if model_dir else {}
    ev = _json(Path(evaluate.output) / "summary.json") if evaluate is not None else {}
    ev_map = _json(Path(get("evaluate_map").output) / "summary.json") if get("evaluate_map") is not None else {}
    ex = _json(Path(explain.output) / "summary.json") if explain is not None else {}
    species = list(mcfg.get("species") or [])
    covariates = list(selection.get("selected") or params.get("covariates") or [])
    table = None
    table_path = getattr(records, "output", None) or getattr(train, "table", None)
    if table_path and Path(table_path).is_file():
        try:
            table = pd.read_parquet(table_path, columns=["species", "kind", "value", "dataset"])
        except Exception:  # noqa: BLE001 - an older table without a column: counts left out
            table = None
    pred_attrs: dict[str, Any] = {}
    if predict is not None and Path(predict.zarr_path).exists():
        pred_attrs = _json(Path(predict.zarr_path) / "zarr.json").get("attributes", {}) or \
            _json(Path(predict.zarr_path) / ".zattrs")
    grid = getattr(cube, "grid", None)
    rows: list[tuple[str, str, str, str]] = []

    def add(section: str, sub: str, element: str, value: str | None, why: str = "") -> None:
        rows.append((section, sub, element, value if value else _missing(why or "the pipeline does not record it")))

    ran = list(steps) if steps is not None else [s for s in ("demo", "serve", "search", "cube", "records", "train",
                                                              "evaluate", "predict", "evaluate_map", "explain",
                                                              "interactions", "report") if get(s) is not None]
    kinds = table["kind"].astype(str).value_counts().to_dict() if table is not None else {}
    extent = (f"bbox {list(grid.bbox)} in {grid.crs}" if grid is not None and getattr(grid, "bbox", None) is not None
              else None)
    resolution = f"{grid.resolution:g} {'degrees' if str(grid.crs).upper() in ('EPSG:4326', 'OGC:CRS84') else 'm'} cells" \
        if grid is not None and getattr(grid, "resolution", None) else None
    period = getattr(cube, "datetime", None)
    # ------------------------------------------------------------------------------------------- Overview
    O = "Overview"
    add(O, "Authorship", "Authors and contact", None, "add the authors to the report")
    add(O, "Model objective", "Objective (inference, mapping, transfer)",
        ("mapping: presence probability of each species over the training cube's grid"
         + ("" if predict is None or train is None or predict.cube == getattr(train, "cube", None)
            else f"; transfer to {predict.cube}")) if predict is not None else None, "no predict step")
    add(O, "Focal taxon", "Taxa", f"{len(species)} species: {_short(species)}" if species else None, "no model")
    add(O, "Location", "Study area", extent, "no cube step with a grid")
    add(O, "Scale of analysis", "Spatial extent / resolution / temporal extent",
        "; ".join(v for v in (extent, resolution, f"covariates over {period}" if period else None) if v) or None,
        "no cube step")
    add(O, "Biodiversity data", "Observation type",
        ", ".join(f"{k} ({n} rows)" for k, n in kinds.items()) or None, "no training table")
    add(O, "Predictors", "Predictor types",
        _short([getattr(s, "source", str(s)) for s in cube.sources]) if cube is not None else None, "no cube step")
    add(O, "Hypotheses", "Hypotheses", None, "state the ecological hypotheses in the report")
    add(O, "Assumptions", "Model assumptions",
        ("records are a sample of where species occur, with observer effort modelled by "
         f"{list(getattr(train, 'bias_covariates', []) or [])} (presence-only part only)")
        if train is not None and getattr(train, "bias_covariates", None) else None,
        "state the assumptions (equilibrium, sampling) in the report")
    add(O, "Algorithms", "SDM algorithms",
        (f"geosdm MultiSpeciesSDM: {params.get('network', '?')} network, {params.get('loss', '?')} loss "
         f"(link {mcfg.get('link', '?')})") if mcfg else None, "no model")
    add(O, "Workflow", "Model workflow", " -> ".join(ran) or None)
    try:
        from importlib.metadata import version

        sw = f"geosdm {version('geosdm')}, Python {platform.python_version()}"
        try:
            sw += f", PyTorch {version('torch')}"
        except Exception:  # noqa: BLE001
            pass
    except Exception:  # noqa: BLE001
        sw = f"geosdm, Python {platform.python_version()}"
    add(O, "Software", "Software", sw)
    add(O, "Code availability", "Code and configuration", f"pipeline {get('name')!r} (its YAML) with geosdm")
    add(O, "Data availability", "Data availability",
        _short([getattr(i, "path", i) for i in records.inputs]) if records is not None else None, "no records step")
    # ----------------------------------------------------------------------------------------------- Data
    D = "Data"
    add(D, "Biodiversity data", "Taxon names", _short(species, 50) if species else None, "no model")
    add(D, "Biodiversity data", "Taxonomic reference system", None, "name the taxonomic backbone of the records")
    add(D, "Biodiversity data", "Data sources",
        _short(sorted(table["dataset"].dropna().astype(str).unique())) if table is not None else None,
        "no training table")
    add(D, "Biodiversity data", "Sample size",
        ", ".join(f"{k}: {n}" for k, n in kinds.items()) or None, "no training table")
    add(D, "Biodiversity data", "Absence data",
        f"{int(((table['kind'].astype(str) == 'presence_absence') & (table['value'] == 0)).sum())} survey absences"
        if table is not None else None, "no training table")
    add(D, "Biodiversity data", "Background data",
        f"{records.n_background} points, {records.background}" if records is not None else None, "no records step")
    add(D, "Biodiversity data", "Errors and biases",
        (f"observer effort: {list(train.bias_covariates)} from {getattr(train, 'bias_cube', None)}"
         if train is not None and getattr(train, "bias_covariates", None) else None), "no bias correction configured")
    add(D, "Data partitioning", "Training / validation data",
        f"{records.n_folds} spatial block folds ({records.block_size:g} m blocks, buffer {records.buffer:g} m)"
        if records is not None else None, "no records step")
    test = []
    if ev_map:
        test.append(f"the written map at {ev_map.get('n_sites')} independent survey sites (evaluate_map)")
    if "truth_calibrated_roc_auc" in ev or "truth_raw_roc_auc" in ev:
        test.append("the known true probabilities (demo truth; scoring only)")
    add(D, "Data partitioning", "Test data", "; ".join(test) or None, "no independent test data configured")
    add(D, "Predictor variables", "Predictor variables", _short(covariates, 40) if covariates else None, "no model")
    add(D, "Predictor variables", "Data sources",
        _short([getattr(s, "source", str(s)) for s in cube.sources]) if cube is not None else None, "no cube step")
    add(D, "Predictor variables", "Spatial extent", extent, "no cube grid")
    add(D, "Predictor variables", "Spatial resolution", resolution, "no cube grid")
    add(D, "Predictor variables", "Coordinate reference system", str(grid.crs) if grid is not None else None,
        "no cube grid")
    add(D, "Predictor variables", "Temporal extent", str(period) if period else None, "no cube datetime")
    processing = []
    for s in getattr(cube, "sources", ()) or ():
        bits = [f"{k} {v}" for k, v in (("working_resolution", getattr(s, "working_resolution", None)),
                                        ("indices", getattr(s, "indices", None)),
                                        ("terrain", getattr(s, "terrain", None))) if v]
        processing.append(f"{getattr(s, 'source', s)}: {', '.join(map(str, bits)) or 'as served'}")
    add(D, "Predictor variables", "Data processing", "; ".join(processing) or None, "no cube step")
    add(D, "Predictor variables", "Dimension reduction",
        (f"kept {len(selection.get('selected', []))} covariates with |r| < {selection.get('threshold')} "
         f"({selection.get('method')}); dropped {len(selection.get('dropped', {}))}") if selection else None,
        "no collinearity filter")
    transfer = predict is not None and train is not None and predict.cube != getattr(train, "cube", None)
    add(D, "Transfer data", "Transfer data",
        f"predicted on {predict.cube}" if transfer else ("none: predicted on the training cube" if predict else None),
        "no predict step")
    add(D, "Transfer data", "Quantification of novelty",
        (f"MESS: fraction of the map outside the training range "
         f"{_fmt(ex.get('map fraction outside the training range (MESS < 0)'))}")
        if ex.get("map fraction outside the training range (MESS < 0)") is not None else None, "no MESS (explain step)")
    # ---------------------------------------------------------------------------------------------- Model
    M = "Model"
    add(M, "Variable pre-selection", "Variable pre-selection",
        (f"preferred {list(train.prefer_covariates)}" if train is not None and getattr(train, "prefer_covariates", None)
         else None), "no preferred covariates configured")
    add(M, "Multicollinearity", "Multicollinearity",
        f"|r| >= {selection.get('threshold')} dropped ({selection.get('method')} on {selection.get('n_rows')} rows)"
        if selection else None, "no collinearity filter")
    settings = dict(getattr(train, "model", {}) or {}) if train is not None else {}
    add(M, "Model settings", "Settings", ", ".join(f"{k}={v}" for k, v in settings.items()) or None, "no train step")
    add(M, "Model estimates", "Variable importance", ex.get("most frequent top variable"),
        "no permutation importance (explain step)")
    members = params.get("n_members")
    add(M, "Model selection / ensembles", "Ensembles",
        f"{members} member{'s' if members != 1 else ''}" if members else None, "no model")
    add(M, "Non-independence", "Spatial autocorrelation",
        f"spatial block cross-validation ({records.block_size:g} m blocks)" if records is not None else None,
        "no records step")
    add(M, "Threshold selection", "Threshold selection", threshold,
        "no binary maps (set the report step's `binary:`)")
    # ----------------------------------------------------------------------------------------- Assessment
    A = "Assessment"
    if ev:
        held = ", ".join(f"{m} {ev[k]:.3f}" for m, k in (
            ("ROC AUC", "held_out_calibrated_roc_auc"), ("TSS max", "held_out_calibrated_tss_max"),
            ("Brier", "held_out_calibrated_brier"), ("ECE", "held_out_calibrated_ece"),
            ("Boyce", "boyce_macro")) if isinstance(ev.get(k), (int, float)))
        held = held or ", ".join(f"{k} {_fmt(v)}" for k, v in ev.items() if k.startswith("held_out_raw"))
    add(A, "Performance statistics", "Validation data (held-out folds)",
        f"{ev.get('held_out_folds')} folds, calibrated ({ev.get('calibration')}): {held}" if ev else None,
        "no evaluate step")
    tests = []
    if ev_map:
        tests.append(f"map at survey sites: ROC AUC {_fmt(ev_map.get('roc_auc_macro'))}, "
                     f"TSS {_fmt(ev_map.get('tss_max_macro'))}, Brier {_fmt(ev_map.get('brier_macro'))}")
    if "truth_calibrated_mae" in ev:
        tests.append(f"against the truth: MAE {ev['truth_calibrated_mae']:.3f}, ECE {ev['truth_calibrated_ece']:.3f}, "
                     f"ROC AUC {ev['truth_calibrated_roc_auc']:.3f}")
    add(A, "Performance statistics", "Test data", "; ".join(tests) or None, "no independent test data")
    add(A, "Plausibility check", "Response shapes",
        "partial dependence and ICE curves in the report (explain step)" if explain is not None and
        getattr(explain, "response", False) else None, "no response curves (explain step)")
    add(A, "Plausibility check", "Expert judgement", None, "record the experts' review")
    # ----------------------------------------------------------------------------------------- Prediction
    P = "Prediction"
    area = getattr(predict, "area", None) if predict is not None else None
    add(P, "Prediction output", "Prediction unit",
        (pred_attrs.get("long_name") or f"presence probability over {area or 'the model unit'} m²")
        if predict is not None else None, "no predict step")
    post = []
    if evaluate is not None and getattr(evaluate, "calibration", None):
        post.append(f"{evaluate.calibration} calibration on held-out surveys")
    if predict is not None:
        post.append(f"stored as {predict.dtype}" + (f" ({pred_attrs['geosdm:packed']})" if "geosdm:packed" in pred_attrs else ""))
    if threshold:
        post.append(f"binary maps: {threshold}")
    add(P, "Prediction output", "Post-processing", "; ".join(post) or None, "no predict step")
    add(P, "Uncertainty quantification", "Algorithmic / data uncertainty",
        ("90 % intervals of the true probability (uncertainty.zarr)" if getattr(predict, "uncertainty", False) else None),
        "no uncertainty layers (predict step's `uncertainty:`)")
    add(P, "Uncertainty quantification", "Novel environments",
        "MESS map (explain step)" if explain is not None and getattr(explain, "mess", False) else None,
        "no MESS (explain step)")
    if inter is not None:
        add(P, "Prediction output", "Interaction maps",
            f"P(any natural enemy), P(any pest) and joint layers from the co-occurrence model ({inter.output})")
    return pd.DataFrame(rows, columns=_COLUMNS)


def write_odmap(table: pd.DataFrame, path: str | PathLike[str]) -> Path:
    """Write the ODMAP table as CSV (UTF-8, one row per element)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return out
