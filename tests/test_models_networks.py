"""Networks: shapes, the DeepMaxent layer layout, fusion of any input subset, JSON specs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geosdm.errors import InputError
from geosdm.models.networks import AdditiveNetwork, MultimodalFusion, PatchResNet, ResidualMLP, build_network, input_weight


def test_residual_mlp_has_the_deepmaxent_shape() -> None:
    net = ResidualMLP(13, 40)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(13, 250), (250, 250), (250, 250), (250, 40)]
    x = torch.randn(7, 13)
    assert net({"tabular": x}).shape == (7, 40)
    assert torch.equal(net(x), net({"tabular": x}))
    # a residual block adds to its input: with zero weights it is the identity
    block = net.trunk.blocks[0]
    with torch.no_grad():
        block.linear.weight.zero_()
        block.linear.bias.zero_()
    h = torch.randn(3, 250)
    assert torch.equal(block(h), h)


def test_additive_network_has_no_interactions_and_one_penalty_group_per_covariate() -> None:
    net = build_network({"name": "additive", "n_features": 4, "n_species": 3, "hidden": 8, "dropout": 0.0})
    assert isinstance(net, AdditiveNetwork)
    x = torch.randn(16, 4)
    moved = x.clone()
    moved[:, 1] += 0.7
    effect = net(moved) - net(x)  # moving x_1 changes f by g(x_1 + 0.7) - g(x_1), whatever the other inputs
    other = x.clone()
    other[:, [0, 2, 3]] = torch.randn(16, 3)
    other_moved = other.clone()
    other_moved[:, 1] += 0.7
    torch.testing.assert_close(net(other_moved) - net(other), effect, rtol=1e-4, atol=1e-5)
    assert float(effect.abs().max()) > 0
    w = input_weight(net)
    assert w is not None and w.shape == (8 * 8 + 8 + 8 * 3, 4)  # column j: covariate j's layer 2 and heads
    with torch.no_grad():
        net.head[:, :, 2] = 0.0  # a zero group switches covariate 2 off
    off = x.clone()
    off[:, 2] = torch.randn(16)
    torch.testing.assert_close(net(off), net(x))


def test_patch_resnet_handles_nan_cells_and_sizes() -> None:
    net = PatchResNet(4, 3, width=8, n_stages=2)
    x = torch.randn(2, 4, 11, 11)
    x[:, :, :2] = float("nan")  # outside the grid
    out = net({"patch": x})
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    assert net({"patch": torch.randn(2, 4, 5, 5)}).shape == (2, 3)


@pytest.mark.parametrize("inputs", [("tabular",), ("patch",), ("series",), ("tabular", "patch", "series")])
def test_fusion_accepts_any_subset_of_inputs(inputs: tuple[str, ...]) -> None:
    kw = {"n_features": 5 if "tabular" in inputs else 0, "channels": 3 if "patch" in inputs else 0,
          "series_channels": 2 if "series" in inputs else 0}
    net = MultimodalFusion(4, hidden=16, width=8, **kw)
    batch = {"tabular": torch.randn(3, 5), "patch": torch.randn(3, 3, 7, 7), "series": torch.randn(3, 2, 4)}
    assert net({k: batch[k] for k in inputs}).shape == (3, 4)
    with pytest.raises(InputError, match="needs batch"):
        net({})


def test_build_network_from_json_spec_round_trip() -> None:
    spec = {"name": "mlp", "n_features": 3, "n_species": 2, "hidden": 8, "n_blocks": 1, "dropout": 0.0}
    a, b = build_network(spec), build_network(spec)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 3)
    assert torch.equal(a(x), b(x))
    assert isinstance(build_network({"name": "cnn", "channels": 2, "n_species": 1, "width": 8}), PatchResNet)
    with pytest.raises(InputError, match="unknown network"):
        build_network({"name": "transformer"})
    with pytest.raises(InputError, match="at least one input"):
        MultimodalFusion(2)
