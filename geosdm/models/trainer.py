"""The training loop: AdamW, early stopping on a validation loss, checkpoints and exact resume, AMP, DDP.

The trainer only trains: it gets an *objective* (network + loss in one module), a function giving each
epoch's training batches and one giving the validation batches. Randomness is reseeded from
``(seed, epoch)`` at each epoch, so a run resumed from a checkpoint continues exactly like an uninterrupted
one; the global torch RNG is restored on exit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from geosdm.errors import InputError
from geosdm.models.checkpoint import (
    complete_checkpoint,
    flatten_optimizer,
    load_checkpoint,
    prefixed,
    save_checkpoint,
    unflatten_optimizer,
)
from geosdm.models.data import epoch_seed
from geosdm.models.networks import input_weight

__all__ = ["Objective", "TrainResult", "TrainSettings", "fit_objective", "resolve_device", "threads"]

log = logging.getLogger(__name__)
Batch = Mapping[str, Tensor]


class Objective(nn.Module):
    """Network and loss in one module (one DDP wrapper; the loss may hold intercepts and bias terms)."""

    def __init__(self, network: nn.Module, loss: nn.Module) -> None:
        super().__init__()
        self.network, self.loss = network, loss

    def forward(self, batch: Batch) -> Tensor:
        return self.loss(self.network(batch), batch)


@dataclass(frozen=True)
class TrainSettings:
    """What the loop needs; see ``MultiSpeciesSDM`` for the meaning of each value."""

    epochs: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    input_penalty: float = 0.0  # group lasso on the first layer's weights of each input (0: off)
    patience: int = 10
    min_delta: float = 0.0
    seed: int = 0
    device: str = "cpu"
    precision: str = "32"  # "32", "bf16" or "16" (autocast; CUDA only)
    grad_clip: float | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    resume: bool = False
    fingerprint: str = ""
    max_batches: int | None = None  # per epoch (DDP ranks must take the same number of steps)


@dataclass
class TrainResult:
    """What happened: per-epoch history, best epoch, early stop, the epoch a resume started from."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_loss: float = math.inf
    epochs_run: int = 0
    stopped_early: bool = False
    resumed_from: int | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the local rank's CUDA device when available, else CPU; otherwise ``torch.device(device)``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            import os

            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"device={device!r} is not a torch device; use 'auto', 'cpu' or 'cuda[:i]'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={device!r} but CUDA is not available here; use device='auto' or 'cpu'")
    return dev


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: full precision)."""
    if precision in ("auto",):
        return torch.bfloat16 if device.type == "cuda" else None
    if precision == "32":
        return None
    if precision in ("bf16", "16"):
        if device.type != "cuda":
            return None  # CPU autocast brings no speed for these small networks
        return torch.bfloat16 if precision == "bf16" else torch.float16
    raise InputError(f"precision={precision!r} must be 'auto', '32', 'bf16' or '16'")


@contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Set torch's intra-op threads for the block and restore them (1 was 20x faster on 2-core VMs)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _to(batch: Batch, device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _evaluate(model: nn.Module, batches: Iterable[Batch], device: torch.device, amp: torch.dtype | None) -> float:
    """Mean validation loss per entry, weighting batches by their rows."""
    total, rows = 0.0, 0
    model.eval()
    with torch.no_grad():
        for batch in batches:
            b = _to(batch, device)
            n = int(next(iter(b.values())).shape[0])
            ctx = torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()
            with ctx:
                loss = model(b)
            total += float(loss) * n
            rows += n
    return total / max(rows, 1)


def _save(path: Path, objective: nn.Module, optimizer: torch.optim.Optimizer, best: dict[str, Tensor] | None,
          result: TrainResult, bad_epochs: int, settings: TrainSettings, scaler_state: dict[str, Any] | None) -> None:
    tensors = {f"objective.{k}": v for k, v in objective.state_dict().items()}
    if best is not None:
        tensors.update({f"best.{k}": v for k, v in best.items()})
    opt_tensors, opt_meta = flatten_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    save_checkpoint(path, tensors, {
        "kind": "training-state", "fingerprint": settings.fingerprint, "result": result.to_dict(),
        "bad_epochs": bad_epochs, "optimizer": opt_meta, "scaler": scaler_state,
    })


def fit_objective(objective: Objective, train_batches: Callable[[int], Iterable[Batch]],
                  val_batches: Callable[[], Iterable[Batch]] | None, settings: TrainSettings, *,
                  distributed: bool = False, on_epoch: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
    """Train ``objective`` in place and leave it with the best (lowest validation loss) weights, on CPU.

    Parameters
    ----------
    objective
        Network + loss; moved to ``settings.device`` for training and back to CPU at the end.
    train_batches
        ``epoch -> iterable of batches`` (already sharded per rank when ``distributed``).
    val_batches
        ``() -> iterable of batches`` or None (no early stopping: the last epoch is kept).
    settings
        Epochs, optimiser, early stopping, device/precision, checkpointing.
    distributed
        Wrap in DistributedDataParallel (the process group must exist).
    on_epoch
        Called with each epoch's history entry (progress reporting).

    Returns
    -------
    TrainResult
    """
    device = torch.device(settings.device)
    amp = autocast_dtype(settings.precision, device)
    objective.to(device)
    # intercepts and bias coefficients are a few scalars with noisy gradients: a 10x step, no weight decay
    head = list(objective.loss.parameters())
    head_ids = {id(p) for p in head}
    body = [p for p in objective.parameters() if id(p) not in head_ids]
    optimizer = torch.optim.AdamW([{"params": body}, {"params": head, "lr": settings.lr * 10, "weight_decay": 0.0}],
                                  lr=settings.lr, weight_decay=settings.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    result, best, bad_epochs, start = TrainResult(), None, 0, 0
    ckpt = Path(settings.checkpoint_dir) / "last" if settings.checkpoint_dir else None
    found = complete_checkpoint(ckpt) if settings.resume and ckpt is not None else None
    if found is not None:
        tensors, meta = load_checkpoint(found)
        if meta.get("fingerprint") != settings.fingerprint:
            raise InputError(
                f"checkpoint {str(found)!r} was written by a different configuration or data "
                f"(fingerprint {meta.get('fingerprint')} != {settings.fingerprint}); use another checkpoint_dir "
                "or resume=False"
            )
        objective.load_state_dict(prefixed(tensors, "objective"))
        optimizer.load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
        best = prefixed(tensors, "best") or None
        result = TrainResult(**meta["result"])
        bad_epochs, start = int(meta["bad_epochs"]), int(meta["result"]["epochs_run"])
        result.resumed_from = start
        if scaler is not None and meta.get("scaler"):
            scaler.load_state_dict(meta["scaler"])
        log.info("resuming from %s at epoch %d", found, start)
    penalised = bool(settings.input_penalty) and input_weight(objective.network) is not None
    model: nn.Module = objective
    if distributed:
        from geosdm.models.distributed import wrap_ddp

        model = wrap_ddp(objective, device)
    t0 = time.perf_counter()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for epoch in range(start, settings.epochs):
            if result.stopped_early:
                break
            torch.manual_seed(epoch_seed(settings.seed, epoch, 7))
            model.train()
            tl, nb = 0.0, 0
            batches: Iterable[Batch] = train_batches(epoch)
            if settings.max_batches is not None:
                batches = islice(batches, settings.max_batches)
            for batch in batches:
                b = _to(batch, device)
                ctx = torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()
                with ctx:
                    loss = model(b)
                    if penalised:  # groups re-read each step: the additive network's are built from its parameters
                        loss = loss + settings.input_penalty * input_weight(objective.network).float().norm(dim=0).sum()
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if settings.grad_clip:
                    nn.utils.clip_grad_norm_(objective.parameters(), settings.grad_clip)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                tl += float(loss.detach())
                nb += 1
            entry = {"epoch": float(epoch), "train_loss": tl / max(nb, 1)}
            if val_batches is not None:
                vl = _evaluate(objective, val_batches(), device, amp)
                entry["val_loss"] = vl
                if vl < result.best_loss - settings.min_delta:
                    result.best_loss, result.best_epoch, best, bad_epochs = vl, epoch, _state(objective), 0
                else:
                    bad_epochs += 1
                    if bad_epochs >= settings.patience:
                        result.stopped_early = True
            result.history.append(entry)
            result.epochs_run = epoch + 1
            if on_epoch is not None:
                on_epoch(entry)
            if not math.isfinite(entry["train_loss"]):
                raise InputError(
                    f"training loss became {entry['train_loss']} at epoch {epoch}; lower lr "
                    f"(now {settings.lr}) or check the covariates for extreme values"
                )
            due = settings.checkpoint_every and (epoch + 1) % settings.checkpoint_every == 0
            if ckpt is not None and (due or result.stopped_early or epoch + 1 == settings.epochs):
                from geosdm.models.distributed import world

                if world()[0] == 0:
                    _save(ckpt, objective, optimizer, best, result, bad_epochs, settings,
                          scaler.state_dict() if scaler is not None else None)
    if best is not None:
        objective.load_state_dict(best)
    else:
        result.best_epoch = result.epochs_run - 1
    result.seconds = time.perf_counter() - t0
    objective.to("cpu")
    objective.eval()
    return result

