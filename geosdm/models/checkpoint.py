"""Checkpoints without pickle: tensors in ``model.safetensors`` and everything else in ``config.json``.

A checkpoint is a folder. It is written under a temporary name and renamed, so a killed run never leaves a
half-written checkpoint behind. Optimizer state (e.g. Adam moments) is flattened to named tensors and its
scalar settings go to JSON, so training resumes exactly where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

from torch import Tensor

from geosdm.errors import DataSourceError

__all__ = [
    "FORMAT",
    "complete_checkpoint",
    "flatten_optimizer",
    "load_checkpoint",
    "prefixed",
    "save_checkpoint",
    "unflatten_optimizer",
]

FORMAT = "geosdm.models/1"
TENSORS, CONFIG = "model.safetensors", "config.json"


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def save_checkpoint(path: str | PathLike[str], tensors: Mapping[str, Tensor], config: Mapping[str, Any]) -> Path:
    """Write ``tensors`` (safetensors) and ``config`` (JSON) to the folder ``path`` atomically.

    Example
    -------
    >>> save_checkpoint("ckpt", {"w": torch.zeros(2)}, {"epoch": 3})  # doctest: +SKIP
    """
    from safetensors.torch import save_file

    out = Path(path)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(flat, os.fspath(tmp / TENSORS))
    (tmp / CONFIG).write_text(json.dumps({"format": FORMAT, **dict(config)}, indent=1, default=_json_default))
    old = out.with_name(out.name + ".old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def complete_checkpoint(path: str | PathLike[str]) -> Path | None:
    """The last completely written checkpoint at ``path``, or None.

    :func:`save_checkpoint` writes ``<name>.partial``, renames the current ``<name>`` to ``<name>.old``, renames
    ``<name>.partial`` to ``<name>`` and deletes ``<name>.old``. A kill between the two renames leaves no
    ``<name>``: ``<name>.old`` is then the complete previous checkpoint. ``<name>.partial`` is never used (it
    may be half-written). A ``<name>`` folder is returned as it is (damage there is reported by
    :func:`load_checkpoint`, not skipped).
    """
    out = Path(path)
    if out.is_dir():
        return out
    old = out.with_name(out.name + ".old")
    if (old / TENSORS).is_file() and (old / CONFIG).is_file():
        return old
    return None


def load_checkpoint(path: str | PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint folder; returns ``(tensors on CPU, config)``.

    Raises
    ------
    DataSourceError
        When the folder lacks ``model.safetensors``/``config.json`` or has another format.
    """
    from safetensors.torch import load_file

    p = Path(path)
    if not (p / TENSORS).is_file() or not (p / CONFIG).is_file():
        raise DataSourceError(
            f"{str(p)!r} is not a geosdm model checkpoint (needs {TENSORS} and {CONFIG}); save one with "
            "MultiSpeciesSDM.save(path)"
        )
    try:
        config = json.loads((p / CONFIG).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise DataSourceError(f"checkpoint {str(p)!r}: {CONFIG} is not valid JSON ({err}); the folder is damaged: "
                              "save the model again or restore the folder") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise DataSourceError(f"checkpoint {str(p)!r} has format {found!r}; this geosdm reads {FORMAT}")
    try:
        tensors = load_file(os.fspath(p / TENSORS))
    except Exception as err:  # safetensors raises its own error type for a truncated or edited file
        raise DataSourceError(f"checkpoint {str(p)!r}: {TENSORS} cannot be read ({type(err).__name__}: {err}); "
                              "the file is truncated or edited: save the model again or restore it") from None
    return tensors, config


def prefixed(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of ``tensors`` whose names start with ``prefix + '.'``, prefix removed."""
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def flatten_optimizer(state: Mapping[str, Any], prefix: str = "optim") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into named tensors and a JSON-able rest."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: Mapping[str, Tensor], meta: Mapping[str, Any], prefix: str = "optim") -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer` (a dict for ``optimizer.load_state_dict``)."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in prefixed(tensors, prefix).items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, entry in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}
