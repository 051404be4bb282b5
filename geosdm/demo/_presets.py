"""Demo presets: the size knobs of the generated region (``small`` for tests, ``default`` for the demo)."""

from __future__ import annotations

from dataclasses import dataclass

from geosdm.errors import InputError

__all__ = ["DemoPreset", "DEMO_PRESETS", "get_preset"]


@dataclass(frozen=True)
class DemoPreset:
    """Sizes of a demo region. Distances in metres, the region bbox in Lambert-93 (EPSG:2154).

    The region straddles the 0° meridian (x ≈ 469 km in Lambert-93 near 46.3°N), so Sentinel-2 tiles come
    in two UTM zones (EPSG:32630 and EPSG:32631) that the cube builder must reproject and mosaic.
    """

    name: str
    bbox: tuple[float, float, float, float]
    target_res: float  # the covariate cube / truth grid
    fine_res: float  # world fields and Sentinel-2 resolution
    landsat_res: float
    dem_res_deg: float
    climate_res: float
    s2_dates: int
    landsat_dates: int
    margin: float  # world extends this far beyond the region so scene edges have data
    n_towns: int
    parcel_size: float  # typical land-cover parcel size
    n_plots: int
    po_scale: float  # presence-only records per species for prevalence 1.0 (scaled by prevalence ** 0.6)


DEMO_PRESETS: dict[str, DemoPreset] = {
    "small": DemoPreset(
        name="small",
        bbox=(466_020.0, 6_579_000.0, 472_020.0, 6_585_000.0),
        target_res=60.0,
        fine_res=20.0,
        landsat_res=30.0,
        dem_res_deg=1 / 3600,
        climate_res=500.0,
        s2_dates=12,
        landsat_dates=4,
        margin=600.0,
        n_towns=2,
        parcel_size=240.0,
        n_plots=150,
        po_scale=350.0,
    ),
    "default": DemoPreset(
        name="default",
        bbox=(449_000.0, 6_562_000.0, 489_000.0, 6_602_000.0),
        target_res=100.0,
        fine_res=20.0,
        landsat_res=30.0,
        dem_res_deg=1 / 3600,
        climate_res=1000.0,
        s2_dates=12,
        landsat_dates=8,
        margin=1000.0,
        n_towns=7,
        parcel_size=400.0,
        n_plots=400,
        po_scale=1500.0,
    ),
}


def get_preset(name: str) -> DemoPreset:
    """Look up a preset by name."""
    try:
        return DEMO_PRESETS[name]
    except KeyError:
        raise InputError(f"unknown demo preset {name!r}; choose one of {sorted(DEMO_PRESETS)}") from None
