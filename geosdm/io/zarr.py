"""Sharded Zarr v3 cube stores written tile by tile, resumable after a kill.

A store is created once from a *template* (variables, dtypes, attributes, grid) with every array's shard
equal to one tile, so each tile is written by exactly one task with a region write and no two writers ever
touch the same object. After a tile's data are written, a small marker object is written next to the store
(``<store>.progress/<tile>.json``); a rerun skips tiles with markers, so a killed build completes only what is
missing and the result is identical to an uninterrupted run. Works on local paths and fsspec URLs
(``s3://...`` with ``storage_options``).

Reading stores is :mod:`geosdm.io.reading` (``open_cube``, ``read_window``, ``quiet_zarr``) and what their tile
markers say is :mod:`geosdm.io.integrity` (``check_shards``, ``missing_shards``, ``content_identity``,
``fingerprint``); this module re-exports those names, which callers have always imported from here.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import fsspec
import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from geosdm._secrets import redact, redact_url
from geosdm.errors import InputError
from geosdm.grid import grid_coords
from geosdm.io.integrity import (
    check_shards,
    content_identity,
    fingerprint,
    marker_files,
    missing_shards,
    read_markers,
)
from geosdm.io.reading import open_cube, quiet_zarr, raw_readable, read_window

__all__ = ["CubeStore", "VariableSpec", "check_shards", "content_identity", "fingerprint", "missing_shards",
           "open_cube", "quiet_zarr", "raw_readable", "read_window"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VariableSpec:
    """One output variable: dtype, fill value and CF attributes."""

    name: str
    dtype: str = "float32"
    fill_value: float | int = float("nan")
    attrs: Mapping[str, Any] = field(default_factory=dict)
    extra_dims: tuple[tuple[str, int], ...] = ()  # leading dims, e.g. (("species", 40),)
    extra_chunks: tuple[int, ...] | None = None  # inner-chunk sizes along extra_dims (default: whole dims)
    zstd_level: int | None = None  # Zstandard level of the inner chunks (None: zarr's default)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


@dataclass
class CubeStore:
    """A sharded Zarr v3 store over ``geobox`` whose shards are ``tile_shape`` pixels.

    Parameters
    ----------
    path
        Local folder or fsspec URL (``s3://bucket/cube.zarr``).
    geobox
        The grid; coordinates and the CF ``spatial_ref`` grid mapping come from it.
    tile_shape
        Shard shape (y, x) in pixels; the unit of work and of resume.
    chunk_shape
        Inner chunk shape (y, x) inside each shard (must divide ``tile_shape``).
    storage_options
        fsspec options for remote stores (e.g. S3 endpoint and keys).
    """

    path: str
    geobox: GeoBox
    tile_shape: tuple[int, int] = (256, 256)
    chunk_shape: tuple[int, int] | None = None
    storage_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.path = str(self.path).rstrip("/")
        ty, tx = self.tile_shape
        cy, cx = self.chunk_shape or self.tile_shape
        if ty % cy or tx % cx:
            raise InputError(f"chunk_shape {self.chunk_shape} must divide tile_shape {self.tile_shape} exactly")
        self.chunk_shape = (cy, cx)

    # ------------------------------------------------------------------------------------------- paths
    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        fs, _ = fsspec.core.url_to_fs(self.path, **(self.storage_options or {}))
        return fs

    @property
    def progress_path(self) -> str:
        return self.path + ".progress"

    def _marker(self, index: tuple[int, int]) -> str:
        return f"{self.progress_path}/tile_{index[0]:04d}_{index[1]:04d}.json"

    # --------------------------------------------------------------------------------------- lifecycle
    @property
    def lock_path(self) -> str:
        return self.path + ".lock"

    @contextmanager
    def writer(self) -> Iterator[None]:
        """Hold the output's writer lock ``<path>.lock`` (JSON: host, pid, start in UTC, a run id) while a run
        writes it; removed at the end.

        A second run pointed at the same output (also with ``overwrite``, which would delete what the first
        is writing) is refused with :class:`InputError` naming the holder. The lock is created atomically: on
        a file system with ``O_EXCL``, on an object store (``s3://``) with a conditional PUT
        (``If-None-Match: *``; S3 answers 412 when the object exists). A lock left by a dead process on this
        host is taken over (on object stores by a PUT conditional on the dead lock's ETag, so two runs taking
        over at once cannot both win). Whether a process on another host still runs cannot be checked: a lock
        left by a run killed elsewhere stays until deleted by hand (the error names it; e.g.
        ``aws s3 rm s3://bucket/out.zarr.lock``). Locks expire by no age: a long run does not lose its lock.
        Other object stores (GCS, Azure, HTTP) get no lock: do not point two runs at one output there.
        """
        import time as _time

        from geosdm._owner import host_name

        me = {"host": host_name(), "pid": os.getpid(), "started": _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime()),
              "run": uuid.uuid4().hex[:12]}
        fs = self.fs
        protocol = set(fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
        if not _is_local(fs) and not protocol & {"s3", "s3a"}:  # exclusive create checked on S3 only: no lock
            log.info("%s: no writer lock on %s stores; do not point two runs at it", redact_url(self.path),
                     sorted(protocol))
            yield
            return
        local = _is_local(fs)
        take = self._lock_file if local else self._lock_object
        release = self._unlock_file if local else self._unlock_object
        take(fs, me)
        try:
            yield
        finally:
            release(fs, me)

    def _refuse(self, held: Mapping[str, Any]) -> InputError:
        path = redact_url(self.lock_path)
        return InputError(
            f"output {redact_url(self.path)!r} is being written by another run (pid {held.get('pid', '?')} on "
            f"{held.get('host', '?')}, since {held.get('started', '?')}, run {held.get('run', '?')}); wait for it "
            f"to finish or write elsewhere. If no such run exists (killed on another host), delete {path!r}"
        )

    def _lock_file(self, fs: fsspec.AbstractFileSystem, me: Mapping[str, Any]) -> None:
        from geosdm._owner import process_alive

        path = self.lock_path
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    with open(path) as f:
                        held = json.load(f)
                except (OSError, ValueError):
                    held = {}
                if held.get("host") == me["host"] and not process_alive(int(held.get("pid", -1))):
                    log.warning("%s: taking over the lock of pid %s, which no longer runs", self.path, held.get("pid"))
                    try:
                        os.remove(path)
                    except FileNotFoundError:
                        pass
                    continue
                raise self._refuse(held) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return

    def _unlock_file(self, fs: fsspec.AbstractFileSystem, me: Mapping[str, Any]) -> None:
        try:
            os.remove(self.lock_path)
        except FileNotFoundError:
            pass

    def _lock_object(self, fs: fsspec.AbstractFileSystem, me: Mapping[str, Any]) -> None:
        """Create ``<path>.lock`` with ``If-None-Match: *``; take over a dead local holder's with ``If-Match``."""
        from geosdm._owner import process_alive

        path, body = self.lock_path, json.dumps(dict(me)).encode()
        for _ in range(3):
            try:
                fs.pipe_file(path, body, mode="create")  # s3fs: PutObject(IfNoneMatch="*"); 412 -> FileExistsError
                return
            except FileExistsError:
                pass
            except (NotImplementedError, TypeError, ValueError) as err:  # a file system without exclusive create
                raise InputError(
                    f"output {redact_url(self.path)!r}: its store cannot create the writer lock {redact_url(path)!r} "
                    f"atomically ({type(err).__name__}: {redact(str(err))}); it needs S3 conditional writes "
                    "(If-None-Match) through s3fs's exclusive create (pipe_file mode='create'; checked with "
                    "s3fs 2026.9.0, botocore 1.43.117)"
                ) from err
            fs.invalidate_cache(path)
            try:
                raw = fs.cat_file(path)
            except FileNotFoundError:
                continue  # released in between: try again
            try:
                held = json.loads(raw)
            except ValueError:
                held = {}
            if held.get("run") == me["run"]:
                return  # our own PUT, answered 412 on a retry after its first answer was lost
            if held.get("host") == me["host"] and not process_alive(int(held.get("pid", -1))):
                etag = fs.info(path).get("ETag")
                try:  # replaces exactly the dead run's lock: of two runs taking it over, one wins
                    fs.pipe_file(path, body, IfMatch=etag)
                except (FileExistsError, FileNotFoundError, PermissionError, OSError):
                    continue
                log.warning("%s: taking over the lock of pid %s, which no longer runs", redact_url(self.path),
                            held.get("pid"))
                return
            raise self._refuse(held)
        raise InputError(f"output {redact_url(self.path)!r}: could not take the writer lock {redact_url(path)!r} "
                         "(other runs keep taking and releasing it); retry later")

    def _unlock_object(self, fs: fsspec.AbstractFileSystem, me: Mapping[str, Any]) -> None:
        """Delete the lock if it is still this run's (a lock deleted by hand and taken by another run is kept)."""
        try:
            held = json.loads(fs.cat_file(self.lock_path))
        except (FileNotFoundError, ValueError):
            return
        if held.get("run") == me["run"]:
            fs.rm_file(self.lock_path)
        else:
            log.warning("%s: the writer lock now belongs to run %s (pid %s on %s); left in place",
                        redact_url(self.path), held.get("run"), held.get("pid"), held.get("host"))

    def exists(self) -> bool:
        return self.fs.exists(f"{self.path}/zarr.json")

    def create(self, variables: list[VariableSpec], *, attrs: Mapping[str, Any], fingerprint: str, overwrite: bool = False,
               coords: Mapping[str, Any] | None = None) -> bool:
        """Create the store's metadata (no data), or check an existing one was made with the same fingerprint.

        ``coords`` adds coordinates of the extra dims (e.g. ``{"species": [...]}``) to the grid's.
        Returns True when a new store was created, False when an existing compatible one will be resumed.
        """
        if self.exists() and not overwrite:
            existing = self.read_attrs().get("geosdm:fingerprint")
            if existing != fingerprint:
                raise InputError(
                    f"output {self.path!r} exists and was built from a different configuration or different "
                    f"inputs (fingerprint {existing} != {fingerprint}; inputs are named by content, so a cube rebuilt "
                    "or repaired since counts as different); choose another output path or pass overwrite=True"
                )
            return False
        if overwrite:
            for p in (self.path, self.progress_path):
                if self.fs.exists(p):
                    self.fs.rm(p, recursive=True)
        all_coords = {**grid_coords(self.geobox), **dict(coords or {})}
        ds = xr.Dataset(coords=all_coords, attrs={**attrs, "geosdm:fingerprint": fingerprint})
        ny, nx = self.geobox.shape
        encoding: dict[str, Any] = {}
        for v in variables:
            lead = tuple(n for _, n in v.extra_dims)
            shape = lead + (ny, nx)
            chunks = lead + tuple(self.tile_shape)
            arr = da.full(shape, v.fill_value, dtype=v.dtype, chunks=chunks)
            dims = tuple(d for d, _ in v.extra_dims) + ("y", "x")
            ds[v.name] = xr.DataArray(arr, dims=dims, attrs={**v.attrs, "grid_mapping": "spatial_ref"})
            inner_lead = tuple(v.extra_chunks) if v.extra_chunks is not None else lead
            # the shard spans every layer; rounded up to whole inner chunks (zarr allows a shard past the edge)
            shard_lead = tuple(-(-n // c) * c for n, c in zip(lead, inner_lead))
            encoding[v.name] = {
                "chunks": inner_lead + tuple(self.chunk_shape),  # type: ignore[operator]
                "shards": shard_lead + tuple(self.tile_shape),
                "fill_value": v.fill_value,
            }
            if v.zstd_level is not None:
                from zarr.codecs import ZstdCodec

                encoding[v.name]["compressors"] = (ZstdCodec(level=int(v.zstd_level)),)
        with quiet_zarr():
            ds.to_zarr(
                self.path, mode="w", compute=False, encoding=encoding, zarr_format=3, consolidated=False,
                storage_options=self.storage_options,
            )
        return True

    def read_attrs(self) -> dict[str, Any]:
        with self.fs.open(f"{self.path}/zarr.json", "rb") as f:
            return json.load(f).get("attributes", {})

    def done_tiles(self) -> set[tuple[int, int]]:
        """Tiles whose data are fully written (they have a marker)."""
        return set(marker_files(self.fs, self.progress_path))

    def write_tile(self, index: tuple[int, int], slices: tuple[slice, slice], data: xr.Dataset, info: Mapping[str, Any] | None = None) -> None:
        """Region-write one tile (all variables, one shard each), then its marker."""
        region = {"y": slices[0], "x": slices[1]}
        drop = [c for c in data.coords if c not in data.dims]
        with quiet_zarr():
            data.drop_vars(drop).to_zarr(
                self.path, region=region, mode="r+", zarr_format=3, consolidated=False,
                storage_options=self.storage_options,
            )
        self._mark(index, info)

    def write_arrays(self, index: tuple[int, int], slices: tuple[slice, slice], arrays: Mapping[str, np.ndarray],
                     info: Mapping[str, Any] | None = None) -> None:
        """Region-write already-encoded arrays (extra dims whole, then y, x) straight to Zarr, then the marker.

        Unlike :meth:`write_tile`, values are stored as given (no CF encoding by xarray), so variables whose
        attributes carry ``scale_factor``/``add_offset`` take their packed integers here.
        """
        import zarr

        store = self._zarr_store()
        nonempty = []
        with quiet_zarr():
            for name, data in arrays.items():
                arr = zarr.open_array(store, path=name, mode="r+", zarr_format=3)
                arr[(Ellipsis, slices[0], slices[1])] = data
                if _holds_data(data, arr.fill_value):
                    nonempty.append(name)
        # which shards hold data: Zarr does not store an all-fill shard, so only the marker tells a missing
        # shard (deleted, lost) from an empty one (see missing_shards)
        self._mark(index, {**dict(info or {}), "nonempty": nonempty})

    def _mark(self, index: tuple[int, int], info: Mapping[str, Any] | None) -> None:
        """Write a tile's marker atomically: a kill never leaves a partial marker that a resume would trust.

        Object stores make a PUT visible only when complete; on a file system the marker is written under a
        temporary name (not ``*.json``, so :meth:`done_tiles` ignores it) and renamed.
        """
        fs = self.fs
        fs.makedirs(self.progress_path, exist_ok=True)
        text = json.dumps({"index": list(index), **(dict(info or {}))}, default=str)
        final = self._marker(index)
        if not _is_local(fs):
            with fs.open(final, "w") as f:
                f.write(text)
            return
        tmp = f"{final}.partial-{uuid.uuid4().hex[:8]}"
        with fs.open(tmp, "w") as f:
            f.write(text)
        fs.mv(tmp, final)

    def unmark(self, indices: Sequence[tuple[int, int]]) -> None:
        """Delete the markers of ``indices`` before their tiles are rewritten: a kill during the rewrite then
        leaves them unmarked (rebuilt by the next run), never marked over a half-written shard."""
        paths = [self._marker(tuple(i)) for i in indices]  # type: ignore[arg-type]
        if paths:
            self.fs.rm(paths)

    def tile_infos(self) -> list[dict[str, Any]]:
        """The info dicts written with each tile's marker (failures, gaps), in tile order."""
        return read_markers(self.fs, self.progress_path)

    def finalize(self, attrs: Mapping[str, Any] | None = None) -> None:
        """Add final attributes and write consolidated metadata."""
        import zarr

        with quiet_zarr():
            store = self._zarr_store()
            if attrs:
                group = zarr.open_group(store, mode="r+", zarr_format=3)
                group.attrs.update(json.loads(json.dumps(dict(attrs), default=str)))
            zarr.consolidate_metadata(store)

    def _zarr_store(self) -> Any:
        import zarr

        if "://" in self.path:
            return zarr.storage.FsspecStore.from_url(self.path, storage_options=self.storage_options or {})
        return zarr.storage.LocalStore(self.path)

    def open(self) -> xr.Dataset:
        return open_cube(self.path, storage_options=self.storage_options)


def _holds_data(data: np.ndarray, fill: Any) -> bool:
    """Whether ``data`` has a value other than the array's fill value (NaN fill: any finite value)."""
    a = np.asarray(data)
    if fill is None:
        return bool(a.size)
    if a.dtype.kind == "f" and np.isnan(fill):
        return bool(np.isfinite(a).any())
    return bool((a != fill).any())
