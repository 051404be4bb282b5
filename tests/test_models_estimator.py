"""MultiSpeciesSDM: the shared estimator contract, input validation, learning a known truth, integrated data,
checkpoints (save/load, resume), and predictions on tables and cubes.

The synthetic world: two covariates that are smooth functions of position on a 10 km square (Lambert-93),
three species with known log-intensities, presence-only records thinned by an observer-bias gradient, and
presence/absence plots with a cloglog detection over a known area.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.stats import spearmanr
from sklearn.base import clone

from geosdm.errors import DataGapWarning, InputError, MissingVariableError, NotFittedError
from geosdm.models import MultiSpeciesSDM, UncalibratedWarning, load_model

X0, Y0 = 470_000.0, 6_580_000.0
SPECIES = ("sp_a", "sp_b", "sp_c")
FAST = {"hidden": 32, "n_blocks": 1, "epochs": 12, "batch_size": 128, "lr": 3e-3}


def covariates(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    u, v = (x - X0) / 10_000, (y - Y0) / 10_000
    return {"temp": 10 + 8 * u + np.sin(6 * v), "rain": 800 + 300 * np.cos(4 * v) + 100 * u}


def log_intensity(cov: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    t, r = (cov["temp"] - 14) / 3, (cov["rain"] - 800) / 200
    return {"sp_a": -1.5 * (t - 0.5) ** 2, "sp_b": 1.2 * r, "sp_c": -((t + 0.8) ** 2) - (r - 0.5) ** 2}


def make_world(seed: int = 0, n_po: int = 250, n_bg: int = 1500, n_plots: int = 250, area: float = 400.0) -> dict:
    rng = np.random.default_rng(seed)
    cand_x, cand_y = X0 + rng.uniform(0, 10_000, 20_000), Y0 + rng.uniform(0, 10_000, 20_000)
    cov = covariates(cand_x, cand_y)
    lam = log_intensity(cov)
    bias = np.exp(1.5 * (cand_x - X0) / 10_000)  # observers favour the east
    rows = []
    for s in SPECIES:
        w = np.exp(lam[s]) * bias
        pick = rng.choice(len(cand_x), n_po, p=w / w.sum())
        rows.append(pd.DataFrame({"species": s, "x": cand_x[pick], "y": cand_y[pick], "kind": "presence_only",
                                  "value": 1.0, "dataset": "citizen"}))
    bx, by = X0 + rng.uniform(0, 10_000, n_bg), Y0 + rng.uniform(0, 10_000, n_bg)
    rows.append(pd.DataFrame({"species": None, "x": bx, "y": by, "kind": "background", "value": 0.0,
                              "dataset": "background"}))
    px, py = X0 + rng.uniform(0, 10_000, n_plots), Y0 + rng.uniform(0, 10_000, n_plots)
    plam = log_intensity(covariates(px, py))
    for s in SPECIES:
        p = 1 - np.exp(-np.exp(plam[s] + 0.5))  # survey scale: exp(0.5) per plot area
        rows.append(pd.DataFrame({"species": s, "x": px, "y": py, "kind": "presence_absence",
                                  "value": (rng.uniform(size=n_plots) < p).astype(float),
                                  "plot_id": [f"p{i}" for i in range(n_plots)], "plot_area_m2": area,
                                  "dataset": "survey"}))
    table = pd.concat(rows, ignore_index=True)
    table["crs"] = "EPSG:2154"
    c = covariates(table["x"].to_numpy(), table["y"].to_numpy())
    table["temp"], table["rain"] = c["temp"], c["rain"]
    table["obs_bias"] = 1.5 * (table["x"] - X0) / 10_000
    return {"table": table, "po": table[table["kind"].isin(["presence_only", "background"])].reset_index(drop=True)}


@pytest.fixture(scope="module")
def world() -> dict:
    return make_world()


@pytest.fixture(scope="module")
def grid() -> xr.Dataset:
    xs = X0 + 50 + 100 * np.arange(100)
    ys = Y0 + 10_000 - 50 - 100 * np.arange(100)
    gx, gy = np.meshgrid(xs, ys)
    c = covariates(gx, gy)
    return xr.Dataset({k: (("y", "x"), v.astype("float32")) for k, v in c.items()}, coords={"x": xs, "y": ys})


@pytest.fixture(scope="module")
def fitted(world: dict) -> MultiSpeciesSDM:
    return MultiSpeciesSDM(covariates=["temp", "rain"], seed=0, **FAST).fit(world["po"])


# ------------------------------------------------------------------------------------------- contract
def test_contract_params_clone_and_not_fitted(world: dict) -> None:
    m = MultiSpeciesSDM(network="mlp", hidden=16, covariates=("temp",), seed=3)
    assert m.get_params()["hidden"] == 16 and m.get_params()["covariates"] == ("temp",)
    c = clone(m)
    assert c.get_params() == m.get_params() and c is not m
    assert m.set_params(hidden=8) is m and m.hidden == 8
    assert not [a for a in vars(m) if a.endswith("_")]  # __init__ learns nothing
    with pytest.raises(NotFittedError, match="not fitted"):
        m.predict(world["po"])
    with pytest.raises(AttributeError):  # NotFittedError is also an AttributeError
        m.predict_proba(world["po"])


def test_contract_seed_determinism_and_refit(world: dict, fitted: MultiSpeciesSDM) -> None:
    again = MultiSpeciesSDM(covariates=["temp", "rain"], seed=0, **FAST).fit(world["po"])
    a, b = fitted.predict(world["po"]), again.predict(world["po"])
    pd.testing.assert_frame_equal(a, b)
    other = clone(again).set_params(seed=1).fit(world["po"])
    assert not np.allclose(other.predict(world["po"]).to_numpy(), a.to_numpy())
    # a second fit discards the first: refitting on one species forgets the others
    again.set_params(species=["sp_a"]).fit(world["po"])
    assert again.species_ == ["sp_a"] and list(again.predict(world["po"]).columns) == ["sp_a"]


def test_learned_attributes_and_scaling_stored(fitted: MultiSpeciesSDM, world: dict) -> None:
    assert fitted.species_ == list(SPECIES)
    assert fitted.feature_names_ == ["temp", "rain"]
    po = world["po"]
    assert fitted.encoder_.means["temp"] == pytest.approx(po.groupby(["x", "y"]).first()["temp"].mean(), rel=1e-6)
    assert fitted.training_.best_epoch >= 0 and len(fitted.training_.history) == fitted.training_.epochs_run
    assert all("val_loss" in h for h in fitted.training_.history)  # early stopping on a spatial fold


def test_decision_function_on_columns_equals_predict(fitted: MultiSpeciesSDM, world: dict) -> None:
    frame = world["po"][["temp", "rain"]].reset_index(drop=True).copy()
    frame.loc[3, "rain"] = np.nan
    expected = fitted.predict(frame, log=True).to_numpy()
    columns = {c: frame[c].to_numpy(dtype=np.float32) for c in ("temp", "rain")}  # no DataFrame, float32
    got = fitted.decision_function(columns, batch_size=7)
    assert got.dtype == np.float32 and got.shape == (len(frame), len(SPECIES))
    assert np.isnan(got[3]).all() and np.isfinite(np.delete(got, 3, axis=0)).all()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, equal_nan=True)
    with pytest.raises(MissingVariableError, match="rain"):
        fitted.decision_function({"temp": columns["temp"]})


# ------------------------------------------------------------------------------------------- validation
def test_missing_covariates_are_named(world: dict, fitted: MultiSpeciesSDM) -> None:
    with pytest.raises(MissingVariableError, match=r"lacks covariate column\(s\) \['rain'\]"):
        fitted.predict(world["po"].drop(columns=["rain"]))
    with pytest.raises(MissingVariableError, match="elevation"):
        MultiSpeciesSDM(covariates=["temp", "elevation"], **FAST).fit(world["po"])


def test_nan_rows_are_dropped_with_a_count(world: dict) -> None:
    po = world["po"].copy()
    po.loc[:9, "temp"] = np.nan  # 10 presence rows: 10 sites
    with pytest.warns(DataGapWarning, match="10 of .* training sites have NaN covariates"):
        m = MultiSpeciesSDM(covariates=["temp", "rain"], seed=0, **{**FAST, "epochs": 2}).fit(po)
    assert m.n_dropped_nan_ == 10
    pred = m.predict(po)
    assert pred.iloc[:10].isna().all().all() and pred.iloc[10:].notna().all().all()


@pytest.mark.parametrize(("params", "match"), [
    ({"network": "rnn"}, "network='rnn' is unknown"),
    ({"loss": "hinge"}, "loss='hinge' is unknown"),
    ({"epochs": 0}, "epochs=0 must be a positive int"),
    ({"val_size": 1.5}, "val_size=1.5"),
    ({"series": [["temp"]]}, "series inputs need network='fusion'"),
    ({"loss": "cloglog"}, "cannot use \\['po'\\]"),
    ({"input_penalty": -1.0}, "input_penalty=-1.0 must be a number >= 0"),
])
def test_bad_parameters_raise_clear_errors(world: dict, params: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        MultiSpeciesSDM(covariates=["temp", "rain"], **{**FAST, **params}).fit(world["po"])


# ------------------------------------------------------------------------------------------- learning
@pytest.mark.parametrize("network", ["mlp", "additive"])
def test_input_penalty_shrinks_unneeded_covariates(world: dict, network: str) -> None:
    """The group lasso drives the input weights (MLP: first layer; additive: species heads) of a covariate no
    species needs towards zero."""
    from geosdm.models.networks import input_weight

    po = world["po"].copy()
    po["noise"] = np.random.default_rng(1).normal(size=len(po))
    norms = {}
    for lam in (0.0, 0.01):
        m = MultiSpeciesSDM(network=network, covariates=["temp", "rain", "noise"], seed=0, input_penalty=lam,
                            **{**FAST, "epochs": 20, "val_size": 0}).fit(po)
        w = input_weight(m.network_.members[0] if hasattr(m.network_, "members") else m.network_)
        assert w is not None and m.get_params()["input_penalty"] == lam
        norms[lam] = w.detach().norm(dim=0).numpy()  # per input: temp, rain, noise
    assert norms[0.01][2] < 0.2 * norms[0.0][2], norms  # the unneeded input is switched off ...
    assert norms[0.01][0] > 5 * norms[0.01][2], norms  # ... the needed one is kept


def test_recovers_known_relative_intensity(fitted: MultiSpeciesSDM, grid: xr.Dataset) -> None:
    f = fitted.predict(grid, log=True)
    assert f.dims == ("species", "y", "x") and list(f.species.values) == list(SPECIES)
    truth = log_intensity({k: grid[k].values for k in ("temp", "rain")})
    rho = [spearmanr(f.sel(species=s).values.ravel(), truth[s].ravel())[0] for s in SPECIES]
    assert min(rho) > 0.6, rho


def test_integrated_model_uses_surveys_and_drops_bias(world: dict) -> None:
    m = MultiSpeciesSDM(loss="integrated", covariates=["temp", "rain"], bias_covariates=["obs_bias"], seed=0,
                        **{**FAST, "epochs": 20}).fit(world["table"])
    assert m.reference_dataset_ == "survey" and m.calibrated_
    assert {d["name"]: d["family"] for d in m.datasets_} == {"citizen": "po", "survey": "pa", "background": "background"}
    assert m.area_unit_m2_ == pytest.approx(400.0)  # one 400 m² visit per plot and species
    # the eastward observer bias is learned: truth 1 per unit of obs_bias, 0.43 per sd
    assert 0.25 < float(m.loss_.bias_coef.detach()[0, 0]) < 0.6
    plots = world["table"][world["table"]["kind"] == "presence_absence"]
    p = m.predict_proba(plots.drop(columns=["obs_bias"]), area=800.0)  # bias covariates are not needed
    assert ((p >= 0) & (p <= 1)).all().all()
    small = m.predict_proba(plots, area=80.0)
    assert (small.to_numpy() <= p.to_numpy() + 1e-7).all()


def test_tables_mode_fit_X_Y(world: dict) -> None:
    plots = world["table"][world["table"]["kind"] == "presence_absence"]
    wide = plots.pivot_table(index="plot_id", columns="species", values="value")
    env = plots.groupby("plot_id")[["x", "y", "temp", "rain"]].first().loc[wide.index]
    m = MultiSpeciesSDM(loss="cloglog", seed=0, **FAST).fit(env, wide, area=400.0)
    assert m.species_ == list(SPECIES) and m.feature_names_ == ["temp", "rain"]
    assert m.calibrated_ and m.area_unit_m2_ == 400.0
    with pytest.raises(InputError, match="rows"):
        m.fit(env, wide.iloc[:10])


def test_uncalibrated_probabilities_warn(fitted: MultiSpeciesSDM, world: dict) -> None:
    with pytest.warns(UncalibratedWarning):
        fitted.predict_proba(world["po"].head())


# ------------------------------------------------------------------------------------------- persistence
def test_save_load_round_trip_without_pickle(fitted: MultiSpeciesSDM, world: dict, tmp_path: Path) -> None:
    path = fitted.save(tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["encoder"]["columns"] == ["temp", "rain"] and cfg["params"]["hidden"] == 32
    loaded = load_model(path)
    pd.testing.assert_frame_equal(loaded.predict(world["po"]), fitted.predict(world["po"]))
    assert clone(loaded).get_params() == loaded.get_params()


def test_resume_from_checkpoint_matches_uninterrupted(world: dict, tmp_path: Path) -> None:
    kw = {**FAST, "epochs": 6, "val_size": 0, "covariates": ["temp", "rain"], "seed": 5, "dropout": 0.1}
    straight = MultiSpeciesSDM(**kw).fit(world["po"])
    part = MultiSpeciesSDM(**{**kw, "epochs": 3}, work_dir=str(tmp_path), checkpoint_every=1).fit(world["po"])
    assert (tmp_path / "checkpoints" / "last" / "model.safetensors").is_file()
    assert part.training_.epochs_run == 3
    resumed = MultiSpeciesSDM(**kw, work_dir=str(tmp_path), checkpoint_every=1, resume=True).fit(world["po"])
    assert resumed.training_.resumed_from == 3 and resumed.training_.epochs_run == 6
    np.testing.assert_allclose(resumed.predict(world["po"]).to_numpy(), straight.predict(world["po"]).to_numpy(),
                               rtol=1e-5)
    with pytest.raises(InputError, match="different configuration"):
        MultiSpeciesSDM(**{**kw, "hidden": 16}, work_dir=str(tmp_path), resume=True).fit(world["po"])


def test_refit_trains_on_all_sites_for_the_best_epochs(world: dict) -> None:
    m = MultiSpeciesSDM(covariates=["temp", "rain"], seed=0, refit=True, **FAST).fit(world["po"])
    r = m.training_
    first = [h for h in r.history if "val_loss" in h]  # the early-stopped run, then the refit on all sites
    best = min(range(len(first)), key=lambda i: first[i]["val_loss"])
    assert r.epochs_run == best + 1 and len(r.history) == len(first) + best + 1
    assert all("val_loss" not in h for h in r.history[len(first):])


def test_lazy_cube_gives_lazy_prediction(fitted: MultiSpeciesSDM, grid: xr.Dataset) -> None:
    lazy = grid.chunk({"y": 50, "x": 50})
    out = fitted.predict(lazy)
    assert out.chunks is not None  # nothing computed yet
    np.testing.assert_allclose(out.values, fitted.predict(grid).values, rtol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UncalibratedWarning)
        p = fitted.predict_proba(lazy, area=100.0)
    assert p.chunks is not None


def test_ensemble_members_differ_and_round_trip(world: dict, tmp_path: Path) -> None:
    m = MultiSpeciesSDM(covariates=["temp", "rain"], seed=0, n_members=3, **{**FAST, "epochs": 4}).fit(world["po"])
    assert m.network_spec_["name"] == "ensemble" and len(m.training_members_) == 3
    members = m.predict_members(world["po"].head(50))
    assert members.shape == (3, 50, 3) and members.std(axis=0).mean() > 0
    np.testing.assert_allclose(members.mean(axis=0), m.predict(world["po"].head(50), log=True).to_numpy(), rtol=1e-5)
    loaded = load_model(m.save(tmp_path / "ens"))
    np.testing.assert_array_equal(loaded.predict_members(world["po"].head(50)), members)


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_cuda_mixed_precision_fit_matches_cpu_ranking(world: dict) -> None:
    gpu = MultiSpeciesSDM(covariates=["temp", "rain"], seed=0, device="cuda", precision="bf16", **FAST).fit(world["po"])
    cpu = MultiSpeciesSDM(covariates=["temp", "rain"], seed=0, device="cpu", **FAST).fit(world["po"])
    assert next(gpu.network_.parameters()).device.type == "cpu"  # fitted models live on the CPU
    a, b = gpu.predict(world["po"], log=True), cpu.predict(world["po"], log=True)
    assert min(spearmanr(a[s], b[s])[0] for s in SPECIES) > 0.8


def test_additive_network_fits_and_round_trips(world: dict, tmp_path: Path) -> None:
    m = MultiSpeciesSDM(network="additive", loss="integrated", covariates=["temp", "rain"], seed=0,
                        **{**FAST, "epochs": 15}).fit(world["table"])
    assert m.network_spec_["name"] == "additive" and "n_blocks" not in m.network_spec_
    loaded = load_model(m.save(tmp_path / "additive"))
    pd.testing.assert_frame_equal(loaded.predict(world["table"]), m.predict(world["table"]))
