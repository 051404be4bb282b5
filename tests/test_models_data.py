"""Samples for training: in-memory batches, Zarr point stores and patch stores read by DataLoader workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from geosdm.errors import InputError
from geosdm.models.data import TensorBatches, ZarrSiteDataset, write_point_store


def test_tensor_batches_reshuffle_per_epoch_and_shard_ranks() -> None:
    rows = torch.arange(20)
    one = TensorBatches({"r": rows}, batch_size=4, seed=0)
    e0 = torch.cat([b["r"] for b in one.epoch(0)])
    assert sorted(e0.tolist()) == list(range(20))
    assert torch.equal(e0, torch.cat([b["r"] for b in one.epoch(0)]))  # same epoch, same order
    assert not torch.equal(e0, torch.cat([b["r"] for b in one.epoch(1)]))
    ranks = [TensorBatches({"r": rows}, batch_size=4, seed=0, rank=r, world_size=2) for r in range(2)]
    parts = [torch.cat([b["r"] for b in t.epoch(3)]) for t in ranks]
    assert len(ranks[0]) == len(ranks[1]) == 2  # equal steps per rank
    assert not set(parts[0].tolist()) & set(parts[1].tolist())
    with pytest.raises(InputError, match="different numbers of rows"):
        TensorBatches({"a": torch.zeros(3), "b": torch.zeros(4)}, batch_size=2)


@pytest.fixture(scope="module")
def point_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    n = 1000
    arrays = {"tabular": np.arange(n * 3, dtype="float32").reshape(n, 3), "row": np.arange(n, dtype="int64")}
    return write_point_store(arrays, tmp_path_factory.mktemp("pts") / "points.zarr", chunk_rows=128)


def test_point_store_streams_each_sample_once_with_workers(point_store: Path) -> None:
    import zarr

    assert zarr.open_group(str(point_store), mode="r")["tabular"].chunks == (128, 3)
    rows = np.ones(1000, dtype=bool)
    rows[::10] = False  # a validation fold left out
    ds = ZarrSiteDataset(point_store, rows=rows, batch_size=50, seed=0, buffer_chunks=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    seen = torch.cat([b["row"] for b in loader]).numpy()
    assert len(seen) == len(set(seen)) and set(seen) <= set(np.flatnonzero(rows))
    assert len(seen) >= 900 - 2 * 4 * 50  # at most one dropped remainder per buffer
    batch = next(iter(ds))
    np.testing.assert_array_equal(batch["tabular"][:, 0].numpy(), 3 * batch["row"].numpy())  # rows stay aligned
    ds.set_epoch(1)
    assert not np.array_equal(torch.cat([b["row"] for b in ds]).numpy()[:50], seen[:50])


def test_point_store_chunks_are_dealt_to_ranks(point_store: Path) -> None:
    parts = []
    for rank in range(2):
        ds = ZarrSiteDataset(point_store, batch_size=64, seed=0, rank=rank, world_size=2, shuffle=False)
        parts.append(set(torch.cat([b["row"] for b in ds]).tolist()))
    assert not parts[0] & parts[1] and len(parts[0] | parts[1]) == 1000
    assert ZarrSiteDataset(point_store, batch_size=64, seed=0, rank=0, world_size=2).batches_per_rank() >= 7


def test_point_store_refuses_overwrite_and_bad_masks(point_store: Path) -> None:
    with pytest.raises(InputError, match="exists"):
        write_point_store({"a": np.zeros(2)}, point_store)
    with pytest.raises(InputError, match="rows mask"):
        ZarrSiteDataset(point_store, rows=np.ones(3, dtype=bool))


def test_patch_store_drives_iteration_and_gathers_site_rows(records_cube, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from geosdm.records import extract_patches, records_from_frame
    from geosdm.records.coords import cell_centres

    rng = np.random.default_rng(0)
    n = 60
    row, col = rng.integers(0, 50, n), rng.integers(0, 70, n)
    x, y = cell_centres(records_cube.geobox, row, col)
    sites = records_from_frame(pd.DataFrame({"x": x, "y": y, "kind": "background", "value": 0.0}), crs="EPSG:2154")
    store = extract_patches(records_cube.path, sites, tmp_path / "p.zarr", size=5, variables=["bio01"], chunk_points=16)
    points = write_point_store({"site": np.arange(n, dtype="int64")}, tmp_path / "pts.zarr", chunk_rows=16)
    ds = ZarrSiteDataset(points, patches=store, batch_size=8, seed=0, patch_mean=np.zeros(1, "float32"),
                         patch_scale=np.ones(1, "float32"))
    got = list(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2))
    sites_seen = torch.cat([b["site"] for b in got]).numpy()
    assert len(set(sites_seen)) == len(sites_seen) >= 40
    b = got[0]
    assert b["patch"].shape[1:] == (1, 5, 5)
    centre = b["patch"][:, 0, 2, 2].numpy()
    s = b["site"].numpy()
    np.testing.assert_allclose(centre, records_cube.bio01(row[s], col[s]), rtol=1e-6)  # the site's own patch
