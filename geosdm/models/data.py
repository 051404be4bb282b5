"""Training samples for the trainer: in-memory mini-batches, and streaming from Zarr point and patch stores.

A *batch* is a dict of tensors with the same first dimension: network inputs (``"tabular"``, ``"patch"``,
``"series"``) and loss inputs (``"targets"``, ``"dataset"``, ``"log_area"``, ``"bias"``).

* :class:`TensorBatches` — arrays already in memory (CPU or GPU tensors), reshuffled each epoch from
  ``(seed, epoch)``; each distributed rank takes its own slice of the permutation.
* :func:`write_point_store` — materialise site arrays to a Zarr v3 *point store* (one array per key, chunks of
  ``chunk_rows`` rows).
* :class:`ZarrSiteDataset` — a torch ``IterableDataset`` that reads whole chunks (numpy, one read per chunk)
  from a point store — or from a patch store written by :func:`geosdm.records.extract_patches`, whose
  ``record`` array points at the site rows — shuffles them in a buffer of a few chunks and yields
  mini-batches. Chunks are dealt to distributed ranks and DataLoader worker processes, so each sample is read
  once per epoch. Use it with ``torch.utils.data.DataLoader(ds, batch_size=None, num_workers=k)``.

Following docs/architecture.md, samples are never batched through dask or xbatcher: a chunk is loaded once
and batched in numpy.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from geosdm.errors import InputError

__all__ = ["TensorBatches", "ZarrSiteDataset", "epoch_seed", "write_point_store"]


def epoch_seed(seed: int, epoch: int, salt: int = 0) -> int:
    """A 63-bit seed derived from (seed, epoch, salt): the same on every rank, worker and resumed run."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(salt)]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


class TensorBatches:
    """Mini-batches of aligned in-memory tensors.

    Parameters
    ----------
    arrays
        ``{key: tensor}`` with a common first dimension (rows = sites); may live on the GPU.
    batch_size
        Rows per batch.
    shuffle
        Permute rows each epoch (seeded by ``(seed, epoch)``); otherwise keep order.
    drop_last
        Drop the last partial batch (when there is more than one batch).
    rank, world_size
        Distributed rank and number of ranks; every rank yields the same number of batches.

    Example
    -------
    >>> tb = TensorBatches({"x": torch.arange(10.)}, batch_size=4, seed=0)
    >>> [len(b["x"]) for b in tb.epoch(0)]
    [4, 4]
    """

    def __init__(self, arrays: Mapping[str, Tensor], *, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True, rank: int = 0, world_size: int = 1) -> None:
        sizes = {k: int(v.shape[0]) for k, v in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise InputError(f"batch arrays have different numbers of rows {sizes}")
        self.arrays, self.n = dict(arrays), next(iter(sizes.values()))
        self.batch_size, self.shuffle, self.seed = int(batch_size), shuffle, int(seed)
        self.drop_last, self.rank, self.world_size = drop_last, int(rank), int(world_size)

    def _rows_per_rank(self) -> int:
        return self.n // self.world_size

    def __len__(self) -> int:
        n = self._rows_per_rank()
        if self.drop_last and n > self.batch_size:
            return n // self.batch_size
        return max(1, -(-n // self.batch_size))

    def epoch(self, epoch: int) -> Iterator[dict[str, Tensor]]:
        """Yield the batches of one epoch."""
        device = next(iter(self.arrays.values())).device
        if self.shuffle:
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            order = torch.randperm(self.n, generator=gen)
        else:
            order = torch.arange(self.n)
        order = order[self.rank : self._rows_per_rank() * self.world_size : self.world_size].to(device)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield {k: v.index_select(0, idx) for k, v in self.arrays.items()}


def write_point_store(arrays: Mapping[str, np.ndarray], path: str | PathLike[str], *, chunk_rows: int = 8192,
                      attrs: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write aligned site arrays (rows first) to a Zarr v3 point store.

    Parameters
    ----------
    arrays
        ``{key: array}`` with a common first dimension.
    path
        Output folder.
    chunk_rows
        Rows per chunk: the unit read by :class:`ZarrSiteDataset` (e.g. 8192 rows x 300 floats = 10 MB).
    attrs
        JSON-able group attributes.
    overwrite
        Replace an existing store.

    Returns
    -------
    Path
        The store folder.

    Example
    -------
    >>> write_point_store({"tabular": np.zeros((10, 3), "float32")}, "points.zarr")  # doctest: +SKIP
    """
    import zarr

    out = Path(path)
    if out.exists():
        if not overwrite:
            raise InputError(f"point store {str(out)!r} exists; pass overwrite=True or choose another path")
        shutil.rmtree(out)
    sizes = {k: int(np.shape(v)[0]) for k, v in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise InputError(f"point store arrays have different numbers of rows {sizes}")
    n = next(iter(sizes.values()))
    group = zarr.open_group(os.fspath(out), mode="w", zarr_format=3)
    for key, value in arrays.items():
        value = np.ascontiguousarray(value)
        arr = group.create_array(key, shape=value.shape, chunks=(max(1, min(chunk_rows, n)), *value.shape[1:]),
                                 dtype=value.dtype)
        if n:
            arr[...] = value
    group.attrs.update({"n_rows": n, "chunk_rows": int(chunk_rows), **dict(attrs or {})})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(os.fspath(out))
    return out


class ZarrSiteDataset(IterableDataset):  # type: ignore[type-arg]
    """Stream mini-batches from a Zarr point store (and optionally a patch store) chunk by chunk.

    Parameters
    ----------
    points
        Point store from :func:`write_point_store` (rows = sites).
    keys
        Point-store arrays to yield (default: all).
    patches
        Patch store from :func:`geosdm.records.extract_patches` written for the same sites (its ``record``
        array holds site rows); its chunks then drive the iteration and ``"patch"`` is added to each batch.
    patch_mean, patch_scale
        Per-channel standardisation of patches (NaN cells become 0 after scaling).
    rows
        Boolean mask over sites to use (e.g. the training fold); default all.
    batch_size
        Rows per batch.
    shuffle
        Shuffle chunk order and rows within a buffer of ``buffer_chunks`` chunks (seeded by ``(seed, epoch)``).
    rank, world_size
        Distributed rank and number of ranks (chunks are dealt to ranks, then to DataLoader workers).

    Example
    -------
    >>> ds = ZarrSiteDataset("points.zarr", batch_size=256, seed=0)  # doctest: +SKIP
    >>> loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)  # doctest: +SKIP
    """

    def __init__(self, points: str | PathLike[str], *, keys: Sequence[str] | None = None,
                 patches: str | PathLike[str] | None = None, patch_mean: np.ndarray | None = None,
                 patch_scale: np.ndarray | None = None, rows: np.ndarray | None = None, batch_size: int = 256,
                 shuffle: bool = True, seed: int = 0, buffer_chunks: int = 4, rank: int = 0,
                 world_size: int = 1) -> None:
        super().__init__()
        import zarr

        self.points, self.patches = os.fspath(points), (os.fspath(patches) if patches is not None else None)
        group = zarr.open_group(self.points, mode="r")
        self.keys = list(keys) if keys is not None else sorted(k for k, _ in group.arrays())
        missing = [k for k in self.keys if k not in group]
        if missing:
            raise InputError(f"point store {self.points!r} lacks array(s) {missing}; it has {sorted(group.array_keys())}")
        self.n = int(group[self.keys[0]].shape[0])
        self.rows = np.ones(self.n, dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
        if self.rows.shape != (self.n,):
            raise InputError(f"rows mask has shape {self.rows.shape}; expected ({self.n},) for the point store")
        self.patch_mean, self.patch_scale = patch_mean, patch_scale
        self.batch_size, self.shuffle, self.seed = int(batch_size), shuffle, int(seed)
        self.buffer_chunks, self.rank, self.world_size = max(1, int(buffer_chunks)), int(rank), int(world_size)
        self.epoch = 0
        if self.patches is not None:
            pg = zarr.open_group(self.patches, mode="r")
            self._records = np.asarray(pg["record"][:], dtype=np.int64)
            step = int(pg["patches"].chunks[0])
            total = len(self._records)
        else:
            self._records = None
            step = int(group[self.keys[0]].chunks[0])
            total = self.n
        self._chunks = [(s, min(s + step, total)) for s in range(0, total, step)]

    def set_epoch(self, epoch: int) -> None:
        """Epoch whose shuffle the next iteration uses (call before creating the DataLoader iterator)."""
        self.epoch = int(epoch)

    def _chunk_rows(self, start: int, stop: int) -> np.ndarray:
        sites = self._records[start:stop] if self._records is not None else np.arange(start, stop)
        return np.flatnonzero(self.rows[sites])

    def _assignment(self, epoch: int) -> list[list[tuple[int, int]]]:
        """Chunks per rank for an epoch (same on every rank)."""
        order = list(range(len(self._chunks)))
        if self.shuffle:
            order = list(np.random.default_rng(epoch_seed(self.seed, epoch, 1)).permutation(len(self._chunks)))
        return [[self._chunks[i] for i in order[r :: self.world_size]] for r in range(self.world_size)]

    def batches_per_rank(self, epoch: int | None = None) -> int:
        """Smallest number of full batches any rank gets in an epoch (DDP ranks must take equal steps)."""
        counts = []
        for chunks in self._assignment(self.epoch if epoch is None else epoch):
            n = sum(len(self._chunk_rows(a, b)) for a, b in chunks)
            counts.append(max(1, n // self.batch_size) if n else 0)
        if min(counts) == 0:
            raise InputError(
                f"a rank gets no samples from {len(self._chunks)} chunk(s) over {self.world_size} ranks; write the "
                "store with smaller chunks (chunk_rows / chunk_points) or train on fewer ranks"
            )
        return min(counts)

    def _read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        import zarr

        group = zarr.open_group(self.points, mode="r")
        keep = self._chunk_rows(start, stop)
        if self._records is None:
            return {k: np.asarray(group[k][start:stop])[keep] for k in self.keys}
        sites = self._records[start:stop][keep]
        uniq, inverse = np.unique(sites, return_inverse=True)
        out = {k: np.asarray(group[k].oindex[uniq])[inverse] for k in self.keys} if len(uniq) else {
            k: np.empty((0, *group[k].shape[1:]), dtype=group[k].dtype) for k in self.keys}
        patch = np.asarray(zarr.open_group(self.patches, mode="r")["patches"][start:stop])[keep]
        if self.patch_mean is not None and self.patch_scale is not None:
            patch = (patch - self.patch_mean[None, :, None, None]) / self.patch_scale[None, :, None, None]
        out["patch"] = np.nan_to_num(patch.astype(np.float32))
        return out

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = self._assignment(self.epoch)[self.rank][wid::nw]
        rng = np.random.default_rng(epoch_seed(self.seed, self.epoch, 2 + self.rank * 1000 + wid))
        for g in range(0, len(mine), self.buffer_chunks):
            parts = [self._read(a, b) for a, b in mine[g : g + self.buffer_chunks]]
            buf = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            n = len(next(iter(buf.values())))
            order = rng.permutation(n) if self.shuffle else np.arange(n)
            for s in range(0, n, self.batch_size):
                idx = order[s : s + self.batch_size]
                if len(idx) < self.batch_size and n > self.batch_size and self.shuffle:
                    break  # drop a small remainder of a shuffled buffer (softmax batches need size)
                yield {k: torch.from_numpy(np.ascontiguousarray(v[idx])) for k, v in buf.items()}
