"""Spectral indices from composited bands, found by common band name (so S2 and Landsat give the same names)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from geosdm.errors import InputError

__all__ = ["INDICES", "COMMON_NAMES", "common_name", "compute_index"]

#: index -> (a, b): normalised difference (a - b) / (a + b) of two common band names
INDICES: dict[str, tuple[str, str]] = {
    "ndvi": ("nir", "red"),
    "ndwi": ("green", "nir"),  # McFeeters open-water index
    "ndmi": ("nir", "swir16"),  # moisture
    "nbr": ("nir", "swir22"),  # burn ratio
}

#: band/asset names of common providers -> common name (STAC eo:common_name)
COMMON_NAMES: dict[str, str] = {
    "B02": "blue", "B03": "green", "B04": "red", "B08": "nir", "B8A": "nir08", "B11": "swir16", "B12": "swir22",
    "blue": "blue", "green": "green", "red": "red", "nir": "nir", "nir08": "nir", "swir16": "swir16", "swir22": "swir22",
    "SR_B2": "blue", "SR_B3": "green", "SR_B4": "red", "SR_B5": "nir", "SR_B6": "swir16", "SR_B7": "swir22",
}  # fmt: skip


def common_name(band: str) -> str | None:
    """Common name of a band, or None when unknown."""
    return COMMON_NAMES.get(band)


def compute_index(name: str, bands: Mapping[str, np.ndarray]) -> np.ndarray:
    """Normalised-difference index ``name`` from arrays keyed by common band name."""
    try:
        a, b = INDICES[name]
    except KeyError:
        raise InputError(f"unknown spectral index {name!r}; choose from {sorted(INDICES)}") from None
    missing = [c for c in (a, b) if c not in bands]
    if missing:
        raise InputError(
            f"index {name!r} needs bands with common names {missing}; the source gives {sorted(bands)}. "
            "Add those assets to the source definition or drop the index."
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((bands[a] - bands[b]) / (bands[a] + bands[b])).astype(np.float32)
