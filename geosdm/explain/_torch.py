"""A fitted model as a differentiable function of its *raw* covariates, and integrated gradients over it.

:class:`RawInputNetwork` composes the model's encoder (standardisation of numeric covariates, one-hot of
categorical ones, series and patch scaling) with its network in torch, so autograd gives gradients with
respect to the covariates as they are in the cube (metres, °C, fractions) and attributions are per input
covariate. It is built from the estimator's learned attributes only (``encoder_``, ``series_``, ``patch_``,
``network_``), so a model loaded from disk and the in-memory one behave alike.

Inputs are three tensors: ``num`` ``(n, V_num)`` raw numeric covariates (the model's columns, series
included), ``cat`` ``(n, K)`` the concatenated one-hot encodings of categorical covariates, and ``patch``
``(n, C, k, k)`` raw patches for patch networks. The *baseline* is the training mean of every numeric
covariate (standardised value 0), an all-zero one-hot (the encoding of "no known category") and the channel
means for patches; NaN patch cells (beyond the grid) are set to the channel mean at both ends of the path,
as the network sees them, so they get no attribution.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from geosdm.errors import InputError
from geosdm.models.features import FeatureEncoder, column_values
from geosdm.models.networks import AdditiveNetwork, Ensemble

if TYPE_CHECKING:
    from geosdm.models import MultiSpeciesSDM

__all__ = ["RawInputNetwork", "RawInputs", "integrated_gradients", "gauss_legendre"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawInputs:
    """Raw inputs of a batch of cells (see the module docstring) and which rows are valid."""

    num: Tensor
    cat: Tensor
    patch: Tensor | None
    valid: np.ndarray


class RawInputNetwork(nn.Module):
    """``network_`` composed with the encoder: raw covariates -> log-intensity ``(n, n_species)``.

    Parameters
    ----------
    model
        A fitted ``MultiSpeciesSDM``.

    Attributes
    ----------
    variables
        Cube variables the model reads, in the order of the attribution output: columns (features and series),
        then patch-only variables.
    numeric, categorical
        Numeric and categorical columns (``num`` and ``cat`` inputs).

    Example
    -------
    >>> net = RawInputNetwork(model)  # doctest: +SKIP
    >>> x = net.inputs({"bio01": t, "elevation": z})  # doctest: +SKIP
    >>> net(x.num, x.cat, x.patch).shape  # doctest: +SKIP
    """

    def __init__(self, model: MultiSpeciesSDM) -> None:
        super().__init__()
        enc: FeatureEncoder = model.encoder_
        series = [list(g) for g in (getattr(model, "series_", None) or [])]
        columns = list(dict.fromkeys(list(enc.columns) + [c for g in series for c in g]))
        self.encoder = enc
        self.categorical = tuple(c for c in enc.columns if c in enc.categories)
        self.numeric = tuple(c for c in columns if c not in enc.categories)
        self.n_cat = {c: len(enc.categories[c]) for c in self.categorical}
        num_pos = {c: i for i, c in enumerate(self.numeric)}
        cat_start = np.cumsum([0] + [self.n_cat[c] for c in self.categorical])
        cat_pos = {c: (int(cat_start[i]), int(cat_start[i + 1])) for i, c in enumerate(self.categorical)}
        # encoded tabular columns as positions in [standardised numeric, one-hot], in the encoder's order
        order: list[int] = []
        for c in enc.columns:
            if c in enc.categories:
                order += list(range(len(self.numeric) + cat_pos[c][0], len(self.numeric) + cat_pos[c][1]))
            else:
                order.append(num_pos[c])
        self.register_buffer("order", torch.tensor(order, dtype=torch.long))
        self.register_buffer("mean", torch.tensor([enc.means[c] for c in self.numeric], dtype=torch.float32))
        self.register_buffer("inv_scale", torch.tensor(np.float32(1.0) / np.array(
            [enc.scales[c] for c in self.numeric], dtype=np.float64).astype(np.float32), dtype=torch.float32))
        self.series_index = [[num_pos[c] for c in g] for g in series]
        patch = getattr(model, "patch_", None)
        self.patch_variables: tuple[str, ...] = tuple(patch["variables"]) if patch else ()
        self.patch_size = int(patch["size"]) if patch else 0
        self.register_buffer("patch_mean", torch.tensor(patch["mean"] if patch else [], dtype=torch.float32))
        self.register_buffer("patch_scale", torch.tensor(patch["scale"] if patch else [], dtype=torch.float32))
        self.variables: tuple[str, ...] = tuple(dict.fromkeys(columns + list(self.patch_variables)))
        # a private copy: moving it to a device or switching modes never touches the estimator's network
        self.net = copy.deepcopy(model.network_).to("cpu").eval().requires_grad_(False)
        self.n_species = len(model.species_)

    # -------------------------------------------------------------------------------------------- inputs
    def inputs(self, columns: Mapping[str, Any], patches: np.ndarray | None = None) -> RawInputs:
        """Tensors of raw inputs from covariate columns (name -> 1-D array) and raw patches ``(n, C, k, k)``.

        Rows with a non-finite numeric value or a missing/unseen categorical value are invalid (their inputs
        are set to the baseline so the batch stays finite).
        """
        n = len(next(iter(columns.values()))) if columns else (len(patches) if patches is not None else 0)
        num = np.empty((n, len(self.numeric)), dtype=np.float32)
        for i, c in enumerate(self.numeric):
            num[:, i] = column_values(columns[c])
        valid = np.isfinite(num).all(axis=1)
        parts = []
        for c in self.categorical:
            sub = FeatureEncoder((c,), {}, {}, {c: self.encoder.categories[c]})
            onehot, ok = sub.transform({c: np.asarray(columns[c])})
            valid &= ok & (onehot.sum(axis=1) > 0)
            parts.append(onehot)
        cat = np.concatenate(parts, axis=1) if parts else np.zeros((n, 0), dtype=np.float32)
        num[~valid] = self.mean.cpu().numpy()
        cat[~valid] = 0.0
        p = None
        if self.patch_variables:
            if patches is None:
                raise InputError("this patch network needs raw patches (n, C, k, k) of its patch variables")
            pm = self.patch_mean.cpu().numpy()[None, :, None, None]
            p = np.where(np.isfinite(patches), patches, pm).astype(np.float32)
            p[~valid] = pm
        dev = self.mean.device
        return RawInputs(torch.from_numpy(num).to(dev), torch.from_numpy(cat).to(dev),
                         None if p is None else torch.from_numpy(p).to(dev), valid)

    def baseline(self, x: RawInputs, values: Mapping[str, float] | None = None) -> RawInputs:
        """The baseline of ``x``: training means (or ``values``), zero one-hots, patch channel means.

        Patch cells that were NaN keep their (mean) value so they are constant along the path.
        """
        mean = self.mean.clone()
        for c, v in (values or {}).items():
            if c not in self.numeric:
                raise InputError(f"baseline names {c!r}, not a numeric covariate of the model {list(self.numeric)}")
            mean[self.numeric.index(c)] = float(v)
        num = mean.expand_as(x.num).clone()
        patch = None
        if x.patch is not None:
            patch = self.patch_mean[None, :, None, None].expand_as(x.patch).clone()
        return RawInputs(num.to(x.num.device), torch.zeros_like(x.cat), patch, x.valid)

    # ------------------------------------------------------------------------------------------- forward
    def tabular(self, num: Tensor, cat: Tensor) -> Tensor:
        """The network's encoded point inputs: standardised numeric and one-hot columns in the encoder's order."""
        z = (num - self.mean) * self.inv_scale
        return torch.cat([z, cat], dim=1).index_select(1, self.order)  # one gather: cheap to differentiate

    def additive_members(self) -> list[AdditiveNetwork] | None:
        """The additive networks behind the model (its members for an ensemble), or None if it is not additive."""
        members = list(self.net.members) if isinstance(self.net, Ensemble) else [self.net]
        ok = all(isinstance(m, AdditiveNetwork) for m in members) and not self.series_index and not self.patch_variables
        return members if ok else None

    def forward(self, num: Tensor, cat: Tensor, patch: Tensor | None = None) -> Tensor:
        z = (num - self.mean) * self.inv_scale
        tab = self.tabular(num, cat)
        batch: dict[str, Tensor] = {"tabular": tab}
        if self.series_index:
            idx = torch.tensor([i for g in self.series_index for i in g], device=num.device)
            batch["series"] = z[:, idx].reshape(num.shape[0], len(self.series_index), -1)
        if patch is not None:
            batch["patch"] = (patch - self.patch_mean[None, :, None, None]) / self.patch_scale[None, :, None, None]
        return self.net(batch)

    # ---------------------------------------------------------------------------------------- reductions
    def per_variable(self, num: Tensor, cat: Tensor, patch: Tensor | None) -> Tensor:
        """Per-element products (``(..., n, inputs)``) summed to ``(..., n, len(variables))`` per cube variable."""
        lead = num.shape[:-1]
        out = num.new_zeros((*lead, len(self.variables)))
        pos = {v: i for i, v in enumerate(self.variables)}
        out[..., [pos[c] for c in self.numeric]] += num
        k = 0
        for c in self.categorical:
            out[..., pos[c]] += cat[..., k : k + self.n_cat[c]].sum(-1)
            k += self.n_cat[c]
        if patch is not None:
            out[..., [pos[c] for c in self.patch_variables]] += patch.sum(dim=(-2, -1))
        return out


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the ``steps``-point Gauss-Legendre rule on [0, 1] (weights sum to 1)."""
    x, w = np.polynomial.legendre.leggauss(int(steps))
    return (x + 1) / 2, w / 2


def integrated_gradients(net: RawInputNetwork, x: RawInputs, b: RawInputs, *, species: Sequence[int],
                         steps: int = 32, method: str = "integrated_gradients",
                         exact: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Attributions ``(len(species), n, len(net.variables))`` of ``f(x) - f(b)`` to each cube variable.

    ``method="integrated_gradients"``: ``(x - b) * mean gradient`` along the straight path from ``b`` to ``x``
    (Gauss-Legendre rule with ``steps`` nodes, all nodes in one batch); ``"gradient_x_input"``: ``(x - b) *
    gradient at x`` (one step, not complete). Also returns ``f(x)`` and ``f(b)`` ``(n, len(species))``.

    One backward pass per species on the shared graph (3x faster on CPU than one batched vmap backward for a
    250-wide MLP and 42 species, and no more memory than a single pass); each species' gradients are reduced
    to per-variable attributions at once. For an additive network (``network="additive"``) integrated
    gradients have a closed form, ``g_sj(x_j) - g_sj(b_j)`` per input (the path integral of a function of
    ``x_j`` alone), computed with two forward passes and exact, unless ``exact=False``.
    """
    if method == "gradient_x_input":
        alphas, weights = np.array([1.0]), np.array([1.0])
    elif method == "integrated_gradients":
        alphas, weights = gauss_legendre(steps)
    else:
        raise InputError(f"method={method!r} is unknown; choose 'integrated_gradients' or 'gradient_x_input'")
    members = net.additive_members() if exact and method == "integrated_gradients" else None
    if members is not None:
        return _additive_attributions(net, members, x, b, list(species))
    m, n = len(alphas), x.num.shape[0]
    dev = x.num.device
    a = torch.tensor(alphas, dtype=torch.float32, device=dev)
    w = torch.tensor(weights, dtype=torch.float32, device=dev)
    pairs = [(x.num, b.num), (x.cat, b.cat)] + ([(x.patch, b.patch)] if x.patch is not None else [])

    def path(u: Tensor, v: Tensor) -> Tensor:  # (m * n, ...) points v + a (u - v), node-major
        shape = (m,) + (1,) * u.ndim
        return (v[None] + a.reshape(shape) * (u - v)[None]).reshape(m * n, *u.shape[1:]).requires_grad_(True)

    inputs = [path(u, v) for u, v in pairs]
    out = net(*inputs)
    sel = list(species)
    ones = torch.ones(out.shape[0], dtype=out.dtype)
    attrs = []
    for k, j in enumerate(sel):
        grads = torch.autograd.grad(out[:, j], inputs, grad_outputs=ones, retain_graph=k < len(sel) - 1,
                                    allow_unused=True)
        with torch.no_grad():
            parts = [torch.zeros_like(u) if g is None else
                     torch.einsum("m...,m->...", g.reshape(m, *u.shape), w) * (u - v)
                     for g, (u, v) in zip(grads, pairs)]
            attrs.append(net.per_variable(parts[0], parts[1], parts[2] if len(parts) > 2 else None))
    with torch.no_grad():
        f_x = net(*(u for u, _ in pairs))[:, sel]
        f_b = net(*(v for _, v in pairs))[:, sel]
    return torch.stack(attrs), f_x, f_b


def _additive_attributions(net: RawInputNetwork, members: Sequence[AdditiveNetwork], x: RawInputs, b: RawInputs,
                           species: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    """Exact integrated gradients of an additive network: each input's term at ``x`` minus its term at ``b``."""
    with torch.no_grad():
        def terms(r: RawInputs) -> Tensor:  # (len(species), n, inputs) in the encoder's order
            tab = net.tabular(r.num, r.cat)
            return torch.stack([m.contributions(tab, species) for m in members]).mean(0)

        t_x, t_b = terms(x), terms(b)
        d = t_x - t_b
        full = d.new_zeros((*d.shape[:-1], x.num.shape[1] + x.cat.shape[1]))
        full[..., net.order] = d  # back to [numeric, one-hot] positions
        attrs = net.per_variable(full[..., : x.num.shape[1]], full[..., x.num.shape[1] :], None)
        bias = torch.stack([m.bias[species] for m in members]).mean(0)
        f_x = t_x.sum(-1).T + bias  # the network's output: its terms plus the bias, no second pass
        f_b = t_b.sum(-1).T + bias
    return attrs, f_x, f_b

