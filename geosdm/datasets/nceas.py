"""The NCEAS species-distribution benchmark (Elith et al. 2020, Biodiversity Informatics 15:69-80) as records.

Per region: presence-only training records, 10,000 background points and independent presence/absence (PA)
test sites, each with the region's covariates at the points (categorical covariates as pandas ``category``
columns sharing one category set across the tables). Two on-disk layouts are read:

* **parquet** (the project's copy): ``<root>/<REGION>/train_po.parquet``, ``train_bg.parquet``,
  ``test_pa_with_env.parquet`` (optionally ``species_summary.csv``);
* **canonical** (the public OSF release, osf.io/kwc4v, ``data/Records/...``): CSV files anywhere under
  ``root`` named ``<REGION>train_po.csv``, ``<REGION>train_bg.csv``, ``<REGION>test_pa[_<group>].csv`` and
  ``<REGION>test_env[_<group>].csv`` (an underscore after the region, e.g. ``AWT_train_po.csv``, is
  accepted). AWT and NSW have one test file pair per biological group, rows in identical order. The ``disdat``
  R package ships the same tables as ``.rds``; export them with ``write.csv`` to use this layout.

Evaluation protocol: fit on presence-only + background, predict at the PA sites of each species' own group
(:meth:`NCEASRegion.evaluation_sites`), ROC AUC per species, mean per region.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from geosdm.errors import DataSourceError, InputError, MissingVariableError
from geosdm.records.schema import conform

__all__ = ["CATEGORICAL", "CRS", "REGIONS", "NCEASRegion", "load_nceas"]

#: The six NCEAS regions.
REGIONS: Final = ("AWT", "CAN", "NSW", "NZ", "SA", "SWI")
#: CRS of x/y per region (disdat ``disCRS``).
CRS: Final[dict[str, str]] = {
    "AWT": "EPSG:28355",
    "CAN": "EPSG:4008",
    "NSW": "EPSG:4326",
    "NZ": "EPSG:27200",
    "SA": "EPSG:4326",
    "SWI": "EPSG:21781",
}
#: Categorical covariates per region (NSW ``disturb`` and ``soilfert`` are ordinal and stay numeric).
CATEGORICAL: Final[dict[str, tuple[str, ...]]] = {
    "AWT": (),
    "CAN": ("ontveg",),
    "NSW": ("vegsys",),
    "NZ": ("age", "toxicats"),
    "SA": (),
    "SWI": ("calc",),
}
_ID_COLUMNS: Final = ("siteid", "spid", "x", "y", "occ", "group")


@dataclass(frozen=True, eq=False)
class NCEASRegion:
    """One NCEAS region in the records schema.

    Attributes
    ----------
    region, crs
        Region code and the CRS of all x/y.
    covariates, categorical
        Covariate column names, and those that are categorical (pandas ``category`` columns).
    groups
        ``{biological group: species}``; species are evaluated at their group's PA sites only.
    presence
        Presence-only records (``kind="presence_only"``) + ``siteid``, ``group`` and covariates.
    background
        Background points (``kind="background"``, species ``<NA>``) + ``siteid`` and covariates.
    test_env
        One row per PA site: ``group``, ``siteid``, ``x``, ``y`` and covariates.
    test_pa
        Same rows as ``test_env``: ``group``, ``siteid``, ``x``, ``y`` and one nullable ``Int8`` 0/1 column per
        species (``<NA>`` where the species' group did not survey the site).
    summary
        Per species: ``spid``, ``n_po``, ``n_test_sites``, ``n_test_pres``, ``group`` (computed from the data).
    """

    region: str
    crs: str
    covariates: tuple[str, ...]
    categorical: tuple[str, ...]
    groups: dict[str, tuple[str, ...]]
    presence: pd.DataFrame
    background: pd.DataFrame
    test_env: pd.DataFrame
    test_pa: pd.DataFrame
    summary: pd.DataFrame

    @property
    def species(self) -> list[str]:
        """All species codes, sorted."""
        return sorted(s for group in self.groups.values() for s in group)

    def training_table(self) -> pd.DataFrame:
        """Presence-only records and background points in one records table (background last)."""
        return pd.concat([self.presence, self.background], ignore_index=True)

    def evaluation_sites(self, species: str) -> tuple[pd.DataFrame, np.ndarray]:
        """PA sites of the species' group (env rows) and its 0/1 observations there (NA rows dropped)."""
        if species not in self.test_pa.columns:
            raise MissingVariableError(f"NCEAS {self.region} has no species {species!r}; it has {self.species}")
        obs = self.test_pa[species]
        keep = obs.notna().to_numpy()
        return self.test_env[keep].reset_index(drop=True), obs[keep].to_numpy(dtype="int8")

    def pa_records(self) -> pd.DataFrame:
        """The PA test data as a long records table (``kind="presence_absence"``, ``plot_id`` = site id),
        one row per surveyed species and site, with the site covariates."""
        species = [c for c in self.test_pa.columns if c not in ("group", "siteid", "x", "y")]
        obs = self.test_pa[species].to_numpy(dtype="float64", na_value=np.nan)
        site, sp = np.nonzero(np.isfinite(obs))  # site-major order
        sites = self.test_pa.iloc[site]
        frame = pd.DataFrame(
            {
                "species": np.asarray(species, dtype=object)[sp],
                "x": sites["x"].to_numpy(dtype="float64"),
                "y": sites["y"].to_numpy(dtype="float64"),
                "crs": self.crs,
                "kind": "presence_absence",
                "value": obs[site, sp],
                "plot_id": sites["siteid"].astype(str).to_numpy(),
                "dataset": f"NCEAS-{self.region}-test",
                "group": sites["group"].to_numpy(),
            }
        )
        env = self.test_env[list(self.covariates)].iloc[site].reset_index(drop=True)
        return pd.concat([conform(frame), env], axis=1)


# --------------------------------------------------------------------------------------------- file layouts
def _read_parquet_layout(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    files = {name: folder / f"{name}.parquet" for name in ("train_po", "train_bg", "test_pa_with_env")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DataSourceError(f"NCEAS parquet layout is incomplete: missing {missing}")
    return (
        pd.read_parquet(files["train_po"]),
        pd.read_parquet(files["train_bg"]),
        pd.read_parquet(files["test_pa_with_env"]),
    )


def _find_csv(root: Path, region: str) -> dict[str, dict[str | None, Path]]:
    pattern = re.compile(rf"^{region}_?(train_po|train_bg|test_pa|test_env)(?:_([A-Za-z0-9]+))?\.csv$", re.I)
    found: dict[str, dict[str | None, Path]] = {}
    for path in sorted(root.rglob("*.csv")):
        m = pattern.match(path.name)
        if m:
            kind, group = m.group(1).lower(), m.group(2)
            found.setdefault(kind, {})[group.lower() if group else None] = path
    return found


def _read_canonical_layout(root: Path, region: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    found = _find_csv(root, region)
    for kind in ("train_po", "train_bg", "test_pa", "test_env"):
        if kind not in found:
            raise DataSourceError(
                f"no {region}{kind}*.csv under {str(root)!r}; give the folder holding the OSF 'Records' files "
                f"(e.g. Records/{kind}/{region}{kind}.csv) or the parquet layout <root>/{region}/"
            )
    if set(found["test_pa"]) != set(found["test_env"]):
        raise DataSourceError(
            f"{region} test_pa groups {sorted(map(str, found['test_pa']))} do not match test_env groups "
            f"{sorted(map(str, found['test_env']))} under {str(root)!r}"
        )
    for kind in ("train_po", "train_bg"):
        if list(found[kind]) != [None]:
            raise DataSourceError(f"expected one {region}{kind}.csv under {str(root)!r}; found {found[kind]}")
    po, bg = pd.read_csv(found["train_po"][None]), pd.read_csv(found["train_bg"][None])
    tests = []
    for group in sorted(found["test_pa"], key=str):
        pa = pd.read_csv(found["test_pa"][group])
        env = pd.read_csv(found["test_env"][group])
        if (
            len(pa) != len(env)
            or not (pa["siteid"].astype(str).to_numpy() == env["siteid"].astype(str).to_numpy()).all()
        ):
            raise DataSourceError(
                f"{found['test_pa'][group].name} and {found['test_env'][group].name} rows differ; "
                "they must list the same sites in the same order"
            )
        species = [c for c in pa.columns if c not in ("group", "siteid", "x", "y")]
        tests.append(pd.concat([env, pa[species].astype("Int8")], axis=1))
    test = pd.concat(tests, ignore_index=True)
    species_cols = [c for c in test.columns if c not in tests[0].columns[: env.shape[1]]]
    return po, bg, test.astype({c: "Int8" for c in species_cols})


# --------------------------------------------------------------------------------------------- conversion
def _categorical_dtypes(tables: list[pd.DataFrame], names: tuple[str, ...]) -> dict[str, pd.CategoricalDtype]:
    out = {}
    for name in names:
        values = pd.concat([t[name] for t in tables if name in t.columns]).dropna()
        out[name] = pd.CategoricalDtype(sorted(pd.unique(values).tolist()))
    return out


def _records(raw: pd.DataFrame, region: str, crs: str, *, kind: str, covariates: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "species": raw["spid"].to_numpy() if kind != "background" else pd.NA,
            "x": raw["x"].to_numpy(dtype="float64"),
            "y": raw["y"].to_numpy(dtype="float64"),
            "crs": crs,
            "kind": kind,
            "value": 1.0 if kind == "presence_only" else 0.0,
            "dataset": f"NCEAS-{region}-{'po' if kind == 'presence_only' else 'bg'}",
            "siteid": raw["siteid"].astype(str).to_numpy(),
        }
    )
    if kind != "background":
        frame["group"] = raw["group"].to_numpy()
    return pd.concat([conform(frame), raw[covariates].reset_index(drop=True)], axis=1)


def load_nceas(root: str | PathLike[str], region: str) -> NCEASRegion:
    """Load one NCEAS region from a local folder (parquet or canonical OSF CSV layout, see module docstring).

    Parameters
    ----------
    root
        Folder holding ``<REGION>/train_po.parquet`` ... or, anywhere below it, the OSF CSV files.
    region
        ``"AWT"``, ``"CAN"``, ``"NSW"``, ``"NZ"``, ``"SA"`` or ``"SWI"`` (case-insensitive).

    Returns
    -------
    NCEASRegion

    Raises
    ------
    InputError
        Unknown region.
    DataSourceError
        The folder lacks the region's files.

    Example
    -------
    >>> awt = load_nceas("../shared/data/nceas", "AWT")  # doctest: +SKIP
    >>> len(awt.species), len(awt.presence), len(awt.test_env)  # doctest: +SKIP
    (40, 3806, 442)
    """
    code = str(region).upper()
    if code not in REGIONS:
        raise InputError(f"unknown NCEAS region {region!r}; choose one of {list(REGIONS)}")
    base = Path(root)
    if not base.is_dir():
        raise DataSourceError(f"NCEAS folder {str(base)!r} does not exist; download the data (osf.io/kwc4v)")
    if (base / code / "train_po.parquet").is_file():
        po, bg, test = _read_parquet_layout(base / code)
    else:
        po, bg, test = _read_canonical_layout(base, code)
    crs = CRS[code]
    covariates = [c for c in po.columns if c not in _ID_COLUMNS]
    missing = [c for c in covariates if c not in bg.columns or c not in test.columns]
    if missing:
        raise DataSourceError(f"NCEAS {code}: covariate(s) {missing} are missing from train_bg or the test files")
    categorical = tuple(c for c in CATEGORICAL[code] if c in covariates)
    dtypes = _categorical_dtypes([po, bg, test], categorical)
    po, bg, test = (t.astype(dtypes) for t in (po, bg, test))

    groups = {str(g): tuple(sorted(po.loc[po["group"] == g, "spid"].unique())) for g in sorted(po["group"].unique())}
    species = [s for g in groups.values() for s in g]
    absent = [s for s in species if s not in test.columns]
    if absent:
        raise DataSourceError(f"NCEAS {code}: species {absent} have presence records but no PA test column")
    site_cols = ["group", "siteid", "x", "y"]
    test_env = test[site_cols + covariates].reset_index(drop=True)
    test_pa = test[site_cols + sorted(species)].reset_index(drop=True)
    group_of = {s: g for g, members in groups.items() for s in members}
    summary = pd.DataFrame(
        {
            "spid": sorted(species),
            "n_po": [int((po["spid"] == s).sum()) for s in sorted(species)],
            "n_test_sites": [int(test_pa[s].notna().sum()) for s in sorted(species)],
            "n_test_pres": [int((test_pa[s] == 1).sum()) for s in sorted(species)],
            "group": [group_of[s] for s in sorted(species)],
        }
    )
    return NCEASRegion(
        region=code,
        crs=crs,
        covariates=tuple(covariates),
        categorical=categorical,
        groups=groups,
        presence=_records(po, code, crs, kind="presence_only", covariates=covariates),
        background=_records(bg, code, crs, kind="background", covariates=covariates),
        test_env=test_env,
        test_pa=test_pa,
        summary=summary,
    )
