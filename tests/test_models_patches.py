"""Patch CNN and multimodal fusion trained from a cube (patches cut around the sites), in memory and streamed
from the patch store; predictions on points and on the cube grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geosdm.errors import InputError
from geosdm.models import MultiSpeciesSDM

SMALL = {"epochs": 2, "batch_size": 64, "width": 8, "hidden": 16, "n_blocks": 1, "patch_size": 5, "seed": 0,
         "loss": "integrated", "val_size": 0}
COVS = ["elevation", "bio01", "lc_1"]


@pytest.fixture(scope="module")
def table(records_cube) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    import warnings

    from geosdm.records import records_from_frame, uniform_background, valid_mask
    from geosdm.records.coords import cell_centres

    rng = np.random.default_rng(0)
    ny, nx = records_cube.geobox.shape
    row, col = rng.integers(0, ny - 6, 120), rng.integers(0, nx - 6, 120)
    x, y = cell_centres(records_cube.geobox, row, col)
    po = records_from_frame(pd.DataFrame({"species": np.where(col < 40, "A", "B"), "x": x, "y": y, "kind": "presence_only",
                                          "value": 1.0, "dataset": "po"}), crs="EPSG:2154")
    mask = valid_mask(records_cube.path, variables=COVS)
    bg = uniform_background(records_cube.geobox, 300, mask=mask, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pd.concat([po, bg.drop(columns=["row", "col"])], ignore_index=True)


@pytest.fixture(scope="module")
def cube(records_cube) -> xr.Dataset:  # type: ignore[no-untyped-def]
    return records_cube.open()[COVS].load()


def test_cnn_from_cube_predicts_points_and_grid(records_cube, table: pd.DataFrame, cube: xr.Dataset) -> None:  # type: ignore[no-untyped-def]
    m = MultiSpeciesSDM(network="cnn", covariates=COVS, **SMALL).fit(table, cube=records_cube.path)
    assert m.patch_["size"] == 5 and m.patch_["variables"] == COVS
    assert m.network_spec_["channels"] == 3
    pts = m.predict(table.head(20), cube=records_cube.path)
    assert pts.shape == (20, 2) and np.isfinite(pts.to_numpy()).all()
    grid = m.predict(cube, log=True)
    assert grid.dims == ("species", "y", "x") and grid.shape == (2, 60, 80)
    assert np.isnan(grid.values[:, 58, 78]).all() and np.isfinite(grid.values[:, 10, 10]).all()
    # a cell's grid prediction equals the point prediction at that cell
    from geosdm.records.coords import cell_index

    tx, ty = table["x"].to_numpy()[:20], table["y"].to_numpy()[:20]
    r, c, _ = cell_index(records_cube.geobox, tx, ty)
    np.testing.assert_allclose(grid.values[:, r, c].T, np.log(pts.to_numpy()), rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="dask-backed"):
        m.predict(records_cube.open()[COVS])
    with pytest.raises(InputError, match="needs covariate patches"):
        m.predict(table.head(3).assign(**{c: 1.0 for c in COVS}))


def test_cnn_streams_from_the_patch_store(records_cube, table: pd.DataFrame, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    m = MultiSpeciesSDM(network="cnn", covariates=COVS, streaming=True, num_workers=2, work_dir=str(tmp_path),
                        **SMALL).fit(table, cube=records_cube.path)
    assert (tmp_path / "patches.zarr" / "zarr.json").is_file() and (tmp_path / "points.zarr").is_dir()
    assert m.training_.epochs_run == 2 and np.isfinite(m.training_.history[-1]["train_loss"])


def test_fusion_of_covariates_patches_and_series(records_cube, table: pd.DataFrame, cube: xr.Dataset) -> None:  # type: ignore[no-untyped-def]
    series = [["elevation", "bio01"]]  # one channel, two "time steps"
    m = MultiSpeciesSDM(network="fusion", covariates=COVS, series=series, **SMALL).fit(table, cube=records_cube.path)
    spec = m.network_spec_
    assert spec["n_features"] == 3 and spec["channels"] == 3 and spec["series_channels"] == 1
    grid = m.predict(cube)
    assert np.isfinite(grid.values[:, 5, 5]).all()
    tab = MultiSpeciesSDM(network="fusion", covariates=COVS, series=series, **SMALL).fit(
        _with_covariates(table, records_cube))
    assert tab.network_spec_["channels"] == 0 and tab.patch_ is None  # no cube: covariates + series only


def _with_covariates(table: pd.DataFrame, records_cube) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    from geosdm.records import extract_covariates

    return extract_covariates(records_cube.path, table, variables=COVS)
