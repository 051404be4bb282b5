"""Write any lazy layer Dataset to a resumable sharded Zarr v3 store, one task and one shard per tile.

Predictions, uncertainty layers, interaction cubes, attribution and extrapolation maps are all Datasets whose
variables are ``(*lead, y, x)`` (e.g. ``(species, y, x)``, ``(edge, y, x)``, ``(variable, y, x)``) on a grid
with an ``odc.geo`` GeoBox, chunked by tile on ``y``/``x`` with the leading dims whole. :func:`write_layers`
is the one writer for them: a :class:`CubeStore` template (shards = tiles, inner chunks of a few layers,
~512 KiB, so a single map reads a small part of each shard), one task per tile that computes the tile's blocks of every variable,
encodes them and region-writes them, then a marker; a rerun writes only the tiles without markers and gives
a store byte-identical to an uninterrupted run. ``uint8`` stores probabilities as ``round(250 p)`` (255 =
nodata) with CF ``scale_factor``/``_FillValue`` so ``xarray.open_zarr`` decodes them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from os import PathLike
from typing import Any, Literal

import dask
import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import xarray as xr

from geosdm._allocator import keep_heap_reuse
from geosdm.errors import GridError, InputError
from geosdm.io.tasks import connect, run_tasks
from geosdm.io.zarr import CubeStore, VariableSpec, fingerprint, open_cube, quiet_zarr

__all__ = ["Dtype", "WriteReport", "write_layers", "open_layers", "encode_probability", "UINT8_SCALE",
           "UINT8_NODATA"]

log = logging.getLogger(__name__)

Dtype = Literal["uint8", "float16", "float32"]
#: uint8 probabilities: ``p = raw * UINT8_SCALE`` for raw in 0..250; 255 is nodata.
UINT8_SCALE = 1.0 / 250.0
UINT8_NODATA = 255
_DTYPES = ("uint8", "float16", "float32")
#: Attributes that describe an encoding, not the values; never copied from an input variable.
_ENCODING_ATTRS = ("scale_factor", "add_offset", "_FillValue", "missing_value", "dtype")


@dataclass
class WriteReport:
    """What a layer write did (also saved as ``<store>.progress/report.json``)."""

    path: str
    layers: int  # maps per tile summed over variables (e.g. species x variables)
    n_tiles: int
    n_resumed: int
    n_empty: int
    valid_fraction: float
    pixels: int
    seconds: float
    fingerprint: str
    tasks_per_tile: float = 0.0  # Dask tasks of the graph (reads, compute, write) / tiles
    model_hash: str = ""  # the model behind the layers, when there is one

    @property
    def species(self) -> int:
        """Layers of the first variable (species for predictions)."""
        return self.layers

    @property
    def pixel_species_per_s(self) -> float:
        """Throughput of this run: pixels written in this run x layers / seconds."""
        done = self.n_tiles - self.n_resumed
        return self.pixels * self.layers * done / max(self.n_tiles, 1) / max(self.seconds, 1e-9)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def encode_probability(p: np.ndarray, dtype: Dtype, *, inplace: bool = False) -> np.ndarray:
    """Pack probabilities for storage: uint8 ``round(250 p)`` with 255 for NaN, or a float cast.

    ``inplace`` reuses ``p`` (float) as scratch space instead of allocating temporaries.
    """
    if dtype == "uint8":
        x = p if inplace and p.dtype.kind == "f" else np.array(p, dtype=np.float32)
        np.multiply(x, np.float32(250.0), out=x)
        np.clip(x, 0.0, 250.0, out=x)
        np.rint(x, out=x)
        np.copyto(x, np.float32(UINT8_NODATA), where=np.isnan(x))
        return x.astype(np.uint8)
    return np.asarray(p, dtype=dtype)


def _checked(ds: xr.Dataset, dtypes: Mapping[str, str] | str,
             tile_shape: tuple[int, int] | None) -> tuple[xr.Dataset, dict[str, Dtype], tuple[int, int]]:
    """Validate the layer Dataset, resolve per-variable dtypes and chunk it by tile (lead dims whole)."""
    if not isinstance(ds, xr.Dataset) or not ds.data_vars:
        raise InputError(f"write_layers needs an xarray.Dataset with data variables, got {type(ds).__name__}")
    bad = {str(n): v.dims for n, v in ds.data_vars.items() if v.dims[-2:] != ("y", "x")}
    if bad:
        raise InputError(f"layer variables must end with dims ('y', 'x'); got {bad}. Transpose them first")
    if ds.odc.geobox is None or ds.odc.geobox.crs is None:
        raise GridError("layers have no georeferencing (spatial_ref / CRS); keep the cube's spatial_ref coordinate")
    names = [str(n) for n in ds.data_vars]
    per = {n: dtypes for n in names} if isinstance(dtypes, str) else {n: str(dtypes.get(n, "float32")) for n in names}
    unknown = [n for n in (dtypes if isinstance(dtypes, Mapping) else {}) if n not in names]
    if unknown:
        raise InputError(f"dtypes names {unknown} that are not variables of the Dataset {names}")
    wrong = {n: d for n, d in per.items() if d not in _DTYPES}
    if wrong:
        raise InputError(f"dtypes {wrong} are not supported; choose from {list(_DTYPES)}")
    if tile_shape is None:
        chunks = ds[names[0]].chunks
        tile_shape = (int(chunks[-2][0]), int(chunks[-1][0])) if chunks else (512, 512)
    ty, tx = (min(int(t), ds.sizes[d]) for t, d in zip(tile_shape, ("y", "x")))
    if ty <= 0 or tx <= 0:
        raise InputError(f"tile_shape must be positive (y, x) pixel counts, got {tile_shape!r}")
    lead = {d: -1 for n in names for d in ds[n].dims[:-2]}
    chunked = ds.chunk({**lead, "y": ty, "x": tx})
    labels = {str(c): ds[c].variable for c in ds.coords if c not in ds.dims}  # keep small coordinates in memory
    return chunked.assign_coords(labels), per, (ty, tx)  # type: ignore[return-value]


#: Target size of an inner chunk: zarr-python costs ~0.3 ms per chunk written, so one-layer chunks of a
#: 256 x 256 uint8 tile (64 KiB) doubled the write time; ~512 KiB chunks keep a single layer's read cheap.
_INNER_CHUNK_BYTES = 512 * 1024
#: Zstandard level 1: as small as the default level within ~15% on probability maps, and faster to write.
_ZSTD_LEVEL = 1


def _layers_per_chunk(n_layers: int, chunk_shape: tuple[int, int], dtype: str) -> int:
    """Layers of the first leading dim per inner chunk: about :data:`_INNER_CHUNK_BYTES` per chunk."""
    per_layer = chunk_shape[0] * chunk_shape[1] * np.dtype(dtype).itemsize
    return int(max(1, min(n_layers, _INNER_CHUNK_BYTES // per_layer)))


def _specs(ds: xr.Dataset, dtypes: Mapping[str, Dtype], chunk_shape: tuple[int, int]) -> list[VariableSpec]:
    specs = []
    for name, var in ds.data_vars.items():
        dtype = dtypes[str(name)]
        attrs = {k: v for k, v in var.attrs.items() if k not in _ENCODING_ATTRS and k != "grid_mapping"}
        fill: float | int = float("nan")
        if dtype == "uint8":
            attrs |= {"scale_factor": UINT8_SCALE, "add_offset": 0.0, "_FillValue": UINT8_NODATA}
            fill = UINT8_NODATA
        lead = tuple((str(d), int(ds.sizes[d])) for d in var.dims[:-2])
        inner = tuple(_layers_per_chunk(n, chunk_shape, dtype) if i == 0 else 1 for i, (_, n) in enumerate(lead))
        specs.append(VariableSpec(str(name), dtype, fill, attrs, lead, extra_chunks=inner, zstd_level=_ZSTD_LEVEL))
    return specs


def _lead_coords(ds: xr.Dataset) -> dict[str, Any]:
    """Coordinates on the leading dims only (labels such as species or edge names), as plain arrays."""
    lead = {d for v in ds.data_vars.values() for d in v.dims[:-2]}
    out: dict[str, Any] = {}
    for name, c in ds.coords.items():
        if c.dims and set(c.dims) <= lead:
            values = np.asarray(c.values)
            out[str(name)] = (c.dims, values.astype(str) if values.dtype.kind in "OU" else values)
    return out


def _write_tile(store: CubeStore, index: tuple[int, int], slices: tuple[slice, slice],
                blocks: Mapping[str, np.ndarray], dtypes: Mapping[str, Dtype], scratch: bool) -> int:
    """Encode one tile's blocks, region-write them (one shard each) and the tile's marker."""
    keep_heap_reuse()  # on Dask workers (see geosdm._allocator)
    first = np.asarray(next(iter(blocks.values())))
    layer0 = first.reshape(-1, *first.shape[-2:])[0] if first.ndim > 2 else first
    n_valid = int((layer0 != UINT8_NODATA).sum() if layer0.dtype == np.uint8 else np.isfinite(layer0).sum())
    arrays = {}
    for name, block in blocks.items():
        dtype = dtypes[name]
        block = np.asarray(block)
        if dtype == "uint8" and block.dtype == np.uint8:  # already packed by the task that computed it
            arrays[name] = block
        else:
            arrays[name] = (encode_probability(block, dtype, inplace=scratch) if dtype == "uint8"
                            else block.astype(dtype, copy=False))
    store.write_arrays(index, slices, arrays, {"n_valid": n_valid})
    return n_valid


def write_layers(
    ds: xr.Dataset,
    path: str | PathLike[str],
    *,
    dtypes: Mapping[str, Dtype] | Dtype = "float32",
    attrs: Mapping[str, Any] | None = None,
    identity: Mapping[str, Any] | None = None,
    tile_shape: tuple[int, int] | None = None,
    chunk_shape: tuple[int, int] | None = None,
    storage_options: dict[str, Any] | None = None,
    client: Any | str | None = None,
    progress: bool = False,
    overwrite: bool = False,
    tiles_per_graph: int = 2_048,
    scratch: bool = False,
    desc: str = "write",
    compute: bool = True,
) -> WriteReport | Any:
    """Write (or resume) the lazy layers ``ds`` as a sharded Zarr v3 store at ``path``, one task per tile.

    Parameters
    ----------
    ds
        Variables on ``(*lead, y, x)`` (or ``(y, x)``) with the grid's ``spatial_ref``; Dask-backed for laziness
        (NumPy-backed data are chunked by ``tile_shape``). Coordinates on the leading dims (species, edge or
        variable names) are stored.
    path
        Output store: local folder or ``s3://...`` URL.
    dtypes
        Per variable (or one for all): ``"uint8"`` (probabilities in [0, 1] packed as 0-250, 255 nodata;
        uint8 blocks are taken as already packed), ``"float16"`` or ``"float32"`` (default).
    attrs
        Store attributes (provenance); ``geosdm:model_hash`` there also fills the report's ``model_hash``.
    identity
        What makes this output what it is (model hash, inputs, settings): with the variables, dtypes and
        tiling it forms the resume fingerprint; a store with another fingerprint is refused. Default: a
        token of ``ds``'s graph.
    tile_shape
        Tile = shard = task (y, x) in cells (default: ``ds``'s chunks).
    chunk_shape
        Inner Zarr chunk (y, x) inside each shard (default: the tile).
    storage_options
        fsspec options for a remote store.
    client
        ``dask.distributed.Client`` or scheduler address: one task per tile on its workers. None: threads here.
    progress
        Progress bar over tiles.
    overwrite
        Delete an existing output first (otherwise a compatible one is resumed).
    tiles_per_graph
        Tiles per Dask graph, so country-scale grids run as a series of bounded graphs.
    scratch
        The blocks are produced for this write alone (nothing else in the graph reads them): encode ``uint8``
        in place instead of allocating a copy.
    desc
        Progress bar label.
    compute
        False: return a ``dask.delayed`` object that writes the missing tiles and finalises when computed.

    Returns
    -------
    WriteReport (Delayed when ``compute=False``).

    Raises
    ------
    InputError
        Bad dims or dtypes, or ``path`` holds a store with another fingerprint.
    GridError
        ``ds`` has no CRS.

    Example
    -------
    >>> write_layers(layers, "interactions.zarr", dtypes="uint8", identity={"model": h})  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    ds, per, tile = _checked(ds, dtypes, tile_shape)
    names = tuple(str(n) for n in ds.data_vars)
    gbox = ds.odc.geobox
    config = {"variables": {n: [list(map(str, ds[n].dims)), list(ds[n].shape), per[n]] for n in names},
              "tile_shape": list(tile), "chunk_shape": list(chunk_shape or tile)}
    fp = fingerprint({"identity": dict(identity) if identity is not None else dask.base.tokenize(ds),
                      "config": config})
    store = CubeStore(str(path), gbox, tile, chunk_shape, storage_options)
    with store.writer():  # one writer per output: a second run waits for none and is refused
        store.create(_specs(ds, per, chunk_shape or tile), attrs={"Conventions": "CF-1.8", **dict(attrs or {}), "geosdm:tile_shape": list(tile)},
                     fingerprint=fp, overwrite=overwrite, coords=_lead_coords(ds))
        ychunks, xchunks = ds.chunks["y"], ds.chunks["x"]
        y0s, x0s = np.cumsum((0, *ychunks)), np.cumsum((0, *xchunks))
        # unoptimised: variables computed by one task (e.g. probability and log-intensity) must keep sharing it
        blocks = {n: ds[n].data.to_delayed(optimize_graph=False) for n in names}  # (1,) * n_lead + (nby, nbx)
        store_key = dask.delayed(store, name=f"geosdm-store-{fp}", traverse=False)
        write = dask.delayed(_write_tile, pure=False)
        done = store.done_tiles()
        nby, nbx = len(ychunks), len(xchunks)
        todo = []
        for iy in range(nby):
            for ix in range(nbx):
                if (iy, ix) in done:
                    continue
                tile_blocks = {n: b.reshape(-1, nby, nbx)[0, iy, ix] for n, b in blocks.items()}
                slices = (slice(int(y0s[iy]), int(y0s[iy + 1])), slice(int(x0s[ix]), int(x0s[ix + 1])))
                todo.append(write(store_key, (iy, ix), slices, tile_blocks, per, scratch,
                                  dask_key_name=f"geosdm-write-{fp}-{iy}-{ix}"))
        n_tasks = len(set().union(*(ds[n].data.__dask_graph__().keys() for n in names)))
        log.info("%s: %d tiles, %d already done", store.path, nby * nbx, len(done))
        layers = sum(int(np.prod(ds[n].shape[:-2])) for n in names)
        meta = {"layers": layers, "n_tiles": nby * nbx, "n_resumed": len(done),
                "pixels": int(gbox.shape[0] * gbox.shape[1]), "fingerprint": fp,
                "model_hash": str((attrs or {}).get("geosdm:model_hash", "")),
                "tasks_per_tile": round(n_tasks / (nby * nbx) + 1, 2)}
        if not compute:
            return dask.delayed(_finish, pure=False)(store, meta, t0, bool(done), *todo)
        with connect(client) as c:
            counts = run_tasks(todo, client=c, progress=progress, total=nby * nbx, initial=len(done), desc=desc,
                               batch=tiles_per_graph)
        return _finish(store, meta, t0, bool(done), *counts)


def _finish(store: CubeStore, meta: Mapping[str, Any], t0: float, resumed: bool, *counts: int) -> WriteReport:
    """Summarise the tiles (valid cells), write the report and the final attributes (consolidated metadata).

    ``counts`` are the valid-cell counts returned by this run's tile tasks; markers are read only on resume.
    """
    valid = [int(c) for c in counts]
    if resumed:
        valid = [int(i.get("n_valid", 0)) for i in store.tile_infos()]
    report = WriteReport(
        path=store.path, n_empty=sum(1 for v in valid if not v),
        valid_fraction=round(sum(valid) / max(int(meta["pixels"]), 1), 6), seconds=round(time.perf_counter() - t0, 3),
        **meta,
    )
    with store.fs.open(f"{store.progress_path}/report.json", "w") as f:
        f.write(report.to_json())
    store.finalize({"geosdm:valid_fraction": report.valid_fraction})
    return report


def open_layers(path: str | PathLike[str], *, storage_options: dict[str, Any] | None = None,
                decode: bool = True) -> xr.Dataset:
    """Open a store written by :func:`write_layers` lazily, one Dask chunk per shard (all layers of a tile).

    ``decode=False`` keeps packed uint8 values (no scaling, no NaN for 255). Decoded uint8 layers are float32
    (plain ``xr.open_zarr`` gives float64: xarray picks the float type from the JSON ``scale_factor``).

    Example
    -------
    >>> open_layers("probability.zarr").probability.sel(species="plant_01")  # doctest: +SKIP
    """
    ds = open_cube(str(path), storage_options=storage_options)
    ty, tx = ds.attrs.get("geosdm:tile_shape") or (ds.sizes["y"], ds.sizes["x"])
    chunks = {str(d): -1 for d in ds.dims if d not in ("y", "x")} | {"y": int(ty), "x": int(tx)}
    with quiet_zarr():
        out = xr.open_zarr(str(path), storage_options=storage_options, zarr_format=3, mask_and_scale=decode,
                           chunks=chunks)
    if decode:  # packed uint8 decodes to float64 in xarray (its CF rule: the JSON scale_factor is a Python float);
        for name, var in out.data_vars.items():  # float32 holds every value of raw * 0.004 (8 bits)
            if var.dtype == np.float64 and var.encoding.get("dtype") == np.uint8:
                out[name] = var.astype(np.float32)
                out[name].encoding = dict(var.encoding)  # how it is stored: still uint8, scaled
    return out
