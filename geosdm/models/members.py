"""Training a ``MultiSpeciesSDM``'s ensemble members on prepared data.

Each member gets its own seed and validation fold and is trained by :func:`geosdm.models.trainer.fit_objective`
(early stopping, checkpoints, optional refit on all sites for the best number of epochs), from batches held on
the device or streamed from a Zarr point store (``streaming=True``: DataLoader workers, DDP ranks). Split from
``estimator.py`` (issue 21): the estimator checks its parameters, prepares the data, chooses the network and
the loss, and assembles the fitted model; this module turns those into trained networks. It takes the
estimator's parameters as ``get_params()`` gives them, so it does not import the estimator.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geosdm.models._prepare import Prepared, _patches_for_rows, validation_mask
from geosdm.models.data import TensorBatches, ZarrSiteDataset, epoch_seed, write_point_store
from geosdm.models.losses import IntegratedLoss
from geosdm.models.networks import build_network
from geosdm.models.trainer import Objective, TrainResult, TrainSettings, fit_objective

__all__ = ["POINT_KEYS", "fit_members"]

log = logging.getLogger("geosdm.models.estimator")  # training progress keeps the logger it had before the split

#: Arrays of the prepared sites written to the point store that ``streaming=True`` reads batches from.
POINT_KEYS = ("tabular", "targets", "dataset", "log_area", "bias", "series")


def fit_members(params: Mapping[str, Any], prep: Prepared, spec: Mapping[str, Any], loss: IntegratedLoss, *,
                fingerprint: str, seed: int, device: torch.device, work: Path, rank_world: tuple[int, int],
                ddp: bool, writer: bool) -> tuple[list[Objective], list[TrainResult]]:
    """Train each ensemble member (own seed and validation fold; optional refit on all sites).

    ``params`` are the estimator's (``MultiSpeciesSDM.get_params()``); ``fingerprint`` names the fit for
    checkpoint resume (each member, and its refit, adds a suffix)."""
    objectives, results = [], []
    for i in range(int(params["n_members"])):
        member_seed = seed if i == 0 else epoch_seed(seed, 0, 1000 + i) % (2**31)
        val = validation_mask(prep.sites, float(params["val_size"] or 0), params["cv_block_size"], member_seed, i)
        common = {"seed": member_seed, "device": device, "work": work, "rank_world": rank_world, "ddp": ddp,
                  "writer": writer}
        objective = _new_objective(spec, loss, member_seed)
        result = _train(params, objective, prep, epochs=int(params["epochs"]), val=val,
                        fingerprint=f"{fingerprint}-{i}", tag=f"-{i}" if i else "", **common)
        if params["refit"] and val is not None:
            best = result
            objective = _new_objective(spec, loss, member_seed)
            result = _train(params, objective, prep, epochs=best.best_epoch + 1, val=None,
                            fingerprint=f"{fingerprint}-{i}-refit", tag=f"-{i}-refit", **common)
            result.best_loss, result.history = best.best_loss, best.history + result.history
        objectives.append(objective)
        results.append(result)
    return objectives, results


def _new_objective(spec: Mapping[str, Any], loss: IntegratedLoss, seed: int) -> Objective:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build_network(spec)
    return Objective(network, IntegratedLoss.from_description(loss.describe()))


def _train(params: Mapping[str, Any], objective: Objective, prep: Prepared, *, seed: int,
           device: torch.device, epochs: int, val: np.ndarray | None, work: Path, fingerprint: str,
           rank_world: tuple[int, int], ddp: bool, tag: str, writer: bool = True) -> TrainResult:
    """Train one network (one member, or its refit) from device-held or streamed batches."""
    rank, world = rank_world
    settings = TrainSettings(
        epochs=epochs, lr=float(params["lr"]), weight_decay=float(params["weight_decay"]),
        input_penalty=float(params["input_penalty"]), patience=int(params["patience"]),
        seed=seed, device=str(device), precision=str(params["precision"]),
        checkpoint_dir=str(work / f"checkpoints{tag}") if (params["checkpoint_every"] or params["resume"]) else None,
        checkpoint_every=int(params["checkpoint_every"]), resume=bool(params["resume"]), fingerprint=fingerprint,
    )
    n = len(prep.sites.frame)
    train_rows = np.ones(n, dtype=bool) if val is None else ~val
    val_bs = max(4096, int(params["batch_size"]))
    if params["streaming"]:
        keys = [k for k in POINT_KEYS if k in prep.arrays]
        points = work / "points.zarr"
        if writer:  # enough chunks for every rank and worker to get several
            chunk = int(np.clip(np.ceil(n / (4 * world * max(1, int(params["num_workers"])))), 256, 8192))
            write_point_store({k: prep.arrays[k] for k in keys}, points, chunk_rows=chunk, overwrite=True)
        if ddp:
            import torch.distributed as dist

            dist.barrier()
        common = {"keys": keys, "patches": prep.patch_store, "patch_mean": prep.patch_mean,
                  "patch_scale": prep.patch_scale}
        train_ds = ZarrSiteDataset(points, rows=train_rows, batch_size=int(params["batch_size"]), seed=seed,
                                   rank=rank, world_size=world, **common)
        loader = torch.utils.data.DataLoader(train_ds, batch_size=None, num_workers=int(params["num_workers"]),
                                             pin_memory=device.type == "cuda")

        def train_batches(epoch: int) -> Any:
            from itertools import islice

            train_ds.set_epoch(epoch)
            return islice(iter(loader), train_ds.batches_per_rank(epoch)) if ddp else iter(loader)

        val_batches = None
        if val is not None:
            val_ds = ZarrSiteDataset(points, rows=val, batch_size=val_bs, shuffle=False, **common)
            val_batches = lambda: iter(val_ds)  # noqa: E731
    else:
        arrays = _in_memory(prep, device)
        tb = TensorBatches({k: v[torch.from_numpy(np.flatnonzero(train_rows)).to(device)] for k, v in arrays.items()},
                           batch_size=int(params["batch_size"]), seed=seed, rank=rank, world_size=world)
        train_batches = tb.epoch
        val_batches = None
        if val is not None:
            vb = TensorBatches({k: v[torch.from_numpy(np.flatnonzero(val)).to(device)] for k, v in arrays.items()},
                               batch_size=val_bs, shuffle=False, drop_last=False)
            val_batches = lambda: vb.epoch(0)  # noqa: E731

    def report(entry: dict[str, float]) -> None:
        if int(entry["epoch"]) % 10 == 0:
            log.info("epoch %d: %s", int(entry["epoch"]), {k: round(v, 5) for k, v in entry.items() if k != "epoch"})

    return fit_objective(objective, train_batches, val_batches, settings, distributed=ddp, on_epoch=report)


def _in_memory(prep: Prepared, device: torch.device) -> dict[str, torch.Tensor]:
    """The prepared arrays (patches normalised) as tensors on ``device``, for :class:`TensorBatches`."""
    arrays = dict(prep.arrays)
    if prep.patch_store is not None:
        p = _patches_for_rows(prep.patch_store)
        arrays["patch"] = np.nan_to_num((p - prep.patch_mean[None, :, None, None])
                                        / prep.patch_scale[None, :, None, None]).astype(np.float32)
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in arrays.items()}
