"""Prediction inputs the model was not trained on: other units, unseen classes, empty or missing covariates.

Each case names the covariate and the fix: a warning (:class:`ExtrapolationWarning`) where a prediction is still
possible but meaningless there, an error where the map would be empty.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geosdm.errors import ExtrapolationWarning, InputError, MissingVariableError
from geosdm.models import MultiSpeciesSDM
from geosdm.predict import predict

COVARIATES = ["elevation", "bio01", "landcover"]


@pytest.fixture(scope="module")
def cube(records_cube) -> xr.Dataset:  # type: ignore[no-untyped-def]
    """The records cube in memory (60 x 80 cells, 16 x 16 tiles): bio01 in °C, landcover classes 1-3."""
    return records_cube.open()[COVARIATES].load()


@pytest.fixture(scope="module")
def model(cube: xr.Dataset) -> MultiSpeciesSDM:
    """A small model trained on every cell of the cube (its ranges are the cube's), landcover as classes."""
    frame = cube.to_dataframe()[COVARIATES].dropna().reset_index(drop=True)
    rng = np.random.default_rng(0)
    Y = pd.DataFrame({"s1": rng.poisson(0.3, len(frame)), "s2": rng.poisson(0.5, len(frame))})
    return MultiSpeciesSDM(loss="poisson", categorical=["landcover"], epochs=1, hidden=8, val_size=0,
                           seed=0).fit(frame, Y)


def _compute(model: MultiSpeciesSDM, cube: xr.Dataset | str) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not calibrated.*")
        return predict(model, cube).compute(scheduler="threads")


def test_the_training_cube_itself_gives_no_warning(model: MultiSpeciesSDM, cube: xr.Dataset,
                                                   records_cube) -> None:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExtrapolationWarning)
        _compute(model, cube)
        _compute(model, str(records_cube.path))  # the store path: tiles read straight from Zarr
        model.predict(cube.to_dataframe()[COVARIATES].dropna().head(50))


def test_a_covariate_in_kelvin_is_named_with_its_training_range(model: MultiSpeciesSDM, cube: xr.Dataset) -> None:
    kelvin = cube.assign(bio01=cube["bio01"] + np.float32(273.15))
    lo, hi = model.encoder_.ranges["bio01"]
    with pytest.warns(ExtrapolationWarning, match=r"covariate 'bio01' has values .* far outside its training range "
                                                  rf"{lo:.6g} to {hi:.6g}.*Kelvin where the model learned °C") as rec:
        out = _compute(model, kelvin)
    msgs = [str(w.message) for w in rec if issubclass(w.category, ExtrapolationWarning)]
    assert len(msgs) == 1  # once per covariate, not once per tile (20 tiles)
    assert "cube <xarray.Dataset>" in msgs[0] and "Check the units and scale of 'bio01'" in msgs[0]
    assert np.isfinite(out.probability.values).any()  # a warning, not an error: the user decides


@pytest.mark.parametrize(("name", "scale", "shift", "hint"), [
    ("bio01", 10.0, 0.0, r"Divided by 10 they fit the training range: a scale factor"),  # WorldClim 1.4's °C x 10
    ("elevation", 1.0, -5e5, r"meaningless\. Check the units and scale of 'elevation'"),  # no simple cause found
])
def test_other_units_on_the_point_path(model: MultiSpeciesSDM, cube: xr.Dataset, name: str, scale: float,
                                       shift: float, hint: str) -> None:
    X = cube.to_dataframe()[COVARIATES].dropna().copy()
    X[name] = X[name] * scale + shift
    with pytest.warns(ExtrapolationWarning, match=rf"X: covariate '{name}' has values .*{hint}"):
        model.predict(X)


def test_an_unseen_land_cover_class_is_named(model: MultiSpeciesSDM, cube: xr.Dataset) -> None:
    lc = cube["landcover"].copy()
    lc[:8, :8] = 9.0  # a class absent from training (it would encode as "no class", silently)
    with pytest.warns(ExtrapolationWarning, match=r"categorical covariate 'landcover' holds class\(es\) \[9\.0\] that "
                                                  r"the model never saw .*knows \[1\.0, 2\.0, 3\.0\].*refit"):
        _compute(model, cube.assign(landcover=lc))


@pytest.mark.parametrize("where", ["store", "dataset"])
def test_an_all_nan_covariate_is_refused_before_predicting(model: MultiSpeciesSDM, cube: xr.Dataset, tmp_path: Path,
                                                           where: str) -> None:
    empty = cube.assign(bio01=cube["bio01"] * np.float32(np.nan))
    target: xr.Dataset | str = empty
    if where == "store":
        target = str(tmp_path / "cube.zarr")
        enc = {v: {"chunks": (8, 8), "shards": (16, 16)} for v in empty.data_vars}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            empty.chunk({"y": 16, "x": 16}).to_zarr(target, zarr_format=3, encoding=enc, consolidated=True)
    with pytest.raises(InputError, match=r"variable\(s\) \['bio01'\] that the model reads hold no value \(NaN in every "
                                         r"cell\).*Rebuild them .* or refit the model without them"):
        predict(model, target)


def test_a_cube_lacking_a_covariate_names_it(model: MultiSpeciesSDM, cube: xr.Dataset) -> None:
    with pytest.raises(MissingVariableError, match=r"cube lacks variable\(s\) \['bio01'\] needed by "
                                                   r"model\.feature_names_.*Rebuild the cube with them or refit"):
        predict(model, cube.drop_vars("bio01"))


def test_training_on_an_all_nan_covariate_is_refused(cube: xr.Dataset) -> None:
    frame = cube.to_dataframe()[COVARIATES].dropna().reset_index(drop=True)
    frame["bio01"] = np.nan  # an empty layer extracted at every site
    Y = pd.DataFrame({"s1": np.ones(len(frame), int)})
    with pytest.raises(InputError, match=r"column 'bio01' has no finite values.*drop it from the covariates"):
        MultiSpeciesSDM(loss="poisson", categorical=["landcover"], epochs=1, hidden=8, val_size=0).fit(frame, Y)


def test_a_cube_without_spatial_ref_is_refused(model: MultiSpeciesSDM, cube: xr.Dataset) -> None:
    from geosdm.errors import GridError

    bare = cube.drop_vars("spatial_ref")  # a cube written by another tool: no grid mapping, no CRS anywhere
    for v in [*bare.data_vars.values(), bare["x"], bare["y"]]:
        v.attrs = {k: a for k, a in v.attrs.items() if k not in ("grid_mapping", "crs")}
    with pytest.raises(GridError, match=r"cube has no georeferencing \(spatial_ref / CRS\); build it with geosdm\.cube "
                                        r"or assign a CRS"):
        predict(model, bare)


def test_saved_models_keep_their_training_ranges(model: MultiSpeciesSDM, tmp_path: Path) -> None:
    from geosdm.models import load_model

    loaded = load_model(model.save(tmp_path / "m"))
    assert loaded.encoder_.ranges == model.encoder_.ranges and set(loaded.encoder_.ranges) == {"elevation", "bio01"}
    X = pd.DataFrame({"elevation": [10.0], "bio01": [290.0], "landcover": [1.0]})
    with pytest.warns(ExtrapolationWarning, match="Kelvin"):
        loaded.predict(X)
