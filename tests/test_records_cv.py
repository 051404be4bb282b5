"""Spatial cross-validation: grid-aligned blocks, buffers, environmental clusters, scikit-learn compatibility."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from geosdm.errors import InputError
from geosdm.grid import geobox_from_bbox
from geosdm.records import BufferedLeaveOneOut, EnvironmentalKFold, SpatialBlockKFold, add_folds


@pytest.fixture(scope="module")
def points() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 1500
    x, y = rng.uniform(500_000, 520_000, n), rng.uniform(6_500_000, 6_520_000, n)
    return pd.DataFrame({"x": x, "y": y, "crs": "EPSG:2154", "temp": (y - 6.5e6) / 1e3 + rng.normal(0, 0.5, n)})


GBOX = geobox_from_bbox((499_950, 6_499_950, 520_050, 6_520_050), crs="EPSG:2154", resolution=100)


def _block_distance(x: np.ndarray, y: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    return np.hypot(np.maximum(np.maximum(x0 - x, x - x1), 0), np.maximum(np.maximum(y0 - y, y - y1), 0))


def test_block_folds_are_grid_aligned_and_cover_all(points: pd.DataFrame) -> None:
    cv = SpatialBlockKFold(4, block_size=2_530, geobox=GBOX, seed=0)  # snapped to 25 cells = 2,500 m
    bi, bj = cv.blocks(points)
    x0 = GBOX.affine.c + bj * 2_500
    assert ((points["x"] >= x0) & (points["x"] < x0 + 2_500)).all()
    folds = cv.fold_ids(points)
    assert set(folds) == {0, 1, 2, 3}
    block_fold = pd.DataFrame({"b": bi * 1000 + bj, "f": folds}).groupby("b")["f"].nunique()
    assert (block_fold == 1).all()  # a block never straddles folds
    tests = np.concatenate([te for _, te in cv.split(points)])
    assert sorted(tests.tolist()) == list(range(len(points)))  # each point tested exactly once
    np.testing.assert_array_equal(folds, SpatialBlockKFold(4, block_size=2_530, geobox=GBOX, seed=0).fold_ids(points))
    balanced = SpatialBlockKFold(4, block_size=2_500, geobox=GBOX, assignment="balanced", seed=0).fold_ids(points)
    counts = np.bincount(balanced)
    assert counts.max() - counts.min() < 60


@pytest.mark.parametrize("buffer", [700.0, 3_000.0])
def test_buffer_keeps_training_away_from_test_blocks(points: pd.DataFrame, buffer: float) -> None:
    cv = SpatialBlockKFold(5, block_size=2_500, buffer=buffer, geobox=GBOX, seed=1)
    bi, bj = cv.blocks(points)
    xy = points[["x", "y"]].to_numpy()
    n_removed = 0
    for train, test in cv.split(points):
        assert not set(train) & set(test)
        nearest, _ = cKDTree(xy[train]).query(xy[test])
        assert nearest.min() > buffer  # no test point lies within the buffer of a training point
        test_blocks = set(zip(bi[test], bj[test], strict=True))
        for i, j in test_blocks:  # ... nor any training point within the buffer of a test block
            x0, y1 = GBOX.affine.c + j * 2_500, GBOX.affine.f - i * 2_500
            d = _block_distance(xy[train, 0], xy[train, 1], x0, x0 + 2_500, y1 - 2_500, y1)
            assert d.min() > buffer
        n_removed += len(points) - len(train) - len(test)
    assert n_removed > 0


def test_sklearn_compatibility(points: pd.DataFrame) -> None:
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import GridSearchCV, PredefinedSplit, cross_val_score

    cv = SpatialBlockKFold(3, block_size=5_000, geobox=GBOX, seed=0)
    X, target = points[["temp"]].to_numpy(), points["y"].to_numpy()
    splits = list(cv.split(points))
    assert cv.get_n_splits() == len(splits) == 3
    assert all(tr.dtype.kind == "i" and te.dtype.kind == "i" for tr, te in splits)
    scores = cross_val_score(LinearRegression(), X, target, cv=splits)
    assert scores.shape == (3,)
    table = add_folds(points, cv)
    assert table["fold"].dtype == np.int16
    predefined = list(PredefinedSplit(table["fold"]).split())
    for (_, a_te), (_, b_te) in zip(splits, predefined, strict=True):
        np.testing.assert_array_equal(a_te, b_te)
    GridSearchCV(LinearRegression(), {"fit_intercept": [True, False]}, cv=PredefinedSplit(table["fold"])).fit(X, target)
    assert "SpatialBlockKFold(n_splits=3" in repr(cv)


def test_environmental_folds_and_buffered_loo(points: pd.DataFrame) -> None:
    env = EnvironmentalKFold(3, features=["temp"], seed=0)
    folds = env.fold_ids(points)
    means = points.groupby(folds)["temp"].mean().sort_values()
    assert means.diff().dropna().min() > 3  # clusters separate the temperature gradient
    assert len(list(env.split(points))) == 3
    merged = EnvironmentalKFold(2, features=["temp"], n_clusters=6, seed=0).fold_ids(points)
    assert set(merged) == {0, 1} and abs(np.bincount(merged)[0] - len(points) / 2) < 200
    small = points.iloc[:40]
    loo = BufferedLeaveOneOut(2_000)
    assert loo.get_n_splits(small) == 40
    xy = small[["x", "y"]].to_numpy()
    for train, test in loo.split(small):
        assert np.hypot(*(xy[train] - xy[test[0]]).T).min() > 2_000


def test_cv_errors(points: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="fewer than n_splits"):
        SpatialBlockKFold(5, block_size=50_000).fold_ids(points)
    with pytest.raises(InputError, match="coordinate column"):
        SpatialBlockKFold(2, block_size=1_000).fold_ids(points[["temp"]])
    with pytest.raises(InputError, match="shape"):
        list(SpatialBlockKFold(2, block_size=1_000).split(np.zeros((5, 3))))
    with pytest.raises(InputError, match="at least 2"):
        SpatialBlockKFold(1, block_size=1_000).get_n_splits()
    mixed = points.assign(crs=["EPSG:2154"] * (len(points) - 1) + ["EPSG:4326"])
    with pytest.raises(InputError, match="mixes CRSs"):
        SpatialBlockKFold(2, block_size=1_000).fold_ids(mixed)
    with pytest.raises(InputError, match="NaN"):
        EnvironmentalKFold(2, features=["temp"]).fold_ids(points.assign(temp=np.nan))
