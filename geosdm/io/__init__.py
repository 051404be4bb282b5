"""The one place that writes and reads cubes: sharded Zarr v3 with region writes and resume, local or object store.

:class:`CubeStore` is the tile-by-tile store; :func:`write_layers` writes any lazy ``(*lead, y, x)`` layer
Dataset (predictions, uncertainty, interaction, attribution and extrapolation maps) through it.
"""

from __future__ import annotations

from geosdm.io.layers import WriteReport, encode_probability, open_layers, write_layers
from geosdm.io.reading import open_cube
from geosdm.io.zarr import CubeStore

__all__ = ["CubeStore", "WriteReport", "encode_probability", "open_cube", "open_layers", "write_layers"]
