"""Property-based tests (hypothesis) of record validation, gridding (points to cells) and the tile layout.

Each property holds for any input hypothesis draws: validation counts every row under exactly one reason and
keeps only usable rows; a point lands in the cell whose footprint holds it and gridding loses no record; tiles
cover the grid exactly once.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from odc.geo.geobox import GeoBox

from geosdm.grid import tiles
from geosdm.records import aggregate_to_cells, assign_cells, records_from_frame, validate_records
from geosdm.records.coords import cell_centres, cell_index

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FRANCE = (-5.2, 41.3, 9.6, 51.1)

coordinate = st.one_of(st.floats(-200, 200), st.just(0.0), st.just(float("nan")), st.just(float("inf")))
row = st.tuples(st.sampled_from(["Salix alba", "Salix caprea", None]), coordinate, coordinate)


@FAST
@given(st.lists(row, min_size=1, max_size=40).filter(lambda rows: any(r[0] for r in rows)))
def test_validation_counts_every_row_under_one_reason(rows: list[tuple]) -> None:
    frame = pd.DataFrame(rows, columns=["species", "decimalLongitude", "decimalLatitude"])
    recs = records_from_frame(frame)
    valid, report = validate_records(recs)
    assert report.n_valid == len(valid) and report.n_valid + report.n_dropped == report.n_input == len(recs)
    dropped = [i for idx in report.dropped_index.values() for i in idx]
    assert len(dropped) == len(set(dropped)) == report.n_dropped  # one reason per row
    assert set(dropped).isdisjoint(valid.index) and set(dropped) | set(valid.index) == set(recs.index)
    assert valid["species"].notna().all()
    assert valid["x"].between(-180, 180).all() and valid["y"].between(-90, 90).all()
    assert not ((valid["x"] == 0) & (valid["y"] == 0)).any()
    again, report2 = validate_records(valid)
    assert report2.n_dropped == 0 and len(again) == len(valid)  # idempotent


@FAST
@given(st.lists(st.tuples(st.floats(-5.0, 9.5), st.floats(41.5, 51.0), st.booleans()), min_size=1, max_size=30))
def test_swapped_points_are_fixed_back_against_the_region(points: list[tuple[float, float, bool]]) -> None:
    lon = np.array([p[0] for p in points])
    lat = np.array([p[1] for p in points])
    swap = np.array([p[2] for p in points])
    x, y = np.where(swap, lat, lon), np.where(swap, lon, lat)
    recs = records_from_frame(pd.DataFrame({"species": "Salix alba", "decimalLongitude": x, "decimalLatitude": y}))
    valid, report = validate_records(recs, bounds=FRANCE, fix_swapped=True, duplicates="keep")
    assert len(valid) == len(points) and report.fixed["swapped_lat_lon"] == int(swap.sum())
    np.testing.assert_allclose(valid["x"], lon)
    np.testing.assert_allclose(valid["y"], lat)
    dropped, report = validate_records(recs, bounds=FRANCE, duplicates="keep")
    assert report.dropped["swapped_lat_lon"] == int(swap.sum()) and len(dropped) == int((~swap).sum())


grids = st.builds(
    lambda ny, nx, res, x0, y0: GeoBox.from_bbox((x0, y0, x0 + nx * res, y0 + ny * res), "EPSG:2154", resolution=res),
    st.integers(1, 40), st.integers(1, 40), st.sampled_from([10.0, 25.0, 100.0, 1000.0]),
    st.integers(0, 1000).map(lambda v: 100_000.0 + v * 1000),
    st.integers(0, 1000).map(lambda v: 6_000_000.0 + v * 1000),
)


@FAST
@given(grids, st.lists(st.tuples(st.floats(0, 0.999), st.floats(0, 0.999), st.sampled_from(["a", "b"])),
                       min_size=1, max_size=50))
def test_points_land_in_the_cell_that_holds_them(gbox: GeoBox, fractions: list[tuple[float, float, str]]) -> None:
    (x0, y0, x1, y1), (ny, nx), res = gbox.extent.boundingbox, gbox.shape, gbox.resolution.x
    x = np.array([x0 + f[0] * (x1 - x0) for f in fractions])
    y = np.array([y1 - f[1] * (y1 - y0) for f in fractions])  # cells are half-open from the top-left corner
    r, c, inside = cell_index(gbox, x, y)
    assert inside.all() and (0 <= r).all() and (r < ny).all() and (0 <= c).all() and (c < nx).all()
    cx, cy = cell_centres(gbox, r, c)
    assert (np.abs(cx - x) <= res / 2 + 1e-6).all() and (np.abs(cy - y) <= res / 2 + 1e-6).all()
    r2, c2, _ = cell_index(gbox, cx, cy)  # a cell's centre lies in that cell
    assert (r2 == r).all() and (c2 == c).all()
    out_r, out_c, out_in = cell_index(gbox, np.array([x0 - res / 2, x1 + res / 2]), np.array([y0, y0]))
    assert not out_in.any() and (out_r == -1).all() and (out_c == -1).all()

    recs = records_from_frame(pd.DataFrame({"species": [f[2] for f in fractions], "x": x, "y": y}), crs="EPSG:2154")
    on_grid = assign_cells(recs, gbox)
    assert (on_grid["row"].to_numpy() == r).all() and (on_grid["col"].to_numpy() == c).all()
    cells = aggregate_to_cells(recs, gbox)
    assert int(cells["n_records"].sum()) == len(recs) and float(cells["value"].sum()) == len(recs)
    assert not cells.duplicated(["species", "row", "col"]).any()  # one row per species and cell


@FAST
@given(grids, st.integers(1, 64), st.integers(1, 64))
def test_tiles_cover_the_grid_exactly_once(gbox: GeoBox, ty: int, tx: int) -> None:
    ny, nx = gbox.shape
    cover = np.zeros((ny, nx), dtype=np.int64)
    layout = list(tiles(gbox, (ty, tx)))
    assert len(layout) == math.ceil(ny / ty) * math.ceil(nx / tx)
    for t in layout:
        ys, xs = t.slices
        assert ys.start == t.index[0] * ty and xs.start == t.index[1] * tx  # tiles start on multiples of the shape
        assert 0 < ys.stop - ys.start <= ty and 0 < xs.stop - xs.start <= tx
        assert t.geobox.shape == (ys.stop - ys.start, xs.stop - xs.start)
        assert t.geobox == gbox[ys, xs]  # same pixels, same georeferencing as the parent
        cover[ys, xs] += 1
    assert (cover == 1).all()
