"""Write predictions to a sharded Zarr v3 store tile by tile, resumable after a kill.

:func:`write_predictions` is :func:`geosdm.predict.predict` written with the one layer writer,
:func:`geosdm.io.write_layers`: one shard per tile (= one Dask chunk of the prediction), inner chunks of a
few species (~512 KiB) so a single species map reads a small part of each shard. Probabilities are stored as ``uint8``
(``round(250 p)``, 255 = nodata) with CF ``scale_factor``/``add_offset``/``_FillValue`` so ``xarray.open_zarr``
decodes them, or as float16/float32 on request. A rerun writes only the tiles without markers and gives a
store byte-identical to an uninterrupted run. Attributes record the model hash, the cube and the settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any

import dask
import xarray as xr

from geosdm.errors import InputError
from geosdm.io.layers import UINT8_NODATA, UINT8_SCALE, Dtype, WriteReport, encode_probability, open_layers, write_layers
from geosdm.predict.model import as_model, model_inputs, model_summary
from geosdm.predict.lazy import predict

if TYPE_CHECKING:
    from geosdm.models import MultiSpeciesSDM

__all__ = ["WriteReport", "write_predictions", "open_predictions", "encode_probability", "UINT8_SCALE", "UINT8_NODATA"]


def cube_identity(cube: Any, attrs: Mapping[str, Any], variables: Sequence[str],
                  storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What identifies the input cube in a resume fingerprint: its content, not its path.

    For a store: its build fingerprint and :func:`geosdm.io.zarr.content_identity` of the ``variables`` read
    (their metadata, tile markers and shard objects' sizes and ETags/modification times), so a cube rebuilt or
    repaired at the same path is a different input (resume refuses to mix old tiles with new ones), and the
    same cube reached by another path or URL is the same one. For an in-memory Dataset: a token of it.
    """
    fp = attrs.get("geosdm:cube_fingerprint")
    if isinstance(cube, xr.Dataset):
        return {"dataset": fp or dask.base.tokenize(cube)}
    from geosdm.io.zarr import content_identity

    return {"fingerprint": fp, **content_identity(str(cube), variables, storage_options=storage_options)}


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
    batch_size: int = 4_096,
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
    if dtype not in ("uint8", "float16", "float32"):
        raise InputError(f"dtype={dtype!r} is not supported; choose 'uint8' (scaled), 'float16' or 'float32'")
    m = as_model(model)
    ds = predict(m, cube, area=area, log_intensity=log_intensity, tile_shape=tile_shape,
                 storage_options=cube_storage_options, batch_size=batch_size, packed=dtype == "uint8")
    tile = (int(ds.chunks["y"][0]), int(ds.chunks["x"][0]))
    area_m2 = float(ds.attrs["geosdm:area_m2"])
    config = {"dtype": dtype, "area_m2": area_m2, "log_intensity": bool(log_intensity), "tile_shape": list(tile),
              "chunk_shape": list(chunk_shape or tile), "link": ds.attrs["geosdm:link"]}
    cube_id = cube_identity(cube, ds.attrs, model_inputs(m).variables, cube_storage_options)
    summary = model_summary(m)
    attrs = {
        "title": "geosdm species distribution predictions",
        "geosdm:model_hash": ds.attrs["geosdm:model_hash"],
        "geosdm:model": {k: summary[k] for k in ("class", "network", "loss", "link", "calibrated", "area_unit_m2",
                                                 "feature_names")},
        "geosdm:model_path": str(model) if isinstance(model, (str, PathLike)) else None,
        "geosdm:cube": {"path": str(cube) if not isinstance(cube, xr.Dataset) else None, **cube_id},
        "geosdm:config": config,
        "geosdm:calibration": ds.attrs.get("geosdm:calibration") or (
            "none (fitted on presence/absence or count surveys)" if summary["calibrated"]
            else "none (presence-only: relative)"),
    }
    if ds.attrs.get("geosdm:period"):  # the covariates' dates, for the STAC Item (not part of the resume identity)
        attrs["geosdm:period"] = ds.attrs["geosdm:period"]
    ds["probability"].attrs["geosdm:area_m2"] = area_m2
    dtypes: dict[str, Dtype] = {"probability": dtype, "log_intensity": "float16" if dtype == "float16" else "float32"}
    return write_layers(
        ds, path, dtypes={n: dtypes[str(n)] for n in ds.data_vars}, attrs=attrs,
        identity={"model": ds.attrs["geosdm:model_hash"], "cube": cube_id, "config": config},
        chunk_shape=chunk_shape, storage_options=storage_options, client=client, progress=progress,
        overwrite=overwrite, tiles_per_graph=tiles_per_graph, scratch=True, desc="predict", compute=compute,
    )


def open_predictions(path: str | PathLike[str], *, storage_options: dict[str, Any] | None = None,
                     decode: bool = True) -> xr.Dataset:
    """Open a prediction store lazily, one Dask chunk per shard (all species of a tile).

    ``decode=False`` keeps the packed uint8 values (no scaling, no NaN for 255).

    Example
    -------
    >>> open_predictions("probability.zarr").probability.sel(species="plant_01")  # doctest: +SKIP
    """
    return open_layers(path, storage_options=storage_options, decode=decode)
