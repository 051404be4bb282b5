"""geosdm: cloud-native multi-species distribution models.

STAC catalogs -> analysis-ready Zarr datacubes -> multi-species deep SDMs -> lazy probability cubes,
interaction-likelihood maps and explanations. Heavy dependencies (torch, rasterio, pystac-client) are imported
inside the modules that need them, so ``import geosdm`` stays light.
"""

from __future__ import annotations

import logging

import os as _os

from geosdm.errors import GeoSDMError

if not _os.environ.get("GEOSDM_SERVICE_CHILD"):  # local service children (geosdm.services) need no xarray
    from geosdm import accessor as _accessor  # noqa: F401  (registers the ``.sdm`` xarray accessor)

__all__ = ["GeoSDMError", "__version__", "plan"]
__version__ = "0.1.0"


def plan(pipeline, **kwargs):  # type: ignore[no-untyped-def]
    """Plan a pipeline's tile-based steps without reading data (:func:`geosdm.planning.plan`)."""
    from geosdm.planning import plan as _plan

    return _plan(pipeline, **kwargs)

logging.getLogger(__name__).addHandler(logging.NullHandler())
