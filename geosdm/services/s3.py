"""An S3-compatible server on loopback (moto), plus the client settings that point GDAL, boto3 and fsspec at it.

moto keeps buckets in the memory of its server process (gone when it stops); credentials are dummies.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from geosdm.errors import DataSourceError, InputError, ServiceError
from geosdm.services._process import PortFileService

__all__ = [
    "DUMMY_KEY",
    "DUMMY_SECRET",
    "DEFAULT_REGION",
    "S3Server",
    "s3_client",
    "s3_storage_options",
    "create_bucket",
    "upload_folder",
    "gdal_s3_env",
]

log = logging.getLogger(__name__)

DUMMY_KEY = "geosdm-test-key"
DUMMY_SECRET = "geosdm-test-secret"
DEFAULT_REGION = "us-east-1"


class S3Server(PortFileService):
    """moto's S3 server on ``host`` and a free port, from a child process (buckets live in its memory).

    Parameters
    ----------
    host
        Loopback address to bind.
    region
        Region reported to clients (``AWS_REGION``).
    workdir
        Folder for the server's log; a temporary folder (removed on stop) if None.
    startup_timeout
        Seconds to wait for the server to listen.

    Raises
    ------
    ServiceError
        On start, if the server does not come up (the message holds its log tail).

    Example
    -------
    >>> with S3Server() as s3:  # doctest: +SKIP
    ...     create_bucket(s3.endpoint_url, "demo")
    ...     ds.to_zarr("s3://demo/cube.zarr", storage_options=s3.storage_options)
    """

    kind = "s3"
    label = "S3 server (moto)"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        region: str = DEFAULT_REGION,
        workdir: str | PathLike[str] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        super().__init__(host=host, workdir=workdir, startup_timeout=startup_timeout)
        self.region = region

    @property
    def endpoint_url(self) -> str:
        """``http://HOST:PORT``, for boto3/s3fs ``endpoint_url``."""
        return f"http://{self.host}:{self.port}"

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options for ``xr.open_zarr(..., storage_options=...)`` and ``to_zarr``."""
        return s3_storage_options(self.endpoint_url, region=self.region)



def s3_storage_options(
    endpoint_url: str, *, key: str = DUMMY_KEY, secret: str = DUMMY_SECRET, region: str = DEFAULT_REGION
) -> dict[str, Any]:
    """fsspec/s3fs ``storage_options`` that talk to the S3 server at ``endpoint_url``.

    Example
    -------
    >>> s3_storage_options("http://127.0.0.1:9000")["client_kwargs"]
    {'endpoint_url': 'http://127.0.0.1:9000', 'region_name': 'us-east-1'}
    """
    return {
        "key": key,
        "secret": secret,
        "client_kwargs": {"endpoint_url": endpoint_url, "region_name": region},
    }


def s3_client(
    endpoint_url: str, *, key: str = DUMMY_KEY, secret: str = DUMMY_SECRET, region: str = DEFAULT_REGION
) -> Any:
    """A boto3 S3 client for ``endpoint_url`` (path-style addressing).

    Example
    -------
    >>> s3_client("http://127.0.0.1:9000").meta.endpoint_url
    'http://127.0.0.1:9000'
    """
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name=region,
        config=Config(s3={"addressing_style": "path"}),
    )


def create_bucket(endpoint_url: str, bucket: str, *, region: str = DEFAULT_REGION) -> None:
    """Create ``bucket`` on the S3 server at ``endpoint_url``; an existing bucket is kept.

    Raises
    ------
    ServiceError
        If the server refuses (bad name, server down).

    Example
    -------
    >>> create_bucket("http://127.0.0.1:9000", "geosdm-demo")  # doctest: +SKIP
    """
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(endpoint_url, region=region)
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise ServiceError(f"cannot create bucket {bucket!r} at {endpoint_url}: {exc}; check the name") from exc
    except BotoCoreError as exc:
        raise ServiceError(f"cannot create bucket {bucket!r} at {endpoint_url}: {exc}; is the server running?") from exc


def upload_folder(
    endpoint_url: str,
    folder: str | PathLike[str],
    bucket: str,
    *,
    prefix: str = "",
    region: str = DEFAULT_REGION,
    max_workers: int = 8,
) -> int:
    """Upload every file below ``folder`` to ``s3://bucket/<prefix>/<relative path>``; returns the file count.

    Parameters
    ----------
    max_workers
        Files uploaded at the same time.

    Raises
    ------
    DataSourceError
        If ``folder`` is not a folder.
    ServiceError
        If an upload fails.

    Example
    -------
    >>> upload_folder("http://127.0.0.1:9000", "demo-output/cogs", "geosdm-demo", prefix="cogs")  # doctest: +SKIP
    42
    """
    from concurrent.futures import ThreadPoolExecutor

    from botocore.exceptions import BotoCoreError, ClientError

    src = Path(folder)
    if not src.is_dir():
        raise DataSourceError(f"cannot upload {str(src)!r} to s3://{bucket}: not a folder; pass an existing folder")
    client = s3_client(endpoint_url, region=region)  # boto3 clients are thread-safe
    files = sorted(p for p in src.rglob("*") if p.is_file())

    def put(path: Path) -> None:
        key = "/".join(part for part in (prefix.strip("/"), path.relative_to(src).as_posix()) if part)
        try:
            client.upload_file(str(path), bucket, key)
        except (BotoCoreError, ClientError) as exc:
            raise ServiceError(
                f"cannot upload {str(path)!r} to s3://{bucket}/{key}: {exc}; create the bucket first (create_bucket)"
            ) from exc

    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        list(pool.map(put, files))
    log.info("uploaded %d files from %s to s3://%s/%s", len(files), src, bucket, prefix)
    return len(files)


@contextmanager
def gdal_s3_env(
    endpoint_url: str,
    *,
    key: str = DUMMY_KEY,
    secret: str = DUMMY_SECRET,
    region: str = DEFAULT_REGION,
    extra: Mapping[str, str] | None = None,
) -> Iterator[dict[str, str]]:
    """Point GDAL (``/vsis3/``), boto3 and s3fs at the S3 server at ``endpoint_url``; restore the environment after.

    Sets ``AWS_S3_ENDPOINT``, ``AWS_HTTPS``, ``AWS_VIRTUAL_HOSTING``, ``AWS_REGION``, dummy keys and
    ``AWS_ENDPOINT_URL`` (read by botocore, so s3fs/boto3 follow too), and unsets ``AWS_PROFILE`` /
    ``AWS_SESSION_TOKEN``. Environment variables are process-wide: do not mix endpoints across threads.

    Parameters
    ----------
    endpoint_url
        ``http://HOST:PORT`` of the server (only plain HTTP is expected on loopback).
    extra
        More variables to set, e.g. ``{"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}``.

    Yields
    ------
    dict
        The variables that were set.

    Raises
    ------
    InputError
        If ``endpoint_url`` has no host and port.

    Example
    -------
    >>> with gdal_s3_env("http://127.0.0.1:9000"):  # doctest: +SKIP
    ...     rasterio.open("/vsis3/geosdm-demo/cogs/cop-dem-glo-30/dem/elevation.tif")
    """
    parts = urlsplit(endpoint_url)
    if not parts.netloc:
        raise InputError(f"endpoint_url {endpoint_url!r} lacks host:port; pass e.g. 'http://127.0.0.1:9000'")
    values = {
        "AWS_S3_ENDPOINT": parts.netloc,
        "AWS_HTTPS": "YES" if parts.scheme == "https" else "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_ENDPOINT_URL": endpoint_url,
        **(extra or {}),
    }
    unset = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_NO_SIGN_REQUEST")
    saved = {name: os.environ.get(name) for name in (*values, *unset)}
    try:
        for name in unset:
            os.environ.pop(name, None)
        os.environ.update(values)
        yield dict(values)
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
