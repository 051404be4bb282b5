"""The demo's futures: scenario inputs (as the scenario sources read them) and their truth (scoring only).

Three scenarios on the same seeded world:

- ``warm2`` (SSP2-4.5, 2041-2060): about +2 °C (more inland and in summer), wetter winters, drier summers; written
  as a WorldClim-CMIP6-like 19-band bioclim GeoTIFF (``catalogs/demo-cmip6-bioclim.yaml``).
- ``warm4`` (SSP5-8.5, 2081-2100): about +4 °C, stronger precipitation shift; written as a monthly NetCDF projection
  (``catalogs/demo-climate-projection.yaml``), so the scenario cube derives bioclim from it.
- ``warm2_landuse``: ``warm2``'s climate plus a land-use change (grassland and pasture on flat lowland turned to
  arable land, towns grown outwards), a land-cover GeoTIFF (``catalogs/demo-landcover-scenario.yaml``).

The truth of each scenario (``truth/scenarios.zarr``): the true future covariates (the baseline truth's with the
replaced ones swapped: bioclim from the future monthly climate warped to the target grid like the baseline's,
land-cover fractions of the future map; terrain and the optical composites are not projected and stay as they
are), the true future probabilities of every species from their true response functions and biotic dependence
(:func:`geosdm.demo._species.true_probabilities`, what :class:`geosdm.demo.TrueModel` computes), the true joint
probability of every interaction edge, and per species the prevalence and probability-weighted centroid
(``truth/scenarios.json``). A monthly scenario's true bioclim is that of the monthly climate on the target grid
(derived covariates follow their inputs, as the scenario cube computes them); a bioclim scenario's is its bioclim
warped to the target grid, as the baseline truth's.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage

from geosdm.bioclim import BIOCLIM_META, biovars_numpy
from geosdm.demo._noise import block_mean, fractal_noise
from geosdm.demo._species import true_probabilities
from geosdm.demo._stac import write_cog
from geosdm.demo._warp import warp
from geosdm.demo._world import LANDCOVER_CLASSES
from geosdm.demo.layout import DemoLayout
from geosdm.grid import grid_coords
from geosdm.io.zarr import quiet_zarr

__all__ = ["DemoScenario", "DEMO_SCENARIOS", "make_scenarios"]

GCM = "DEMO-ESM"


@dataclass(frozen=True)
class DemoScenario:
    """One demo future: the climate change (None: none) and whether the land use changes."""

    name: str
    ssp: str
    period: str
    warming: float  # degC, region mean of the annual mean change
    summer_extra: float  # degC added to the seasonal amplitude (summers warm more)
    precip_base: float  # relative change of precipitation, annual
    precip_seasonal: float  # + in January, - in July (wetter winters, drier summers)
    climate_file: str  # "bioc" (19-band GeoTIFF) or "monthly" (NetCDF)
    landuse: bool = False
    description: str = ""


DEMO_SCENARIOS: tuple[DemoScenario, ...] = (
    DemoScenario("warm2", "ssp245", "2041-2060", 2.0, 0.5, -0.02, 0.09, "bioc",
                 description="+2 degC (more inland and in summer), winters 7 % wetter, summers 11 % drier"),
    DemoScenario("warm4", "ssp585", "2081-2100", 4.0, 1.0, -0.05, 0.15, "monthly",
                 description="+4 degC (more inland and in summer), winters 10 % wetter, summers 20 % drier"),
    DemoScenario("warm2_landuse", "ssp245", "2041-2060", 2.0, 0.5, -0.02, 0.09, "bioc", landuse=True,
                 description="warm2's climate and a land-use change: lowland grassland to arable land, towns grow"),
)


def _future_climate(sc: DemoScenario, climate: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gbox = climate.geobox
    x0, _, x1, _ = gbox.boundingbox
    xs = gbox.coords["x"].values[None, :]
    east = (xs - x0) / max(x1 - x0, 1.0)
    months = np.arange(1, 13)[:, None, None]
    season = np.cos(2 * np.pi * (months - 7) / 12.0)  # +1 in July, -1 in January
    dtemp = sc.warming * (1.0 + 0.3 * (east - 0.5)) + sc.summer_extra * season
    tmin = (climate.tmin + dtemp).astype(np.float32)
    tmax = (climate.tmax + dtemp).astype(np.float32)
    prec = (climate.prec * (1.0 + sc.precip_base - sc.precip_seasonal * season)).astype(np.float32)
    return tmin, tmax, prec


def _bioclim(tmin: np.ndarray, tmax: np.ndarray, prec: np.ndarray) -> np.ndarray:
    """bio01..bio19 ``(19, y, x)`` from monthly ``(12, y, x)`` arrays."""
    m = [np.moveaxis(np.asarray(a, dtype=np.float32), 0, -1) for a in (tmin, tmax, prec)]
    return np.moveaxis(biovars_numpy(*m), -1, 0).astype(np.float32)


def _future_landcover(world: Any, rng: np.random.Generator) -> np.ndarray:
    lc = world.landcover.copy()
    lowland = world.elevation < np.nanquantile(world.elevation, 0.4)
    flat = world.slope < 3.0
    grass = np.isin(lc, (5, 9))
    noise = fractal_noise(lc.shape, 2.5, rng)
    lc[grass & lowland & flat & (noise > -0.2)] = 3
    urban = lc == 1
    grown = ndimage.binary_dilation(urban, iterations=3) & np.isin(lc, (3, 4, 5, 6, 9, 10))
    lc[grown] = 1
    return lc


def _centroids(prob: np.ndarray, target: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per species: mean probability, probability-weighted centroid x and y (target CRS metres)."""
    ys = target.coords["y"].values[:, None]
    xs = target.coords["x"].values[None, :]
    w = np.nan_to_num(prob.astype(np.float64))
    tot = w.sum(axis=(1, 2))
    cx = (w * xs).sum(axis=(1, 2)) / np.maximum(tot, 1e-12)
    cy = (w * ys).sum(axis=(1, 2)) / np.maximum(tot, 1e-12)
    return np.nanmean(prob, axis=(1, 2)), cx, cy


def make_scenarios(layout: DemoLayout, *, preset: Any, world: Any, climate: Any, target: Any, crop: tuple[slice, slice],
                   factor: int, cov: dict[str, np.ndarray], species: list[Any], prob: dict[str, np.ndarray],
                   edges: pd.DataFrame, rng: np.random.Generator) -> dict[str, Any]:
    """Write every scenario input under ``scenarios/`` and the scenarios' truth under ``truth/``; return the
    summary stored in ``region.json`` (``scenarios``)."""
    root = layout.scenarios
    lc_future = _future_landcover(world, rng)
    written: dict[tuple[str, str], np.ndarray] = {}
    truth_cov: dict[str, dict[str, np.ndarray]] = {}
    inputs: dict[str, dict[str, str]] = {}
    for sc in DEMO_SCENARIOS:
        key = (sc.ssp, sc.period)
        if key not in written:
            tmin, tmax, prec = _future_climate(sc, climate)
            if sc.climate_file == "bioc":  # bioclim on the climate grid, warped like the baseline's bioclim
                bio = _bioclim(tmin, tmax, prec)
                path = root / "cmip6" / GCM / sc.ssp / f"demo_bioc_{GCM}_{sc.ssp}_{sc.period}.tif"
                write_cog(path, bio, climate.geobox, nodata=-9999.0, band_names=list(BIOCLIM_META))
                written[key] = warp(bio, climate.geobox, target, "bilinear")
            else:  # the monthly climate is the input: bioclim of the monthly values on the target grid
                path = root / "projection" / f"demo_monthly_{GCM}_{sc.ssp}_{sc.period}.nc"
                _write_monthly_nc(path, climate.geobox, tmin, tmax, prec, sc)
                written[key] = _bioclim(*(warp(a, climate.geobox, target, "bilinear") for a in (tmin, tmax, prec)))
        future = dict(cov)
        bio_t = written[key]
        for i, name in enumerate(BIOCLIM_META):
            future[name] = bio_t[i]
        files = {"climate": ("cmip6" if sc.climate_file == "bioc" else "projection")}
        if sc.landuse:
            path = root / "landuse" / "landcover_2050.tif"
            if not path.exists():
                write_cog(path, lc_future, world.geobox, nodata=0, categorical=True)
            region = lc_future[crop]
            for k in LANDCOVER_CLASSES:
                future[f"lc_{k}"] = block_mean((region == k).astype(np.float32), factor)
            files["landuse"] = "landuse/landcover_2050.tif"
        truth_cov[sc.name] = future
        inputs[sc.name] = files
    return _write_truth(layout, target, cov, truth_cov, species, prob, edges, inputs)


def _write_monthly_nc(path: Any, gbox: Any, tmin: np.ndarray, tmax: np.ndarray, prec: np.ndarray,
                      sc: DemoScenario) -> None:
    start, end = (int(v) for v in sc.period.split("-"))
    year = (start + end) // 2
    times = pd.DatetimeIndex([dt.datetime(year, m, 15) for m in range(1, 13)])
    coords = {**grid_coords(gbox), "time": times}
    ds = xr.Dataset(coords=coords, attrs={"title": f"demo monthly climate projection {GCM} {sc.ssp} {sc.period}",
                                          "Conventions": "CF-1.8", "period": sc.period})
    for name, arr, units, long_name in (("tmin", tmin, "degC", "mean daily minimum air temperature"),
                                        ("tmax", tmax, "degC", "mean daily maximum air temperature"),
                                        ("prec", prec, "mm", "monthly precipitation")):
        ds[name] = (("time", "y", "x"), arr, {"units": units, "long_name": long_name, "grid_mapping": "spatial_ref"})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    ds.to_netcdf(tmp, engine="h5netcdf")
    tmp.rename(path)


def _write_truth(layout: DemoLayout, target: Any, cov: dict[str, np.ndarray], future: dict[str, dict[str, np.ndarray]],
                 species: list[Any], prob0: dict[str, np.ndarray], edges: pd.DataFrame,
                 inputs: dict[str, dict[str, str]]) -> dict[str, Any]:
    names = [s.name for s in species]
    scen = [sc.name for sc in DEMO_SCENARIOS]
    probs, joints = [], []
    for sc in scen:
        p, q = true_probabilities(species, future[sc])
        probs.append(np.stack([p[n] for n in names]).astype(np.float32))
        joints.append(np.stack([q[t] * p[s] for s, t in zip(edges["source"], edges["target"])]).astype(np.float32))
    ds = xr.Dataset(coords=grid_coords(target))
    for k in cov:
        ds[k] = (("scenario", "y", "x"), np.stack([future[s][k] for s in scen]).astype(np.float32))
    ds["probability"] = (("scenario", "species", "y", "x"), np.stack(probs),
                         {"long_name": "true future occurrence probability per cell"})
    ds["joint"] = (("scenario", "edge", "y", "x"), np.stack(joints),
                   {"long_name": "true future joint probability that both partners are present"})
    ds = ds.assign_coords(
        scenario=np.array(scen, dtype=object), species=np.array(names, dtype=object), edge=np.arange(len(edges)),
        edge_source=("edge", edges["source"].to_numpy().astype(object)),
        edge_target=("edge", edges["target"].to_numpy().astype(object)),
        period=("scenario", np.array([sc.period for sc in DEMO_SCENARIOS], dtype=object)),
    )
    for v in ds.data_vars:
        ds[v].attrs["grid_mapping"] = "spatial_ref"
    ds.attrs["description"] = ("true future covariates, probabilities and interaction joints of the demo scenarios; "
                               "covariates not replaced by a scenario are the baseline truth's")
    with quiet_zarr():
        ds.to_zarr(layout.scenarios_truth_zarr, mode="w", zarr_format=3, consolidated=True)
    base = np.stack([prob0[n] for n in names])
    prev0, cx0, cy0 = _centroids(base, target)
    summary: dict[str, Any] = {}
    for i, sc in enumerate(DEMO_SCENARIOS):
        prev, cx, cy = _centroids(probs[i], target)
        changed = [k for k in cov if not np.array_equal(future[sc.name][k], cov[k], equal_nan=True)]
        summary[sc.name] = {
            **{k: v for k, v in asdict(sc).items() if k != "name"}, "gcm": GCM, "inputs": inputs[sc.name],
            "changed": changed,
            "mean_bio01_change": float(np.nanmean(future[sc.name]["bio01"] - cov["bio01"])),
            "mean_bio12_change": float(np.nanmean(future[sc.name]["bio12"] - cov["bio12"])),
            "species": {n: {"prevalence": float(prev0[j]), "future_prevalence": float(prev[j]),
                            "centroid_shift_m": [float(cx[j] - cx0[j]), float(cy[j] - cy0[j])]}
                        for j, n in enumerate(names)},
        }
    layout.scenarios_json.write_text(json.dumps(summary, indent=1))
    return {k: {"period": v["period"], "ssp": v["ssp"], "changed": v["changed"], "inputs": v["inputs"],
                "description": v["description"]} for k, v in summary.items()}
