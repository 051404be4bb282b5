"""Explanations at points: permutation importance, response curves, integrated gradients, MESS, regions, plots.

A small ``MultiSpeciesSDM`` (bce) is fitted on synthetic data with known drivers: species ``a`` responds
strongly to ``x1`` (linear), weakly to ``x2`` (quadratic) and to the category ``c == "b"``; species ``b`` to
``x2`` (linear, negative) and weakly to ``x1``; ``x3`` is noise for both.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geosdm.errors import GeoSDMError, InputError, MissingVariableError
from geosdm.explain import (
    Reference,
    attribute,
    labels_from_records,
    mess_points,
    on_manifold_inputs,
    permutation_importance,
    plot_importance,
    plot_response,
    point_regions,
    reference_from,
    response_curves,
    top_variables,
    variable_groups,
)

N = 3000


def _truth(x1: np.ndarray, x2: np.ndarray, c: np.ndarray) -> dict[str, np.ndarray]:
    return {"a": 2.5 * x1 - 0.6 * x2**2 + 1.5 * (c == "b"), "b": -2.0 * x2 + 0.4 * x1}


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x1": rng.uniform(-2, 2, N), "x2": rng.uniform(-2, 2, N), "x3": rng.uniform(-2, 2, N),
                      "c": pd.Categorical(rng.choice(["a", "b", "z"], N))})
    logits = _truth(X.x1.to_numpy(), X.x2.to_numpy(), X.c.to_numpy().astype(str))
    Y = pd.DataFrame({s: (rng.uniform(size=N) < 1 / (1 + np.exp(-f))).astype(float) for s, f in logits.items()})
    return X, Y


@pytest.fixture(scope="module")
def model(data: tuple[pd.DataFrame, pd.DataFrame]) -> Any:
    from geosdm.models import MultiSpeciesSDM

    X, Y = data
    return MultiSpeciesSDM(loss="bce", hidden=32, n_blocks=1, epochs=25, val_size=0, lr=3e-3, seed=0).fit(X, Y)


def test_variable_groups_by_source() -> None:
    names = ["bio01", "bio12", "s2_B04_jja", "s2_ndvi_jja", "elevation", "slope", "lc_3", "ls_B4", "dist_road"]
    assert variable_groups(names) == {
        "climate": ["bio01", "bio12"], "sentinel-2": ["s2_B04_jja", "s2_ndvi_jja"], "terrain": ["elevation", "slope"],
        "land cover": ["lc_3"], "landsat": ["ls_B4"], "dist_road": ["dist_road"]}
    assert "dist_road" not in variable_groups(names, singletons=False)
    assert variable_groups(["a1", "a2", "b"], scheme={"^a": "A"}) == {"A": ["a1", "a2"], "b": ["b"]}


def test_permutation_importance_ranks_known_drivers(model: Any, data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    X, _ = data
    imp = permutation_importance(model, X, n_repeats=4, seed=1)
    assert imp["importance"].dims == ("species", "variable", "repeat") and imp.sizes["repeat"] == 4
    assert top_variables(imp, 2) == {"a": ["x1", "c"], "b": ["x2", "x1"]} or top_variables(imp, 1) == {
        "a": ["x1"], "b": ["x2"]}
    mean = imp["importance_mean"]
    for s in ("a", "b"):  # the noise variable is the least important; spread is reported
        assert float(mean.sel(species=s, variable="x3")) < 0.02 < float(mean.sel(species=s).max())
    assert (imp["importance_std"] >= 0).all() and float(imp["importance_std"].max()) > 0
    # same seed, same numbers; grouped variables permuted together carry at least the strongest member
    again = permutation_importance(model, X, n_repeats=4, seed=1)
    np.testing.assert_array_equal(again["importance"].values, imp["importance"].values)
    grouped = permutation_importance(model, X, groups={"x12": ["x1", "x2"], "x3": ["x3"]}, n_repeats=2, seed=1)
    assert list(grouped["variable"].values) == ["x12", "x3"]
    assert (grouped["importance_mean"].sel(variable="x12") >= mean.max("variable") - 0.02).all()
    # mse scoring and per-region importance
    mse = permutation_importance(model, X, scoring="mse", n_repeats=2, species=["a"])
    assert top_variables(mse, 1) == {"a": ["x1"]}
    regions = np.where(X.x3 > 0, "east", "west")
    per = permutation_importance(model, X, regions=regions, n_repeats=2)
    assert per["importance"].dims == ("region", "species", "variable", "repeat")
    assert sorted(per["region"].values) == ["east", "west"] and int(per["n_points"].sum()) == N


def test_importance_scale_scores_probabilities_or_log_intensity(model: Any,
                                                             data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """Default: the model's ``f``; ``probability``: the presence probability the map shows; same permutations."""
    X, _ = data
    X = X.iloc[:400]
    prob = permutation_importance(model, X, n_repeats=1, seed=3, species=["a"], scale="probability")
    logit = permutation_importance(model, X, n_repeats=1, seed=3, species=["a"])
    assert prob.attrs["geosdm:scale"] == "probability" and logit.attrs["geosdm:scale"] == "log_intensity"
    perm = np.random.default_rng([3, 0]).permutation(len(X))  # repeat 0's row permutation
    shuffled = X.assign(x1=X["x1"].to_numpy()[perm])
    a = list(model.species_).index("a")
    for imp, pred in ((prob, lambda d: model.predict_proba(d).to_numpy()[:, a]),
                      (logit, lambda d: model.decision_function(d)[:, a])):
        expected = 1 - np.corrcoef(pred(X), pred(shuffled))[0, 1]
        assert float(imp["importance"].sel(species="a", variable="x1", repeat=0)) == pytest.approx(expected, rel=1e-3)
    with pytest.raises(InputError, match="scale='odds'"):
        permutation_importance(model, X, scale="odds")  # type: ignore[arg-type]


def test_auc_importance_from_records_labels(model: Any, data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    X, Y = data
    table = pd.concat([X.assign(kind="presence_absence", species=s, value=Y[s].to_numpy()) for s in ("a", "b")],
                      ignore_index=True)
    table.loc[:99, "kind"] = "background"
    y = labels_from_records(table, model.species_)
    assert y.shape == (2 * N, 2) and (y[:100] == 0).all() and np.isnan(y[N:, 0]).all()
    imp = permutation_importance(model, table, scoring="auc", y=y, n_repeats=2)
    assert (imp["score"] > 0.75).all()  # the AUC before permutation
    assert top_variables(imp, 1) == {"a": ["x1"], "b": ["x2"]}


def test_response_curves_follow_the_known_functions(model: Any, data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    X, _ = data
    rc = response_curves(model, X, n_grid=21, n_pd=500, n_ice=10, extend=0.25)
    assert rc["partial_dependence"].dims == ("species", "variable", "point")
    assert rc["ice"].shape == (2, 4, 10, 21)
    x1 = rc.sel(variable="x1")
    assert float(x1.train_min) == pytest.approx(X.x1.min()) and float(x1.train_max) == pytest.approx(X.x1.max())
    inside = x1["in_range"].values
    assert not inside[0] and not inside[-1] and inside[5:16].all()  # the widened ends are extrapolation
    grid = x1["value"].values
    pd_a = x1["partial_dependence"].sel(species="a").values
    assert np.corrcoef(pd_a[inside], 2.5 * grid[inside])[0, 1] > 0.95
    x2 = rc.sel(variable="x2", species="b")
    assert np.corrcoef(x2["partial_dependence"].values, -2.0 * x2["value"].values)[0, 1] > 0.95
    c = rc.sel(variable="c", species="a")  # categorical: one point per category, labelled
    assert list(c["label"].values[:3]) == ["a", "b", "z"] and np.isnan(c["value"].values[3:]).all()
    assert np.nanargmax(c["partial_dependence"].values) == 1
    prob = response_curves(model, X, variables=["x1"], species=["a"], scale="probability", n_grid=5, n_ice=0)
    assert ((prob["partial_dependence"] >= 0) & (prob["partial_dependence"] <= 1)).all()
    with pytest.raises(MissingVariableError, match="not model covariates"):
        response_curves(model, X, variables=["nope"])


def test_on_manifold_inputs_are_what_the_on_manifold_curves_evaluate(model: Any,
                                                                       data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    X, _ = data
    X = X.assign(x3=0.5 * X.x1 + 0.1 * X.x3)  # a collinear twin of x1
    rc = response_curves(model, X, variables=["x1"], n_grid=7, n_pd=len(X), n_ice=0, extend=0.0,
                         linked={"t": ["x1", "x3"]})
    grid = rc["value"].sel(variable="x1").values
    batch = on_manifold_inputs(X, "x1", grid, linked={"t": ["x1", "x3"]})
    assert set(batch) == set(X.columns) and all(len(a) == 7 * len(X) for a in batch.values())
    # x3 follows x1 along its least-squares slope (0.5), row by row
    step = batch["x3"].reshape(7, -1) - X.x3.to_numpy()
    np.testing.assert_allclose(step, 0.5 * (grid[:, None] - X.x1.to_numpy()), atol=0.02)
    own = model.decision_function(batch).reshape(7, len(X), -1).mean(axis=1).T
    np.testing.assert_allclose(own, rc["partial_dependence"].sel(variable="x1").values, rtol=1e-4, atol=1e-4)
    # slopes from another set of points; compositions keep each row's own sum
    frac = pd.DataFrame({"a": [0.2, 0.5, 0.0], "b": [0.3, 0.25, 0.0], "c": [0.5, 0.25, 0.0], "t": [1.0, 2.0, 3.0],
                         "u": [0.0, 0.0, 0.0]})
    ref = pd.DataFrame({"t": [0.0, 1.0, 2.0], "u": [0.0, 3.0, 6.0]})
    out = on_manifold_inputs(frac, "a", [0.0, 0.4], compositions=[["a", "b", "c"]], linked={"g": ["t", "u"]},
                             reference=ref)
    sums = (out["a"] + out["b"] + out["c"]).reshape(2, 3)
    np.testing.assert_allclose(sums[:, :2], [[1.0, 1.0], [1.0, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(out["b"].reshape(2, 3)[1, :2], [0.3 * 0.6 / 0.8, 0.25 * 0.6 / 0.5], rtol=1e-6)
    moved = on_manifold_inputs(frac, "t", [5.0], linked={"g": ["t", "u"]}, reference=ref)
    np.testing.assert_allclose(moved["u"], 3.0 * (5.0 - frac.t.to_numpy()), rtol=1e-6)
    with pytest.raises(MissingVariableError, match="nope"):
        on_manifold_inputs(frac, "nope", [0.0])
    with pytest.raises(InputError, match="two linked/composition groups"):
        on_manifold_inputs(frac, "a", [0.0], compositions=[["a", "b"]], linked={"g": ["a", "t"]}, reference=frac)


def test_integrated_gradients_are_complete_per_covariate(model: Any, data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    X, _ = data
    pts = X.iloc[:300].copy()
    pts.loc[pts.index[:3], "x2"] = np.nan  # invalid rows stay NaN
    a = attribute(model, pts, steps=32)
    assert a["attribution"].dims == ("species", "point", "variable")
    assert list(a["variable"].values) == list(model.feature_names_)  # one column per covariate, c summed
    assert np.isnan(a["attribution"].values[:, :3]).all()
    delta = (a.log_intensity - a.baseline_log_intensity).values[:, 3:]
    gap = np.abs(delta - a.attribution.sum("variable").values[:, 3:])
    assert gap.max() < 0.02 * np.abs(delta).max()
    f = model.decision_function(pts)
    np.testing.assert_allclose(a.log_intensity.values[:, 3:], f[3:].T, rtol=1e-5, atol=1e-5)
    # the noise covariate gets little, the driver most; x1 attributions follow x1 for species a
    mean_abs = np.abs(a.attribution.sel(species="a")).mean("point")
    assert str(mean_abs.idxmax().item()) == "x1" and float(mean_abs.sel(variable="x3")) < 0.2
    ok = np.isfinite(pts.x1.values) & np.isfinite(pts.x2.values)
    assert np.corrcoef(a.attribution.sel(species="a", variable="x1").values[ok], pts.x1.values[ok])[0, 1] > 0.95
    # baseline = training means: attributions vanish there; another baseline moves f(baseline)
    base = attribute(model, pd.DataFrame({"x1": [model.encoder_.means["x1"]], "x2": [model.encoder_.means["x2"]],
                                          "x3": [model.encoder_.means["x3"]], "c": ["a"]}), species="a")
    assert abs(base.attribution.sel(variable="x1").item()) < 1e-6
    other = attribute(model, pts.iloc[3:10], species="a", baseline={"x1": 1.0})
    assert float(other.baseline_log_intensity[0, 0]) != pytest.approx(float(a.baseline_log_intensity[0, 3]))
    gx = attribute(model, pts.iloc[3:50], method="gradient_x_input")
    assert gx["attribution"].shape == (2, 47, 4)


def test_additive_networks_get_exact_integrated_gradients(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """For f = sum_j g_j(x_j) integrated gradients are g_j(x_j) - g_j(b_j): exact, and what the quadrature gives."""
    from geosdm.explain._torch import RawInputNetwork, integrated_gradients
    from geosdm.models import MultiSpeciesSDM

    X, Y = data
    model = MultiSpeciesSDM(network="additive", loss="bce", hidden=16, n_members=2, epochs=8, val_size=0, lr=3e-3,
                            seed=0).fit(X, Y)
    pts = X.iloc[:200]
    a = attribute(model, pts)
    delta = (a.log_intensity - a.baseline_log_intensity).values
    np.testing.assert_allclose(a.attribution.sum("variable").values, delta, atol=1e-4)  # complete, no residual
    np.testing.assert_allclose(a.log_intensity.values, model.decision_function(pts).T, rtol=1e-5, atol=1e-5)
    net = RawInputNetwork(model)
    x = net.inputs({c: pts[c].to_numpy() for c in ("x1", "x2", "x3", "c")})
    exact, _, _ = integrated_gradients(net, x, net.baseline(x), species=[0, 1])
    quad, _, _ = integrated_gradients(net, x, net.baseline(x), species=[0, 1], steps=256, exact=False)
    torch = pytest.importorskip("torch")
    torch.testing.assert_close(exact, quad, atol=5e-3, rtol=1e-2)  # the rule converges to it (ReLU kinks)


def test_mess_formula_and_points() -> None:
    ref = Reference({"t": np.arange(101, dtype=float), "p": np.linspace(0, 1, 11)})
    pts = pd.DataFrame({"t": [50.0, 0.0, 110.0, -20.0, np.nan], "p": [0.5, 0.5, 0.5, 0.5, 0.5]})
    out = mess_points(ref, pts)
    t = out["similarity_t"].to_numpy()
    assert t[0] == pytest.approx(2 * 100 * 50 / 101) and t[1] == 0.0 and t[2] == pytest.approx(-10.0) and t[3] == pytest.approx(-20.0)
    assert out["mess"].iloc[3] == pytest.approx(-20.0) and out["most_dissimilar"].iloc[3] == "t"
    assert np.isnan(out["mess"].iloc[4]) and out["most_dissimilar"].iloc[4] is None
    table = pd.DataFrame({"t": [1.0, 2.0, np.nan], "p": [0.0, 1.0, 0.5]})
    assert reference_from(table, ["t", "p"]).numeric["t"].tolist() == [1.0, 2.0]
    with pytest.raises(MissingVariableError, match="lack"):
        reference_from(table, ["q"])
    with pytest.raises(InputError, match="no finite value"):
        Reference({"q": np.array([np.nan])[np.isfinite([np.nan])]})


def test_point_regions_blocks_and_polygons(tmp_path: Any) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    x = np.array([10.0, 1500.0, 2500.0, 99999.0])
    y = np.array([-10.0, -10.0, -1500.0, 0.0])
    labels = point_regions(x, y, 1000.0, crs="EPSG:2154")
    assert labels[:3].tolist() == ["r0c0", "r0c1", "r1c2"]
    gdf = gpd.GeoDataFrame({"name": ["west", "east"]}, geometry=[box(0, -2000, 2000, 0), box(2000, -2000, 4000, 0)],
                           crs="EPSG:2154")
    path = tmp_path / "regions.geojson"
    gdf.to_file(path)
    assert point_regions(x, y, str(path), crs="EPSG:2154").tolist() == ["west", "west", "east", ""]
    with pytest.raises(MissingVariableError, match="field"):
        point_regions(x, y, gdf, crs="EPSG:2154", field="code")


def test_errors_name_the_input_and_the_fix(model: Any, data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    from geosdm.models import MultiSpeciesSDM

    X, _ = data
    with pytest.raises(InputError, match="scoring"):
        permutation_importance(model, X, scoring="r2")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="labels_from_records"):
        permutation_importance(model, X, scoring="auc")
    with pytest.raises(MissingVariableError, match="x3"):
        permutation_importance(model, X.drop(columns="x3"))
    with pytest.raises(MissingVariableError, match="do not read|does not read"):
        permutation_importance(model, X, groups={"g": ["x9"]})
    with pytest.raises(MissingVariableError, match="not modelled"):
        attribute(model, X, species=["zebra"])
    with pytest.raises(InputError, match="steps"):
        attribute(model, X, steps=0)
    with pytest.raises(InputError, match="not a fitted"):
        permutation_importance(MultiSpeciesSDM(), X)
    with pytest.raises(GeoSDMError):
        response_curves(model, X, scale="logit")  # type: ignore[arg-type]


def test_plots_return_figures(model: Any, data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    import matplotlib.figure

    X, _ = data
    imp = permutation_importance(model, X.iloc[:500], n_repeats=3)
    rc = response_curves(model, X, n_grid=9, n_pd=100, n_ice=5)
    figs = [plot_importance(imp), plot_importance(imp, "a"),
            plot_response(rc, "a", truth={"x1": 2.5 * rc["value"].sel(variable="x1").values})]
    assert all(isinstance(f, matplotlib.figure.Figure) for f in figs)
    assert len([a for a in figs[2].axes if a.get_visible()]) == 4
    with pytest.raises(MissingVariableError):
        plot_response(rc, "zebra")
    import matplotlib.pyplot as plt

    for f in figs:
        plt.close(f)
    assert isinstance(xr.Dataset, type)
