"""Turn the inputs of ``MultiSpeciesSDM.fit`` into training arrays: covariates, sites, encoding, NaN rows,
area offsets, the spatial validation fold and (for CNNs) a patch store of the sites.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geosdm.errors import DataGapWarning, InputError
from geosdm.models.features import FeatureEncoder, check_columns, is_categorical
from geosdm.models.sites import DatasetSpec, Sites, build_sites, site_records
from geosdm.records.schema import NON_COVARIATES

__all__ = ["Prepared", "RESERVED", "detect_covariates", "prepare", "sites_from_frames", "validation_mask"]

log = logging.getLogger(__name__)

#: Columns that are never covariates (records schema, bookkeeping and site columns).
RESERVED = NON_COVARIATES


@dataclass
class Prepared:
    """Training arrays (rows = kept sites) and what is needed to rebuild them at prediction."""

    sites: Sites
    arrays: dict[str, np.ndarray]
    encoder: FeatureEncoder
    bias_encoder: FeatureEncoder | None
    area_unit: float
    n_dropped: int
    patch_store: Path | None = None
    patch_variables: tuple[str, ...] = ()
    patch_mean: np.ndarray | None = None
    patch_scale: np.ndarray | None = None


def detect_covariates(frame: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """Numeric and ``category`` columns of ``frame`` that are not schema/bookkeeping columns or ``exclude``."""
    out = []
    for c in frame.columns:
        if c in RESERVED or c in exclude:
            continue
        col = frame[c]
        if isinstance(col.dtype, pd.CategoricalDtype) or (
            pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        ):
            out.append(str(c))
    return out


def sites_from_frames(X: pd.DataFrame, Y: pd.DataFrame, loss: str, area: Any, columns: Sequence[str]) -> Sites:
    """Sites straight from a covariate frame ``X`` and a target frame ``Y`` (rows aligned)."""
    if not isinstance(Y, pd.DataFrame):
        raise InputError(f"Y must be a DataFrame with one column per species; got {type(Y).__name__}")
    if len(X) != len(Y):
        raise InputError(f"X has {len(X)} rows but Y has {len(Y)}; they must be aligned row by row")
    if loss == "integrated":
        raise InputError("loss='integrated' needs a records table with `kind` and `dataset` columns: call fit(table)")
    targets = Y.to_numpy(dtype="float32", na_value=np.nan)
    if loss in ("deepmaxent",):
        family = np.where(np.nansum(targets, axis=1) > 0, "po", "background")
        targets = np.nan_to_num(targets)
    elif loss == "poisson":
        family = np.full(len(Y), "count")
    else:
        family = np.full(len(Y), "pa")
    dataset = np.where(family == "background", "background", "table")
    a = np.asarray(np.nan if area is None else area, dtype="float64")
    area_arr = np.broadcast_to(a.reshape(-1, 1) if a.ndim else a, targets.shape).astype("float64")
    frame = pd.DataFrame({
        "dataset": dataset, "family": family,
        "x": X["x"].to_numpy(dtype="float64") if "x" in X.columns else np.nan,
        "y": X["y"].to_numpy(dtype="float64") if "y" in X.columns else np.nan,
        "row0": np.arange(len(X)),
    })
    if "fold" in X.columns:
        frame["fold"] = X["fold"].to_numpy()
    for c in columns:
        frame[c] = X[c].to_numpy()
    specs = [DatasetSpec(name, fam, int((dataset == name).sum()))
             for name, fam in (("table", family[family != "background"][0] if (family != "background").any() else "po"),
                               ("background", "background"))
             if (dataset == name).any()]
    return Sites(frame, targets, area_arr, [str(c) for c in Y.columns], specs, None)


def validation_mask(sites: Sites, val_size: float, block_size: float | None, seed: int,
                    member: int = 0) -> np.ndarray | None:
    """Boolean mask of validation sites: a fold of the table's ``fold`` column (the ``member``-th, cycling),
    else fold 0 of spatial blocks dealt with ``seed``."""
    if not val_size:
        return None
    frame = sites.frame
    if "fold" in frame.columns and frame["fold"].notna().all():
        folds = frame["fold"].to_numpy()
        uniq = np.unique(folds)
        val = folds == uniq[member % len(uniq)]
    else:
        x, y = frame["x"].to_numpy(dtype="float64"), frame["y"].to_numpy(dtype="float64")
        k = max(2, int(round(1.0 / float(val_size))))
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            log.warning("sites have no x/y coordinates: the validation fold is random, not spatial; add x and y")
            val = np.random.default_rng(seed).permutation(len(frame)) % k == 0
        else:
            from geosdm.records.cv import SpatialBlockKFold

            span = max(float(np.ptp(x)), float(np.ptp(y)), 1e-9)
            size = float(block_size) if block_size else span / 10.0
            val = SpatialBlockKFold(k, block_size=size, seed=seed).fold_ids(np.c_[x, y]) == 0
    observed = sites.frame["family"].to_numpy() != "background"
    if not (val & observed).any() or not (~val & observed).any():
        log.warning("the validation fold has no records (or holds all of them); training without early stopping")
        return None
    return val


def _cube_dataset(cube: Any) -> tuple[Any, Any]:
    """The cube as a lazy Dataset (nothing read) and its GeoBox."""
    import odc.geo.xr  # noqa: F401  (registers .odc)
    import xarray as xr

    from geosdm.errors import GridError

    if isinstance(cube, xr.Dataset):
        ds = cube
    else:
        from geosdm.io import open_cube

        ds = open_cube(str(cube))
    geobox = ds.odc.geobox
    if geobox is None:
        raise GridError("cube has no grid (no spatial_ref coordinate); build it with geosdm.cube")
    return ds, geobox


def _extract(table: pd.DataFrame, cube: Any, names: Sequence[str]) -> pd.DataFrame:
    from geosdm.records import extract_covariates
    from geosdm.records.schema import check_records, conform

    try:
        check_records(table)
    except Exception:
        table = conform(table)
    return extract_covariates(cube, table, variables=list(names))


def _patch_store(cube: Any, sites: Sites, variables: Sequence[str], size: int, work_dir: Path) -> Path:
    from geosdm.records import extract_patches

    return extract_patches(cube, site_records(sites), work_dir / "patches.zarr", size=size, variables=list(variables),
                           overwrite=True)


def prepare(X: pd.DataFrame, Y: pd.DataFrame | None, *, loss: str, cube: Any, covariates: Sequence[str] | None,
            categorical: Sequence[str], bias_covariates: Sequence[str], series: Sequence[Sequence[str]] | None,
            species: Sequence[str] | None, area: Any, patch_size: int | None, patches: Any, work_dir: str | PathLike[str] | None,
            write_stores: bool = True, drop_background: bool = False) -> Prepared:
    """All preparation of ``fit`` (see the module docstring); raises errors that name the bad input."""
    if not isinstance(X, pd.DataFrame):
        raise InputError(f"X must be a pandas DataFrame (a records table or covariates); got {type(X).__name__}")
    series_cols = [c for group in (series or ()) for c in group]
    clash = [c for c in [*(covariates or ()), *bias_covariates, *series_cols] if c in RESERVED]
    if clash:
        raise InputError(f"covariate or bias layer names {clash} are records/site columns (e.g. 'effort' is the "
                         "records' sampling effort), so their values would be taken from the records; rename the "
                         "layers (e.g. 'record_density')")
    geobox = None
    if cube is not None:
        from geosdm.records import covariate_names

        ds, geobox = _cube_dataset(cube)
        wanted = list(covariates) if covariates is not None else covariate_names(ds)
        want_all = list(dict.fromkeys([*wanted, *bias_covariates, *series_cols]))
        from_cube = [c for c in want_all if c in ds.data_vars and c not in X.columns]
        if from_cube:
            if Y is not None:
                raise InputError("fit(X, Y, cube=...) cannot extract covariates; pass a records table as X")
            X = _extract(X, cube, from_cube)
        covariates = wanted
    if covariates is None:
        covariates = detect_covariates(X, exclude=[*bias_covariates, *series_cols])
        log.info("covariates detected from the table: %s", covariates)
    covariates = list(covariates)
    if not covariates and not series_cols and patch_size is None:
        raise InputError("no covariate columns found in X; pass covariates=[...] or a cube")
    check_columns(X, [*covariates, *bias_covariates, *series_cols], what="X")
    extra = list(dict.fromkeys([*covariates, *bias_covariates, *series_cols]))
    if Y is None:
        from geosdm.records.schema import crs_string

        crs = crs_string(geobox.crs) if geobox is not None else None
        sites = build_sites(X, species=species, columns=extra, geobox=geobox, crs=crs)
    else:
        sites = sites_from_frames(X, Y, loss, area, extra)

    encoder = FeatureEncoder.fit(sites.frame, covariates, categorical=categorical)
    tab, valid = encoder.transform(sites.frame)
    bias_enc = None
    fam = sites.frame["family"].to_numpy()
    if bias_covariates:
        bias_enc = FeatureEncoder.fit(sites.frame[np.isin(fam, ["po", "background"])], bias_covariates, what="bias")
        bias, bvalid = bias_enc.transform(sites.frame, what="bias")
        valid &= bvalid | ~np.isin(fam, ["po", "background"])
    else:
        bias = np.zeros((len(sites.frame), 0), dtype=np.float32)
    ser = None
    if series:
        lens = {len(g) for g in series}
        if len(lens) != 1:
            raise InputError(f"series groups must have equal lengths (time steps); got lengths {sorted(lens)}")
        ser_enc = FeatureEncoder.fit(sites.frame, series_cols, what="series")
        flat, svalid = ser_enc.transform(sites.frame, what="series")
        valid &= svalid
        ser = flat.reshape(len(flat), len(series), lens.pop())
        encoder = FeatureEncoder(encoder.columns, {**encoder.means, **ser_enc.means},
                                 {**encoder.scales, **ser_enc.scales}, encoder.categories,
                                 {**encoder.ranges, **ser_enc.ranges})
    n_bad = int((~valid).sum())
    if n_bad:
        warnings.warn(
            f"{n_bad} of {len(valid)} training sites have NaN covariates and were dropped; extract covariates "
            "where the cube is valid (geosdm.records.valid_mask) to keep them", DataGapWarning, stacklevel=3,
        )
        sites = sites.subset(valid)
        tab, bias = tab[valid], bias[valid]
        ser = ser[valid] if ser is not None else None
    if len(sites.frame) == 0 or (sites.frame["family"] == "background").all():
        raise InputError("no usable records remain after dropping NaN rows; check the covariates")
    if drop_background:  # background_weight=0: background points take no part in the loss
        keep = sites.frame["family"].to_numpy() != "background"
        sites, tab, bias = sites.subset(keep), tab[keep], bias[keep]
        ser = ser[keep] if ser is not None else None
    finite_area = sites.area[np.isfinite(sites.area)]
    area_unit = float(np.median(finite_area)) if finite_area.size else 1.0
    needs_area = np.isin(sites.frame["family"].to_numpy(), ["pa", "count"])
    if needs_area.any() and not finite_area.size:
        log.info("presence/absence or count data without plot_area_m2: intensities are per plot")
    with np.errstate(divide="ignore", invalid="ignore"):
        log_area = np.nan_to_num(np.log(sites.area / area_unit), nan=0.0, posinf=0.0, neginf=0.0)
    arrays = {
        "tabular": tab.astype(np.float32),
        "targets": sites.targets.astype(np.float32),
        "dataset": sites.dataset_index.astype(np.int64),
        "log_area": log_area.astype(np.float32),
        "bias": bias.astype(np.float32),
    }
    if ser is not None:
        arrays["series"] = ser.astype(np.float32)
    prep = Prepared(sites, arrays, encoder, bias_enc, area_unit, n_bad)
    if patch_size is not None:
        _add_patches(prep, X, cube, covariates, encoder, patch_size, patches, work_dir, write_stores)
    return prep


def _add_patches(prep: Prepared, X: pd.DataFrame, cube: Any, covariates: Sequence[str], encoder: FeatureEncoder,
                 size: int, patches: Any, work_dir: str | PathLike[str] | None, write: bool = True) -> None:
    """Patches of the kept sites: a store cut from the cube (record = site row), or given per input row."""
    if patches is not None:
        arr = _patches_for_rows(patches)
        if len(arr) != len(X):
            raise InputError(f"patches hold {len(arr)} samples but X has {len(X)} rows; give one patch per row of X")
        prep.arrays["patch"] = arr[prep.sites.frame["row0"].to_numpy()].astype(np.float32)
        variables = tuple(f"band{i}" for i in range(arr.shape[1]))
    elif cube is not None:
        if work_dir is None:
            raise InputError("patch extraction needs a work_dir to write the patch store")
        variables = tuple(c for c in covariates if not is_categorical(prep.sites.frame[c]))
        prep.patch_store = Path(work_dir) / "patches.zarr"
        if write:
            _patch_store(cube, prep.sites, variables, size, Path(work_dir))
        _barrier()
    else:
        raise InputError(
            "network needs covariate patches: pass cube=... (patches are cut around each site) or patches=... "
            "(a patch store from geosdm.records.extract_patches over X's rows, or an array (n, C, k, k))"
        )
    frame = prep.sites.frame
    means = np.array([encoder.means.get(v, float(np.nanmean(_channel(prep, frame, v, i))))
                      for i, v in enumerate(variables)], dtype=np.float32)
    scales = np.array([encoder.scales.get(v, float(np.nanstd(_channel(prep, frame, v, i))) or 1.0)
                       for i, v in enumerate(variables)], dtype=np.float32)
    prep.patch_variables, prep.patch_mean, prep.patch_scale = variables, means, np.where(scales > 0, scales, 1.0)
    if "patch" in prep.arrays:
        p = prep.arrays["patch"]
        prep.arrays["patch"] = np.nan_to_num((p - means[None, :, None, None]) / prep.patch_scale[None, :, None, None])


def _barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _channel(prep: Prepared, frame: pd.DataFrame, name: str, i: int) -> np.ndarray:
    if name in frame.columns:
        return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype="float64")
    p = prep.arrays["patch"]
    return p[:, i, p.shape[2] // 2, p.shape[3] // 2]


def _patches_for_rows(patches: Any) -> np.ndarray:
    """Patches per input row from an array or a patch store (ordered by its ``record`` array)."""
    if isinstance(patches, np.ndarray):
        if patches.ndim != 4:
            raise InputError(f"patches array must be (n, C, k, k); got shape {patches.shape}")
        return patches
    from geosdm.records import open_patches

    ds = open_patches(patches)
    values = np.asarray(ds["patches"].values)
    out = np.empty_like(values)
    out[np.asarray(ds["record"].values)] = values
    return out
