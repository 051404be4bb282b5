"""What a cube store's build wrote, and whether it is all still there.

Each finished tile leaves a marker in ``<store>.progress/`` (written by :class:`geosdm.io.zarr.CubeStore`) that
lists the variables holding data there. Read back, the markers tell a lost shard (deleted, dropped in a copy)
from one never written (Zarr stores no all-fill shard): :func:`missing_shards` and :func:`check_shards` refuse a
cube with holes before anything reads NaN from it. :func:`content_identity` names a store by what it holds (its
metadata, markers and objects' versions), not by where it is, and :func:`fingerprint` hashes a build's
description: together they decide whether a rerun may resume. Split from ``geosdm/io/zarr.py`` (issue 21): this
module lists and hashes stores, it never writes them; ``geosdm.io.zarr`` re-exports its public names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import fsspec

from geosdm._secrets import redact_url
from geosdm.errors import DataSourceError

__all__ = ["check_shards", "content_identity", "fingerprint", "marker_files", "missing_shards", "read_markers"]


def marker_files(fs: fsspec.AbstractFileSystem, progress: str) -> dict[tuple[int, int], str]:
    """Tile index -> marker path, for the tiles of a store whose progress folder is ``progress``."""
    if not fs.exists(progress):
        return {}
    out = {}
    for p in fs.ls(progress, detail=False):
        name = str(p).rsplit("/", 1)[-1]
        if name.startswith("tile_") and name.endswith(".json"):
            _, iy, ix = name[:-5].split("_")
            out[(int(iy), int(ix))] = str(p)
    return out


def read_markers(fs: fsspec.AbstractFileSystem, progress: str) -> list[dict[str, Any]]:
    """The info dicts of every tile marker under ``progress``, in tile order (fetched concurrently)."""
    files = marker_files(fs, progress)
    if not files:
        return []
    raw = fs.cat([files[k] for k in sorted(files)])  # one batch of GETs on object stores
    return [json.loads(raw[files[k]]) for k in sorted(files)]


def _shard_check(path: str, variables: Sequence[str], storage_options: Mapping[str, Any] | None
                 ) -> tuple[list[tuple[str, tuple[int, int]]], set[tuple[int, int]], list[str]]:
    """(lost (variable, tile) pairs, tiles whose markers do not list their variables, variables with no folder)."""
    fs, root = fsspec.core.url_to_fs(str(path).rstrip("/"), **dict(storage_options or {}))
    names = [str(v) for v in dict.fromkeys(variables)]
    expected: dict[str, list[tuple[int, int]]] = {v: [] for v in names}
    unlisted: set[tuple[int, int]] = set()
    for info in read_markers(fs, root + ".progress"):
        tile = (int(info["index"][0]), int(info["index"][1]))
        if "nonempty" not in info:  # written before markers listed their variables: any of them may be lost
            unlisted.add(tile)
        for v in (names if "nonempty" not in info else info["nonempty"]):
            if v in expected:
                expected[v].append(tile)
    missing: list[tuple[str, tuple[int, int]]] = []
    gone: list[str] = []
    for v in names:
        tiles = expected[v]
        if not tiles:  # no marker says it holds data; a variable without its folder is still lost
            if not fs.exists(f"{root}/{v}"):
                gone.append(v)
            continue
        base = f"{root}/{v}/c"
        have = {"/".join(str(k).rsplit("/", 2)[-2:]) for k in fs.find(base)} if fs.exists(base) else set()
        missing += [(v, t) for t in sorted(tiles) if f"{t[0]}/{t[1]}" not in have]
    return missing, unlisted, gone


def missing_shards(path: str, variables: Sequence[str], *,
                   storage_options: Mapping[str, Any] | None = None) -> list[tuple[str, tuple[int, int]]]:
    """(variable, tile) pairs whose shard a tile's marker says was written with data but that the store lacks.

    Reading such a shard would silently give the fill value (NaN: a hole in every map made from it). A marker
    written before markers listed their variables (no ``nonempty``) expects a shard of every variable: Zarr
    stores no all-fill shard, so such a tile's missing shard may be lost or may never have held data, and only
    rebuilding the tile (its new marker lists them) tells. Stores without markers are not checked here (see
    :func:`check_shards`).
    """
    return _shard_check(path, variables, storage_options)[0]


def check_shards(path: str, variables: Sequence[str], *, storage_options: Mapping[str, Any] | None = None,
                 reading: str = "predicting would leave holes there") -> None:
    """Refuse a store whose ``variables`` lost shards (:func:`missing_shards`) or their whole folder (deleted
    while consolidated metadata still lists them): reading them would give NaN, a silent hole.

    ``reading`` says what the caller would do with the NaN (it ends the first sentence of the message).

    Raises
    ------
    DataSourceError
        Naming the cube, the variables, the first tile and the marker to delete to rebuild it.
    """
    lost, unlisted, gone = _shard_check(path, variables, storage_options)
    where = redact_url(str(path))
    if lost:
        names = sorted({v for v, _ in lost})
        v, (iy, ix) = lost[0]
        old = sorted({t for _, t in lost} & unlisted)
        note = (f" The markers of {len(old)} of these tiles (first: {old[0][0]}, {old[0][1]}) predate the list of "
                "variables holding data, so a shard never written there (a tile where the variable is all NaN, "
                "e.g. sea) cannot be told from a lost one: rebuilding those tiles writes markers that say."
                if old else "")
        raise DataSourceError(
            f"cube {where!r} lacks {len(lost)} shard(s) its build wrote, of {names} (first: {v!r} tile {iy}, {ix}: "
            f"{where}/{v}/c/{iy}/{ix}); {reading}. Rebuild those tiles: delete "
            f"{where}.progress/tile_{iy:04d}_{ix:04d}.json (and the other lost tiles' markers) and rerun "
            f"'geosdm cube build', or rebuild with --overwrite.{note}"
        )
    if gone:
        raise DataSourceError(
            f"cube {where!r} lacks the folder of variable(s) {gone} ({where}/{gone[0]}/), which its metadata still "
            f"list; {reading}. Rebuild the cube (--overwrite) or restore the folder"
        )


#: Listing fields that change when an object's bytes change (object stores' ETag/MD5; a local file's mtime).
_VERSION_FIELDS = ("ETag", "etag", "md5Hash", "content_md5", "mtime", "LastModified", "last_modified")


def content_identity(path: str, variables: Sequence[str], *,
                     storage_options: Mapping[str, Any] | None = None) -> dict[str, str]:
    """What the ``variables`` of a Zarr store hold, independent of where the store is (for resume fingerprints).

    Three short hashes: ``metadata`` of each variable's ``zarr.json`` (dtype, shape, codecs, attributes),
    ``tiles`` of the tile markers in ``<store>.progress/`` (what each tile was built from, its failed Items;
    empty without markers) and ``objects`` of every chunk/shard object of the variables: its key, size and
    version (ETag on object stores, modification time on local disks). Rebuilding or repairing a tile, deleting
    or truncating a shard, changes it; moving the store (with its ``.progress`` folder) or reaching it by
    another URL does not. A copy that does not keep modification times counts as changed (safe: the
    output is recomputed, never mixed). Where the store cannot be listed (plain HTTP), ``objects`` is
    ``"unlisted"``.
    """
    fs, root = fsspec.core.url_to_fs(str(path).rstrip("/"), **dict(storage_options or {}))
    for folder in (root, root + ".progress"):  # another process may have rebuilt tiles since this one listed them
        fs.invalidate_cache(folder)
    names = list(dict.fromkeys(str(v) for v in variables))
    metas = fs.cat([f"{root}/{v}/zarr.json" for v in names], on_error="return")
    meta = hashlib.sha256()
    for v in names:
        raw = metas.get(f"{root}/{v}/zarr.json")
        meta.update(f"{v}\0".encode() + (raw if isinstance(raw, bytes) else b"<missing>") + b"\0")
    tiles = hashlib.sha256()
    files = marker_files(fs, root + ".progress")
    if files:
        raw_markers = fs.cat([files[k] for k in sorted(files)])
        for k in sorted(files):
            tiles.update(f"{k}\0".encode() + raw_markers[files[k]] + b"\0")
    objects = hashlib.sha256()
    try:
        for v in names:
            base = f"{root}/{v}"
            listing = fs.find(base, detail=True) if fs.exists(base) else {}
            for key in sorted(listing):
                info = listing[key]
                rel = str(key)[len(root):].lstrip("/")
                if rel.endswith("zarr.json"):
                    continue  # hashed by content above
                version = next((info[f] for f in _VERSION_FIELDS if info.get(f) is not None), "")
                objects.update(f"{rel}\0{info.get('size')}\0{version}\0".encode())
        listed = objects.hexdigest()[:16]
    except (NotImplementedError, OSError, ValueError):
        listed = "unlisted"
    return {"metadata": meta.hexdigest()[:16], "tiles": tiles.hexdigest()[:16] if files else "",
            "objects": listed}


def fingerprint(obj: Any) -> str:
    """Stable short hash of a JSON-able description (configuration + inputs) of a build."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
