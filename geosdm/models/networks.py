"""Networks that map site inputs to per-species log-intensities ``(batch, n_species)``.

Every network takes a batch dict with some of ``"tabular"`` ``(B, p)`` (encoded point covariates),
``"patch"`` ``(B, C, k, k)`` (covariate patches centred on the site) and ``"series"`` ``(B, C_t, T)``
(a time series of covariates, e.g. seasonal composites), and returns log-intensities ``f`` (one column
per species). A network is rebuilt from its JSON spec (:func:`build_network`), so checkpoints need no pickle.

* :class:`ResidualMLP` — the DeepMaxent shape: ``Linear(p, 250) + ReLU``, residual ``Linear(250, 250) + ReLU``
  blocks, ``Linear(250, n_species)``.
* :class:`PatchResNet` — a small ResNet (BasicBlocks, GroupNorm) over covariate patches.
* :class:`MultimodalFusion` — tabular MLP, patch CNN and temporal-convolution encoders, concatenated and fed
  to a residual head.
* :class:`AdditiveNetwork` — a neural additive model (Agarwal et al. 2021): one small MLP per covariate, shared
  by the species, whose features a per-species linear head sums, so ``f_s(x) = sum_j g_sj(x_j)``: the shape
  of a GAM or of Maxent's feature classes, learnt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from geosdm.errors import InputError

__all__ = ["AdditiveNetwork", "Ensemble", "MultimodalFusion", "PatchResNet", "ResidualMLP", "SeriesEncoder", "build_network", "input_weight",
           "NETWORKS"]

Batch = Mapping[str, Tensor]


def _get(batch: Batch | Tensor, key: str, who: str) -> Tensor:
    if isinstance(batch, Tensor):
        if key != "tabular":
            raise InputError(f"{who} needs a batch dict with {key!r}; got a bare tensor")
        return batch
    if key not in batch:
        raise InputError(f"{who} needs batch[{key!r}]; the batch has {sorted(batch)}")
    return batch[key]


class _Residual(nn.Module):
    """``x + Dropout(ReLU(Linear(x)))``."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop(torch.relu(self.linear(x)))


class _MLPTrunk(nn.Module):
    def __init__(self, n_in: int, hidden: int, n_blocks: int, dropout: float) -> None:
        super().__init__()
        self.inp = nn.Linear(n_in, hidden)
        self.blocks = nn.Sequential(*[_Residual(hidden, dropout) for _ in range(n_blocks)])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(torch.relu(self.inp(x)))


class ResidualMLP(nn.Module):
    """Residual MLP on point covariates (DeepMaxent shape).

    Parameters
    ----------
    n_features
        Encoded covariates ``p``.
    n_species
        Output columns.
    hidden
        Width of every hidden layer.
    n_blocks
        Residual ``Linear + ReLU`` blocks after the input layer.
    dropout
        Dropout inside each residual block.

    Example
    -------
    >>> net = ResidualMLP(13, 40)
    >>> net({"tabular": torch.zeros(8, 13)}).shape
    torch.Size([8, 40])
    """

    def __init__(self, n_features: int, n_species: int, *, hidden: int = 250, n_blocks: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.trunk = _MLPTrunk(n_features, hidden, n_blocks, dropout)
        self.head = nn.Linear(hidden, n_species)

    def forward(self, batch: Batch | Tensor) -> Tensor:
        return self.head(self.trunk(_get(batch, "tabular", "ResidualMLP")))


class AdditiveNetwork(nn.Module):
    """Neural additive model on point covariates: ``f_s(x) = c_s + sum_j g_sj(x_j)``, no interactions.

    Each covariate ``j`` goes through its own ``1 -> hidden -> hidden`` ReLU network (all covariates at once, as
    batched matrix products); species ``s`` reads covariate ``j`` through a linear map of those ``hidden``
    features, so the species share the shapes they can build their responses from. Response curves are the
    ``g_sj`` themselves, and the input penalty shrinks each covariate's network and heads as one group.
    Ecological niches are close to additive on the log-intensity scale; with few records per species an
    additive model needs far fewer of them than an MLP that can also fit interactions.

    Parameters
    ----------
    n_features
        Encoded covariates ``p``.
    n_species
        Output columns.
    hidden
        Width of each covariate's network (32 is plenty for a 1-D shape).
    dropout
        Dropout on the covariate features before the head.

    Example
    -------
    >>> net = AdditiveNetwork(5, 3, hidden=8)
    >>> net({"tabular": torch.zeros(4, 5)}).shape
    torch.Size([4, 3])
    """

    def __init__(self, n_features: int, n_species: int, *, hidden: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        p, h = int(n_features), int(hidden)
        self.w1 = nn.Parameter(torch.randn(p, h) * 2.0)  # scalar input: spread the ReLU kinks over ~±2 sd
        self.b1 = nn.Parameter(torch.randn(p, h) * 2.0)
        self.w2 = nn.Parameter(torch.randn(p, h, h) / h**0.5)
        self.b2 = nn.Parameter(torch.zeros(p, h))
        self.head = nn.Parameter(torch.randn(h, n_species, p) * (0.1 / (h * p) ** 0.5))  # the group per covariate
        self.bias = nn.Parameter(torch.zeros(n_species))
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def penalty_groups(self) -> Tensor:
        """``(n_weights, p)``: column ``j`` holds covariate ``j``'s second layer and species heads, the group the
        input penalty shrinks as a whole (the head alone could be shrunk by growing the layer before it)."""
        return torch.cat([self.w2.flatten(1).T, self.b2.T, self.head.flatten(0, 1)], dim=0)

    def features(self, x: Tensor) -> Tensor:
        """``(B, p, hidden)``: each covariate's learnt basis functions at ``x``."""
        z = torch.relu(x.unsqueeze(-1) * self.w1 + self.b1)
        return torch.relu(torch.einsum("bph,phk->bpk", z, self.w2) + self.b2)

    def contributions(self, x: Tensor, species: list[int] | None = None) -> Tensor:
        """``(len(species), B, p)``: each covariate's term ``g_sj(x_j)`` of the log-intensity (without the bias)."""
        head = self.head if species is None else self.head[:, species]
        return torch.einsum("bpk,ksp->sbp", self.drop(self.features(x)), head)

    def forward(self, batch: Batch | Tensor) -> Tensor:
        z = self.drop(self.features(_get(batch, "tabular", "AdditiveNetwork")))
        return torch.einsum("bpk,ksp->bs", z, self.head) + self.bias


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        groups = min(8, c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.n1 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.n2 = nn.GroupNorm(groups, c_out)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.GroupNorm(groups, c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.n1(self.conv1(x)))
        return torch.relu(self.n2(self.conv2(out)) + self.skip(x))


class _PatchEncoder(nn.Module):
    """Stem conv + ``n_stages`` BasicBlocks (width doubling, stride 2 after the first) + global average pool."""

    def __init__(self, channels: int, width: int, n_stages: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False),
                                  nn.GroupNorm(min(8, width), width), nn.ReLU())
        blocks, c = [], width
        for i in range(n_stages):
            c_out = width * 2**i
            blocks.append(_BasicBlock(c, c_out, 1 if i == 0 else 2))
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.out_features = c

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.stem(x)).mean(dim=(2, 3))


class PatchResNet(nn.Module):
    """Small ResNet on covariate patches ``(B, C, k, k)``; NaN cells (outside the grid) count as 0.

    Parameters
    ----------
    channels
        Covariate layers per patch.
    n_species
        Output columns.
    width
        Channels of the first stage (doubled at each later stage).
    n_stages
        Residual stages.
    dropout
        Dropout before the output layer.

    Example
    -------
    >>> PatchResNet(5, 3)({"patch": torch.zeros(2, 5, 9, 9)}).shape
    torch.Size([2, 3])
    """

    def __init__(self, channels: int, n_species: int, *, width: int = 32, n_stages: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = _PatchEncoder(channels, width, n_stages)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(self.encoder.out_features, n_species)

    def forward(self, batch: Batch | Tensor) -> Tensor:
        x = torch.nan_to_num(_get(batch, "patch", "PatchResNet"))
        return self.head(self.drop(self.encoder(x)))


class SeriesEncoder(nn.Module):
    """Temporal convolutions over ``(B, C, T)`` series, averaged over time -> ``(B, width)``."""

    def __init__(self, channels: int, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv1d(width, width, 3, padding=1), nn.ReLU(),
        )
        self.out_features = width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(torch.nan_to_num(x)).mean(dim=2)


class MultimodalFusion(nn.Module):
    """Fusion of tabular, patch and time-series inputs (any subset) into per-species log-intensities.

    Each present input has its own encoder (residual MLP, small ResNet, temporal convolutions); their
    embeddings are concatenated and passed through a residual MLP head.

    Parameters
    ----------
    n_species
        Output columns.
    n_features
        Encoded tabular covariates (0: no tabular branch).
    channels
        Patch channels (0: no patch branch).
    series_channels
        Channels of the time series (0: no series branch).
    hidden, n_blocks, dropout
        Width, residual blocks and dropout of the tabular branch and of the head.
    width, n_stages
        Patch encoder size.

    Example
    -------
    >>> net = MultimodalFusion(4, n_features=6, channels=3, series_channels=2)
    >>> batch = {"tabular": torch.zeros(2, 6), "patch": torch.zeros(2, 3, 7, 7), "series": torch.zeros(2, 2, 4)}
    >>> net(batch).shape
    torch.Size([2, 4])
    """

    def __init__(self, n_species: int, *, n_features: int = 0, channels: int = 0, series_channels: int = 0,
                 hidden: int = 250, n_blocks: int = 2, dropout: float = 0.0, width: int = 32,
                 n_stages: int = 2) -> None:
        super().__init__()
        if not (n_features or channels or series_channels):
            raise InputError("MultimodalFusion needs at least one input: n_features, channels or series_channels > 0")
        size = 0
        self.tabular = self.patch = self.series = None
        if n_features:
            self.tabular = _MLPTrunk(n_features, hidden, max(n_blocks - 1, 0), dropout)
            size += hidden
        if channels:
            self.patch = _PatchEncoder(channels, width, n_stages)
            size += self.patch.out_features
        if series_channels:
            self.series = SeriesEncoder(series_channels)
            size += self.series.out_features
        self.head_in = nn.Linear(size, hidden)
        self.head_block = _Residual(hidden, dropout)
        self.head = nn.Linear(hidden, n_species)

    def forward(self, batch: Batch) -> Tensor:
        parts = []
        if self.tabular is not None:
            parts.append(self.tabular(_get(batch, "tabular", "MultimodalFusion")))
        if self.patch is not None:
            parts.append(self.patch(torch.nan_to_num(_get(batch, "patch", "MultimodalFusion"))))
        if self.series is not None:
            parts.append(self.series(_get(batch, "series", "MultimodalFusion")))
        h = torch.relu(self.head_in(torch.cat(parts, dim=1)))
        return self.head(self.head_block(h))


class Ensemble(nn.Module):
    """Members with the same inputs and outputs; the output is the mean log-intensity (a geometric mean of
    intensities). :meth:`forward_members` gives each member's output (spread = uncertainty)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise InputError("an Ensemble needs at least one member network")
        self.members = nn.ModuleList(members)

    def forward_members(self, batch: Batch | Tensor) -> Tensor:
        """``(n_members, B, n_species)``."""
        return torch.stack([m(batch) for m in self.members])

    def forward(self, batch: Batch | Tensor) -> Tensor:
        return self.forward_members(batch).mean(dim=0)


#: Network names accepted by :func:`build_network` and ``MultiSpeciesSDM(network=...)``.
NETWORKS = ("mlp", "additive", "cnn", "fusion")


def build_network(spec: Mapping[str, Any]) -> nn.Module:
    """Build a network from its JSON spec ``{"name": "mlp" | "additive" | "cnn" | "fusion", **sizes}`` (or
    ``{"name": "ensemble", "member": spec, "n_members": k}``).

    Example
    -------
    >>> build_network({"name": "mlp", "n_features": 3, "n_species": 2, "hidden": 16})({"tabular": torch.zeros(1, 3)}).shape
    torch.Size([1, 2])
    """
    kw = dict(spec)
    name = kw.pop("name", None)
    if name == "mlp":
        return ResidualMLP(kw.pop("n_features"), kw.pop("n_species"), **kw)
    if name == "additive":
        return AdditiveNetwork(kw.pop("n_features"), kw.pop("n_species"), **kw)
    if name == "cnn":
        return PatchResNet(kw.pop("channels"), kw.pop("n_species"), **kw)
    if name == "fusion":
        return MultimodalFusion(kw.pop("n_species"), **kw)
    if name == "ensemble":
        return Ensemble([build_network(kw["member"]) for _ in range(int(kw["n_members"]))])
    raise InputError(f"unknown network {name!r}; choose one of {list(NETWORKS)}")


def input_weight(network: nn.Module) -> Tensor | None:
    """The input penalty's groups ``(n_weights, n_covariates)``, a column per encoded covariate: the weights of
    the first layer the point covariates meet, or each covariate's own network and heads in an
    :class:`AdditiveNetwork` (None: no such layer, as in patch-only networks)."""
    if isinstance(network, AdditiveNetwork):  # covariate j's hidden layer and species heads: zero switches it off
        return network.penalty_groups()
    trunk = getattr(network, "trunk", None) or getattr(network, "tabular", None)
    inp = getattr(trunk, "inp", None)
    return inp.weight if isinstance(inp, nn.Linear) else None
