"""The observer-effort layer made from records (target-group density), and the demo's own driver draw."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox

from geosdm.errors import InputError
from geosdm.records.schema import conform
from geosdm.records import record_density, records_from_frame, target_group_background, write_effort


def _records(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return records_from_frame(pd.DataFrame({"x": rng.uniform(0, 3_000, n), "y": rng.uniform(0, 8_000, n),
                                            "species": rng.choice(["a", "b"], n)}), crs="EPSG:2154", source="test")


GBOX = GeoBox.from_bbox((0, 0, 10_000, 8_000), "EPSG:2154", resolution=100)


def test_density_follows_the_records_and_is_floored(tmp_path) -> None:
    recs = _records()
    d = record_density(recs, GBOX, bandwidth=3, floor=0.05)
    assert d.shape == GBOX.shape and d.dtype == np.float32 and d.attrs["n_records"] == len(recs)
    left, right = float(d[:, :25].mean()), float(d[:, 40:].mean())
    assert left > 20 * right, "effort piles up where the records are"
    assert float(d.min()) == pytest.approx(0.05, rel=1e-4), "cells far from every record keep the floor"
    assert float(d.mean()) == pytest.approx(1.05, rel=1e-3)  # relative to the mean, plus the floor
    out = write_effort(d, tmp_path / "effort.zarr")
    back = xr.open_zarr(out)
    np.testing.assert_allclose(back["record_density"].values, d.values)
    assert "spatial_ref" in back.coords


def test_density_counts_only_the_chosen_kinds() -> None:
    recs = _records()
    surveys = conform(recs.assign(kind="presence_absence", x=recs["x"] + 6_000, value=1.0))
    both = pd.concat([recs, surveys], ignore_index=True)
    d = record_density(both, GBOX, bandwidth=0)
    assert float(d[:, 60:].max()) == pytest.approx(0.01, rel=1e-4), "survey plots are not observer effort"
    with pytest.raises(InputError, match="no records of kind"):
        record_density(surveys, GBOX)
    with pytest.raises(InputError, match="floor"):
        record_density(recs, GBOX, floor=0)


def test_target_group_background_draws_from_the_same_counts() -> None:
    bg = target_group_background(_records(), GBOX, 200, bandwidth=2, seed=0)
    assert len(bg) == 200 and (bg["x"] < 4_000).all()


def test_demo_driver_pool_is_its_own_seeded_draw() -> None:
    from geosdm.demo._species import DRIVER_CANDIDATES, POOL_MAX_CORRELATION, driver_pool

    rng = np.random.default_rng(0)
    base = rng.normal(size=(50, 50))
    cov = {v: rng.normal(size=(50, 50)) for v in DRIVER_CANDIDATES}
    cov["bio01"] = base
    cov["bio06"] = base + 0.1 * rng.normal(size=(50, 50))  # a near twin: only one of them can be in the pool
    pools = [driver_pool(cov, np.random.default_rng(s)) for s in range(6)]
    for pool in pools:
        assert len({"bio01", "bio06"} & set(pool.selected)) == 1
        r = np.corrcoef(np.stack([cov[v].ravel() for v in pool.selected]))
        assert (np.abs(r[~np.eye(len(r), dtype=bool)]) < POOL_MAX_CORRELATION).all()
        assert pool.order[0] in {"bio01", "bio12", "bio05", "bio06", "bio15"}, "a climate variable comes first"
    assert len({p.order for p in pools}) == 6, "the visiting order is drawn, not a preference list"
    assert {"bio01", "bio06"} <= {v for p in pools for v in p.selected}, "either twin can be the driver"
    again = driver_pool(cov, np.random.default_rng(3))
    assert again.selected == pools[3].selected  # seeded


def test_a_bias_layer_named_like_a_records_column_is_refused() -> None:
    """A layer called ``effort`` would be read from the records' sampling-effort column, not from the layer."""
    from geosdm.models import MultiSpeciesSDM

    rng = np.random.default_rng(0)
    table = _records(60).assign(bio01=rng.normal(size=60), effort=1.0)
    with pytest.raises(InputError, match="'effort'.*records/site columns"):
        MultiSpeciesSDM(epochs=1, bias_covariates=("effort",)).fit(table)
