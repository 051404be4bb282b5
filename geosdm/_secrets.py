"""Keep credentials out of what geosdm writes: URLs are redacted before they reach attrs, logs and errors.

A source URL may carry a token (``?token=...``, an Azure SAS ``?sv=...&sig=...``, ``https://user:pass@host``),
often expanded from ``${VAR}`` in a pipeline file. Stores, STAC Items, reports and logs outlive the run and get
shared, so every query value and URL password is replaced by ``REDACTED`` there; the run itself uses the
real URL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["REDACTED", "redact", "redact_url"]

REDACTED = "REDACTED"
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """``url`` with its password and every query value replaced by ``REDACTED`` (names kept, for debugging)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", f":{REDACTED}@", 1)
    query = parts.query
    if query:
        query = urlencode([(k, REDACTED) for k, _ in parse_qsl(query, keep_blank_values=True)], safe="")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(value: Any) -> Any:
    """``value`` (str, mapping, list/tuple, nested) with every URL inside a string redacted."""
    if isinstance(value, str):
        return _URL.sub(lambda m: redact_url(m.group(0)), value) if "://" in value else value
    if isinstance(value, Mapping):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value
