"""Monthly demo climate (tmin, tmax, prec at ~1 km) that follows the terrain, and bioclim derived from it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from odc.geo.geobox import GeoBox

from geosdm.bioclim import biovars_numpy
from geosdm.demo._noise import fractal_noise
from geosdm.demo._presets import DemoPreset
from geosdm.demo._warp import warp
from geosdm.demo._world import World
from geosdm.grid import geobox_from_bbox

__all__ = ["Climate", "make_climate"]


@dataclass
class Climate:
    """Monthly climate on ``geobox``: arrays shaped (12, y, x); ``bio`` shaped (19, y, x)."""

    geobox: GeoBox
    tmin: np.ndarray  # degC
    tmax: np.ndarray  # degC
    prec: np.ndarray  # mm / month
    bio: np.ndarray


def make_climate(preset: DemoPreset, world: World, rng: np.random.Generator) -> Climate:
    """Monthly climate with several independent gradients, as real regions have.

    Temperature falls 6.5 °C/km with elevation and northwards, with a regional anomaly (cold-air pools, sea
    breeze); the annual range grows inland (continentality, towards the east); precipitation rises with
    elevation and on west-facing (windward) slopes, with its own storm-track pattern; its seasonality grows
    southwards (a Mediterranean influence). Each pattern has its own random field, so the bioclimatic variables
    are not one map (the mean, the extremes, the seasonality and the rain vary partly independently).
    """
    x0, y0, x1, y1 = world.geobox.boundingbox
    gbox = geobox_from_bbox((x0, y0, x1, y1), crs="EPSG:2154", resolution=preset.climate_res)
    elev = warp(world.elevation, world.geobox, gbox, "average")
    # Windward: slopes rising towards the east catch westerly rain.
    gy, gx = np.gradient(np.nan_to_num(elev, nan=float(np.nanmean(elev))), preset.climate_res)
    windward = np.clip(gx * 100.0, 0, None)  # metres of rise per 100 m towards the east
    ys = gbox.coords["y"].values[:, None]
    xs = gbox.coords["x"].values[None, :]
    north_km = (ys - 6_580_000.0) / 1000.0
    east = (xs - x0) / max(x1 - x0, 1.0)  # 0 (west, oceanic) .. 1 (east, continental)
    south = (y1 - ys) / max(y1 - y0, 1.0)  # 0 (north) .. 1 (south)
    t_annual = 12.6 - 6.5 * elev / 1000.0 - 0.008 * north_km + 0.6 * fractal_noise(gbox.shape, 3.0, rng)
    p_annual = 720.0 + 0.7 * elev + 60.0 * windward + 110.0 * fractal_noise(gbox.shape, 3.0, rng)
    months = np.arange(1, 13)[:, None, None]
    amplitude = 6.5 + 2.5 * east + 0.002 * elev + 0.6 * fractal_noise(gbox.shape, 3.0, rng)
    anomaly = rng.normal(0.0, 0.8, size=(12, 1, 1))  # this year's departures from the seasonal cycle
    tmean = t_annual + amplitude * np.cos(2 * np.pi * (months - 7) / 12.0) + anomaly
    dtr_base = 9.5 - 0.002 * elev + 0.8 * fractal_noise(gbox.shape, 3.0, rng)  # cloudiness
    dtr = dtr_base + 2.0 * np.cos(2 * np.pi * (months - 7) / 12.0)
    tmax = (tmean + dtr / 2).astype(np.float32)
    tmin = (tmean - dtr / 2).astype(np.float32)
    seasonality = np.clip(0.25 + 0.3 * south + 0.12 * fractal_noise(gbox.shape, 3.0, rng), 0.05, 0.9)
    weights = 1.0 + seasonality * np.cos(2 * np.pi * (months - 11) / 12.0)
    weights = weights / weights.sum(axis=0, keepdims=True)
    wet = np.exp(rng.normal(0.0, 0.25, size=(12, 1, 1)))
    prec = (p_annual * weights * wet).astype(np.float32)
    bio = np.moveaxis(biovars_numpy(np.moveaxis(tmin, 0, -1), np.moveaxis(tmax, 0, -1), np.moveaxis(prec, 0, -1)), -1, 0)
    return Climate(gbox, tmin, tmax, prec, bio.astype(np.float32))
