"""Damaged or edited model folders: an error naming the folder and the fix, not a JSON or torch traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geosdm.errors import DataSourceError
from geosdm.models import MultiSpeciesSDM


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 3)).astype("float32"), columns=["a", "b", "c"])
    Y = pd.DataFrame(rng.poisson(0.3, size=(200, 2)), columns=["s1", "s2"])
    path = tmp_path_factory.mktemp("model") / "m"
    MultiSpeciesSDM(loss="poisson", epochs=1, hidden=8, val_size=0, seed=0).fit(X, Y).save(path)
    return path


def _copy(saved: Path, tmp_path: Path) -> Path:
    out = tmp_path / "m"
    shutil.copytree(saved, out)
    return out


@pytest.mark.parametrize(("name", "match"), [("config.json", r"config\.json is not valid JSON .*save the model again"),
                                             ("model.safetensors", r"model\.safetensors cannot be read .*truncated or edited")])
def test_truncated_file(saved: Path, tmp_path: Path, name: str, match: str) -> None:
    m = _copy(saved, tmp_path)
    raw = (m / name).read_bytes()
    (m / name).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataSourceError, match=match):
        MultiSpeciesSDM.load(m)


def test_missing_weights_file_or_edited_config(saved: Path, tmp_path: Path) -> None:
    m = _copy(saved, tmp_path)
    (m / "model.safetensors").unlink()
    with pytest.raises(DataSourceError, match="is not a geosdm model checkpoint"):
        MultiSpeciesSDM.load(m)
    m2 = _copy(saved, tmp_path / "b")
    cfg = json.loads((m2 / "config.json").read_text())
    cfg["network"]["hidden"] = 16  # a hand edit: the weights no longer fit the network it describes
    (m2 / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DataSourceError, match="weights and configuration do not fit together"):
        MultiSpeciesSDM.load(m2)
