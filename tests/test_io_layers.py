"""The one layer writer: any lazy (*lead, y, x) Dataset -> resumable sharded Zarr, COGs and STAC Items."""

from __future__ import annotations

from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from geosdm.errors import InputError
from geosdm.io import open_layers, write_layers
from geosdm.predict import export_cogs, write_stac

GRID = GeoBox.from_bbox((500_000, 6_500_000, 504_800, 6_503_200), "EPSG:2154", resolution=100)  # 32 x 48


def _layers() -> xr.Dataset:
    ny, nx = GRID.shape
    rng = np.random.default_rng(0)
    p = rng.uniform(size=(3, ny, nx)).astype(np.float32)
    p[:, :5, :7] = np.nan
    z = rng.normal(size=(ny, nx)).astype(np.float32)
    ds = xr.Dataset(coords={**xr_coords(GRID, crs_coord_name="spatial_ref"), "edge": ["a->b", "b->c", "a->c"]})
    ds["joint"] = (("edge", "y", "x"), da.from_array(p, chunks=(3, 16, 16)), {"long_name": "joint probability"})
    ds["score"] = (("y", "x"), da.from_array(z, chunks=(16, 16)))
    return ds


def test_write_layers_roundtrip_resume_and_refusal(tmp_path: Path) -> None:
    ds = _layers()
    path = tmp_path / "layers.zarr"
    with dask.config.set(scheduler="sync"):
        report = write_layers(ds, path, dtypes={"joint": "uint8"}, identity={"run": 1}, attrs={"title": "test layers"})
    assert report.n_tiles == 6 and report.n_resumed == 0 and report.layers == 4
    back = open_layers(path)
    assert back.joint.dtype.kind == "f" and back.joint.chunks == ((3,), (16, 16), (16, 16, 16))
    assert list(back.edge.values) == ["a->b", "b->c", "a->c"]
    np.testing.assert_allclose(back.joint.values, ds.joint.values, atol=0.5 / 250 + 1e-6)
    assert np.isnan(back.joint.values[:, :5, :7]).all()
    np.testing.assert_array_equal(back.score.values, ds.score.values)
    assert back.odc.geobox == GRID and back.attrs["title"] == "test layers"
    # a rerun resumes everything; another identity is refused
    again = write_layers(ds, path, dtypes={"joint": "uint8"}, identity={"run": 1})
    assert again.n_resumed == 6
    with pytest.raises(InputError, match="different configuration"):
        write_layers(ds, path, dtypes={"joint": "uint8"}, identity={"run": 2})


def test_write_layers_lazy_until_computed(tmp_path: Path) -> None:
    delayed = write_layers(_layers(), tmp_path / "lazy.zarr", compute=False)
    assert not (tmp_path / "lazy.zarr.progress").exists()
    report = delayed.compute()
    assert report.n_tiles == 6 and report.valid_fraction == round(1 - 35 / 1536, 6)


def test_bad_layers_are_named(tmp_path: Path) -> None:
    ds = _layers()
    with pytest.raises(InputError, match="dtypes"):
        write_layers(ds, tmp_path / "x.zarr", dtypes={"joint": "int8"})  # type: ignore[dict-item]
    with pytest.raises(InputError, match="end with dims"):
        write_layers(ds.transpose("y", "x", "edge"), tmp_path / "y.zarr")


def test_cogs_and_stac_for_any_leading_dim(tmp_path: Path) -> None:
    path = tmp_path / "layers.zarr"
    write_layers(_layers(), path, dtypes={"joint": "uint8"}, identity={"run": 1})
    one = export_cogs(path, tmp_path / "one", variable="joint", layers=["b->c"], multiband=False)
    assert [c.key for c in one] == ["joint_b-_c"] and one[0].dim == "edge" and one[0].layers == ("b->c",)
    cogs = export_cogs(path, tmp_path / "cogs", variable="joint")
    assert [c.key for c in cogs] == ["joint_a-_b", "joint_b-_c", "joint_a-_c", "joint"] and all(c.valid for c in cogs)
    assert cogs[-1].layers == ("a->b", "b->c", "a->c")
    single = export_cogs(path, tmp_path / "cogs", variable="score")
    assert len(single) == 1 and single[0].layers == ("score",)
    import rasterio

    with rasterio.open(single[0].path) as src:
        np.testing.assert_allclose(src.read(1), open_layers(path).score.values)
    out = write_stac(path, cogs + single, tmp_path / "stac", collection_id="layers")
    import pystac

    item = pystac.Item.from_file(out.items[0])
    assert item.properties["geosdm:edge"] == ["a->b", "b->c", "a->c"]
    # per-layer COGs of one variable: keyed by their labels; the multi-band COG of the same layers is linked
    assert sorted(item.assets) == ["a->b", "a->c", "b->c", "score", "zarr"]
    assert item.assets["b->c"].extra_fields["eo:bands"] == [{"name": "b->c", "description": "joint probability: b->c"}]
    (alt,) = item.get_links("alternate")
    assert alt.extra_fields["geosdm:edge"] == ["a->b", "b->c", "a->c"] and alt.href.endswith("cogs/joint.tif")
    from tests.fixtures.stac_schemas import validate_stac_tree

    assert len(validate_stac_tree(tmp_path / "stac")) == 2


def test_sdm_accessor_forwards_to_the_functions(tmp_path: Path) -> None:
    import geosdm  # noqa: F401  (registers .sdm)

    ds = _layers()
    assert ds.sdm.geobox == GRID
    report = ds.sdm.write(tmp_path / "acc.zarr", dtypes={"joint": "uint8"}, identity={"run": 1})
    assert report.n_tiles == 6
    np.testing.assert_array_equal(open_layers(tmp_path / "acc.zarr").score.values, ds.score.values)
