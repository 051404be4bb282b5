"""Bad inputs that used to pass silently: each gets a clear error, or a count in the report."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from geosdm.errors import InputError
from geosdm.interactions import match_species, network_from_frames
from geosdm.records import read_records


def test_records_without_a_species_column_are_refused(tmp_path: Path) -> None:
    from geosdm.records import validate_records

    f = tmp_path / "obs.csv"
    f.write_text("x,y,kind\n3.0,45.0,presence_only\n3.1,45.1,presence_only\n")
    with pytest.raises(InputError, match=r"none of the 2 observation records has a species name.*rename=") as err:
        validate_records(read_records(f, crs="EPSG:4326"))
    assert "scientificName" in str(err.value)
    f.write_text("x,y\n3.0,45.0\n")
    valid, report = validate_records(read_records(f, crs="EPSG:4326", kind="background"))
    assert len(valid) == 1  # background points have no species


def test_duplicate_edges_are_counted_not_hidden(caplog: pytest.LogCaptureFixture) -> None:
    edges = pd.DataFrame({"source": ["wheat", "wheat", "aphid"], "target": ["aphid", "aphid", "ladybird"]})
    with caplog.at_level(logging.WARNING):
        net = network_from_frames(edges)
    assert len(net.edges) == 2 and net.merged_edges == 1
    assert net.edges.set_index(["source", "target"]).loc[("wheat", "aphid"), "weight"] == 2.0
    assert "1 duplicate edge rows merged" in caplog.text
    summary = match_species(net, ["wheat", "aphid", "ladybird"]).summary()
    assert summary["edges_merged"] == 1 and summary["edges_dropped"] == 0


def test_extracting_records_that_miss_the_cube_says_why(tmp_path: Path) -> None:
    import numpy as np
    import xarray as xr
    from odc.geo.geobox import GeoBox

    from geosdm.grid import grid_coords
    from geosdm.records import extract_covariates

    gbox = GeoBox.from_bbox((449_000, 6_562_000, 489_000, 6_602_000), "EPSG:2154", resolution=1_000)
    cube = xr.Dataset({"bio01": (("y", "x"), np.ones(gbox.shape, "float32"))}, coords=grid_coords(gbox))
    f = tmp_path / "far.csv"
    f.write_text("species,decimalLongitude,decimalLatitude\na,-60.0,-30.0\nb,-61,-31\n")
    with pytest.raises(InputError, match=r"none of the 2 points falls inside the cube's grid .*EPSG:2154.*swapped"):
        extract_covariates(cube, read_records(f))
    f.write_text("species,decimalLongitude,decimalLatitude\na,-60.0,-30.0\nb,0.0122,46.2807\n")  # one inside
    out = extract_covariates(cube, read_records(f))
    assert out["bio01"].isna().tolist() == [True, False]


def test_a_killed_exports_partial_cog_is_removed_by_the_next_export(tmp_path: Path) -> None:
    import os
    import socket
    import re
    import subprocess
    import sys

    from geosdm.predict.cog import remove_orphan_partials

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
    orphan = tmp_path / f".map.tif.partial-{host}-{dead.pid}-0123abcd"
    live = tmp_path / f".map.tif.partial-{host}-{os.getpid()}-0123abcd"
    other_host = tmp_path / f".map.tif.partial-elsewhere-{dead.pid}-0123abcd"
    for f in (orphan, live, other_host):
        f.write_bytes(b"half a COG")
    assert remove_orphan_partials(str(tmp_path), "map.tif") == [str(orphan)]
    assert live.exists() and other_host.exists() and not orphan.exists()
