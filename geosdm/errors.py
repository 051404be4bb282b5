"""One root error for geosdm; each subclass also inherits the matching builtin.

Messages name the input, state the problem and give the fix, so existing ``except ValueError`` clauses keep
working and users know what to do next.
"""

from __future__ import annotations

__all__ = [
    "GeoSDMError",
    "InputError",
    "MissingVariableError",
    "DataSourceError",
    "EmptySearchError",
    "GridError",
    "ServiceError",
    "NotFittedError",
    "CRSMismatchWarning",
    "DataGapWarning",
    "ExtrapolationWarning",
]


class GeoSDMError(Exception):
    """Root of every error raised by geosdm."""


class InputError(GeoSDMError, ValueError):
    """An argument, file or configuration value is invalid."""


class MissingVariableError(GeoSDMError, KeyError):
    """A required variable, column or asset is missing."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class DataSourceError(GeoSDMError, OSError):
    """A data source (file, URL, object store, STAC API) could not be read."""


class EmptySearchError(GeoSDMError, LookupError):
    """A STAC search or a spatial selection found nothing."""


class GridError(GeoSDMError, ValueError):
    """A grid (GeoBox) is invalid or does not overlap the data."""


class ServiceError(GeoSDMError, RuntimeError):
    """A local service (STAC API, HTTP, S3) failed to start or stop."""


class NotFittedError(GeoSDMError, AttributeError):
    """An estimator was used before ``fit``."""


class CRSMismatchWarning(UserWarning):
    """Inputs were in different CRSs and were reprojected."""


class DataGapWarning(UserWarning):
    """Some data were missing and are reported as gaps (NaN, valid count 0)."""


class ExtrapolationWarning(UserWarning):
    """Prediction inputs lie where the model was not trained: a covariate far outside its training range (often
    other units) or a categorical class absent from training."""
