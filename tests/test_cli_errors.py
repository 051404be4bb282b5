"""One error path for the CLI (issue 21): every command group ends a geosdm error with ``error: <Type>: <message>``
and exit code 1, never a traceback (``-v`` prints it, for bug reports); and every configuration loader
substitutes ``${VAR}`` / ``${VAR:-default}`` the same way (geosdm._yaml.substitute_env)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from geosdm.cli import app
from geosdm.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "pipelines" / "demo.yaml"
runner = CliRunner()


def _fails(args: list[str], kind: str, *needles: str, env: dict[str, str] | None = None) -> str:
    res = runner.invoke(app, args, env=env)
    assert res.exit_code == 1, res.output
    assert f"error: {kind}: " in res.output, res.output
    for n in needles:
        assert n in res.output, res.output
    assert "Traceback" not in res.output, res.output
    return res.output


# ----------------------------------------------------------------------------------------- one error path


def test_records_errors_end_with_their_message(tmp_path: Path) -> None:
    csv = tmp_path / "r.csv"
    csv.write_text("species,x,y\na,1,2\n")
    _fails(["records", "validate", str(csv), "--bbox", "France"], "InputError", "--bbox 'France' is not W,S,E,N")
    _fails(["records", "validate", str(tmp_path / "none.csv")], "DataSourceError", "none.csv")
    _fails(["records", "grid", str(csv), "--crs", "EPSG:2154", "--cube", str(tmp_path / "none.zarr"), "-o", str(tmp_path / "g.parquet")],
           "DataSourceError", "none.zarr", "geosdm cube build")  # was xarray's FileNotFoundError traceback
    bad = tmp_path / "bad.parquet"
    bad.write_text("not a table")
    _fails(["records", "collinearity", str(bad)], "DataSourceError", "cannot read training table", "bad.parquet")


def test_records_background_names_a_missing_bias_layer(records_cube, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _fails(["records", "background", "--cube", str(records_cube.path), "-n", "10", "--method", "bias",
            "--bias", "effort", "-o", str(tmp_path / "bg.parquet")],
           "MissingVariableError", "--bias 'effort' is not a variable of cube", "elevation")  # was a KeyError


def test_train_errors(tmp_path: Path) -> None:
    _fails(["train", "-c", str(tmp_path / "none.yaml")], "InputError", "none.yaml", "does not exist")
    cfg = tmp_path / "train.yaml"
    cfg.write_text("train:\n  table: t.parquet\n  output: m\n  epochs: 3\n")  # epochs belongs in `model:`
    _fails(["train", "fit", str(cfg)], "InputError", "invalid train configuration", "epochs")
    _fails(["train", "info", str(tmp_path)], "DataSourceError", "not a geosdm model checkpoint")


def test_evaluate_errors(tmp_path: Path) -> None:
    # a bad option value was pydantic's ValidationError (caught as ValueError by the command itself)
    _fails(["evaluate", "run", "m", "t", "o", "--calibration", "beta"], "InputError",
           "invalid evaluate options", "`calibration`", "'beta'")
    _fails(["evaluate", "run", str(tmp_path / "none"), str(tmp_path / "none.parquet"), str(tmp_path / "ev")],
           "DataSourceError", "none", "not a geosdm model checkpoint")


def test_cube_build_errors(tmp_path: Path) -> None:
    _fails(["cube", "build", str(tmp_path / "none.yaml")], "InputError", "none.yaml", "does not exist")
    cfg = tmp_path / "cube.yaml"
    cfg.write_text("cube:\n  grid: {crs: 'EPSG:2154', resolution: 100, bbox: [0, 0, 1000, 1000]}\n"
                   "  sources: [{source: demo-bioclim}]\n  output: {path: '${GEOSDM_TEST_UNSET_DIR}/cube.zarr'}\n")
    _fails(["cube", "build", str(cfg)], "InputError", "cube.yaml", "`cube.output.path`", "'GEOSDM_TEST_UNSET_DIR'",
           "not set")


def test_predict_errors(tmp_path: Path) -> None:
    _fails(["predict", "run", "m", "c", str(tmp_path / "p"), "--area", "-1"], "InputError",
           "invalid predict options", "`area`", "greater than 0")  # was a ValidationError traceback
    _fails(["predict", "run", str(tmp_path / "none"), str(tmp_path / "none.zarr"), str(tmp_path / "p"),
            "--no-progress"], "DataSourceError", "none")


def test_run_and_serve_errors(tmp_path: Path) -> None:
    _fails(["run", str(tmp_path / "none.yaml")], "InputError", "none.yaml", "not found")
    _fails(["serve", str(tmp_path / "none"), "--no-upload"], "DataSourceError", "does not exist")


def test_verbose_prints_the_traceback_too(tmp_path: Path) -> None:
    res = runner.invoke(app, ["-v", "records", "validate", str(tmp_path / "r.csv"), "--bbox", "France"])
    assert res.exit_code == 1
    assert "Traceback (most recent call last)" in res.output and "geosdm/cli/_records.py" in res.output
    assert res.output.rstrip().splitlines()[-1].startswith("error: InputError: --bbox 'France'")


def test_the_installed_command_prints_no_traceback(tmp_path: Path) -> None:
    """The real entry point (stderr, exit status) as users see it."""
    cmd = [sys.executable, "-c", "from geosdm.cli import app; app()"]
    proc = subprocess.run([*cmd, "train", "-c", str(tmp_path / "none.yaml")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: InputError: train configuration") and not proc.stdout
    proc = subprocess.run([*cmd, "-v", "train", "-c", str(tmp_path / "none.yaml")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "error: InputError:" in proc.stderr


def test_no_command_catches_geosdm_errors_itself() -> None:
    """The group is the one place: no command module keeps its own handler or error format."""
    for f in set((ROOT / "geosdm" / "cli").glob("*.py")) - {ROOT / "geosdm" / "cli" / "__init__.py"}:
        text = f.read_text()
        assert "except GeoSDMError" not in text and "def _fail" not in text, f
        assert 'secho(f"error:' not in text, f


# ------------------------------------------------------------------------------------ ${VAR} everywhere

SECTIONS = {"cube": ("geosdm.cube", "CubeConfig"), "train": ("geosdm.models", "TrainConfig"),
            "evaluate": ("geosdm.evaluate", "EvaluateConfig"), "predict": ("geosdm.predict", "PredictConfig"),
            "explain": ("geosdm.explain", "ExplainConfig"), "interactions": ("geosdm.interactions",
                                                                           "InteractionsConfig")}


def _config_class(section: str) -> type:
    import importlib

    module, name = SECTIONS[section]
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_step_loader_substitutes_the_demo_pipeline(section: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """``geosdm cube build pipelines/demo.yaml`` / ``geosdm train -c pipelines/demo.yaml`` ... read the same paths as
    ``geosdm run demo``: ${GEOSDM_DEMO_DIR:-demo-output} set, then unset (the default)."""
    cls = _config_class(section)
    monkeypatch.setenv("GEOSDM_DEMO_DIR", str(tmp_path))
    dumped = cls.from_yaml(DEMO).model_dump_json()
    assert "${" not in dumped and json.dumps(str(tmp_path))[1:-1] in dumped
    monkeypatch.delenv("GEOSDM_DEMO_DIR")
    dumped = cls.from_yaml(DEMO).model_dump_json()
    assert "${" not in dumped and '"demo-output/' in dumped


def test_the_pipeline_loader_substitutes_every_section(tmp_path: Path) -> None:
    from geosdm.pipeline import load_pipeline

    cfg = load_pipeline(DEMO, env={"GEOSDM_DEMO_DIR": str(tmp_path)})
    dumped = cfg.model_dump_json()
    assert "${" not in dumped and "demo-output" not in dumped
    assert cfg.cube is not None and cfg.cube.output.path == f"{tmp_path}/cube.zarr"
    assert cfg.train is not None and cfg.train.output == f"{tmp_path}/model"


def test_unset_variable_names_file_key_and_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from geosdm.cube import CubeConfig
    from geosdm.models import TrainConfig
    from geosdm.pipeline import load_pipeline

    monkeypatch.delenv("GEOSDM_TEST_UNSET", raising=False)
    f = tmp_path / "p.yaml"
    text = DEMO.read_text().replace("${GEOSDM_DEMO_DIR:-demo-output}/model", "${GEOSDM_TEST_UNSET}/model")
    f.write_text(text)
    pattern = r"p\.yaml: `train\.output` refers to environment variable 'GEOSDM_TEST_UNSET', which is not set"
    with pytest.raises(InputError, match=pattern):
        TrainConfig.from_yaml(f)
    with pytest.raises(InputError, match=pattern):
        load_pipeline(f)
    assert CubeConfig.from_yaml(f).output.path == "demo-output/cube.zarr"  # another section's variable: no matter
    monkeypatch.setenv("GEOSDM_TEST_UNSET", "/data/x")
    assert TrainConfig.from_yaml(f).output == "/data/x/model"


def test_substitution_rules() -> None:
    from geosdm._yaml import substitute_env
    from geosdm.sources import substitute_env as from_sources

    assert from_sources is substitute_env  # one function
    env = {"A": "1", "EMPTY": ""}
    assert substitute_env({"k": ["${A}/${B:-two}", "${EMPTY:-x}", "${B:-}", 3, None]}, env) == {
        "k": ["1/two", "", "", 3, None]}  # a set but empty variable is its value, as in the shell's ${VAR-}
    assert substitute_env("$A ${A", env) == "$A ${A"  # only ${NAME} forms
    with pytest.raises(InputError, match=r"f\.yaml: `a\.b\[1\]` refers to environment variable 'B'.*export B="):
        substitute_env({"a": {"b": ["x", "${B}"]}}, env, origin="f.yaml")


def test_cli_commands_read_substituted_paths(tmp_path: Path) -> None:
    """Through the commands: the error names the substituted path, so the file was read with the variable."""
    demo = tmp_path / "demo"
    env = {"GEOSDM_DEMO_DIR": str(demo)}
    _fails(["train", "-c", str(DEMO)], "InputError", f"{demo}/records/training.parquet", env=env)
    _fails(["evaluate", "run", "-c", str(DEMO)], "DataSourceError", f"{demo}/model", env=env)
    _fails(["predict", "run", "-c", str(DEMO), "--no-progress"], "DataSourceError", f"{demo}/model", env=env)
    pred = tmp_path / "predict.yaml"
    pred.write_text(yaml.safe_dump({"predict": {"model": "${MY_MODELS}/m1", "cube": "${MY_DATA:-data}/cube.zarr",
                                                "output": str(tmp_path / "p")}}))
    _fails(["predict", "run", "-c", str(pred), "--no-progress"], "DataSourceError", f"{tmp_path}/models/m1",
           env={"MY_MODELS": str(tmp_path / "models"), "MY_DATA": None})
    _fails(["predict", "run", "-c", str(pred)], "InputError", "predict.yaml: `predict.model`", "'MY_MODELS'",
           env={"MY_MODELS": None})
    # a command-line argument overrides the file's value (and options given override theirs)
    _fails(["predict", "run", str(tmp_path / "other"), "-c", str(pred), "--no-progress"], "DataSourceError",
           f"{tmp_path}/other", env={"MY_MODELS": str(tmp_path / "models")})
