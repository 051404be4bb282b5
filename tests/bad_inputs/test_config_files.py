"""Configuration files that are not valid YAML or not text: the error names the file, line and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from geosdm.cli import app
from geosdm.errors import InputError
from geosdm.pipeline import load_pipeline
from geosdm.sources import load_source


def test_malformed_pipeline_yaml_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("grid:\n  crs: EPSG:2154\n  bbox: [1, 2\nfoo: : bar\n")
    with pytest.raises(InputError, match=r"broken\.yaml' is not valid YAML at line 4, column 4"):
        load_pipeline(f)


def test_binary_or_list_files_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "latin1.yaml"
    f.write_bytes("grid: {crs: EPSG:2154}\nname: caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1\.yaml' is not UTF-8 text .*save it as UTF-8"):
        load_pipeline(f)
    src = tmp_path / "source.yaml"
    src.write_text("- a\n- b\n")
    with pytest.raises(InputError, match=r"holds a list, not a mapping"):
        load_source(str(src))


def test_cli_prints_the_message_not_a_traceback(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("steps: [a\n")
    res = CliRunner().invoke(app, ["run", str(f)])
    assert res.exit_code == 1
    assert "error: InputError:" in res.output and "broken.yaml" in res.output
    assert "Traceback" not in res.output
