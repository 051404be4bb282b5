import pytest

from geosdm.errors import GridError, InputError
from geosdm.grid import geobox_from_bbox, preset_geobox, tiles


def test_bbox_snaps_to_resolution():
    gb = geobox_from_bbox((449_010, 6_562_020, 488_990, 6_601_950), crs="EPSG:2154", resolution=100)
    assert gb.resolution.x == 100 and gb.resolution.y == -100
    assert gb.affine.c % 100 == 0 and gb.affine.f % 100 == 0
    assert gb.shape == (400, 400)


def test_bbox_in_lonlat_is_reprojected():
    gb = geobox_from_bbox((-0.1, 46.2, 0.1, 46.4), crs="EPSG:2154", resolution=1000, bbox_crs="EPSG:4326")
    assert str(gb.crs) == "EPSG:2154"
    x0, y0, x1, y1 = gb.boundingbox
    assert 450_000 < x0 < 470_000 and 6_560_000 < y0 < 6_580_000


def test_presets():
    gb = preset_geobox("france", resolution=10_000)
    assert str(gb.crs) == "EPSG:2154" and gb.shape[0] > 100
    with pytest.raises(InputError, match="unknown grid preset"):
        preset_geobox("mars", resolution=10)


def test_bad_inputs():
    with pytest.raises(GridError, match="empty or inverted"):
        geobox_from_bbox((1, 1, 0, 0), crs="EPSG:2154", resolution=10)
    with pytest.raises(InputError, match="resolution"):
        geobox_from_bbox((0, 0, 1, 1), crs="EPSG:2154", resolution=-1)


def test_tiles_cover_grid_exactly():
    gb = geobox_from_bbox((0, 0, 1000, 700), crs="EPSG:2154", resolution=10)
    ts = list(tiles(gb, (32, 48)))
    covered = sum(t.geobox.shape[0] * t.geobox.shape[1] for t in ts)
    assert covered == gb.shape[0] * gb.shape[1]
    for t in ts:
        assert gb[t.slices] == t.geobox


@pytest.mark.parametrize("suffix", [".geojson", ".parquet"])
def test_region_polygon_files(tmp_path, suffix):  # type: ignore[no-untyped-def]
    import geopandas as gpd
    from shapely.geometry import Polygon

    from geosdm.grid import geobox_from_geometry, read_region

    poly = Polygon([(-0.1, 46.2), (0.1, 46.2), (0.0, 46.4)])  # a triangle in lon/lat
    gdf = gpd.GeoDataFrame({"name": ["r"]}, geometry=[poly], crs="EPSG:4326")
    path = tmp_path / f"region{suffix}"
    gdf.to_parquet(path) if suffix == ".parquet" else gdf.to_file(path, driver="GeoJSON")
    region = read_region(path)
    gb = geobox_from_geometry(region, crs="EPSG:2154", resolution=500)
    assert str(gb.crs) == "EPSG:2154" and gb.affine.c % 500 == 0
    x0, y0, x1, y1 = gb.boundingbox
    assert 450_000 < x0 < 470_000 and x1 - x0 < 20_000


def test_region_file_errors(tmp_path):  # type: ignore[no-untyped-def]
    from geosdm.grid import read_region

    with pytest.raises(InputError, match="does not exist"):
        read_region(tmp_path / "nope.geojson")
