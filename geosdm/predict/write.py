"""Write predictions to a sharded Zarr v3 store tile by tile, resumable after a kill.

The store is a :class:`geosdm.io.CubeStore`: one shard per tile (= one Dask chunk of :func:`predict`), inner
chunks one species wide so a single species map reads 1/S of each shard. Probabilities are stored as
``uint8`` (``round(250 p)``, 255 = nodata) with CF ``scale_factor``/``add_offset``/``_FillValue`` so
``xarray.open_zarr`` decodes them, or as float16/float32 on request. Each tile task predicts, encodes and
region-writes its shard, then writes its marker; a rerun writes only the tiles without markers and gives a
store byte-identical to an uninterrupted run. Attributes record the model hash, the cube and the settings.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any, Literal

import dask
import dask.array as da
import numpy as np
import xarray as xr

from geosdm.errors import InputError
from geosdm.io.zarr import CubeStore, VariableSpec, fingerprint, open_cube
from geosdm.predict._model import as_model, model_summary
from geosdm.predict._tasks import connect, run_tasks
from geosdm.predict.lazy import predict

if TYPE_CHECKING:
    from geosdm.models import MultiSpeciesSDM

__all__ = ["WriteReport", "write_predictions", "open_predictions", "encode_probability", "UINT8_SCALE", "UINT8_NODATA"]

log = logging.getLogger(__name__)

Dtype = Literal["uint8", "float16", "float32"]
#: uint8 probabilities: ``p = raw * UINT8_SCALE`` for raw in 0..250; 255 is nodata.
UINT8_SCALE = 1.0 / 250.0
UINT8_NODATA = 255


@dataclass
class WriteReport:
    """What a prediction write did (also in ``<store>.progress/report.json``)."""

    path: str
    species: int
    n_tiles: int
    n_resumed: int
    n_empty: int
    valid_fraction: float
    pixels: int
    seconds: float
    model_hash: str
    fingerprint: str
    tasks_per_tile: float = 0.0  # Dask tasks of the optimised graph (reads, inference, write) / tiles

    @property
    def pixel_species_per_s(self) -> float:
        """Throughput of this run: (pixels written in this run) x species / seconds."""
        done = self.n_tiles - self.n_resumed
        return self.pixels * self.species * done / max(self.n_tiles, 1) / max(self.seconds, 1e-9)

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
        np.nan_to_num(x, copy=False, nan=UINT8_NODATA)
        return x.astype(np.uint8)
    return np.asarray(p, dtype=dtype)


def _specs(n_species: int, dtype: Dtype, log_intensity: bool, area_m2: float) -> list[VariableSpec]:
    lead = (("species", n_species),)
    attrs: dict[str, Any] = {"long_name": f"presence probability over {area_m2:g} m2", "units": "1",
                             "geosdm:area_m2": area_m2}
    if dtype == "uint8":
        attrs |= {"scale_factor": UINT8_SCALE, "add_offset": 0.0, "_FillValue": UINT8_NODATA}
        fill: float | int = UINT8_NODATA
    else:
        fill = float("nan")
    specs = [VariableSpec("probability", dtype, fill, attrs, lead, extra_chunks=(1,))]
    if log_intensity:
        specs.append(VariableSpec("log_intensity", "float16" if dtype == "float16" else "float32", float("nan"),
                                  {"long_name": "log relative intensity", "units": "1"}, lead, extra_chunks=(1,)))
    return specs


def _write_block(store: CubeStore, *blocks: np.ndarray, names: tuple[str, ...], store_dtype: Dtype,
                 block_info: dict[Any, Any] | None = None) -> np.ndarray:
    """Encode one tile's blocks, region-write them (one shard each) and the tile's marker."""
    dtype = store_dtype
    info = block_info[min(k for k in block_info if k is not None)]  # type: ignore[union-attr]  # first array input
    loc, index = info["array-location"], tuple(info["chunk-location"][1:])
    slices = (slice(*loc[1]), slice(*loc[2]))
    arrays: dict[str, np.ndarray] = {}
    first = blocks[0][0] if blocks[0].shape[0] else blocks[0]
    n_valid = int(np.isfinite(first).sum())
    for name, block in zip(names, blocks):  # probability blocks belong to this graph alone: encode in place
        arrays[name] = encode_probability(block, dtype, inplace=True) if name == "probability" else block.astype(
            "float16" if dtype == "float16" else "float32")
    store.write_arrays(index, slices, arrays, {"n_valid": n_valid})  # type: ignore[arg-type]
    return np.array([[n_valid]], dtype=np.int64)


def _cube_identity(cube: Any, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies the input cube in the resume fingerprint: its path and build fingerprint, or a token."""
    fp = attrs.get("geosdm:cube_fingerprint")
    if isinstance(cube, xr.Dataset):
        return {"dataset": fp or dask.base.tokenize(cube)}
    return {"path": str(cube), "fingerprint": fp}


def write_predictions(
    model: MultiSpeciesSDM | str | PathLike[str],
    cube: xr.Dataset | str | PathLike[str],
    path: str | PathLike[str],
    *,
    dtype: Dtype = "uint8",
    area: float | None = None,
    log_intensity: bool = False,
    tile_shape: tuple[int, int] | None = None,
    chunk_shape: tuple[int, int] | None = None,
    storage_options: dict[str, Any] | None = None,
    cube_storage_options: dict[str, Any] | None = None,
    client: Any | str | None = None,
    progress: bool = False,
    overwrite: bool = False,
    batch_size: int = 8_192,
    tiles_per_graph: int = 2_048,
    compute: bool = True,
) -> WriteReport | Any:
    """Predict ``model`` over ``cube`` and write (or resume) the probability cube at ``path``.

    Parameters
    ----------
    model, cube, area, log_intensity, tile_shape, batch_size
        As in :func:`geosdm.predict.predict`; ``tile_shape`` is also the Zarr shard shape.
    path
        Output Zarr store: local folder or ``s3://...`` URL.
    dtype
        ``"uint8"`` (scaled 0-250, 255 nodata), ``"float16"`` or ``"float32"`` for probabilities.
    chunk_shape
        Inner Zarr chunk (y, x) inside each shard (default: the tile).
    storage_options, cube_storage_options
        fsspec options for the output and for a remote cube.
    client
        ``dask.distributed.Client`` or scheduler address: one task per tile on its workers. None: threads here.
    progress
        Show a progress bar over tiles.
    overwrite
        Delete an existing output first (otherwise a compatible one is resumed; a different one is refused).
    tiles_per_graph
        Tiles computed per Dask graph (about 3 tasks each), so country-scale grids run as a series of
        bounded graphs.
    compute
        False: return a ``dask.delayed`` object that writes the missing tiles and finalises when computed.

    Returns
    -------
    WriteReport (or Delayed when ``compute=False``).

    Raises
    ------
    InputError
        Bad ``dtype``, or ``path`` holds an output of another model/cube/configuration.

    Example
    -------
    >>> write_predictions("model/", "cube.zarr", "probability.zarr", area=400.0, progress=True)  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    if dtype not in ("uint8", "float16", "float32"):
        raise InputError(f"dtype={dtype!r} is not supported; choose 'uint8' (scaled), 'float16' or 'float32'")
    m = as_model(model)
    ds = predict(m, cube, area=area, log_intensity=log_intensity, tile_shape=tile_shape,
                 storage_options=cube_storage_options, batch_size=batch_size)
    gbox = ds.odc.geobox
    tile = (int(ds.chunks["y"][0]), int(ds.chunks["x"][0]))
    area_m2 = float(ds.attrs["geosdm:area_m2"])
    config = {"dtype": dtype, "area_m2": area_m2, "log_intensity": bool(log_intensity), "tile_shape": list(tile),
              "chunk_shape": list(chunk_shape or tile), "link": ds.attrs["geosdm:link"]}
    cube_id = _cube_identity(cube, ds.attrs)
    fp = fingerprint({"model": ds.attrs["geosdm:model_hash"], "cube": cube_id, "config": config})
    summary = model_summary(m)
    attrs = {
        "title": "geosdm species distribution predictions",
        "Conventions": "CF-1.8",
        "geosdm:model_hash": ds.attrs["geosdm:model_hash"],
        "geosdm:model": {k: summary[k] for k in ("class", "network", "loss", "link", "calibrated", "area_unit_m2",
                                                 "feature_names")},
        "geosdm:model_path": str(model) if isinstance(model, (str, PathLike)) else None,
        "geosdm:cube": cube_id,
        "geosdm:config": config,
        "geosdm:tile_shape": list(tile),
    }
    store = CubeStore(str(path), gbox, tile, chunk_shape, storage_options)
    store.create(_specs(len(m.species_), dtype, log_intensity, area_m2), attrs=attrs, fingerprint=fp,
                 overwrite=overwrite, coords={"species": np.asarray(m.species_, dtype=str)})
    names = tuple(str(n) for n in ds.data_vars)
    nby, nbx = len(ds.chunks["y"]), len(ds.chunks["x"])
    written = da.map_blocks(
        _write_block, dask.delayed(store, name=f"geosdm-store-{fp}", traverse=False),
        *[ds[n].data for n in names], names=names, store_dtype=dtype, dtype=np.int64, drop_axis=0,
        chunks=((1,) * nby, (1,) * nbx), name=f"geosdm-write-{fp}",
    )
    done = store.done_tiles()
    per_tile = written.to_delayed()
    tasks_per_tile = len(per_tile.flat[0].dask) / (nby * nbx)
    todo = [per_tile[iy, ix] for iy in range(nby) for ix in range(nbx) if (iy, ix) not in done]
    log.info("predictions %s: %d tiles, %d already done", store.path, nby * nbx, len(done))
    pixels = int(gbox.shape[0] * gbox.shape[1])

    meta = {"species": len(m.species_), "n_tiles": nby * nbx, "n_resumed": len(done), "pixels": pixels,
            "model_hash": ds.attrs["geosdm:model_hash"], "fingerprint": fp, "tasks_per_tile": round(tasks_per_tile, 2)}
    if not compute:
        return dask.delayed(_finish, pure=False)(store, meta, t0, bool(done), *todo)
    with connect(client) as c:
        counts = run_tasks(todo, client=c, progress=progress, total=nby * nbx, initial=len(done), desc="predict",
                           batch=tiles_per_graph)
    return _finish(store, meta, t0, bool(done), *counts)


def _finish(store: CubeStore, meta: Mapping[str, Any], t0: float, resumed: bool, *counts: np.ndarray) -> WriteReport:
    """Summarise the tiles (valid cells), write the report and the final attributes (consolidated metadata).

    ``counts`` are the valid-cell counts returned by this run's tile tasks; markers are read only on resume.
    """
    valid = [int(np.asarray(c).sum()) for c in counts]
    if resumed:
        valid = [int(i.get("n_valid", 0)) for i in store.tile_infos()]
    n_valid = sum(valid)
    report = WriteReport(
        path=store.path, n_empty=sum(1 for v in valid if not v),
        valid_fraction=round(n_valid / max(int(meta["pixels"]), 1), 6), seconds=round(time.perf_counter() - t0, 3),
        **meta,
    )
    with store.fs.open(f"{store.progress_path}/report.json", "w") as f:
        f.write(report.to_json())
    store.finalize({"geosdm:valid_fraction": report.valid_fraction})
    return report


def open_predictions(path: str | PathLike[str], *, storage_options: dict[str, Any] | None = None,
                     decode: bool = True) -> xr.Dataset:
    """Open a prediction store lazily, one Dask chunk per shard (all species of a tile).

    ``decode=False`` keeps the packed uint8 values (no scaling, no NaN for 255).

    Example
    -------
    >>> open_predictions("probability.zarr").probability.sel(species="plant_01")  # doctest: +SKIP
    """
    from geosdm.io.zarr import quiet_zarr

    ds = open_cube(str(path), storage_options=storage_options)
    ty, tx = ds.attrs.get("geosdm:tile_shape") or (ds.sizes["y"], ds.sizes["x"])
    chunks = {"species": -1, "y": int(ty), "x": int(tx)}
    with quiet_zarr():
        return xr.open_zarr(str(path), storage_options=storage_options, zarr_format=3, mask_and_scale=decode,
                            chunks=chunks)
