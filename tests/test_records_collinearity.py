"""Collinearity filter: greedy by preference, reasons for every drop, bad input named; train config and CLI use it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geosdm.errors import InputError, MissingVariableError
from geosdm.records import select_covariates


def _frame(n: int = 2_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = rng.normal(size=n)
    rain = rng.normal(size=n)
    return pd.DataFrame({
        "s2_b4": -0.95 * t + 0.1 * rng.normal(size=n),  # a spectral proxy of temperature (r ~ -0.99)
        "tmean": t,
        "tmax": t + 0.2 * rng.normal(size=n),           # temperature's twin
        "rain": rain,
        "rain_cv": 0.5 * rain + rng.normal(size=n),     # r ~ 0.45 with rain: kept
        "constant": np.full(n, 3.0),
        "label": ["a"] * n,                              # not numeric: never a candidate
    })


def test_greedy_keeps_preferred_and_names_what_each_drop_follows() -> None:
    X = _frame()
    sel = select_covariates(X, threshold=0.7)  # column order: the spectral proxy comes first
    assert sel.selected == ("s2_b4", "rain", "rain_cv")
    assert sel.dropped["tmean"][0] == "s2_b4" and sel.dropped["tmean"][1] < -0.9  # signed r of the pair
    assert sel.dropped["constant"][0] == "" and np.isnan(sel.dropped["constant"][1])
    pref = select_covariates(X, threshold=0.7, prefer=["t*", "rain"])  # the modeller prefers the climate
    assert pref.selected == ("tmean", "rain", "rain_cv")
    assert pref.dropped["tmax"][0] == "tmean" and pref.dropped["s2_b4"][0] == "tmean"
    assert all(abs(r) >= 0.7 for k, r in pref.dropped.values() if k)
    kept = X[list(pref.selected)].corr().abs().to_numpy()
    assert (kept[~np.eye(len(kept), dtype=bool)] < 0.7).all()
    assert "dropped tmax ~ tmean" in pref.summary()
    assert json.loads(json.dumps(pref.to_dict()))["dropped"]["constant"] == {"follows": None, "r": None}
    # a looser threshold keeps the twins apart from the near-copy; spearman works on ranks
    assert "tmax" in select_covariates(X, threshold=0.999, prefer=["t*"]).selected
    assert select_covariates(X, ["tmean", "tmax"], method="spearman").selected == ("tmean",)
    # rows are subsampled (seeded) for large inputs: the same answer
    assert select_covariates(X, threshold=0.7, max_rows=500, prefer=["t*", "rain"]).selected == pref.selected


def test_bad_input_is_named() -> None:
    X = _frame(50)
    with pytest.raises(InputError, match="threshold"):
        select_covariates(X, threshold=1.5)
    with pytest.raises(MissingVariableError, match="nope"):
        select_covariates(X, ["tmean", "nope"])
    with pytest.raises(InputError, match="method"):
        select_covariates(X, ["tmean", "rain"], method="kendall")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="constant or missing"):
        select_covariates(X, ["constant"])
    X.loc[:, "rain"] = np.nan
    assert select_covariates(X, ["tmean", "rain"]).dropped["rain"][0] == ""  # all-missing: dropped, reported


def test_train_config_filters_and_saves_the_selection(tmp_path: Path) -> None:
    from geosdm.models import TrainConfig, load_model, train_from_config
    from tests.test_models_estimator import FAST, make_world

    table = make_world(n_po=60, n_bg=300, n_plots=40)["table"]
    table["temp_twin"] = table["temp"] * 2.0 + 1.0
    path = tmp_path / "t.parquet"
    table.to_parquet(path)
    with pytest.raises(ValueError, match="max_correlation"):
        TrainConfig(table=str(path), output="m", max_correlation=0.0)
    cfg = TrainConfig(table=str(path), output=str(tmp_path / "m"), bias_covariates=("obs_bias",),
                      max_correlation=0.7, prefer_covariates=("temp_twin",),
                      model={**FAST, "epochs": 2, "seed": 0, "loss": "integrated"})
    model = train_from_config(cfg)
    assert model.feature_names_ == ["temp_twin", "rain"]  # obs_bias is a bias covariate, never a candidate
    sel = json.loads((tmp_path / "m" / "covariate_selection.json").read_text())
    assert sel["dropped"]["temp"]["follows"] == "temp_twin" and sel["threshold"] == 0.7
    assert load_model(tmp_path / "m").feature_names_ == ["temp_twin", "rain"]
    from geosdm.records import CovariateSelection

    saved = CovariateSelection.load(tmp_path / "m")
    assert saved is not None and saved.selected == ("temp_twin", "rain") and saved.dropped["temp"][0] == "temp_twin"
    assert CovariateSelection.load(tmp_path) is None
    with pytest.raises(InputError, match="set max_correlation"):
        train_from_config(TrainConfig(table=str(path), output=str(tmp_path / "n"), prefer_covariates=("temp",),
                                      model={**FAST, "epochs": 1}))


def test_cli_previews_the_filter_on_a_training_table(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from geosdm.cli import app as geosdm_app
    from geosdm.cli._records import app
    from geosdm.records import CovariateSelection

    table = pd.concat([_frame(300).assign(kind="background"), _frame(50, seed=1).assign(kind="presence_only")])
    table["fold"], table["bias"] = 0, 1.0
    # gridding and Darwin Core columns are numeric but never covariates (row/col once passed for them)
    table["row"], table["col"], table["visit"], table["coordinateUncertaintyInMeters"] = 1, 2, 1, 30.0
    path = tmp_path / "t.parquet"
    table.to_parquet(path)
    runner = CliRunner()
    res = runner.invoke(app, ["collinearity", str(path), "--prefer", "t*,rain", "--exclude", "bias",
                              "-o", str(tmp_path / "sel")])
    assert res.exit_code == 0, res.output
    assert "kept: tmean, rain, rain_cv" in res.output and "tmax ~ tmean" in res.output
    saved = CovariateSelection.load(tmp_path / "sel")
    assert saved is not None and saved.selected == ("tmean", "rain", "rain_cv")
    res = runner.invoke(geosdm_app, ["records", "collinearity", str(path), "--variables", "tmean,nope"])
    assert res.exit_code == 1 and "nope" in res.output
    res = runner.invoke(geosdm_app, ["records", "collinearity", str(tmp_path / "missing.parquet")])
    assert res.exit_code == 1 and "error: DataSourceError: cannot read training table" in res.output
    assert "missing.parquet" in res.output and "Traceback" not in res.output
