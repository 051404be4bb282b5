"""The offline demo region: a deterministic, seeded stand-in for a small French département.

``generate(out, preset="small"|"default", seed=0)`` writes Sentinel-2/Landsat-like COG scenes in two UTM
zones, a DEM, land cover, monthly climate and bioclim, STAC Items (static catalog + ItemCollections),
42 virtual species with known niches and biotic dependence, presence-only records with a known observer bias,
stratified presence/absence surveys with imperfect detection, trap counts, the interaction network, and the
truth (covariates, probabilities, joint probabilities of every edge) as Zarr.

The generator is imported on first use, so ``geosdm.demo.DemoLayout`` stays cheap to import.
"""

from __future__ import annotations

from typing import Any

from geosdm.demo._presets import DEMO_PRESETS, DemoPreset, get_preset
from geosdm.demo.layout import COLLECTIONS, DemoLayout

__all__ = ["generate", "DemoLayout", "DemoPreset", "DEMO_PRESETS", "get_preset", "COLLECTIONS", "TrueModel", "response"]


def __getattr__(name: str) -> Any:
    if name == "generate":
        from geosdm.demo._generate import generate

        return generate
    if name == "TrueModel":
        from geosdm.demo.truth import TrueModel

        return TrueModel
    if name == "response":
        from geosdm.demo._species import response

        return response
    raise AttributeError(f"module 'geosdm.demo' has no attribute {name!r}")
