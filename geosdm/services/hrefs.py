"""Href rewriting for serving: relative hrefs in demo STAC documents -> absolute ``http://`` or ``s3://`` URLs.

The demo writes ItemCollections whose asset hrefs are relative to the demo root (``cogs/<collection>/...``).
A STAC API needs absolute hrefs, so before loading we write rewritten *copies* into a run folder; the demo
folder itself is never modified. :func:`absolutize_hrefs` is the small pure function the rest of geosdm can reuse.
"""

from __future__ import annotations

import copy
import json
import logging
import posixpath
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from geosdm.errors import DataSourceError, InputError

__all__ = [
    "STRUCTURAL_RELS",
    "is_relative_href",
    "join_href",
    "absolutize_hrefs",
    "demo_collections",
    "write_served_stac",
]

log = logging.getLogger(__name__)

#: Link relations that describe a document's place in a static catalog; a STAC API writes its own.
STRUCTURAL_RELS = frozenset({"self", "root", "parent", "collection", "child", "item", "items"})


def is_relative_href(href: str) -> bool:
    """True for a relative path such as ``cogs/a.tif`` or ``../b.json`` (no URL scheme, no leading ``/``).

    Example
    -------
    >>> is_relative_href("cogs/a.tif"), is_relative_href("s3://bucket/a.tif"), is_relative_href("/data/a.tif")
    (True, False, False)
    """
    return not urlsplit(href).scheme and not href.startswith(("/", "\\"))


def join_href(base: str, href: str, *, relative_to: str = "") -> str:
    """Absolute URL of ``href`` (relative to the folder ``relative_to`` under the served root) below ``base``.

    Parameters
    ----------
    base
        URL of the served root, e.g. ``http://127.0.0.1:8000`` or ``s3://bucket/prefix``.
    href
        Relative POSIX path; absolute hrefs are returned unchanged.
    relative_to
        Folder of the document holding ``href``, relative to the served root (``""`` for the root itself).

    Raises
    ------
    InputError
        If ``href`` climbs above the served root (``../`` too many times).

    Example
    -------
    >>> join_href("http://127.0.0.1:8000", "../../cogs/a b.tif", relative_to="stac/s2")
    'http://127.0.0.1:8000/cogs/a%20b.tif'
    """
    if not is_relative_href(href):
        return href
    path = posixpath.normpath(posixpath.join(relative_to.replace("\\", "/"), href.replace("\\", "/")))
    if path == ".." or path.startswith("../"):
        raise InputError(
            f"href {href!r} (relative to {relative_to or '.'!r}) points outside the served root; "
            "write hrefs relative to the demo root, e.g. 'cogs/<collection>/<item>/<asset>.tif'"
        )
    if path == ".":
        path = ""
    scheme = urlsplit(base).scheme.lower()
    if scheme in ("http", "https"):
        path = quote(path, safe="/")
    return f"{base.rstrip('/')}/{path}"


def _is_relative_link(link: Mapping[str, Any]) -> bool:
    href = link.get("href")
    return isinstance(href, str) and is_relative_href(href)


def _rewrite_one(obj: dict[str, Any], base: str, relative_to: str, drop_structural_links: bool) -> dict[str, Any]:
    for asset in (obj.get("assets") or {}).values():
        if isinstance(asset, dict) and isinstance(asset.get("href"), str):
            asset["href"] = join_href(base, asset["href"], relative_to=relative_to)
    links = []
    for link in obj.get("links") or []:
        href = link.get("href")
        if not isinstance(href, str):
            links.append(link)
        elif is_relative_href(href) and drop_structural_links and link.get("rel") in STRUCTURAL_RELS:
            continue
        else:
            links.append({**link, "href": join_href(base, href, relative_to=relative_to)})
    if "links" in obj:
        obj["links"] = links
    return obj


def absolutize_hrefs(
    obj: Mapping[str, Any],
    base: str,
    *,
    relative_to: str = "",
    drop_structural_links: bool = True,
) -> dict[str, Any]:
    """Copy of a STAC Item, Collection or ItemCollection dict with relative hrefs made absolute under ``base``.

    Asset hrefs and non-structural link hrefs are joined to ``base``; relative structural links
    (:data:`STRUCTURAL_RELS`) are dropped because a STAC API writes its own. Absolute hrefs are kept.

    Parameters
    ----------
    obj
        STAC JSON as a dict (``type`` ``Feature``, ``Collection``, ``Catalog`` or ``FeatureCollection``).
    base
        URL of the served root: ``http://127.0.0.1:PORT`` or ``s3://bucket[/prefix]``.
    relative_to
        Folder of the document, relative to the served root; the demo's ItemCollections use ``""``.
    drop_structural_links
        Keep relative ``self``/``root``/``parent``/... links (joined to ``base``) when False.

    Returns
    -------
    dict
        A new dict; ``obj`` is not modified.

    Raises
    ------
    InputError
        If an href points outside the served root.

    Example
    -------
    >>> item = {"type": "Feature", "id": "a", "assets": {"B04": {"href": "cogs/s2/a/B04.tif"}}, "links": []}
    >>> absolutize_hrefs(item, "s3://demo")["assets"]["B04"]["href"]
    's3://demo/cogs/s2/a/B04.tif'
    """
    out = copy.deepcopy(dict(obj))
    if out.get("type") == "FeatureCollection":
        out["features"] = [
            _rewrite_one(feature, base, relative_to, drop_structural_links) for feature in out.get("features", [])
        ]
        if "links" in out:
            out["links"] = [link for link in out["links"] if not _is_relative_link(link)]
        return out
    return _rewrite_one(out, base, relative_to, drop_structural_links)


def demo_collections(root: str | PathLike[str]) -> list[str]:
    """Ids of the collections that have an ItemCollection under ``<root>/stac/item-collections/``.

    Known demo collections (:data:`geosdm.demo.layout.COLLECTIONS`) come first in their usual order.

    Raises
    ------
    DataSourceError
        If the folder holds no ItemCollection.

    Example
    -------
    >>> demo_collections("demo-output")  # doctest: +SKIP
    ['sentinel-2-l2a', 'landsat-c2-l2', 'cop-dem-glo-30', ...]
    """
    from geosdm.demo.layout import COLLECTIONS, DemoLayout  # lazy: geosdm.demo's package import is heavy

    layout = DemoLayout.at(root)
    folder = layout.item_collection("_").parent  # the ItemCollection folder, as DemoLayout defines it
    found = {path.stem for path in folder.glob("*.json")} if folder.is_dir() else set()
    if not found:
        raise DataSourceError(
            f"demo folder {str(layout.root)!r} has no ItemCollections in {str(folder)!r}; "
            "generate the demo first (`geosdm demo run --out <folder>`) or pass the right folder"
        )
    return [c for c in COLLECTIONS if c in found] + sorted(found.difference(COLLECTIONS))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataSourceError(f"cannot read STAC JSON {str(path)!r}: {exc}; regenerate the demo") from exc
    if not isinstance(value, dict):
        raise DataSourceError(f"STAC JSON {str(path)!r} is not an object; regenerate the demo")
    return value


def write_served_stac(
    root: str | PathLike[str],
    out_dir: str | PathLike[str],
    base: str,
    *,
    collections: list[str] | None = None,
) -> list[Path]:
    """Write copies of the demo's collection JSONs and ItemCollections with hrefs made absolute under ``base``.

    Parameters
    ----------
    root
        Demo folder (:class:`geosdm.demo.layout.DemoLayout`); it is only read.
    out_dir
        Folder for the copies (``collections/<id>.json``, ``item-collections/<id>.json``); created if missing.
    base
        URL of the served demo root, e.g. ``http://127.0.0.1:PORT`` or ``s3://bucket``.
    collections
        Collection ids to write; all found by :func:`demo_collections` when None.

    Returns
    -------
    list of Path
        The written files, ready to pass to ``rustac serve`` (collections first, then ItemCollections).

    Raises
    ------
    DataSourceError
        If an ItemCollection is missing or unreadable.

    Example
    -------
    >>> write_served_stac("demo-output", "/tmp/run/stac-http", "http://127.0.0.1:8000")  # doctest: +SKIP
    """
    from geosdm.demo.layout import DemoLayout

    layout = DemoLayout.at(root)
    ids = demo_collections(layout.root) if collections is None else list(collections)
    out = Path(out_dir)
    (out / "collections").mkdir(parents=True, exist_ok=True)
    (out / "item-collections").mkdir(parents=True, exist_ok=True)
    collection_files: list[Path] = []
    item_files: list[Path] = []
    for cid in ids:
        ic_path = layout.item_collection(cid)
        if not ic_path.is_file():
            raise DataSourceError(
                f"collection {cid!r} has no ItemCollection at {str(ic_path)!r}; regenerate the demo or drop {cid!r}"
            )
        coll_path = layout.collection_json(cid)
        if coll_path.is_file():
            relative_to = coll_path.parent.relative_to(layout.root).as_posix()
            coll = absolutize_hrefs(_read_json(coll_path), base, relative_to=relative_to)
            target = out / "collections" / f"{cid}.json"
            target.write_text(json.dumps(coll))
            collection_files.append(target)
        else:
            log.info("collection %s has no collection.json at %s; the STAC API will derive one", cid, coll_path)
        target = out / "item-collections" / f"{cid}.json"
        target.write_text(json.dumps(absolutize_hrefs(_read_json(ic_path), base)))
        item_files.append(target)
    log.debug("wrote %d STAC files with hrefs under %s to %s", len(collection_files) + len(item_files), base, out)
    return collection_files + item_files
