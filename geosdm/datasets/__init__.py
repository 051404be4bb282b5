"""Real benchmark data sets loaded into the records schema (read from local folders; nothing is downloaded)."""

from __future__ import annotations

from geosdm.datasets.nceas import NCEASRegion, load_nceas

__all__ = ["NCEASRegion", "load_nceas"]
