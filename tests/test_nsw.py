"""The New South Wales pipelines: they validate, and on a window of the real grids the records step reads the
published NCEAS covariate values off the cube (needs ../shared/data; skipped where it is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geosdm.pipeline import load_pipeline, run_pipeline
from geosdm.records import RecordsInput

GRIDS = ("disturb", "mi", "soilfert", "solrad", "vegsys")
WINDOW = (512, 2560, 512)  # row, col, side: a window of the native grid with 221 PO records, 286 background points


@pytest.mark.parametrize("name", ["nsw", "nsw-3577"])
def test_nsw_pipelines_validate(name: str) -> None:
    cfg = load_pipeline(name, env={"GEOSDM_SHARED_DATA": "/data", "GEOSDM_NSW_DIR": "/out"})
    assert cfg.cube is not None and cfg.records is not None and cfg.train is not None
    assert cfg.predict is not None and cfg.evaluate_map is not None
    assert cfg.cube.output.path.startswith("/out/")
    assert [a for a in cfg.cube.sources[0].load().assets] == list(GRIDS)
    assert cfg.records.background == "given"
    kinds = [i.kind for i in cfg.records.inputs if isinstance(i, RecordsInput)]
    assert kinds == ["presence_only", "background"]
    assert cfg.evaluate_map.predictions == cfg.predict.zarr_path
    assert cfg.train.model["n_members"] == 5
    grid = cfg.cube.grid
    assert (grid.like or "").endswith("nsw_env_partial/mi.tif") if name == "nsw" else grid.crs == "EPSG:3577"


@pytest.fixture(scope="module")
def nsw_window(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shared-data folder of its own: a window of the five grids, the NCEAS NSW tables linked."""
    import rasterio
    from rasterio.windows import Window

    src = shared_data / "rasters" / "nsw_env_partial"
    nceas = shared_data / "nceas" / "NSW"
    if not all((src / f"{g}.tif").is_file() for g in GRIDS) or not (nceas / "train_po.parquet").is_file():
        pytest.skip(f"the NSW grids or NCEAS tables are absent from {shared_data}")
    root = tmp_path_factory.mktemp("nsw") / "data"
    (root / "rasters" / "nsw_env_partial").mkdir(parents=True)
    (root / "nceas").mkdir()
    (root / "nceas" / "NSW").symlink_to(nceas)
    row, col, side = WINDOW
    win = Window(col, row, side, side)
    for g in GRIDS:
        with rasterio.open(src / f"{g}.tif") as ds:
            prof = {**ds.profile, "width": side, "height": side, "transform": ds.window_transform(win)}
            with rasterio.open(root / "rasters" / "nsw_env_partial" / f"{g}.tif", "w", **prof) as out:
                out.write(ds.read(window=win))
    return root


@pytest.mark.shared_data
def test_records_step_reads_the_published_values(nsw_window: Path, tmp_path: Path) -> None:
    cfg = load_pipeline("nsw", env={"GEOSDM_SHARED_DATA": str(nsw_window), "GEOSDM_NSW_DIR": str(tmp_path)})
    assert cfg.records is not None
    cfg = cfg.model_copy(update={"records": cfg.records.model_copy(update={"block_size": 0.1})})  # a small window
    tt = run_pipeline(cfg, steps=("cube", "records")).outputs["records"]
    table = pd.read_parquet(cfg.records.output)
    assert set(tt.covariates) == {"disturb", "mi", "soilfert", "solrad", *(f"vegsys_{k}" for k in range(1, 10))}
    assert tt.excluded == {}  # nodata beyond the study area is not a gap
    po = pd.read_parquet(nsw_window / "nceas" / "NSW" / "train_po.parquet").assign(kind="presence_only")
    bg = pd.read_parquet(nsw_window / "nceas" / "NSW" / "train_bg.parquet").assign(kind="background")
    published = pd.concat([po, bg], ignore_index=True).assign(siteid=lambda d: d["siteid"].astype(str))
    key = pd.MultiIndex.from_arrays([published["kind"], published["siteid"]])
    ref = published.iloc[key.get_indexer(pd.MultiIndex.from_arrays([table["kind"].astype(str), table["plot_id"]]))]
    kinds = table["kind"].astype(str).value_counts()
    assert kinds["presence_only"] == 221 and kinds["background"] >= 280  # the window's records, nothing drawn
    assert tt.report.dropped["outside_grid"] == len(published) - 221 - 286
    assert (table["species"].isna() == (table["kind"] == "background")).all()
    vegsys = table[[f"vegsys_{k}" for k in range(1, 10)]].to_numpy()
    assert np.isin(vegsys, (0.0, 1.0)).all() and (vegsys.sum(axis=1) == 1).all()  # one-hot on the native grid
    for g in GRIDS:
        got = vegsys.argmax(axis=1) + 1 if g == "vegsys" else table[g].to_numpy()
        np.testing.assert_array_equal(got, ref[g].to_numpy(), err_msg=g)
    assert "group" in table.columns and "cti" not in table.columns  # the tables' own covariates are left behind
