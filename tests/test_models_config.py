"""TrainConfig validation, train_from_config on records + a cube, and the `geosdm train` CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
import yaml
from typer.testing import CliRunner

from geosdm.errors import InputError
from geosdm.models import TrainConfig, load_model, train_from_config
from tests.test_models_estimator import FAST, make_world

MODEL = {**FAST, "epochs": 3, "seed": 0}


def test_config_rejects_unknown_keys_and_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extra"):
        TrainConfig(table="t.parquet", output="m", learning_rate=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="unknown model parameter"):
        TrainConfig(table="t.parquet", output="m", model={"hiden": 3})
    with pytest.raises(ValueError, match="exactly one of"):
        TrainConfig(output="m")
    with pytest.raises(ValueError, match="need a `cube`"):
        TrainConfig(records=("a.csv",), output="m")
    cfg = TrainConfig(table="t.parquet", output="m", model={"epochs": 2})
    with pytest.raises(ValueError):
        cfg.output = "other"  # type: ignore[misc]  # frozen
    from dask.base import tokenize

    same = TrainConfig(table="t.parquet", output="m", model={"epochs": 2})
    assert hash(cfg) == hash(same) and tokenize(cfg) == tokenize(same)
    assert tokenize(cfg) != tokenize(TrainConfig(table="t.parquet", output="m", model={"epochs": 3}))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"table": "t.parquet"}}))
    with pytest.raises(InputError, match="invalid train configuration"):
        TrainConfig.from_yaml(bad)


@pytest.fixture(scope="module")
def table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("train") / "training.parquet"
    make_world(n_po=80, n_bg=400, n_plots=60)["table"].to_parquet(path)
    return path


def test_train_from_config_table_with_integrated_loss(table_path: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(table=str(table_path), output=str(tmp_path / "model"), bias_covariates=("obs_bias",),
                      model={**MODEL, "loss": "integrated", "covariates": ["temp", "rain"]})
    model = train_from_config(cfg)
    assert model.reference_dataset_ == "survey" and model.bias_encoder_ is not None
    loaded = load_model(tmp_path / "model")
    assert loaded.species_ == model.species_ and loaded.get_params()["loss"] == "integrated"


def test_train_from_config_records_and_cube(records_cube, records_table: pd.DataFrame, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rec = tmp_path / "records.parquet"
    records_table.to_parquet(rec)
    cfg = TrainConfig(records=(str(rec),), cube=str(records_cube.path), output=str(tmp_path / "m"), n_background=300,
                      block_size=1000, model={**MODEL, "loss": "integrated", "covariates": ["elevation", "bio01", "lc_1"]})
    model = train_from_config(cfg)
    assert model.species_ == ["Salix alba", "Salix caprea"]
    assert {d["family"] for d in model.datasets_} == {"po", "pa", "background"}
    assert model.n_sites_ > 300
    f = model.predict(records_cube.open()[["elevation", "bio01", "lc_1"]].load())
    assert f.shape == (2, 60, 80) and np.isnan(f.values[:, 58, 78]).all()  # NaN elevation corner


def _cli() -> typer.Typer:
    from geosdm.cli import app

    return app


def test_cli_train_and_info(table_path: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump({"name": "x", "train": {"table": str(table_path), "output": str(tmp_path / "m1"),
                                                          "model": {**MODEL, "loss": "integrated",
                                                                    "covariates": ["temp", "rain"]}}}))
    runner = CliRunner()
    res = runner.invoke(_cli(), ["train", "-c", str(cfg), "--epochs", "2", "--output", str(tmp_path / "m2")])
    assert res.exit_code == 0, res.output
    assert "3 species" in res.output and "best epoch" in res.output
    assert load_model(tmp_path / "m2").training_.epochs_run <= 2
    res = runner.invoke(_cli(), ["train", "fit", str(cfg)])
    assert res.exit_code == 0 and (tmp_path / "m1" / "model.safetensors").is_file()
    res = runner.invoke(_cli(), ["train", "info", str(tmp_path / "m1")])
    assert res.exit_code == 0 and "covariates ['temp', 'rain']" in res.output
    res = runner.invoke(_cli(), ["train", "-c", str(cfg), "--epochs", "1", "--output", str(tmp_path / "m3"),
                                 "--max-correlation", "0.7"])
    assert res.exit_code == 0 and "collinearity filter: kept 2 of 2 covariates" in res.output, res.output
    res = runner.invoke(_cli(), ["train", "info", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "not a geosdm model checkpoint" in res.output and "Traceback" not in res.output
