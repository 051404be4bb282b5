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
    """``ds.sdm``: predict (with uncertainty) from a covariate cube, explain it, combine probability cubes into
    interaction layers, write any of them."""

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

    def uncertainty(self, model: Any, **kwargs: Any) -> xr.Dataset:
        """Lazy mean/sd/quantile layers over ensemble members or MC dropout:
        :func:`geosdm.predict.uncertainty.predict_uncertainty`."""
        from geosdm.predict.uncertainty import predict_uncertainty

        return predict_uncertainty(model, self._ds, **kwargs)

    def attribution(self, model: Any, **kwargs: Any) -> xr.Dataset:
        """Lazy attribution cube ``(variable, y, x)`` per species: :func:`geosdm.explain.attribution_cube`."""
        from geosdm.explain.attribution import attribution_cube

        return attribution_cube(model, self._ds, **kwargs)

    def mess(self, reference: Any, **kwargs: Any) -> xr.Dataset:
        """Lazy MESS extrapolation map against the training ``reference``: :func:`geosdm.explain.mess`."""
        from geosdm.explain.extrapolation import mess

        return mess(reference, self._ds, **kwargs)

    def interactions(self, network: Any, **kwargs: Any) -> xr.Dataset:
        """Lazy interaction layers from this probability cube: :func:`geosdm.interactions.interaction_layers`."""
        from geosdm.interactions.layers import interaction_layers

        return interaction_layers(self._ds, network, **kwargs)
