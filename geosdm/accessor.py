"""The ``.sdm`` xarray accessor: geosdm's functions as methods of a cube or layer Dataset.

The accessor only holds the Dataset; each method forwards to one module function, so
``cube.sdm.predict(model)`` is :func:`geosdm.predict.predict` ``(model, cube)`` and the docs and tests target
the functions. Nothing is computed or raised when the accessor is created (xarray hides ``AttributeError``
from accessor constructors). Registered on ``import geosdm``.

Example
-------
>>> import geosdm, xarray as xr  # doctest: +SKIP
>>> cube = geosdm.io.open_cube("cube.zarr")  # doctest: +SKIP
>>> prob = cube.sdm.predict("model/", area=400.0)  # lazy (species, y, x)  # doctest: +SKIP
>>> prob.sdm.write("probability.zarr", dtypes="uint8")  # doctest: +SKIP
"""

from __future__ import annotations

from os import PathLike
from typing import Any

import xarray as xr

__all__ = ["SDMAccessor"]


@xr.register_dataset_accessor("sdm")
class SDMAccessor:
    """``ds.sdm``: predict from a covariate cube, write, explain and combine layer cubes."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    @property
    def geobox(self) -> Any:
        """The Dataset's grid (``odc.geo.GeoBox``), None when it has no georeferencing."""
        import odc.geo.xr  # noqa: F401

        return self._ds.odc.geobox

    def predict(self, model: Any, **kwargs: Any) -> xr.Dataset:
        """Lazy presence probabilities of ``model`` over this covariate cube: :func:`geosdm.predict.predict`."""
        from geosdm.predict import predict

        return predict(model, self._ds, **kwargs)

    def write(self, path: str | PathLike[str], **kwargs: Any) -> Any:
        """Write these layers as a resumable sharded Zarr store: :func:`geosdm.io.write_layers`."""
        from geosdm.io import write_layers

        return write_layers(self._ds, path, **kwargs)
