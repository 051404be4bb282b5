"""Training table from the demo records on a cube: validated, background, covariates, folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from geosdm.demo import DemoLayout
from geosdm.records import read_records, training_table


def test_training_table_on_demo_truth_cube(demo_small: DemoLayout, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # the truth covariates stand in for a built cube (same grid, same conventions)
    truth = xr.open_zarr(demo_small.truth_zarr)
    names = ["elevation", "bio01", "bio12", "lc_3", "s2_ndvi_jja"]
    cube = truth[names]
    cube.to_zarr(tmp_path / "cube.zarr", zarr_format=3, consolidated=False)
    recs = pd.concat([read_records(demo_small.presence_only_csv), read_records(demo_small.surveys_parquet)], ignore_index=True)
    tt = training_table(recs, tmp_path / "cube.zarr", n_background=500, block_size=1_500, seed=1)
    t = tt.table
    assert (t.kind == "background").sum() == 500
    assert set(names) <= set(t.columns) and t[names].notna().all().all()
    assert t["fold"].between(0, 4).all()
    po = t[t.kind == "presence_only"]
    assert len(po) + tt.report.n_dropped + tt.n_no_covariates >= len(read_records(demo_small.presence_only_csv))
    # covariates at the points equal the cube at the points' cells
    from pyproj import Transformer

    row = po.iloc[0]
    assert row.crs == "EPSG:4326"  # records keep their own CRS; extraction reprojects
    x, y = Transformer.from_crs(row.crs, 2154, always_xy=True).transform(row.x, row.y)
    expected = float(truth["bio01"].sel(x=x, y=y, method="nearest"))
    assert np.isclose(row.bio01, expected)
    again = training_table(recs, tmp_path / "cube.zarr", n_background=500, block_size=1_500, seed=1)
    pd.testing.assert_frame_equal(t, again.table)
