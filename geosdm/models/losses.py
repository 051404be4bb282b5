"""Losses for per-species log-intensities ``f`` ``(batch, n_species)``; NaN targets are "not observed".

Elementwise losses (each returns the *sum* over observed entries, so data sets add up like log-likelihoods):

* :func:`deepmaxent_loss` — ``-sum_ij y_ij log_softmax_i(f_ij)`` over the sites ``i`` of the batch (presences and
  background together), weighted by record counts ``y`` (Ryckewaert et al. 2024; a Poisson point process
  conditioned on the number of records, so the intercept cancels and outputs are relative intensities).
* :func:`poisson_loss` — ``exp(eta) - y eta`` with ``eta = f + offset`` (counts; presence-only + background as
  a Poisson GLM on quadrature points).
* :func:`bce_loss` — Bernoulli with a logit link (presence vs background, or presence/absence).
* :func:`cloglog_loss` — Bernoulli with ``P = 1 - exp(-A exp(f))``: ``eta = f + log A`` (presence/absence over
  an area).

:class:`IntegratedLoss` (Isaac et al. 2020) combines data sets that share one intensity ``log λ = f``: each
data set ``d`` adds ``w_d`` times its own term with a per-data-set intercept ``α_d`` (fixed at 0 for the
reference data set, so ``f`` is on its scale), and presence-only data sets add observer-bias terms
``β_d · z`` (bias covariates ``z``) to their intensity. Bias terms are part of the loss, not of the network,
so they are dropped at prediction. The total is divided by ``batch size x n_species`` (mean per entry).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from geosdm.errors import InputError

__all__ = [
    "LOSSES",
    "IntegratedLoss",
    "bce_loss",
    "cloglog_loss",
    "deepmaxent_loss",
    "log1mexp",
    "poisson_loss",
]

#: Loss names accepted by ``MultiSpeciesSDM(loss=...)`` and the data families each can use.
LOSSES: dict[str, tuple[str, ...]] = {
    "deepmaxent": ("po",),
    "poisson": ("po", "count"),
    "bce": ("po", "pa"),
    "cloglog": ("pa",),
    "integrated": ("po", "pa", "count"),
}


_MAX_ETA = 40.0  # exp(40) ~ 2e17: finite in float32, far beyond any plausible intensity


def _observed(targets: Tensor) -> tuple[Tensor, Tensor]:
    ok = torch.isfinite(targets)
    return ok, torch.where(ok, targets, torch.zeros_like(targets))


def deepmaxent_loss(logits: Tensor, counts: Tensor) -> Tensor:
    """DeepMaxent loss summed over species: ``-sum_j sum_i y_ij log_softmax_i(f_ij)`` (softmax over rows).

    Example
    -------
    >>> f = torch.zeros(4, 2); y = torch.tensor([[1., 0], [0, 0], [0, 2], [0, 0]])
    >>> round(float(deepmaxent_loss(f, y)), 4)  # 3 records, each log(1/4)
    4.1589
    """
    ok, y = _observed(counts)
    logp = torch.log_softmax(logits, dim=0)
    return -(y * torch.where(ok, logp, torch.zeros_like(logp))).sum()


def poisson_loss(logits: Tensor, counts: Tensor, offset: Tensor | float = 0.0) -> Tensor:
    """Poisson negative log-likelihood (without ``log y!``) summed over observed entries."""
    ok, y = _observed(counts)
    eta = logits + offset
    return torch.where(ok, torch.exp(eta.clamp(max=_MAX_ETA)) - y * eta, torch.zeros_like(eta)).sum()


def bce_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Binary cross-entropy with logits summed over observed entries (targets > 0 count as presence)."""
    ok, y = _observed(targets)
    out = nn.functional.binary_cross_entropy_with_logits(logits, (y > 0).to(logits.dtype), reduction="none")
    return torch.where(ok, out, torch.zeros_like(out)).sum()


def log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(-x))`` for ``x > 0``, accurate for small and large ``x``."""
    x = x.clamp_min(1e-30)
    cut = math.log(2.0)
    small = x < cut
    # each branch sees inputs inside its own domain, so the unused branch never yields inf * 0 = NaN gradients
    xs, xl = torch.where(small, x, cut), torch.where(small, cut, x)
    return torch.where(small, torch.log(-torch.expm1(-xs)), torch.log1p(-torch.exp(-xl)))


def cloglog_loss(logits: Tensor, detected: Tensor, log_area: Tensor | float = 0.0) -> Tensor:
    """Bernoulli NLL with ``P = 1 - exp(-exp(f + log A))`` summed over observed entries.

    Example
    -------
    >>> round(float(cloglog_loss(torch.zeros(1, 1), torch.ones(1, 1))), 4)  # -log(1 - e^-1)
    0.4587
    """
    ok, y = _observed(detected)
    rate = torch.exp((logits + log_area).clamp(max=_MAX_ETA))  # A λ
    nll = -(y.clamp(0, 1) * log1mexp(rate) - (1 - y.clamp(0, 1)) * rate)
    return torch.where(ok, nll, torch.zeros_like(nll)).sum()


class IntegratedLoss(nn.Module):
    """Weighted sum of per-data-set likelihood terms sharing one log-intensity (see the module docstring).

    Parameters
    ----------
    datasets
        ``[{"name", "family"}]`` in the order of the batch's ``"dataset"`` indices; family ``po``, ``pa``,
        ``count`` or ``background`` (background rows join every presence-only term as zero counts).
    n_species
        Output columns of the network.
    loss
        ``"deepmaxent"``, ``"poisson"``, ``"bce"``, ``"cloglog"`` or ``"integrated"`` (all families).
    po_loss
        Term for presence-only data sets under ``loss="integrated"``: ``"deepmaxent"`` or ``"poisson"``.
    n_bias
        Observer-bias covariates (batch ``"bias"`` ``(B, n_bias)``) entering presence-only terms only.
    weights
        ``{data set name: weight}`` (default 1 each).
    reference
        Data set whose intercept is fixed at 0 (default: the first pa, else count, else po data set).
    background_weight
        Sites each background point stands for in presence-only terms (a ``log w`` offset); 0 leaves background
        points out, so the softmax runs over the recorded sites of all species (target-group background).

    Example
    -------
    >>> loss = IntegratedLoss([{"name": "po", "family": "po"}, {"name": "bg", "family": "background"}], 2)
    >>> batch = {"targets": torch.tensor([[1., 0], [0, 0]]), "dataset": torch.tensor([0, 1])}
    >>> loss(torch.zeros(2, 2), batch).shape
    torch.Size([])
    """

    def __init__(self, datasets: Sequence[Mapping[str, Any]], n_species: int, *, loss: str = "integrated",
                 po_loss: str = "deepmaxent", n_bias: int = 0, weights: Mapping[str, float] | None = None,
                 reference: str | None = None, background_weight: float = 1.0) -> None:
        super().__init__()
        if not float(background_weight) >= 0:
            raise InputError(f"background_weight={background_weight} must be >= 0")
        self.background_weight = float(background_weight)
        if loss not in LOSSES:
            raise InputError(f"loss={loss!r} is unknown; choose one of {list(LOSSES)}")
        if po_loss not in ("deepmaxent", "poisson"):
            raise InputError(f"po_loss={po_loss!r} must be 'deepmaxent' or 'poisson'")
        self.loss, self.po_loss = loss, po_loss
        self.specs = [{"name": str(d["name"]), "family": str(d["family"])} for d in datasets]
        names = [d["name"] for d in self.specs]
        families = [d["family"] for d in self.specs]
        allowed = LOSSES[loss]
        bad = sorted({f for f in families if f != "background" and f not in allowed})
        if bad:
            raise InputError(
                f"loss={loss!r} cannot use {bad} data (it takes {list(allowed)}); drop those records, pick a "
                "loss for them, or use loss='integrated' to combine presence-only, presence/absence and counts"
            )
        observed = [f for f in families if f != "background"]
        if not observed:
            raise InputError("no presence-only, presence/absence or count data set to fit")
        if "po" in families and "background" not in families and loss == "bce":
            raise InputError(
                f"loss={loss!r} on presence-only records needs background points (kind='background'); add them "
                "with geosdm.records.uniform_background(...) or geosdm.records.training_table(...)"
            )
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise InputError(f"dataset_weights names unknown data set(s) {unknown}; the data sets are {names}")
        if reference is None:
            for fam in ("pa", "count", "po"):
                if fam in families:
                    reference = names[families.index(fam)]
                    break
        if reference not in names or families[names.index(str(reference))] == "background":
            raise InputError(f"reference_dataset={reference!r} is not an observed data set; choose one of "
                             f"{[n for n, f in zip(names, families) if f != 'background']}")
        self.reference = str(reference)
        self.po_index = [i for i, f in enumerate(families) if f == "po"]
        self.background_index = [i for i, f in enumerate(families) if f == "background"]
        self.register_buffer("weights", torch.tensor([float(weights.get(n, 1.0)) for n in names]))
        free = torch.tensor([0.0 if n == self.reference or f == "background" else 1.0
                             for n, f in zip(names, families)])
        self.register_buffer("free", free[:, None])
        self.intercepts = nn.Parameter(torch.zeros(len(names), n_species))
        self.n_bias = int(n_bias)
        self.bias_coef = nn.Parameter(torch.zeros(max(len(self.po_index), 1), max(self.n_bias, 1)))

    def extra_repr(self) -> str:
        return f"loss={self.loss!r}, datasets={[d['name'] for d in self.specs]}, reference={self.reference!r}"

    def intercept(self, index: int) -> Tensor:
        """Intercept row (n_species,) of data set ``index`` (0 for the reference)."""
        return self.intercepts[index] * self.free[index]

    def _po_term(self, f: Tensor, y: Tensor, mine: Tensor, bg: Tensor, k: int, slot: int,
                 bias: Tensor | None) -> Tensor:
        w = self.background_weight
        rows = mine | bg if w > 0 else mine
        softmax = self.loss == "deepmaxent" or (self.loss == "integrated" and self.po_loss == "deepmaxent")
        eta = f[rows] if softmax else f[rows] + self.intercept(k)  # an intercept cancels in the softmax
        if bias is not None and self.n_bias:
            eta = eta + (bias[rows] @ self.bias_coef[slot])[:, None]
        yy = y[rows]
        if self.loss == "bce":
            weight = torch.where(bg[rows], w, 1.0)[:, None]
            ok, yv = _observed(yy)
            out = nn.functional.binary_cross_entropy_with_logits(eta, (yv > 0).to(eta.dtype), reduction="none")
            return (torch.where(ok, out, torch.zeros_like(out)) * weight).sum()
        if w not in (0.0, 1.0):  # background points stand for w sites each (log w offset)
            eta = eta + torch.where(bg[rows], math.log(w), 0.0)[:, None]
        if self.loss == "poisson" or (self.loss == "integrated" and self.po_loss == "poisson"):
            return poisson_loss(eta, yy)
        return deepmaxent_loss(eta, yy)

    def forward(self, logits: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        """Mean loss per entry of the batch (sum of weighted data-set terms / (B x n_species))."""
        f = logits.float()
        y = batch["targets"].float()
        ds = batch["dataset"]
        log_area = batch.get("log_area")
        bias = batch.get("bias")
        bg = torch.zeros_like(ds, dtype=torch.bool)
        for b in self.background_index:
            bg |= ds == b
        # every parameter takes part in the graph (DDP needs it), even when its data set is not in the batch
        total = 0.0 * (self.intercepts.sum() + self.bias_coef.sum())
        for k, spec in enumerate(self.specs):
            fam = spec["family"]
            if fam == "background":
                continue
            mine = ds == k
            if fam == "po":
                term = self._po_term(f, y, mine, bg, k, self.po_index.index(k), bias)
            else:
                eta = f[mine] + self.intercept(k)
                off = log_area[mine].float() if log_area is not None else 0.0
                off = torch.nan_to_num(off) if isinstance(off, Tensor) else off
                if fam == "pa":
                    term = bce_loss(eta, y[mine]) if self.loss == "bce" else cloglog_loss(eta, y[mine], off)
                else:
                    term = poisson_loss(eta, y[mine], off)
            total = total + self.weights[k] * term
        return total / (f.shape[0] * f.shape[1])

    def describe(self) -> dict[str, Any]:
        """JSON-able description (rebuilds the module with :meth:`from_description`)."""
        return {"datasets": self.specs, "loss": self.loss, "po_loss": self.po_loss, "n_bias": self.n_bias,
                "weights": {d["name"]: float(w) for d, w in zip(self.specs, self.weights.tolist())},
                "reference": self.reference, "n_species": int(self.intercepts.shape[1]),
                "background_weight": self.background_weight}

    @classmethod
    def from_description(cls, d: Mapping[str, Any]) -> IntegratedLoss:
        return cls(d["datasets"], int(d["n_species"]), loss=d["loss"], po_loss=d["po_loss"], n_bias=d["n_bias"],
                   weights=d["weights"], reference=d["reference"], background_weight=d.get("background_weight", 1.0))
