"""Losses: the DeepMaxent, Poisson, BCE and cloglog formulas against hand computations; the integrated loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geosdm.errors import InputError
from geosdm.models.losses import (
    IntegratedLoss,
    bce_loss,
    cloglog_loss,
    deepmaxent_loss,
    log1mexp,
    poisson_loss,
)


def test_deepmaxent_matches_formula() -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(6, 3, generator=g)
    y = torch.tensor([[2.0, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 3], [0, 0, 0], [0, 0, 0]])
    expected = 0.0
    for j in range(3):
        logp = f[:, j] - torch.logsumexp(f[:, j], 0)
        expected -= float((y[:, j] * logp).sum())
    assert float(deepmaxent_loss(f, y)) == pytest.approx(expected, rel=1e-6)
    # adding a per-species constant (intercept) leaves it unchanged: outputs are relative intensities
    assert float(deepmaxent_loss(f + torch.tensor([5.0, -2.0, 1.0]), y)) == pytest.approx(expected, rel=1e-5)


def test_poisson_bce_cloglog_formulas_and_nan_targets() -> None:
    f = torch.tensor([[0.3, -1.0], [1.2, 0.0]])
    y = torch.tensor([[2.0, float("nan")], [0.0, 1.0]])
    pois = sum(math.exp(a) - b * a for a, b in [(0.3, 2.0), (1.2, 0.0), (0.0, 1.0)])
    assert float(poisson_loss(f, y)) == pytest.approx(pois, rel=1e-6)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    bce = -(math.log(sig(0.3)) + math.log(1 - sig(1.2)) + math.log(sig(0.0)))
    assert float(bce_loss(f, y)) == pytest.approx(bce, rel=1e-6)
    la = math.log(2.0)  # area twice the unit
    p = lambda z: 1 - math.exp(-math.exp(z + la))  # noqa: E731
    cll = -(math.log(p(0.3)) + math.log(1 - p(1.2)) + math.log(p(0.0)))
    y01 = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    assert float(cloglog_loss(f, y01, la)) == pytest.approx(cll, rel=1e-5)


def test_log1mexp_is_accurate_at_both_ends() -> None:
    from decimal import Decimal, getcontext

    getcontext().prec = 50
    values = [1e-8, 1e-3, 0.5, 2.0, 30.0]
    exact = [float((1 - (-Decimal(v)).exp()).ln()) for v in values]  # 50-digit reference
    got = log1mexp(torch.tensor(values, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, exact, rtol=1e-12)
    assert torch.isfinite(cloglog_loss(torch.tensor([[-40.0, 40.0]]), torch.tensor([[1.0, 0.0]]))).all()


def _datasets() -> list[dict[str, str]]:
    return [{"name": "gbif", "family": "po"}, {"name": "survey", "family": "pa"},
            {"name": "bg", "family": "background"}]


def test_integrated_bias_only_enters_presence_only_term() -> None:
    loss = IntegratedLoss(_datasets(), 2, n_bias=1)
    assert loss.reference == "survey"
    f = torch.zeros(5, 2)
    batch = {
        "targets": torch.tensor([[1.0, 0], [0, 2], [1, 0], [0, 1], [0, 0]]),
        "dataset": torch.tensor([0, 0, 1, 1, 2]),
        "log_area": torch.zeros(5, 2),
        "bias": torch.tensor([[1.0], [-1.0], [5.0], [5.0], [0.0]]),
    }
    base = float(loss(f, batch).detach())
    with torch.no_grad():
        loss.bias_coef.fill_(0.7)
    changed = float(loss(f, batch).detach())
    assert changed != pytest.approx(base)
    # PA rows alone: the bias coefficient has no effect
    pa = {k: v[2:4] for k, v in batch.items()}
    with torch.no_grad():
        loss.bias_coef.fill_(0.0)
    pa0 = float(loss(f[2:4], pa).detach())
    with torch.no_grad():
        loss.bias_coef.fill_(3.0)
    assert float(loss(f[2:4], pa).detach()) == pytest.approx(pa0)


def test_integrated_reference_intercept_is_fixed_and_weights_scale_terms() -> None:
    loss = IntegratedLoss(_datasets(), 1, weights={"survey": 2.0})
    with torch.no_grad():
        loss.intercepts.fill_(1.5)
    assert float(loss.intercept(1).detach().abs().sum()) == 0.0  # the survey is the reference
    assert float(loss.intercept(0).detach().sum()) == pytest.approx(1.5)
    batch = {"targets": torch.tensor([[1.0]]), "dataset": torch.tensor([1]), "log_area": torch.zeros(1, 1)}
    single = IntegratedLoss(_datasets(), 1)
    with torch.no_grad():
        assert float(loss(torch.zeros(1, 1), batch)) == pytest.approx(2 * float(single(torch.zeros(1, 1), batch)))
    # gradients reach every parameter even when a data set is absent from the batch (DDP needs it)
    loss(torch.zeros(1, 1, requires_grad=True), batch).backward()
    assert loss.intercepts.grad is not None and loss.bias_coef.grad is not None


def test_integrated_rejects_data_a_loss_cannot_use() -> None:
    with pytest.raises(InputError, match="cannot use \\['pa'\\]"):
        IntegratedLoss(_datasets(), 2, loss="deepmaxent")
    with pytest.raises(InputError, match="dataset_weights names unknown"):
        IntegratedLoss(_datasets(), 2, weights={"nope": 1.0})
    with pytest.raises(InputError, match="background points"):
        IntegratedLoss([{"name": "po", "family": "po"}], 2, loss="bce")


def test_background_weight_zero_is_a_softmax_over_recorded_sites() -> None:
    specs = [{"name": "po", "family": "po"}, {"name": "bg", "family": "background"}]
    f = torch.tensor([[0.5], [0.1], [2.0]])
    batch = {"targets": torch.tensor([[1.0], [0.0], [0.0]]), "dataset": torch.tensor([0, 0, 1])}
    tg = IntegratedLoss(specs, 1, loss="deepmaxent", background_weight=0.0)
    expected = -float(f[0, 0] - torch.logsumexp(f[:2, 0], 0)) / 3
    full = IntegratedLoss(specs, 1, loss="deepmaxent")
    with torch.no_grad():
        assert float(tg(f, batch)) == pytest.approx(expected, rel=1e-6)
        assert float(full(f, batch)) == pytest.approx(-float(f[0, 0] - torch.logsumexp(f[:, 0], 0)) / 3, rel=1e-6)
