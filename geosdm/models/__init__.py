"""Multi-species deep SDMs: networks, losses, the ``MultiSpeciesSDM`` estimator, trainer, checkpoints, baselines.

Typical use::

    from geosdm.models import MultiSpeciesSDM
    model = MultiSpeciesSDM(network="mlp", loss="integrated", bias_covariates=["log_bias"], seed=0)
    model.fit(training_table)                    # records + background + covariates (+ fold)
    model.predict(cube)                          # relative intensity (species, y, x)
    model.predict_proba(plots, area=400.0)       # cloglog presence probability for 400 m² plots
    model.save("model/")                         # safetensors + JSON; MultiSpeciesSDM.load("model/")

Importing this package imports torch (the ``geosdm[torch]`` extra); ``import geosdm`` does not.
"""

from __future__ import annotations

from geosdm.models.checkpoint import load_checkpoint, save_checkpoint
from geosdm.models.config import TrainConfig, train_from_config
from geosdm.models.data import TensorBatches, ZarrSiteDataset, write_point_store
from geosdm.models.estimator import MultiSpeciesSDM, UncalibratedWarning, load_model
from geosdm.models.losses import (
    LOSSES,
    IntegratedLoss,
    bce_loss,
    cloglog_loss,
    deepmaxent_loss,
    poisson_loss,
)
from geosdm.models.networks import NETWORKS, AdditiveNetwork, MultimodalFusion, PatchResNet, ResidualMLP, build_network

__all__ = [
    "LOSSES",
    "NETWORKS",
    "AdditiveNetwork",
    "IntegratedLoss",
    "MultiSpeciesSDM",
    "MultimodalFusion",
    "PatchResNet",
    "ResidualMLP",
    "TensorBatches",
    "TrainConfig",
    "UncalibratedWarning",
    "ZarrSiteDataset",
    "bce_loss",
    "build_network",
    "cloglog_loss",
    "deepmaxent_loss",
    "load_checkpoint",
    "load_model",
    "poisson_loss",
    "save_checkpoint",
    "train_from_config",
    "write_point_store",
]
