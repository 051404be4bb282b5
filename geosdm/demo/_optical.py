"""Sentinel-2-L2A-like and Landsat-C2-L2-like scenes rendered from the demo world.

Surface reflectance = per-class spectrum (between a "brown" and a "green" state, mixed by a per-class
phenology) x a smooth brightness field. Phenology is constant within each meteorological season, so the
cloud-free seasonal composite has an exactly known value (saved as truth). Clouds are thresholded smooth
noise that changes between dates, with offset shadows, cirrus at cloud edges and winter snow on high ground.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from odc.geo.geobox import GeoBox

from geosdm.demo._noise import fractal_noise
from geosdm.demo._warp import warp
from geosdm.demo._world import World
from geosdm.grid import geobox_from_bbox

__all__ = [
    "S2_BANDS",
    "LANDSAT_BANDS",
    "SEASONS",
    "season_of",
    "surface_reflectance",
    "ndvi",
    "Sky",
    "make_sky",
    "render_s2",
    "render_landsat",
    "scene_dates",
]

#: Sentinel-2 band -> (common name, centre wavelength in µm)
S2_BANDS: dict[str, tuple[str, float]] = {
    "B02": ("blue", 0.490),
    "B03": ("green", 0.560),
    "B04": ("red", 0.665),
    "B08": ("nir", 0.842),
    "B11": ("swir16", 1.610),
    "B12": ("swir22", 2.190),
}
#: Landsat C2 L2 asset -> (common name, centre wavelength); same order as S2_BANDS
LANDSAT_BANDS: dict[str, tuple[str, float]] = {
    "blue": ("blue", 0.48),
    "green": ("green", 0.56),
    "red": ("red", 0.655),
    "nir08": ("nir08", 0.865),
    "swir16": ("swir16", 1.61),
    "swir22": ("swir22", 2.2),
}
#: season -> months; mid-season day of year used for phenology
SEASONS: dict[str, tuple[int, ...]] = {"djf": (12, 1, 2), "mam": (3, 4, 5), "jja": (6, 7, 8), "son": (9, 10, 11)}
_SEASON_DOY = {"djf": 15, "mam": 105, "jja": 196, "son": 288}

# Spectra (B02, B03, B04, B08, B11, B12) per land-cover class, green and brown states.
_GREEN = np.zeros((13, 6), dtype=np.float32)
_BROWN = np.zeros((13, 6), dtype=np.float32)
_SOIL = [0.07, 0.10, 0.13, 0.20, 0.30, 0.24]
_DRY_GRASS = [0.06, 0.09, 0.11, 0.25, 0.30, 0.22]
for cls, green, brown in [
    (1, [0.09, 0.10, 0.11, 0.16, 0.20, 0.18], None),
    (2, [0.10, 0.11, 0.12, 0.15, 0.22, 0.20], None),
    (3, [0.03, 0.06, 0.035, 0.40, 0.22, 0.11], _SOIL),
    (4, [0.04, 0.07, 0.05, 0.32, 0.22, 0.12], _SOIL),
    (5, [0.03, 0.07, 0.04, 0.38, 0.21, 0.10], _DRY_GRASS),
    (6, [0.035, 0.065, 0.045, 0.36, 0.23, 0.12], _SOIL),
    (7, [0.025, 0.05, 0.03, 0.42, 0.20, 0.09], [0.05, 0.07, 0.08, 0.20, 0.22, 0.15]),
    (8, [0.02, 0.04, 0.025, 0.28, 0.13, 0.06], [0.025, 0.045, 0.035, 0.24, 0.14, 0.07]),
    (9, [0.035, 0.07, 0.045, 0.34, 0.22, 0.11], _DRY_GRASS),
    (10, [0.03, 0.055, 0.045, 0.30, 0.22, 0.12], [0.05, 0.08, 0.09, 0.22, 0.27, 0.19]),
    (11, [0.03, 0.05, 0.04, 0.25, 0.12, 0.06], [0.04, 0.06, 0.06, 0.15, 0.10, 0.05]),
    (12, [0.04, 0.05, 0.03, 0.02, 0.01, 0.005], None),
]:
    _GREEN[cls] = green
    _BROWN[cls] = brown if brown is not None else green
# Greenness (0 brown .. 1 green) per class and season (djf, mam, jja, son).
_GREENNESS = np.zeros((13, 4), dtype=np.float32)
for cls, g in {
    3: (0.35, 0.95, 0.25, 0.1),  # winter cereal: green in spring, harvested in summer
    4: (0.05, 0.45, 0.9, 0.55),  # vines leaf out late
    5: (0.6, 0.95, 0.5, 0.75),  # pasture dries in summer
    6: (0.4, 0.8, 0.6, 0.45),
    7: (0.05, 0.7, 1.0, 0.45),  # deciduous forest
    8: (0.9, 0.95, 1.0, 0.95),  # evergreen
    9: (0.45, 0.9, 0.55, 0.6),
    10: (0.35, 0.6, 0.6, 0.5),
    11: (0.3, 0.7, 0.9, 0.5),
}.items():
    _GREENNESS[cls] = g
_SNOW = np.array([0.80, 0.78, 0.75, 0.65, 0.08, 0.06], dtype=np.float32)


def season_of(date: dt.date | dt.datetime) -> str:
    """Meteorological season code of a date (``djf``, ``mam``, ``jja``, ``son``)."""
    return next(s for s, months in SEASONS.items() if date.month in months)


def surface_reflectance(landcover: np.ndarray, brightness: np.ndarray, season: str) -> np.ndarray:
    """Noise-free, cloud-free surface reflectance (6, y, x) for a season (constant within the season)."""
    k = list(SEASONS).index(season)
    g = _GREENNESS[:, k][:, None]
    spectra = _BROWN + g * (_GREEN - _BROWN)  # (13, 6)
    refl = spectra[landcover]  # (y, x, 6)
    return (np.moveaxis(refl, -1, 0) * brightness[None]).astype(np.float32)


def ndvi(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((nir - red) / (nir + red)).astype(np.float32)


def scene_dates(n: int, *, year: int = 2024, offset_days: float = 0.0, hour: int = 10, minute: int = 56) -> list[dt.datetime]:
    """``n`` acquisition times spread evenly over ``year`` (UTC)."""
    start = dt.datetime(year, 1, 5, hour, minute, 21, tzinfo=dt.timezone.utc)
    step = 360.0 / n
    return [start + dt.timedelta(days=round(offset_days + i * step)) for i in range(n)]


@dataclass
class Sky:
    """One date's atmosphere on a coarse Lambert-93 grid: SCL-like codes 0 clear, 3 shadow, 8/9 cloud,
    10 cirrus, 11 snow; plus cloud optical brightness."""

    geobox: GeoBox
    code: np.ndarray  # uint8
    cloud_refl: np.ndarray  # float32 reflectance of cloud tops


def make_sky(world: World, cloud_fraction: float, snow: bool, rng: np.random.Generator, res: float = 100.0) -> Sky:
    """Clouds covering about ``cloud_fraction`` of the area, shadows offset south-east, optional snow."""
    gbox = geobox_from_bbox(world.geobox.boundingbox, crs="EPSG:2154", resolution=res)
    noise = fractal_noise(gbox.shape, 3.2, rng)
    code = np.zeros(gbox.shape, dtype=np.uint8)
    if cloud_fraction >= 0.999:
        thr = -np.inf
    elif cloud_fraction <= 0.001:
        thr = np.inf
    else:
        thr = float(np.quantile(noise, 1.0 - cloud_fraction))
    core = noise > thr + 0.35
    medium = (noise > thr) & ~core
    cirrus = (noise > thr - 0.15) & (noise <= thr)
    shift = (3, 4)  # 300 m south, 400 m east: sun from the north-west in the morning pass
    shadow = np.zeros_like(core)
    cloud = core | medium
    shadow[shift[0]:, shift[1]:] = cloud[: -shift[0], : -shift[1]]
    shadow &= ~cloud & ~cirrus
    if snow:
        elev = warp(world.elevation, world.geobox, gbox, "average")
        line = np.nanquantile(elev, 0.88)
        code[elev > line] = 11
    code[cirrus] = 10
    code[shadow] = 3
    code[medium] = 8
    code[core] = 9
    cloud_refl = np.clip(0.35 + 0.12 * (noise - (thr if np.isfinite(thr) else noise.min())), 0.3, 0.65).astype(np.float32)
    return Sky(gbox, code, cloud_refl)


@dataclass
class SceneGrid:
    """A scene's grid with the static world fields pre-warped onto it."""

    geobox: GeoBox
    landcover: np.ndarray
    brightness: np.ndarray
    valid: np.ndarray


def scene_grid(world: World, crs: str, resolution: float, bbox_lonlat: tuple[float, float, float, float]) -> SceneGrid:
    """Grid of one scene (a UTM tile) with land cover (nearest) and brightness (bilinear) warped onto it."""
    gbox = geobox_from_bbox(bbox_lonlat, crs=crs, resolution=resolution, bbox_crs="EPSG:4326")
    lc = warp(world.landcover, world.geobox, gbox, "nearest", nodata=0)
    bright = warp(world.brightness, world.geobox, gbox, "bilinear")
    return SceneGrid(gbox, lc, np.nan_to_num(bright, nan=1.0), lc > 0)


def _render(grid: SceneGrid, sky: Sky, season: str, rng: np.random.Generator, noise_sd: float = 0.0025) -> tuple[np.ndarray, np.ndarray]:
    """Top-of-canopy reflectance (6, y, x) with clouds, and the atmosphere code per pixel."""
    refl = surface_reflectance(grid.landcover, grid.brightness, season)
    refl += rng.normal(0.0, noise_sd, size=refl.shape).astype(np.float32)
    code = warp(sky.code, sky.geobox, grid.geobox, "nearest", nodata=0)
    cref = warp(sky.cloud_refl, sky.geobox, grid.geobox, "bilinear")
    cref = np.nan_to_num(cref, nan=0.4)
    snow = code == 11
    refl[:, snow] = _SNOW[:, None] + rng.normal(0, 0.01, size=(6, int(snow.sum()))).astype(np.float32)
    refl[:, code == 10] += 0.04
    refl[:, code == 3] *= 0.35
    thick = (code == 8) | (code == 9)
    refl[:, thick] = cref[thick][None, :] * np.array([1.0, 0.98, 0.97, 0.95, 0.75, 0.6], dtype=np.float32)[:, None]
    return refl, code


def render_s2(grid: SceneGrid, sky: Sky, season: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Sentinel-2 L2A digital numbers (6, y, x uint16, baseline 04.00: DN = 10000 R + 1000, 0 = nodata),
    the SCL band (uint8) and the scene cloud cover (%)."""
    refl, code = _render(grid, sky, season, rng)
    dn = np.clip(np.round(refl * 10_000.0 + 1000.0), 1, 65_535).astype(np.uint16)
    dn[:, ~grid.valid] = 0
    scl = code.copy()
    clear = code == 0
    nd = ndvi(refl[2], refl[3])
    scl[clear] = np.where(grid.landcover[clear] == 12, 6, np.where(nd[clear] > 0.35, 4, 5))
    scl[~grid.valid] = 0
    n_valid = int(grid.valid.sum())
    cover = 100.0 * float(np.isin(scl, (8, 9, 10)).sum()) / max(n_valid, 1)
    return dn, scl, cover


# QA_PIXEL bits (Landsat Collection 2)
_FILL, _DILATED, _CIRRUS, _CLOUD, _SHADOW, _SNOW_BIT, _CLEAR, _WATER = 0, 1, 2, 3, 4, 5, 6, 7


def _conf(bit: int, level: int) -> int:
    return level << bit


def render_landsat(grid: SceneGrid, sky: Sky, season: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Landsat C2 L2 surface-reflectance DNs (6, y, x uint16; R = 2.75e-5 DN - 0.2; 0 = fill), QA_PIXEL
    (uint16 bit flags) and cloud cover (%)."""
    refl, code = _render(grid, sky, season, rng, noise_sd=0.006)
    dn = np.clip(np.round((refl + 0.2) / 2.75e-5), 1, 65_535).astype(np.uint16)
    dn[:, ~grid.valid] = 0
    low = _conf(8, 1) | _conf(10, 1) | _conf(12, 1) | _conf(14, 1)  # all confidences low
    qa = np.full(code.shape, low | (1 << _CLEAR), dtype=np.uint16)
    qa[grid.landcover == 12] |= 1 << _WATER
    cloud = (code == 8) | (code == 9)
    qa[cloud] = (1 << _CLOUD) | (1 << _DILATED) | _conf(8, 3) | _conf(10, 1) | _conf(12, 1) | _conf(14, 1)
    qa[code == 10] = (1 << _CIRRUS) | _conf(8, 1) | _conf(10, 1) | _conf(12, 1) | _conf(14, 3)
    qa[code == 3] = (1 << _SHADOW) | _conf(8, 1) | _conf(10, 3) | _conf(12, 1) | _conf(14, 1)
    qa[code == 11] = (1 << _SNOW_BIT) | _conf(8, 1) | _conf(10, 1) | _conf(12, 3) | _conf(14, 1)
    qa[~grid.valid] = 1 << _FILL
    n_valid = int(grid.valid.sum())
    cover = 100.0 * float((cloud | (code == 10))[grid.valid].sum()) / max(n_valid, 1)
    return dn, qa, cover
