"""The one place that writes and reads cubes: sharded Zarr v3 with region writes and resume, local or object store."""

from __future__ import annotations

from geosdm.io.zarr import CubeStore, open_cube

__all__ = ["CubeStore", "open_cube"]
