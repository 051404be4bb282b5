"""What ``MultiSpeciesSDM.save`` writes and ``MultiSpeciesSDM.load`` reads back: a fitted model's state.

:func:`model_state` splits a fitted model into tensors (the network's and the loss's weights, for
safetensors) and a JSON configuration (parameters, network spec, encoders, species, data sets, link,
calibration, training history); :func:`restore_state` puts them back on an unfitted model. No pickle.
Split from ``estimator.py`` (issue 21), which keeps the ``save``/``load`` methods; the folder's files are
written and read by :mod:`geosdm.models.checkpoint`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from geosdm.models.calibrators import SpeciesCalibrator
from geosdm.models.checkpoint import prefixed
from geosdm.models.features import FeatureEncoder
from geosdm.models.losses import IntegratedLoss
from geosdm.models.networks import build_network
from geosdm.models.trainer import TrainResult

if TYPE_CHECKING:  # annotations only: the estimator imports this module, not the other way round
    from geosdm.models.estimator import MultiSpeciesSDM

__all__ = ["model_state", "restore_state"]


def model_state(model: MultiSpeciesSDM) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and JSON configuration of a fitted ``model`` (what its checkpoint folder holds)."""
    tensors = {f"network.{k}": v for k, v in model.network_.state_dict().items()}
    tensors.update({f"loss.{k}": v for k, v in model.loss_.state_dict().items()})
    config = {
        "class": type(model).__name__,
        "params": _jsonable(model.get_params()),
        "network": model.network_spec_,
        "loss": model.loss_.describe(),
        "encoder": model.encoder_.to_dict(),
        "bias_encoder": model.bias_encoder_.to_dict() if model.bias_encoder_ is not None else None,
        "series": model.series_,
        "species": model.species_,
        "datasets": model.datasets_,
        "reference_dataset": model.reference_dataset_,
        "area_unit_m2": model.area_unit_m2_,
        "link": model.link_,
        "calibrated": model.calibrated_,
        "patch": model.patch_,
        "n_sites": model.n_sites_,
        "n_dropped_nan": model.n_dropped_nan_,
        "training": model.training_.to_dict(),
        "training_members": [r.to_dict() for r in model.training_members_],
        "seed": model.seed_,
        "fit_seconds": model.fit_seconds_,
    }
    if getattr(model, "calibrator_", None) is not None:
        config["calibration"] = model.calibrator_.to_dict()
    return tensors, config


def restore_state(model: MultiSpeciesSDM, tensors: Mapping[str, torch.Tensor], cfg: Mapping[str, Any]
                  ) -> MultiSpeciesSDM:
    """Put the state :func:`model_state` gave back on ``model`` (made from ``cfg["params"]``); returns it.

    Raises ``KeyError``, ``TypeError``, ``ValueError`` or ``RuntimeError`` when tensors and configuration do
    not fit together (``MultiSpeciesSDM.load`` names the folder as damaged).
    """
    network = build_network(cfg["network"])
    network.load_state_dict(prefixed(tensors, "network"))
    loss = IntegratedLoss.from_description(cfg["loss"])
    loss.load_state_dict(prefixed(tensors, "loss"))
    model.network_, model.loss_, model.network_spec_ = network.eval(), loss, cfg["network"]
    model.encoder_ = FeatureEncoder.from_dict(cfg["encoder"])
    model.bias_encoder_ = FeatureEncoder.from_dict(cfg["bias_encoder"]) if cfg["bias_encoder"] else None
    model.feature_names_ = list(model.encoder_.columns)
    model.series_, model.species_, model.datasets_ = cfg["series"], cfg["species"], cfg["datasets"]
    model.reference_dataset_, model.area_unit_m2_ = cfg["reference_dataset"], float(cfg["area_unit_m2"])
    model.link_, model.calibrated_, model.patch_ = cfg["link"], bool(cfg["calibrated"]), cfg["patch"]
    model.n_sites_, model.n_dropped_nan_ = int(cfg["n_sites"]), int(cfg["n_dropped_nan"])
    model.training_ = TrainResult(**cfg["training"])
    model.training_members_ = [TrainResult(**r) for r in cfg.get("training_members", [cfg["training"]])]
    model.seed_, model.fit_seconds_ = int(cfg["seed"]), float(cfg["fit_seconds"])
    if cfg.get("calibration"):
        model.calibrator_ = SpeciesCalibrator.from_dict(cfg["calibration"])
    return model


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value

