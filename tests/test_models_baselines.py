"""Single-species baselines: same table interface as MultiSpeciesSDM, elapid fallbacks reported, NCEAS smoke run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from geosdm.errors import InputError, NotFittedError
from geosdm.models.baselines import (
    GradientBoostingBaseline,
    LogisticQuadraticBaseline,
    MaxEntBaseline,
    elapid_backend,
)
from tests.test_models_estimator import covariates, log_intensity, make_world


@pytest.fixture(scope="module")
def po() -> pd.DataFrame:
    table = make_world(n_po=120, n_bg=600)["po"].copy()
    table["soil"] = pd.Categorical(np.where(table["x"] > 475_000, "clay", "sand"))  # a categorical covariate
    return table


def _truth_auc(model, po: pd.DataFrame, species: str) -> float:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    x, y = 470_000 + rng.uniform(0, 10_000, 2000), 6_580_000 + rng.uniform(0, 10_000, 2000)
    cov = covariates(x, y)
    frame = pd.DataFrame({**cov, "soil": pd.Categorical(np.where(x > 475_000, "clay", "sand"))})
    truth = log_intensity(cov)[species]
    high = truth > np.quantile(truth, 0.7)
    return float(roc_auc_score(high, model.predict(frame)[species]))


@pytest.mark.parametrize(("cls", "kw"), [(LogisticQuadraticBaseline, {}), (MaxEntBaseline, {}),
                                         (GradientBoostingBaseline, {"max_iter": 40, "learning_rate": 0.2})])
def test_baselines_fit_per_species_and_rank_the_truth(cls, kw: dict, po: pd.DataFrame) -> None:  # type: ignore[no-untyped-def]
    model = cls(covariates=["temp", "rain", "soil"], seed=0, **kw)
    with pytest.raises(NotFittedError):
        model.predict(po)
    model.fit(po)
    assert model.species_ == ["sp_a", "sp_b", "sp_c"]
    assert set(model.fit_seconds_per_species_) == set(model.species_)
    pred = model.predict(po)
    assert pred.shape == (len(po), 3) and np.isfinite(pred.to_numpy()).all()
    assert _truth_auc(model, po, "sp_b") > 0.75


def test_maxent_reports_liblinear_fallback_and_small_samples(po: pd.DataFrame) -> None:
    two = po[(po["species"] != "sp_c") | (po.index.isin(po.index[po["species"] == "sp_c"][:2]))]
    model = MaxEntBaseline(covariates=["temp", "rain"]).fit(two)
    assert model.backend_ == elapid_backend()
    assert set(model.solvers_) == set(model.species_)
    notes = " ".join(model.notes_)
    if elapid_backend() == "liblinear":
        assert "liblinear" in notes and set(model.solvers_.values()) == {"liblinear"}
    else:
        assert "sp_c: 2 presence(s), too few for elapid's internal 3-fold CV" in notes
        assert "glmnet path without CV, keeping its last lambda" in notes and "liblinear" not in notes
        assert model.solvers_ == {"sp_a": "glmnet path, CV lambda", "sp_b": "glmnet path, CV lambda",
                                  "sp_c": "glmnet path, last lambda"}
    assert np.isfinite(model.predict(two)["sp_c"]).all()


def test_maxent_fits_the_glmnet_regularisation_path(po: pd.DataFrame) -> None:
    """With python-glmnet (pinned in the baselines set) every species is a glmnet lasso path, never liblinear."""
    pytest.importorskip("glmnet")
    from glmnet.logistic import LogitNet

    model = MaxEntBaseline(covariates=["temp", "rain", "soil"], seed=0).fit(po)
    assert model.backend_ == "glmnet" and model.notes_ == []
    for name, fitted in model.models_.items():
        assert fitted.use_sklearn is False, name
        assert isinstance(fitted.estimator, LogitNet), name  # not sklearn's LogisticRegression(liblinear)
        assert len(fitted.lambdas_) == fitted.n_lambdas == 100 and fitted.regularization_ is not None, name
        assert fitted.estimator.coef_path_.shape[-1] == 100, name  # the whole path was fitted
        assert model.solvers_[name] == "glmnet path, CV lambda", name


def test_baselines_need_presences_and_background(po: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="presence-only records and background"):
        LogisticQuadraticBaseline(covariates=["temp"]).fit(po[po["kind"] == "presence_only"])


@pytest.mark.shared_data
def test_nceas_region_smoke(shared_data) -> None:  # type: ignore[no-untyped-def]
    from geosdm.datasets import load_nceas
    from geosdm.models import MultiSpeciesSDM

    awt = load_nceas(shared_data / "nceas", "AWT")
    species = ["awt01", "awt05", "awt21", "awt30"]
    model = MultiSpeciesSDM(covariates=list(awt.covariates), species=species, hidden=64, epochs=15,
                            background_weight=0.0, seed=0).fit(awt.training_table())
    scores = model.predict(awt.test_env, log=True)
    aucs = []
    for s in species:
        env, y = awt.evaluation_sites(s)
        keep = awt.test_pa[s].notna().to_numpy()
        aucs.append(roc_auc_score(y, scores[s].to_numpy()[keep]))
    assert np.mean(aucs) > 0.55, aucs
