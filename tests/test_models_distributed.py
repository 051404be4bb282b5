"""Multi-process training: DDP with the gloo backend on CPU (2 ranks end with identical weights), and streaming
training from Zarr stores through DataLoader worker processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from geosdm.models import MultiSpeciesSDM
from geosdm.models.distributed import is_launched, spawn, world
from tests.test_models_estimator import FAST, make_world

KW = {**FAST, "covariates": ["temp", "rain"], "epochs": 4, "seed": 0}


def _train_rank(rank: int, world_size: int, out: str) -> None:
    """One rank: fit on the same table (rows or Zarr chunks are dealt to ranks inside fit), save the weights."""
    assert world() == (rank, world_size) and is_launched()
    data = make_world(n_po=120, n_bg=600)["po"]
    for streaming in (False, True):
        work = str(Path(out) / "work") if streaming else None  # shared: rank 0 writes the stores
        model = MultiSpeciesSDM(**KW, distributed=True, streaming=streaming, work_dir=work).fit(data)
        state = {k: v.clone() for k, v in model.network_.state_dict().items()}
        torch.save(state, Path(out) / f"rank{rank}-{'stream' if streaming else 'memory'}.pt")


@pytest.mark.timeout(300)
def test_ddp_gloo_two_ranks_end_with_identical_weights(tmp_path: Path) -> None:
    # fork: the ranks inherit the imported modules (spawn re-imports torch & co: 3x slower on 2 cores)
    spawn(_train_rank, 2, args=(str(tmp_path),), backend="gloo", start_method="fork")
    init = MultiSpeciesSDM(**{**KW, "epochs": 1, "lr": 1e-12}).fit(make_world(n_po=120, n_bg=600)["po"])
    for mode in ("memory", "stream"):
        a = torch.load(tmp_path / f"rank0-{mode}.pt")
        b = torch.load(tmp_path / f"rank1-{mode}.pt")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (mode, k)
        # and training moved the weights away from the shared initialisation
        first = next(iter(a))
        assert not torch.allclose(a[first], init.network_.state_dict()[first]), mode


def test_streaming_fit_with_worker_processes_is_deterministic(tmp_path: Path) -> None:
    data = make_world(n_po=150, n_bg=800)["po"]
    kw = {**KW, "epochs": 6, "streaming": True, "num_workers": 2}
    a = MultiSpeciesSDM(**kw, work_dir=str(tmp_path / "a")).fit(data)
    b = MultiSpeciesSDM(**kw, work_dir=str(tmp_path / "b")).fit(data)
    assert (tmp_path / "a" / "points.zarr" / "zarr.json").is_file()
    np.testing.assert_array_equal(a.predict(data).to_numpy(), b.predict(data).to_numpy())
    mem = MultiSpeciesSDM(**{**kw, "streaming": False}).fit(data)
    rho = spearmanr(a.predict(data, log=True)["sp_b"], mem.predict(data, log=True)["sp_b"])[0]
    assert rho > 0.8  # same model family and data, different batch order
