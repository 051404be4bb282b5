"""Prediction: lazy probability cubes from a fitted model, written to sharded Zarr, COGs and STAC.

Typical use::

    from geosdm.predict import predict, write_predictions, export_cogs, write_stac
    out = predict(model, "cube.zarr", area=400.0)             # lazy (species, y, x) Dataset
    write_predictions(model, "cube.zarr", "prob.zarr")        # resumable uint8 Zarr v3, one shard per tile
    cogs = export_cogs("prob.zarr", "cogs/")                  # per-species + multi-band COGs with overviews
    write_stac("prob.zarr", cogs, "stac/", collection_id="sdm")  # relative hrefs: the folder can move
    items = read_items("stac/")                               # for odc.stac.load / stackstac.stack

or, for a whole step, :func:`run_prediction` with a :class:`PredictConfig`. Importing this package does not
import torch; the model does when loaded.
"""

from __future__ import annotations

from geosdm.predict.model import model_fingerprint
from geosdm.predict.cog import CogOutput, export_cogs
from geosdm.predict.lazy import predict
from geosdm.predict.run import PredictConfig, PredictionReport, run_prediction
from geosdm.predict.stac import (
    StacOutput,
    covariate_period,
    prediction_collection,
    prediction_item,
    read_items,
    write_stac,
)
from geosdm.predict.write import WriteReport, encode_probability, open_predictions, write_predictions

__all__ = [
    "CogOutput",
    "PredictConfig",
    "PredictionReport",
    "StacOutput",
    "WriteReport",
    "covariate_period",
    "encode_probability",
    "export_cogs",
    "model_fingerprint",
    "open_predictions",
    "predict",
    "prediction_collection",
    "prediction_item",
    "read_items",
    "run_prediction",
    "write_predictions",
    "write_stac",
]
