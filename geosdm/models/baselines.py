"""Single-species baselines fitted species by species on presence-only records + background points.

They share ``MultiSpeciesSDM``'s table interface (``fit(records_table)``, ``predict(X) -> (n, species)``) so
benchmarks evaluate every model the same way. Scores are only rankable within a species.

* :class:`MaxEntBaseline` — elapid's ``MaxentModel`` (defaults: linear + hinge + product features, beta
  multiplier 1.5, presence:background weight 100). With ``python-glmnet`` elapid fits Maxent's lasso
  regularisation path (100 lambdas, per-feature penalties from the beta multiplier) and keeps the lambda with
  the best internal 3-fold CV AUC. A species with fewer than 3 presences (too few for that CV, like NCEAS
  ``nsw30`` with 2 records), or whose CV fit fails, is fitted on the same path without CV, keeping its last
  lambda (maxnet's rule). Without ``python-glmnet`` elapid silently falls back to scikit-learn liblinear with
  one regularisation strength. ``solvers_`` records how each species was fitted and ``notes_`` every fallback.
* :class:`LogisticQuadraticBaseline` — logistic regression on standardised covariates and their squares
  (one-hot categories), presences vs background with balanced class weights.
* :class:`GradientBoostingBaseline` — scikit-learn histogram gradient boosting with native categorical
  splits and balanced class weights.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from threadpoolctl import threadpool_limits

from geosdm.errors import InputError, NotFittedError
from geosdm.models.features import FeatureEncoder, check_columns, is_categorical
from geosdm.models._prepare import detect_covariates

__all__ = ["GradientBoostingBaseline", "LogisticQuadraticBaseline", "MaxEntBaseline", "elapid_backend"]

log = logging.getLogger(__name__)


def elapid_backend() -> str:
    """``"glmnet"`` when python-glmnet is importable (Maxent-like fits), else ``"liblinear"`` (elapid's fallback)."""
    try:
        import glmnet  # noqa: F401
    except ImportError:
        return "liblinear"
    return "glmnet"


def _presence_background(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    for c in ("kind", "species"):
        if c not in table.columns:
            raise InputError(f"records table lacks column {c!r}; baselines fit on records with covariates")
    kind = table["kind"].astype(str)
    pres = table[kind == "presence_only"]
    bg = table[kind == "background"]
    if pres.empty or bg.empty:
        raise InputError(
            f"baselines need presence-only records and background points; the table has {kind.value_counts().to_dict()}"
        )
    return pres, bg, sorted(pres["species"].astype(str).unique())


class _PerSpecies(BaseEstimator):
    """Shared fit/predict loop; subclasses implement ``_fit_one`` and ``_score``."""

    covariates: Sequence[str] | None
    species: Sequence[str] | None
    n_threads: int | None

    def _design(self, frame: pd.DataFrame) -> Any:
        raise NotImplementedError

    def _fit_one(self, name: str, X: Any, y: np.ndarray) -> Any:
        raise NotImplementedError

    def _score(self, model: Any, X: Any) -> np.ndarray:
        raise NotImplementedError

    def _prepare(self, table: pd.DataFrame) -> None:
        """Learn encodings from the training table (subclasses)."""

    def fit(self, X: pd.DataFrame, Y: None = None) -> _PerSpecies:
        """Fit one model per species on its presence-only records vs all background points of ``X``."""
        t0 = time.perf_counter()
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
            delattr(self, attr)
        pres, bg, names = _presence_background(X)
        if self.species is not None:
            names = [s for s in self.species if s in set(names)]
        covs = list(self.covariates) if self.covariates is not None else detect_covariates(X)
        check_columns(X, covs, what="table")
        self.feature_names_ = covs
        self.notes_: list[str] = []
        self._prepare(pd.concat([pres, bg])[covs])
        bg_x = self._design(bg[covs])
        self.models_: dict[str, Any] = {}
        self.fit_seconds_per_species_: dict[str, float] = {}
        with threadpool_limits(self.n_threads):  # BLAS/OpenMP threads: 1 is fastest on small shared VMs
            for name in names:
                t1 = time.perf_counter()
                px = self._design(pres.loc[pres["species"].astype(str) == name, covs])
                Xs = _stack(px, bg_x)
                y = np.r_[np.ones(_len(px)), np.zeros(_len(bg_x))]
                self.models_[name] = self._fit_one(name, Xs, y)
                self.fit_seconds_per_species_[name] = time.perf_counter() - t1
        self.species_ = names
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per-species scores (higher = more suitable) for the rows of ``X``."""
        if not hasattr(self, "models_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(table) first")
        check_columns(X, self.feature_names_)
        design = self._design(X[self.feature_names_])
        out = {s: self._score(self.models_[s], design) for s in self.species_}
        return pd.DataFrame(out, index=X.index, columns=self.species_)


def _stack(a: Any, b: Any) -> Any:
    return pd.concat([a, b], ignore_index=True) if isinstance(a, pd.DataFrame) else np.vstack([a, b])


def _len(a: Any) -> int:
    return len(a)


@functools.cache
def _maxent_without_cv() -> type:
    """elapid ``MaxentModel`` whose glmnet fit skips LogitNet's internal CV (for ``use_lambdas="last"``)."""
    import elapid
    from glmnet.logistic import LogitNet

    class MaxentWithoutCV(elapid.MaxentModel):  # type: ignore[misc]
        def initialize_glmnet_model(self, lambdas: np.ndarray, alpha: float = 1, standardize: bool = False,
                                    fit_intercept: bool = True) -> None:
            self.estimator = LogitNet(alpha=alpha, lambda_path=lambdas, standardize=standardize,
                                      fit_intercept=fit_intercept, n_splits=0, n_jobs=self.n_cpus,
                                      tol=self.convergence_tolerance, random_state=self.random_state)

    return MaxentWithoutCV


class MaxEntBaseline(_PerSpecies):
    """elapid MaxEnt per species (see the module docstring for the solver and the small-sample fallbacks).

    Parameters
    ----------
    covariates, species
        Covariate columns (default: detected) and species (default: all with presence-only records).
    feature_types, beta_multiplier, class_weights
        elapid ``MaxentModel`` settings (its defaults).
    n_threads
        BLAS/OpenMP threads while fitting (None: leave as is).
    seed
        ``random_state`` of elapid.

    Attributes
    ----------
    solvers_
        Per species: ``"glmnet path, CV lambda"`` (elapid's default), ``"glmnet path, last lambda"`` (fewer than
        3 presences or a failed CV fit), ``"liblinear"`` (no python-glmnet) or ``"liblinear, linear features"``
        (every other fit failed).

    Example
    -------
    >>> MaxEntBaseline(seed=0).fit(table).predict(test_env)  # doctest: +SKIP
    """

    def __init__(self, *, covariates: Sequence[str] | None = None, species: Sequence[str] | None = None,
                 feature_types: Sequence[str] = ("linear", "hinge", "product"), beta_multiplier: float = 1.5,
                 class_weights: float | str = 100, n_threads: int | None = 1, seed: int | None = 0) -> None:
        self.covariates, self.species, self.feature_types, self.n_threads = covariates, species, feature_types, n_threads
        self.beta_multiplier, self.class_weights, self.seed = beta_multiplier, class_weights, seed

    def _prepare(self, frame: pd.DataFrame) -> None:
        self.categorical_ = [i for i, c in enumerate(frame.columns) if is_categorical(frame[c])]
        backend = elapid_backend()
        self.backend_ = backend
        self.solvers_: dict[str, str] = {}
        if backend == "liblinear":
            self.notes_.append(
                "elapid without python-glmnet: fitted with scikit-learn liblinear and a single regularisation "
                "strength (not Maxent's lambda path); install python-glmnet for Maxent-like fits"
            )

    def _design(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.copy()
        for c in out.columns:
            if isinstance(out[c].dtype, pd.CategoricalDtype):
                out[c] = out[c].cat.codes.astype("float64")
        return out.astype("float64")

    def _model(self, feature_types: Sequence[str], *, cv: bool = True) -> Any:
        import elapid

        cls = elapid.MaxentModel if cv else _maxent_without_cv()
        return cls(feature_types=list(feature_types), beta_multiplier=self.beta_multiplier,
                   class_weights=self.class_weights, random_state=self.seed, n_cpus=1, transform="cloglog",
                   use_lambdas="best" if cv else "last")

    def _fit_one(self, name: str, X: pd.DataFrame, y: np.ndarray) -> Any:
        n_pres = int(y.sum())
        glmnet = self.backend_ == "glmnet"
        if n_pres >= 3 or not glmnet:
            try:
                model = self._try_fit(X, y, self.feature_types, cv=True)
                self.solvers_[name] = "glmnet path, CV lambda" if glmnet else "liblinear"
                return model
            except Exception as err:  # elapid/glmnet raise several types on tiny samples
                note = f"{name}: elapid MaxEnt failed ({type(err).__name__}: {err})"
        else:
            note = f"{name}: {n_pres} presence(s), too few for elapid's internal 3-fold CV"
        if glmnet:
            try:
                model = self._try_fit(X, y, self.feature_types, cv=False)
                self._note(note + "; fitted on the glmnet path without CV, keeping its last lambda (maxnet's rule)")
                self.solvers_[name] = "glmnet path, last lambda"
                return model
            except Exception as err:
                self._note(note)
                note = f"{name}: glmnet path without CV failed ({type(err).__name__}: {err})"
        self._note(note + "; fitted with linear features only (liblinear, no internal CV) instead")
        model = self._try_fit(X, y, ["linear"], cv=True, sklearn=True)
        self.solvers_[name] = "liblinear, linear features"
        return model

    def _try_fit(self, X: pd.DataFrame, y: np.ndarray, feature_types: Sequence[str], *, cv: bool,
                 sklearn: bool = False) -> Any:
        model = self._model(feature_types, cv=cv)
        if sklearn:
            model.use_sklearn = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return model.fit(X, y, categorical=self.categorical_ or None)

    def _note(self, note: str) -> None:
        self.notes_.append(note)
        log.warning(note)

    def _score(self, model: Any, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(model.predict(X), dtype="float64").reshape(-1)


class LogisticQuadraticBaseline(_PerSpecies):
    """Logistic regression on standardised covariates and their squares (presence vs background).

    Parameters
    ----------
    covariates, species
        Covariate columns and species.
    C
        Inverse L2 regularisation strength.
    n_threads
        BLAS/OpenMP threads while fitting (None: leave as is).
    seed
        Unused by lbfgs; kept for the shared contract.
    """

    def __init__(self, *, covariates: Sequence[str] | None = None, species: Sequence[str] | None = None,
                 C: float = 1.0, n_threads: int | None = 1, seed: int | None = 0) -> None:
        self.covariates, self.species, self.C, self.seed = covariates, species, C, seed
        self.n_threads = n_threads

    def _prepare(self, frame: pd.DataFrame) -> None:
        self.encoder_ = FeatureEncoder.fit(frame, list(frame.columns))

    def _design(self, frame: pd.DataFrame) -> np.ndarray:
        z, _ = self.encoder_.transform(frame)
        numeric = [i for i, n in enumerate(self.encoder_.output_names) if n in self.encoder_.means]
        return np.hstack([z, z[:, numeric] ** 2])

    def _fit_one(self, name: str, X: np.ndarray, y: np.ndarray) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, class_weight="balanced", max_iter=3000).fit(X, y)

    def _score(self, model: Any, X: np.ndarray) -> np.ndarray:
        return model.decision_function(X)


class GradientBoostingBaseline(_PerSpecies):
    """Histogram gradient boosting per species (presence vs background, balanced class weights).

    Parameters
    ----------
    covariates, species
        Covariate columns and species.
    max_iter, learning_rate, max_leaf_nodes, min_samples_leaf
        ``HistGradientBoostingClassifier`` settings.
    n_threads
        OpenMP threads while fitting (None: leave as is; 1 was 5x faster than 2 on a shared 2-core VM).
    seed
        ``random_state``.
    """

    def __init__(self, *, covariates: Sequence[str] | None = None, species: Sequence[str] | None = None,
                 max_iter: int = 200, learning_rate: float = 0.05, max_leaf_nodes: int = 15,
                 min_samples_leaf: int = 20, n_threads: int | None = 1, seed: int | None = 0) -> None:
        self.covariates, self.species, self.max_iter, self.learning_rate = covariates, species, max_iter, learning_rate
        self.n_threads = n_threads
        self.max_leaf_nodes, self.min_samples_leaf, self.seed = max_leaf_nodes, min_samples_leaf, seed

    def _prepare(self, frame: pd.DataFrame) -> None:
        self.categorical_mask_ = [bool(is_categorical(frame[c])) for c in frame.columns]

    def _design(self, frame: pd.DataFrame) -> np.ndarray:
        cols = []
        for c in frame.columns:
            col = frame[c]
            cols.append(col.cat.codes.replace(-1, np.nan).to_numpy("float64") if isinstance(col.dtype, pd.CategoricalDtype)
                        else pd.to_numeric(col, errors="coerce").to_numpy("float64"))
        return np.column_stack(cols)

    def _fit_one(self, name: str, X: np.ndarray, y: np.ndarray) -> Any:
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate, max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf, l2_regularization=1.0, class_weight="balanced",
            categorical_features=np.asarray(self.categorical_mask_), early_stopping=False, random_state=self.seed,
        ).fit(X, y)

    def _score(self, model: Any, X: np.ndarray) -> np.ndarray:
        return model.decision_function(X)
