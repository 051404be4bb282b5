"""Local services on 127.0.0.1 for the offline demo and tests: STAC API, range HTTP server, S3 server.

``serve_demo(root)`` starts all three over a demo folder; each service is also usable on its own
(:class:`StacApiServer`, :class:`HttpServer`, :class:`S3Server`). Nothing here is imported by ``import geosdm``.
"""

from __future__ import annotations

from geosdm.services.hrefs import demo_collections, join_href, absolutize_hrefs, write_served_stac
from geosdm.services.http import HttpServer
from geosdm.services.s3 import (
    S3Server,
    create_bucket,
    gdal_s3_env,
    s3_client,
    s3_storage_options,
    upload_folder,
)
from geosdm.services.stac_api import StacApiServer
from geosdm.services.stack import ServedDemo, serve_demo

__all__ = [
    "HttpServer",
    "S3Server",
    "ServedDemo",
    "StacApiServer",
    "create_bucket",
    "demo_collections",
    "gdal_s3_env",
    "join_href",
    "absolutize_hrefs",
    "s3_client",
    "s3_storage_options",
    "serve_demo",
    "upload_folder",
    "write_served_stac",
]
