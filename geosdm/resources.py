"""Where the shipped source definitions (``catalogs/``) and pipelines (``pipelines/``) are.

In a source checkout (an editable install, or ``PYTHONPATH``) they are the checkout's top-level ``catalogs/``
and ``pipelines/`` folders; an installed wheel carries them inside the package as ``geosdm/catalogs`` and
``geosdm/pipelines`` (setup.py copies them at build time), found with :mod:`importlib.resources`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["shipped_dirs"]


def shipped_dirs(name: str) -> list[Path]:
    """The folders holding the shipped ``name`` (``"catalogs"`` or ``"pipelines"``) that exist: the checkout's,
    then the installed package's."""
    pkg = Path(str(files("geosdm")))
    checkout = pkg.parent
    candidates = [checkout / name] if (checkout / "pyproject.toml").is_file() else []
    candidates.append(pkg / name)
    return [d for d in candidates if d.is_dir()]
