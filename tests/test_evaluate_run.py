"""The evaluation step end to end on the small demo: held-out folds, metrics, calibration, truth, report, CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from geosdm.demo import DemoLayout
from geosdm.errors import InputError
from geosdm.evaluate import (
    EvaluateConfig,
    evaluate_held_out,
    metric_table_figure,
    reliability_curve,
    reliability_diagram,
    run_evaluation,
    save_figures,
    species_metric_plot,
)

COVARIATES = ["elevation", "bio01", "bio12", "lc_3", "s2_ndvi_jja"]


@pytest.fixture(scope="module")
def inputs(demo_small: DemoLayout, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A training table and a 2-member model (with an observer-bias covariate read from the truth) on disk."""
    from geosdm.models import MultiSpeciesSDM
    from geosdm.records import extract_covariates, read_records, training_table

    root = tmp_path_factory.mktemp("evaluate")
    recs = pd.concat([read_records(demo_small.presence_only_csv), read_records(demo_small.surveys_parquet)],
                     ignore_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = training_table(recs, str(demo_small.truth_zarr), n_background=300, block_size=1_500, seed=1,
                               variables=COVARIATES, max_missing=0.5).table
    table.to_parquet(root / "training.parquet")  # without the bias column, as the records step writes it
    fit_table = extract_covariates(str(demo_small.truth_zarr), table, variables=["bias"])
    fit_table["bias"] = np.log(np.maximum(fit_table["bias"], 1e-12))
    model = MultiSpeciesSDM(loss="integrated", epochs=2, hidden=16, val_size=0, n_members=2, seed=0,
                            bias_covariates=["bias"]).fit(fit_table)
    model.save(root / "model")
    return {"root": str(root), "table": str(root / "training.parquet"), "model": str(root / "model"),
            "truth": str(demo_small.truth_zarr)}


def test_run_evaluation_writes_report_and_calibrated_model(inputs: dict[str, str]) -> None:
    from geosdm.models import load_model

    out = Path(inputs["root"]) / "out"
    cfg = EvaluateConfig(model=inputs["model"], table=inputs["table"], output=str(out), cube=inputs["truth"],
                         bias_cube=inputs["truth"], log_bias=True, calibration="platt",
                         calibrated_model=str(Path(inputs["root"]) / "model-calibrated"), truth=inputs["truth"],
                         top_k=(1, 5))
    report = run_evaluation(cfg)
    s = report.summary()
    assert all(isinstance(v, (int, float, str)) or v is None for v in s.values())  # flat JSON scalars
    assert 0 <= s["held_out_calibrated_ece"] <= 1 and 0 <= s["held_out_raw_roc_auc"] <= 1
    assert {"f1_top1_raw", "f1_top5_raw", "f1_top1_calibrated", "f1_top5_calibrated", "boyce_macro"} <= set(s)
    assert {"truth_raw_ece", "truth_calibrated_ece", "truth_calibrated_mae"} <= set(s)
    assert 0 <= s["truth_calibrated_coverage_90"] <= 1  # 2 members: an interval exists
    assert any(line.startswith("against the truth, calibrated") for line in report.lines())
    assert report.truth["raw"].extra["area_m2"] == pytest.approx(60.0**2)  # the grid's cell area
    for name in ("summary", "index", "species_metrics", "top_k", "boyce", "calibration", "truth",
                 "reliability_surveys", "reliability_truth", "roc_auc"):
        assert Path(report.files[name]).is_file(), name
    assert json.loads(Path(report.files["summary"]).read_text())["calibration"] == "platt"
    table = pd.read_csv(report.files["species_metrics"])
    assert set(table["probability"]) == {"raw", "calibrated"} and {"all", "0"} <= set(table["fold"].astype(str))
    cal = load_model(cfg.calibrated_model)
    assert cal.calibrator_.method == "platt" and cal.calibrator_.to_dict() == report.calibrator.to_dict()


def test_config_rejects_unknown_keys_and_missing_inputs(inputs: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extra"):
        EvaluateConfig(model="m", table="t", output="o", bogus=1)  # type: ignore[call-arg]
    cfg = EvaluateConfig(model=inputs["model"], table=str(tmp_path / "none.parquet"), output=str(tmp_path))
    with pytest.raises(InputError, match="records step"):
        run_evaluation(cfg)
    cfg = EvaluateConfig(model=inputs["model"], table=inputs["table"], output=str(tmp_path))
    with pytest.raises(InputError, match="bias_cube"):
        run_evaluation(cfg)  # the model's bias covariate is not in the table and no cube says where it is
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"evaluate:\n  model: {inputs['model']}\n  table: {inputs['table']}\n"
                    "  output: ${EVAL_TEST_OUT:-somewhere}/evaluation\n  calibration: temperature\n")
    cfg = EvaluateConfig.from_yaml(path)
    assert cfg.calibration == "temperature" and cfg.output == "somewhere/evaluation"
    path.write_text("evaluate:\n  model: m\n  table: t\n  output: o\n  calibration: beta\n")
    with pytest.raises(InputError, match="calibration"):
        EvaluateConfig.from_yaml(path)


def test_cli_evaluate_run(inputs: dict[str, str], tmp_path: Path) -> None:
    from geosdm.cli import app

    res = CliRunner().invoke(app, ["evaluate", "run", inputs["model"], inputs["table"], str(tmp_path / "ev"),
                                   "--bias-cube", inputs["truth"], "--log-bias", "--calibration", "isotonic",
                                   "--prefit"])
    assert res.exit_code == 0, res.output
    assert "held-out surveys" in res.output and "calibrated" in res.output
    assert (tmp_path / "ev" / "index.html").is_file()
    bad = CliRunner().invoke(app, ["evaluate", "run", inputs["model"], str(tmp_path / "nope.parquet"),
                                   str(tmp_path / "x")])
    assert bad.exit_code == 1 and "records step" in bad.output


def test_plots_return_figures_and_save(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    rng = np.random.default_rng(0)
    p = rng.uniform(size=500)
    y = (rng.uniform(size=500) < p**1.5).astype(float)
    fig = reliability_diagram({"raw": reliability_curve(y, p), "squared": reliability_curve(y, p**1.5)})
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    t = pd.DataFrame({"fold": "all", "species": ["a", "b", "macro"], "roc_auc": [0.7, 0.8, 0.75],
                      "probability": "raw"})
    assert isinstance(species_metric_plot(t, "roc_auc"), Figure)
    assert isinstance(metric_table_figure(t.set_index("species")[["roc_auc"]]), Figure)
    files = save_figures(tmp_path, {"reliability": fig}, {"metrics": t}, title="test")
    assert files["reliability"].stat().st_size > 1000 and "metrics" in files["index"].read_text()
    with pytest.raises(InputError, match="column"):
        species_metric_plot(t, "nope")


def test_evaluate_held_out_without_calibration(inputs: dict[str, str]) -> None:
    from geosdm.models import load_model
    from geosdm.models.calibration import held_out_predictions
    from geosdm.records import extract_covariates

    model = load_model(inputs["model"])
    table = extract_covariates(inputs["truth"], pd.read_parquet(inputs["table"]), variables=["bias"])
    table["bias"] = np.log(np.maximum(table["bias"], 1e-12))
    ev = evaluate_held_out(held_out_predictions(model, table, cv="prefit"), calibration=None, top_k=(3,))
    assert set(ev.species["probability"]) == {"raw"} and list(ev.reliability) == ["raw"]
    assert ev.headline()["raw"]["roc_auc"] is not None
