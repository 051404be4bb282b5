"""``MultiSpeciesSDM``: one deep model for many species, fitted on records (+ cube) or on tables.

scikit-learn conventions (STYLE.md §3): ``__init__`` only stores parameters (``get_params``/``set_params``/
``clone`` work), ``fit`` validates them and returns ``self``, learned attributes end in ``_``, prediction before
``fit`` raises :class:`~geosdm.errors.NotFittedError`, and randomness comes only from ``seed``.

Outputs: ``predict`` gives relative intensities ``λ = exp(f)`` per species (``log=True``: ``f``), comparable within
a species; ``predict_proba(X, area=A)`` gives ``P = 1 - exp(-λ A / A0)`` (cloglog; ``A0`` = the median surveyed
plot area of the training data, so probabilities are calibrated when presence/absence surveys were used, e.g.
with ``loss="integrated"``). Observer-bias covariates only enter the training loss and are dropped here.

This module checks the parameters, prepares the data and assembles the fitted model; the ensemble members are
trained by :mod:`geosdm.models.members`, and :mod:`geosdm.models.persistence` turns a fitted model into what
``save`` writes and back.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr
from sklearn.base import BaseEstimator

from geosdm.errors import DataSourceError, InputError, NotFittedError
from geosdm.models._grid import predict_grid
from geosdm.models._prepare import Prepared, prepare
from geosdm.models.calibrators import apply_calibration
from geosdm.models.checkpoint import load_checkpoint, save_checkpoint
from geosdm.models.features import Columns, check_columns, column_values, n_rows, warn_unseen_inputs
from geosdm.models.losses import LOSSES, IntegratedLoss
from geosdm.models.members import fit_members
from geosdm.models.networks import NETWORKS, Ensemble
from geosdm.models.persistence import model_state, restore_state
from geosdm.models.trainer import resolve_device, threads

__all__ = ["MultiSpeciesSDM", "UncalibratedWarning", "load_model"]

#: Parameters that do not change what is learned (left out of the resume fingerprint).
_RUNTIME = frozenset({"epochs", "device", "n_threads", "num_workers", "work_dir", "checkpoint_every", "resume",
                      "distributed", "streaming"})


class UncalibratedWarning(UserWarning):
    """Probabilities from a model fitted without presence/absence or count data are only relative."""


class MultiSpeciesSDM(BaseEstimator):
    """Multi-species deep SDM: a shared network gives each species' log-intensity.

    Parameters
    ----------
    network
        ``"mlp"`` (residual MLP on covariates), ``"additive"`` (a neural additive model: one small network per
        covariate, no interactions; a learnt GAM), ``"cnn"`` (small ResNet on covariate patches) or
        ``"fusion"`` (covariates + patches + time series).
    loss
        ``"deepmaxent"`` (presence-only + background), ``"poisson"``, ``"bce"``, ``"cloglog"`` (presence/absence
        with a log-area offset) or ``"integrated"`` (all data sets share one intensity; Isaac et al. 2020).
    covariates
        Covariate columns (default: the cube's covariates, else the table's numeric/category columns).
    categorical
        Columns to one-hot encode besides pandas ``category``/string columns.
    bias_covariates
        Observer-bias columns entering presence-only terms only (dropped at prediction).
    series
        Time-series inputs for ``network="fusion"``: channels of column names, one per time step, e.g.
        ``[["s2_ndvi_djf", "s2_ndvi_mam", "s2_ndvi_jja", "s2_ndvi_son"]]``.
    species
        Species to model (default: all with records).
    hidden, n_blocks, dropout
        Width, residual blocks (CNN: stages) and dropout of the network (``"additive"``: ``hidden`` is each
        covariate's width, 32 is plenty, and ``n_blocks`` is unused).
    width, patch_size
        CNN channels of the first stage and patch side in cells.
    po_loss
        Presence-only term of ``loss="integrated"``: ``"deepmaxent"`` or ``"poisson"``.
    dataset_weights
        ``{dataset: weight}`` of the integrated loss (default 1 each).
    reference_dataset
        Data set whose intercept is 0 (default: the first presence/absence, else count, else presence-only).
    background_weight
        Sites each background point stands for in presence-only terms; 0 drops background points from the
        softmax, which then runs over the recorded sites of all species (target-group background, a
        correction for observer bias shared by the species).
    n_members
        Ensemble size: members differ in seed and validation fold; predictions average their log-intensities
        and :meth:`predict_members` gives each member's (their spread is an uncertainty).
    epochs, batch_size, lr, weight_decay
        AdamW training.
    input_penalty
        Group-lasso penalty on the first layer of the covariate network: ``input_penalty`` times the sum over
        encoded covariates of the norm of their outgoing weights, added to the training loss. It drives the
        weights of covariates the species do not need to zero, so the network leans on fewer stand-ins for
        the same signal (importances and response curves become easier to read); 0 (default) turns it off.
        Choose it by held-out likelihood (``benchmarks/input_penalty.py``: 3e-4 on the demo region).
    patience
        Epochs without validation improvement before stopping (the best epoch's weights are kept).
    val_size
        Validation share: fold 0 of the table's ``fold`` column, else of ``round(1 / val_size)`` spatial
        blocks; 0 trains ``epochs`` epochs without early stopping.
    cv_block_size
        Side of the spatial blocks in CRS units (default: 1/10 of the sites' extent).
    refit
        After early stopping, retrain on all sites for the best number of epochs.
    device
        ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``.
    precision
        ``"auto"`` (bf16 autocast on CUDA, fp32 on CPU), ``"32"``, ``"bf16"``, ``"16"``.
    n_threads
        torch intra-op threads during fit/predict (None: leave torch's setting).
    streaming, num_workers
        Read training samples from Zarr stores in ``work_dir`` with a DataLoader of ``num_workers`` processes.
    work_dir
        Folder for point/patch stores and checkpoints (default: a temporary folder removed after ``fit``). Under
        DDP a shared ``work_dir`` is written by rank 0 only; without one each rank writes its own stores.
    checkpoint_every, resume
        Write a training checkpoint every N epochs to ``work_dir/checkpoints``; resume from it on ``fit``.
    distributed
        ``"auto"``: DDP when launched by torchrun; ``True``: require it; ``False``: never.
    seed
        Seed of every random draw (initialisation, shuffling, dropout, validation blocks).

    Example
    -------
    >>> m = MultiSpeciesSDM(loss="deepmaxent", epochs=50, seed=0).fit(table)  # doctest: +SKIP
    >>> m.predict(test_env[m.feature_names_])  # doctest: +SKIP
    """

    def __init__(self, network: str = "mlp", loss: str = "deepmaxent", *, covariates: Sequence[str] | None = None,
                 categorical: Sequence[str] = (), bias_covariates: Sequence[str] = (),
                 series: Sequence[Sequence[str]] | None = None, species: Sequence[str] | None = None,
                 hidden: int = 250, n_blocks: int = 2, dropout: float = 0.0, width: int = 32, patch_size: int = 15,
                 po_loss: str = "deepmaxent", dataset_weights: Mapping[str, float] | None = None,
                 reference_dataset: str | None = None, background_weight: float = 1.0, n_members: int = 1, epochs: int = 100, batch_size: int = 256, lr: float = 1e-3,
                 weight_decay: float = 0.0, input_penalty: float = 0.0, patience: int = 10, val_size: float = 0.2,
                 cv_block_size: float | None = None, refit: bool = False, device: str = "auto",
                 precision: str = "auto", n_threads: int | None = 1, streaming: bool = False, num_workers: int = 0,
                 work_dir: str | None = None, checkpoint_every: int = 0, resume: bool = False,
                 distributed: bool | str = "auto", seed: int | None = None) -> None:
        self.network, self.loss, self.covariates, self.categorical = network, loss, covariates, categorical
        self.bias_covariates, self.series, self.species = bias_covariates, series, species
        self.hidden, self.n_blocks, self.dropout, self.width, self.patch_size = hidden, n_blocks, dropout, width, patch_size
        self.po_loss, self.dataset_weights, self.reference_dataset = po_loss, dataset_weights, reference_dataset
        self.background_weight, self.n_members = background_weight, n_members
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.input_penalty = input_penalty
        self.patience, self.val_size, self.cv_block_size, self.refit = patience, val_size, cv_block_size, refit
        self.device, self.precision, self.n_threads = device, precision, n_threads
        self.streaming, self.num_workers, self.work_dir = streaming, num_workers, work_dir
        self.checkpoint_every, self.resume, self.distributed, self.seed = checkpoint_every, resume, distributed, seed

    # ------------------------------------------------------------------------------------------ parameters
    def _checked_params(self) -> dict[str, Any]:
        def positive(name: str, kind: type = int) -> None:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0 or (kind is int and int(v) != v):
                raise InputError(f"{name}={v!r} must be a positive {kind.__name__}")

        if self.network not in NETWORKS:
            raise InputError(f"network={self.network!r} is unknown; choose one of {list(NETWORKS)}")
        if self.loss not in LOSSES:
            raise InputError(f"loss={self.loss!r} is unknown; choose one of {list(LOSSES)}")
        for name in ("hidden", "n_blocks", "width", "patch_size", "epochs", "batch_size", "patience", "n_members"):
            positive(name)
        positive("lr", float)
        if not 0 <= float(self.dropout) < 1:
            raise InputError(f"dropout={self.dropout} must be in [0, 1)")
        if float(self.weight_decay) < 0:
            raise InputError(f"weight_decay={self.weight_decay} must be >= 0")
        if isinstance(self.input_penalty, bool) or not float(self.input_penalty) >= 0:
            raise InputError(f"input_penalty={self.input_penalty!r} must be a number >= 0 (0 turns it off)")
        if not 0 <= float(self.val_size or 0) < 1:
            raise InputError(f"val_size={self.val_size} must be in [0, 1) (0 disables early stopping)")
        if self.series and self.network != "fusion":
            raise InputError(f"series inputs need network='fusion' (network={self.network!r} ignores them)")
        if self.distributed not in (True, False, "auto"):
            raise InputError(f"distributed={self.distributed!r} must be True, False or 'auto'")
        if self.resume and not self.work_dir:
            raise InputError("resume=True needs work_dir= (the folder holding checkpoints/last)")
        if int(self.num_workers) < 0 or int(self.checkpoint_every) < 0:
            raise InputError("num_workers and checkpoint_every must be >= 0")
        seed = self.seed
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**31))
        elif not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise InputError(f"seed={seed!r} must be an int or None")
        return {"seed": int(seed), "device": resolve_device(self.device)}

    def _fingerprint(self, prep: Prepared) -> str:
        params = {k: v for k, v in self.get_params().items() if k not in _RUNTIME}
        shapes = {k: list(v.shape) for k, v in prep.arrays.items()}
        sums = {k: float(np.nansum(v.astype("float64"))) for k, v in prep.arrays.items()}
        blob = json.dumps({"params": params, "shapes": shapes, "sums": sums}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------------------------------------ fit
    def fit(self, X: pd.DataFrame, Y: pd.DataFrame | None = None, *, cube: Any = None, patches: Any = None,
            area: Any = None) -> MultiSpeciesSDM:
        """Fit on a records table ``X`` (with covariates, or a ``cube`` to read them from), or on ``X``/``Y``.

        Parameters
        ----------
        X
            Records table (schema columns ``kind``, ``species``, ``value``, ``x``, ``y``, ``dataset``... plus
            covariates; background rows have ``kind="background"``), or a covariate frame when ``Y`` is given.
        Y
            Optional site x species targets aligned with ``X``: record counts (deepmaxent: all-zero rows are
            background), counts (poisson), 0/1 detections (bce, cloglog); NaN = not surveyed.
        cube
            Covariate cube (path or Dataset): covariates missing from ``X`` are extracted at the records, sites
            are grid cells, and CNN patches are cut around them.
        patches
            CNN patches per row of ``X`` instead of a cube: an array ``(n, C, k, k)`` or a patch store.
        area
            Surveyed area per row of ``X`` (m²) with ``Y`` and a presence/absence loss.

        Returns
        -------
        MultiSpeciesSDM
            ``self``, fitted.

        Raises
        ------
        InputError, MissingVariableError
            Bad parameters, missing covariates, or data the loss cannot use.
        """
        cfg = self._checked_params()
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
            delattr(self, attr)
        seed, device = cfg["seed"], cfg["device"]
        t0 = time.perf_counter()
        with ExitStack() as stack:
            work = Path(self.work_dir) if self.work_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
            work.mkdir(parents=True, exist_ok=True)
            stack.enter_context(threads(self.n_threads))
            rank_world = (0, 1)
            use_ddp = self.distributed is True or (self.distributed == "auto" and _launched())
            if use_ddp:
                from geosdm.models.distributed import process_group

                rank_world = stack.enter_context(process_group())
            # with a shared work_dir, rank 0 writes the stores and the other ranks wait for them
            shared = use_ddp and self.work_dir is not None
            writer = rank_world[0] == 0 or not shared
            needs_patches = self.network == "cnn" or (self.network == "fusion" and (cube is not None or patches is not None))
            prep = prepare(X, Y, loss=self.loss, cube=cube, covariates=self.covariates, categorical=self.categorical,
                           bias_covariates=tuple(self.bias_covariates or ()), series=self.series, species=self.species,
                           area=area, patch_size=int(self.patch_size) if needs_patches else None, patches=patches,
                           work_dir=work, write_stores=writer, drop_background=float(self.background_weight) == 0)
            spec = self._network_spec(prep)
            loss = IntegratedLoss([d.to_dict() for d in prep.sites.datasets], len(prep.sites.species), loss=self.loss,
                                  po_loss=self.po_loss, n_bias=prep.arrays["bias"].shape[1],
                                  weights=self.dataset_weights, reference=self.reference_dataset,
                                  background_weight=float(self.background_weight))
            objectives, results = fit_members(self.get_params(), prep, spec, loss, fingerprint=self._fingerprint(prep),
                                              seed=seed, device=device, work=work, rank_world=rank_world,
                                              ddp=use_ddp, writer=writer)
        if len(objectives) == 1:
            self.network_, self.network_spec_, self.loss_ = objectives[0].network, spec, objectives[0].loss
        else:
            self.network_ = Ensemble([o.network for o in objectives])
            self.network_spec_ = {"name": "ensemble", "member": spec, "n_members": len(objectives)}
            self.loss_ = IntegratedLoss.from_description(loss.describe())  # member-averaged intercepts and bias
            with torch.no_grad():
                for name, param in self.loss_.named_parameters():
                    param.copy_(torch.stack([dict(o.loss.named_parameters())[name] for o in objectives]).mean(0))
        self.encoder_ = prep.encoder
        self.bias_encoder_ = prep.bias_encoder
        self.feature_names_ = list(prep.encoder.columns)
        self.series_ = [list(g) for g in self.series] if self.series else None
        self.species_ = list(prep.sites.species)
        self.datasets_ = [d.to_dict() for d in prep.sites.datasets]
        self.reference_dataset_ = loss.reference
        self.area_unit_m2_ = prep.area_unit
        self.link_ = "logit" if self.loss == "bce" else "cloglog"
        self.calibrated_ = any(d.family in ("pa", "count") for d in prep.sites.datasets)
        self.patch_ = ({"size": int(self.patch_size), "variables": list(prep.patch_variables),
                        "mean": prep.patch_mean.tolist(), "scale": prep.patch_scale.tolist()}
                       if prep.patch_mean is not None else None)
        self.n_sites_ = len(prep.sites.frame)
        self.n_dropped_nan_ = prep.n_dropped
        self.training_ = results[0]
        self.training_members_ = results
        self.seed_ = seed
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _network_spec(self, prep: Prepared) -> dict[str, Any]:
        n_sp, p = len(prep.sites.species), prep.arrays["tabular"].shape[1]
        channels = len(prep.patch_variables)
        if self.network == "mlp":
            return {"name": "mlp", "n_features": p, "n_species": n_sp, "hidden": int(self.hidden),
                    "n_blocks": int(self.n_blocks), "dropout": float(self.dropout)}
        if self.network == "additive":
            return {"name": "additive", "n_features": p, "n_species": n_sp, "hidden": int(self.hidden),
                    "dropout": float(self.dropout)}
        if self.network == "cnn":
            return {"name": "cnn", "channels": channels, "n_species": n_sp, "width": int(self.width),
                    "n_stages": int(self.n_blocks), "dropout": float(self.dropout)}
        series = prep.arrays.get("series")
        return {"name": "fusion", "n_species": n_sp, "n_features": p, "channels": channels,
                "series_channels": int(series.shape[1]) if series is not None else 0, "hidden": int(self.hidden),
                "n_blocks": int(self.n_blocks), "dropout": float(self.dropout), "width": int(self.width)}

    # ------------------------------------------------------------------------------------------ prediction
    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(...) first or load one with "
                "MultiSpeciesSDM.load(path)"
            )

    def _input_columns(self) -> list[str]:
        """Covariate columns read per row: ``feature_names_`` then the series' time steps."""
        return list(dict.fromkeys([*self.feature_names_, *(c for g in (self.series_ or []) for c in g)]))

    def _needs_patches(self) -> bool:
        spec = self.network_spec_.get("member", self.network_spec_)
        return spec["name"] == "cnn" or bool(spec.get("channels"))

    def _inputs(self, X: Columns, patches: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
        tab, valid = self.encoder_.transform(X)
        inputs = {"tabular": tab}
        if self.series_:
            cols = [c for g in self.series_ for c in g]
            check_columns(X, cols)
            v = np.column_stack([column_values(X[c]) for c in cols]).astype("float64")
            mean = np.array([self.encoder_.means[c] for c in cols])
            scale = np.array([self.encoder_.scales[c] for c in cols])
            z = (v - mean) / scale
            valid &= np.isfinite(z).all(axis=1)
            inputs["series"] = np.nan_to_num(z).astype(np.float32).reshape(n_rows(X), len(self.series_), -1)
        if self._needs_patches():
            if patches is None:
                raise InputError(
                    f"this {self.network} model needs covariate patches: pass patches= (array "
                    "(n, C, k, k) or patch store over X's rows) or cube= to cut them"
                )
            from geosdm.models._prepare import _patches_for_rows

            p = _patches_for_rows(patches)
            mean, scale = np.asarray(self.patch_["mean"]), np.asarray(self.patch_["scale"])
            inputs["patch"] = np.nan_to_num((p - mean[None, :, None, None]) / scale[None, :, None, None]).astype(np.float32)
        return inputs, valid

    def _forward(self, inputs: Mapping[str, np.ndarray], *, members: bool = False, batch: int = 65536) -> np.ndarray:
        device = resolve_device(self.device)
        first = next(self.network_.parameters(), None)
        on_cpu = device.type == "cpu" and (first is None or first.device.type == "cpu")
        net = self.network_ if on_cpu else self.network_.to(device)  # the model lives on the CPU between calls
        if net.training:
            net.eval()
        run = net.forward_members if members and isinstance(net, Ensemble) else net
        n = len(next(iter(inputs.values())))
        out: np.ndarray | None = None
        try:
            with threads(self.n_threads), torch.no_grad():
                for s in range(0, n, batch):
                    b = {k: torch.from_numpy(np.ascontiguousarray(v[s : s + batch])).to(device) for k, v in inputs.items()}
                    f = run(b).float().cpu().numpy()
                    if out is None and f.shape[-2] == n:  # one batch: its output is the result (no copy)
                        out = f
                        break
                    if out is None:
                        out = np.empty((*f.shape[:-2], n, f.shape[-1]), dtype=np.float32)
                    out[..., s : s + batch, :] = f
        finally:
            if not on_cpu:
                self.network_.to("cpu")
        return out if out is not None else np.empty((0, len(self.species_)), dtype=np.float32)

    def _log_intensity(self, X: Columns, patches: Any = None, *, members: bool = False,
                       batch: int = 65536) -> np.ndarray:
        inputs, valid = self._inputs(X, patches)
        f = self._forward(inputs, members=members, batch=batch)
        if not valid.all():
            f[..., ~valid, :] = np.nan
        return f

    def decision_function(self, X: Columns, *, patches: Any = None, batch_size: int = 65536) -> np.ndarray:
        """Log-intensity ``f`` per species as a float32 array ``(n, n_species)`` (NaN where an input is missing).

        The raw score behind :meth:`predict` (``exp(f)``) and :meth:`predict_proba`, without building a
        DataFrame: ``X`` may be a mapping of covariate name -> 1-D array, the fast path of tiled prediction.

        Example
        -------
        >>> f = model.decision_function({"bio01": t, "bio12": p})  # doctest: +SKIP
        """
        self._check_fitted()
        return self._log_intensity(X, patches, batch=int(batch_size))

    def predict_members(self, X: pd.DataFrame, *, cube: Any = None, patches: Any = None) -> np.ndarray:
        """Each ensemble member's log-intensity ``(n_members, n, n_species)`` (their spread is an uncertainty).

        Example
        -------
        >>> spread = model.predict_members(points).std(axis=0)  # doctest: +SKIP
        """
        self._check_fitted()
        with ExitStack() as stack:
            if cube is not None:
                X, patches = self._with_cube(X, cube, stack)
            f = self._log_intensity(X, patches, members=True)
        return f if f.ndim == 3 else f[None]

    def _with_cube(self, X: pd.DataFrame, cube: Any, stack: ExitStack) -> tuple[pd.DataFrame, Any]:
        from geosdm.records import extract_covariates, extract_patches

        missing = [c for c in self.feature_names_ if c not in X.columns]
        if missing:
            X = extract_covariates(cube, X, variables=missing)
        patches = None
        if self._needs_patches():
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            patches = extract_patches(cube, X, folder / "patches.zarr", size=self.patch_["size"],
                                      variables=self.patch_["variables"])
        return X, patches

    def predict(self, X: pd.DataFrame | xr.Dataset, *, log: bool = False, cube: Any = None,
                patches: Any = None) -> pd.DataFrame | xr.DataArray:
        """Relative intensity ``exp(f)`` per species (``log=True``: the log-intensity ``f``).

        Parameters
        ----------
        X
            Covariate frame (rows = points; records tables work too), or a covariate cube ``xr.Dataset``
            (``(y, x)`` variables; dask-backed input gives a lazy output for point networks).
        log
            Return log-intensities.
        cube
            Read covariates (and patches) missing from ``X`` at its records' points.
        patches
            Patches per row of ``X`` for patch networks.

        Returns
        -------
        pandas.DataFrame or xarray.DataArray
            ``(n, species)`` with ``X``'s index (NaN where a covariate is missing), or ``(species, y, x)``.
        """
        self._check_fitted()
        if isinstance(X, xr.Dataset):
            f = predict_grid(self, X)
            return f if log else np.exp(f)
        with ExitStack() as stack:
            if cube is not None:
                X, patches = self._with_cube(X, cube, stack)
            warn_unseen_inputs(self.encoder_, X, columns=self._input_columns(), what="X")
            f = self._log_intensity(X, patches)
        return pd.DataFrame(f if log else np.exp(f), index=X.index, columns=self.species_)

    def predict_proba(self, X: pd.DataFrame | xr.Dataset, *, area: float | None = None, cube: Any = None,
                      patches: Any = None, calibration: bool = True) -> pd.DataFrame | xr.DataArray:
        """Presence probability over an area: ``1 - exp(-exp(f) A / A0)`` (logit link for ``loss="bce"``), then
        the model's ``calibrator_`` when it has one (:func:`geosdm.models.calibration.calibrate`).

        Parameters
        ----------
        area
            Area in m² (default: ``area_unit_m2_``, the median surveyed plot area of the training data).
        calibration
            Apply ``calibrator_`` (False: the link's probability as fitted).

        Example
        -------
        >>> model.predict_proba(plots, area=400.0)  # doctest: +SKIP
        """
        f = self.predict(X, log=True, cube=cube, patches=patches)
        calibrator = getattr(self, "calibrator_", None) if calibration else None
        if not self.calibrated_ and self.link_ == "cloglog" and calibrator is None:
            warnings.warn("the model was fitted without presence/absence or count data: probabilities are relative, "
                          "not calibrated; fit with loss='integrated' and survey data for calibrated ones",
                          UncalibratedWarning, stacklevel=2)
        if self.link_ == "logit":
            p = 1.0 / (1.0 + np.exp(-f))
        else:
            if area is not None and not float(area) > 0:
                raise InputError(f"area={area} must be > 0 (m²)")
            offset = float(np.log(float(area) / self.area_unit_m2_)) if area is not None else 0.0
            p = -np.expm1(-np.exp(f + offset))
        if calibrator is None:
            return p
        return apply_calibration(p, calibrator)

    # ---------------------------------------------------------------------------------------- persistence
    def save(self, path: str | PathLike[str]) -> Path:
        """Write the fitted model (safetensors + JSON config, no pickle) to the folder ``path``.

        Example
        -------
        >>> model.save("models/demo")  # doctest: +SKIP
        """
        self._check_fitted()
        return save_checkpoint(path, *model_state(self))

    @classmethod
    def load(cls, path: str | PathLike[str]) -> MultiSpeciesSDM:
        """Read a model written by :meth:`save`.

        Raises
        ------
        DataSourceError
            The folder is not a checkpoint, or its weights and configuration do not fit together (a missing key,
            a tensor of another shape: a damaged or hand-edited folder).
        """
        tensors, cfg = load_checkpoint(path)
        if cfg.get("class") != cls.__name__:
            raise InputError(f"{str(path)!r} holds a {cfg.get('class')!r}, not a {cls.__name__}")
        try:
            return restore_state(cls(**cfg["params"]), tensors, cfg)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise DataSourceError(
                f"model {str(path)!r}: its weights and configuration do not fit together ({type(err).__name__}: "
                f"{str(err)[:300]}); the folder is damaged or was edited: save the model again"
            ) from None


def load_model(path: str | PathLike[str]) -> MultiSpeciesSDM:
    """Read a model folder written by ``MultiSpeciesSDM.save``.

    Example
    -------
    >>> model = load_model("demo-output/model")  # doctest: +SKIP
    """
    return MultiSpeciesSDM.load(path)


def _launched() -> bool:
    from geosdm.models.distributed import is_launched

    return is_launched()
