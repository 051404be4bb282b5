"""A written probability map scored at presence/absence sites: values read off the map, each species where it
was surveyed, sites outside the grid or on nodata counted."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from geosdm.errors import InputError
from geosdm.evaluate import MapEvaluateConfig, evaluate_map_at_sites, roc_auc, run_map_evaluation
from geosdm.io import write_layers
from geosdm.records import RecordsInput, records_from_frame

GRID = GeoBox.from_bbox((500_000, 6_500_000, 504_800, 6_503_200), "EPSG:2154", resolution=100)  # 32 x 48


def _map(path: Path) -> np.ndarray:
    ny, nx = GRID.shape
    p = np.random.default_rng(0).uniform(size=(2, ny, nx)).astype(np.float32)
    p[:, :4, :4] = np.nan  # nodata
    ds = xr.Dataset(coords={**xr_coords(GRID, crs_coord_name="spatial_ref"), "species": ["sp_a", "sp_b"]})
    ds["probability"] = (("species", "y", "x"), da.from_array(p, chunks=(2, 16, 16)))
    write_layers(ds, path, dtypes={"probability": "uint8"}, identity={"test": 1})
    return np.round(p * 250) / 250  # the stored (uint8) values


def _sites(n: int = 200) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    rows, cols = rng.integers(4, 32, n), rng.integers(0, 48, n)
    rows[:3], cols[:3] = 1, 1  # on nodata
    frame = pd.DataFrame({"siteid": [f"s{i}" for i in range(n)], "x": 500_000 + 100 * cols + 50.0,
                          "y": 6_503_200 - 100 * rows - 50.0, "sp_a": rng.integers(0, 2, n).astype(float),
                          "sp_b": rng.integers(0, 2, n).astype(float), "sp_c": 1.0})
    frame.loc[n // 2:, "sp_b"] = np.nan  # sp_b surveyed at half the sites only
    frame.loc[n - 1, ["x", "y"]] = (400_000.0, 6_400_000.0)  # outside the grid
    return frame, rows, cols


def test_map_at_sites(tmp_path: Path) -> None:
    stored = _map(tmp_path / "probability.zarr")
    frame, rows, cols = _sites()
    frame.to_parquet(tmp_path / "sites.parquet")
    sites = RecordsInput(path=str(tmp_path / "sites.parquet"), crs="EPSG:2154", species_columns=("sp_*",)).read()
    ev = evaluate_map_at_sites(tmp_path / "probability.zarr", sites)
    assert (ev.n_outside, ev.n_no_prediction, ev.unmapped_species) == (1, 3, ["sp_c"])
    inside = np.arange(len(frame)) < len(frame) - 1
    np.testing.assert_allclose(ev.predicted["sp_a"].to_numpy()[inside], stored[0, rows, cols][inside], atol=1e-6)
    ok = inside & np.isfinite(stored[0, rows, cols])
    row = ev.metrics.set_index("species").loc["sp_a"]
    assert row["n"] == ok.sum()
    assert row["roc_auc"] == pytest.approx(roc_auc(frame["sp_a"][ok], stored[0, rows, cols][ok]))
    assert ev.metrics.set_index("species").loc["sp_b", "n"] == (ok & frame["sp_b"].notna()).sum()
    cfg = MapEvaluateConfig(predictions=str(tmp_path / "probability.zarr"), output=str(tmp_path / "ev"),
                            sites=(RecordsInput(path=str(tmp_path / "sites.parquet"), crs="EPSG:2154",
                                                species_columns=("sp_*",)),))
    run_map_evaluation(cfg)
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["n_species"] == 2 and summary["n_sites_no_prediction"] == 3
    assert (tmp_path / "ev" / "species_metrics.csv").is_file() and (tmp_path / "ev" / "roc_auc.png").is_file()


def test_map_at_sites_errors(tmp_path: Path) -> None:
    _map(tmp_path / "probability.zarr")
    po = records_from_frame(pd.DataFrame({"species": ["sp_a"], "x": [500_050.0], "y": [6_503_150.0]}), crs=2154)
    with pytest.raises(InputError, match="no presence_absence records"):
        evaluate_map_at_sites(tmp_path / "probability.zarr", po)
    pa = po.assign(kind=pd.Categorical(["presence_absence"], categories=po["kind"].cat.categories), species="zz")
    with pytest.raises(InputError, match="no surveyed species is in the map"):
        evaluate_map_at_sites(tmp_path / "probability.zarr", pa)
    with pytest.raises(InputError, match="run the predict step first"):
        run_map_evaluation(MapEvaluateConfig(predictions=str(tmp_path / "none.zarr"), sites=(), output=str(tmp_path)))
