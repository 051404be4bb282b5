"""NCEAS loader: counts match ../shared/data/README.md; the canonical OSF CSV layout loads identically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geosdm.datasets.nceas import CRS, NCEASRegion, load_nceas
from geosdm.errors import DataSourceError, InputError
from geosdm.records import check_records, validate_records

pytestmark = pytest.mark.shared_data

EXPECTED = {  # region: (species, PO records, PA sites, categorical covariates)
    "AWT": (40, 3806, 442, ()),
    "NSW": (54, 3323, 8746, ("vegsys",)),
    "NZ": (52, 3088, 19120, ("age", "toxicats")),
}


@pytest.fixture(scope="module")
def nceas_root(shared_data: Path) -> Path:
    root = shared_data / "nceas"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    return root


@pytest.mark.parametrize("region", sorted(EXPECTED))
def test_counts_match_the_readme(nceas_root: Path, region: str) -> None:
    data = load_nceas(nceas_root, region)
    n_species, n_po, n_sites, categorical = EXPECTED[region]
    assert (len(data.species), len(data.presence), len(data.test_env)) == (n_species, n_po, n_sites)
    assert len(data.background) == 10_000 and data.crs == CRS[region]
    assert data.categorical == categorical
    for name in categorical:
        for table in (data.presence, data.background, data.test_env):
            assert isinstance(table[name].dtype, pd.CategoricalDtype)
        assert data.presence[name].dtype == data.test_env[name].dtype  # one category set for all tables
    for table in (data.presence, data.background):
        check_records(table)
        assert set(data.covariates) <= set(table.columns)
    assert (data.presence["kind"] == "presence_only").all() and (data.background["kind"] == "background").all()
    summary = pd.read_csv(nceas_root / region / "species_summary.csv")
    pd.testing.assert_frame_equal(data.summary, summary, check_dtype=False)
    _, report = validate_records(data.training_table(), duplicates="keep")
    assert report.n_dropped == 0


def test_evaluation_per_group(nceas_root: Path) -> None:
    awt = load_nceas(nceas_root, "awt")
    assert set(awt.groups) == {"bird", "plant"} and len(awt.groups["bird"]) == 20
    env, y = awt.evaluation_sites("awt01")  # a bird: evaluated at the 340 bird sites only
    assert len(env) == len(y) == 340 and (env["group"] == "bird").all() and y.sum() == 92
    pa = awt.pa_records()
    check_records(pa)
    assert len(pa) == 340 * 20 + 102 * 20 and set(pa["value"].unique()) == {0.0, 1.0}
    assert set(awt.covariates) <= set(pa.columns)
    with pytest.raises(KeyError, match="no species"):
        awt.evaluation_sites("nz01")


def _write_canonical(data: NCEASRegion, root: Path, *, sep: str, folders: bool) -> None:
    """Write a region in the OSF layout (Records/<kind>/<REGION><kind>[_<group>].csv)."""

    def path(kind: str, group: str | None = None) -> Path:
        folder = root / "Records" / kind if folders else root
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{data.region}{sep}{kind}{'_' + group if group else ''}.csv"

    covs = list(data.covariates)
    po = data.presence.rename(columns={"species": "spid", "value": "occ"})
    po[["siteid", "spid", "x", "y", "occ", "group", *covs]].to_csv(path("train_po"), index=False)
    bg = data.background.assign(spid="pseudo1", occ=0, group=pd.NA)
    bg[["siteid", "spid", "x", "y", "occ", "group", *covs]].to_csv(path("train_bg"), index=False)
    multi = len(data.groups) > 1
    for group, species in data.groups.items():
        rows = (data.test_env["group"] == group).to_numpy()
        data.test_env[rows].to_csv(path("test_env", group if multi else None), index=False)
        data.test_pa.loc[rows, ["group", "siteid", "x", "y", *species]].to_csv(
            path("test_pa", group if multi else None), index=False
        )


@pytest.mark.parametrize(("region", "sep", "folders"), [("AWT", "", True), ("NSW", "_", False)])
def test_canonical_csv_layout(nceas_root: Path, tmp_path: Path, region: str, sep: str, folders: bool) -> None:
    parquet = load_nceas(nceas_root, region)
    _write_canonical(parquet, tmp_path, sep=sep, folders=folders)
    csv = load_nceas(tmp_path, region)
    assert csv.groups == parquet.groups and csv.categorical == parquet.categorical
    for name in ("presence", "background", "test_env", "test_pa", "summary"):
        a, b = getattr(csv, name), getattr(parquet, name)
        assert a.shape == b.shape, name
        for col in b.columns:
            left, right = a[col], b[col]
            if pd.api.types.is_numeric_dtype(right) and not isinstance(right.dtype, pd.CategoricalDtype):
                np.testing.assert_allclose(
                    left.to_numpy(dtype="float64", na_value=np.nan), right.to_numpy(dtype="float64", na_value=np.nan)
                )
            else:
                assert left.astype(str).tolist() == right.astype(str).tolist(), (name, col)


def test_loader_errors(nceas_root: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown NCEAS region"):
        load_nceas(nceas_root, "XYZ")
    with pytest.raises(DataSourceError, match="no AWTtrain_po"):
        load_nceas(tmp_path, "AWT")
    with pytest.raises(DataSourceError, match="does not exist"):
        load_nceas(tmp_path / "missing", "AWT")
