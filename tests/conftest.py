"""Shared pytest set-up. Fixtures live in tests/fixtures/<topic>.py, registered here as plugins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.demo",
    "tests.fixtures.services",
    "tests.fixtures.records",
    "tests.fixtures.faults",
]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GEOSDM_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (../shared/data or $GEOSDM_SHARED_DATA); skips the test where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (set GEOSDM_SHARED_DATA to use it)")
    return SHARED_DATA
