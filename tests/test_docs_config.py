"""docs/configuration.md is generated from the configuration schemas: it fails here when the two differ."""

from __future__ import annotations

from pathlib import Path

from geosdm.docs_config import render
from geosdm.pipeline import PipelineConfig
from geosdm.sources import SourceConfig

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_configuration_reference_is_current() -> None:
    assert PAGE.is_file(), "docs/configuration.md is missing: run `python -m geosdm.docs_config`"
    assert PAGE.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md differs from the schemas: run `python -m geosdm.docs_config` and commit it")


def test_reference_names_every_key() -> None:
    text = render()
    for key in PipelineConfig.model_fields:
        assert f"| `{key}` |" in text
    for key in SourceConfig.model_fields:
        assert f"| `{key}` |" in text
    for heading in ("### CubeConfig", "### TrainConfig", "### EvaluateConfig", "### PredictConfig",
                    "### ExplainConfig", "### InteractionsConfig", "### ScenariosConfig", "### ReportStep",
                    "### RecordsStep", "### SourceConfig", "### AssetConfig"):
        assert heading in text, heading
