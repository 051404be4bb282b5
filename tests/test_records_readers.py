"""Records schema and readers: CSV, Parquet/GeoParquet, GBIF (DwC-A zip, simple CSV, occurrence.txt)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geosdm.errors import DataSourceError, InputError, MissingVariableError
from geosdm.records import (
    COLUMNS,
    check_records,
    conform,
    empty_records,
    read_gbif,
    read_records,
    records_from_frame,
    write_records,
)
from geosdm.records.schema import DTYPES

GBIF_HEADER = [
    "gbifID",
    "datasetKey",
    "occurrenceID",
    "kingdom",
    "species",
    "scientificName",
    "decimalLatitude",
    "decimalLongitude",
    "coordinateUncertaintyInMeters",
    "occurrenceStatus",
    "individualCount",
    "eventDate",
    "basisOfRecord",
]
GBIF_ROWS = [
    [
        "1",
        "ds-po",
        "o1",
        "Plantae",
        "Salix alba",
        "Salix alba L.",
        "43.61",
        "3.87",
        "10",
        "PRESENT",
        "",
        "2021-05-01T10:00:00Z",
        "HUMAN_OBSERVATION",
    ],
    [
        "2",
        "ds-po",
        "o2",
        "Plantae",
        "",
        "Salix L.",
        "43.62",
        "3.88",
        "",
        "PRESENT",
        "3",
        "2021-05",
        "HUMAN_OBSERVATION",
    ],
    [
        "3",
        "ds-survey",
        "o3",
        "Plantae",
        "Salix caprea",
        "Salix caprea L.",
        "43.63",
        "3.89",
        "5",
        "PRESENT",
        "2",
        "2020-06-01/2020-06-03",
        "HUMAN_OBSERVATION",
    ],
    [
        "4",
        "ds-survey",
        "o4",
        "Plantae",
        "Salix caprea",
        "Salix caprea L.",
        "43.64",
        "3.90",
        "5",
        "ABSENT",
        "0",
        "2020-06-01",
        "HUMAN_OBSERVATION",
    ],
]


def _gbif_text() -> str:
    return "\n".join("\t".join(r) for r in [GBIF_HEADER, *GBIF_ROWS]) + "\n"


def _check_gbif(recs: pd.DataFrame) -> None:
    check_records(recs)
    assert list(recs.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert recs["crs"].unique().tolist() == ["EPSG:4326"]
    assert recs["x"].tolist() == [3.87, 3.88, 3.89, 3.90]  # lon -> x
    assert recs["species"].isna().tolist() == [False, True, False, False]  # genus-only row kept, flagged later
    assert recs["kind"].astype(str).tolist() == [
        "presence_only",
        "presence_only",
        "presence_absence",
        "presence_absence",
    ]
    assert recs["value"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert recs["dataset"].tolist() == ["ds-po", "ds-po", "ds-survey", "ds-survey"]
    assert recs["date"].iloc[2] == pd.Timestamp("2020-06-01")
    assert recs["coordinate_uncertainty_m"].iloc[0] == 10
    assert recs["individual_count"].iloc[2] == 2


def test_gbif_occurrence_txt_and_archives(tmp_path: Path) -> None:
    txt = tmp_path / "occurrence.txt"
    txt.write_text(_gbif_text())
    _check_gbif(read_records(txt))
    dwca = tmp_path / "dwca.zip"
    with zipfile.ZipFile(dwca, "w") as zf:
        zf.writestr("occurrence.txt", _gbif_text())
        zf.writestr("verbatim.txt", "gbifID\n1\n")
        zf.writestr("meta.xml", "<archive/>")
    _check_gbif(read_records(dwca))
    simple = tmp_path / "simple.zip"
    with zipfile.ZipFile(simple, "w") as zf:
        zf.writestr("0001234-210914110416597.csv", _gbif_text())
    _check_gbif(read_gbif(simple))
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("a.csv", "x\n")
        zf.writestr("b.csv", "x\n")
    with pytest.raises(DataSourceError, match=r"no occurrence\.txt"):
        read_gbif(bad)


def test_demo_presence_only_csv(tmp_path: Path) -> None:
    p = tmp_path / "presence_only.csv"
    pd.DataFrame(
        {
            "species": ["Salix alba ", "Salix caprea"],
            "decimalLongitude": [3.87, 3.9],
            "decimalLatitude": [43.6, 43.7],
            "eventDate": ["2021-05-01", "2021-06-02"],
            "datasetName": ["citizen", "citizen"],
            "basisOfRecord": ["HUMAN_OBSERVATION"] * 2,
        }
    ).to_csv(p, index=False)
    recs = read_records(p)
    assert recs["species"].tolist() == ["Salix alba", "Salix caprea"]  # whitespace stripped
    assert recs["crs"].iloc[0] == "EPSG:4326" and recs["kind"].iloc[0] == "presence_only"
    assert recs["dataset"].iloc[0] == "citizen" and "basisOfRecord" in recs.columns


def test_demo_surveys_parquet_and_geoparquet(tmp_path: Path) -> None:
    surveys = pd.DataFrame(
        {
            "species": ["a", "a", "b"],
            "x": [700_000.0, 700_100.0, 700_200.0],
            "y": [6_600_000.0, 6_600_100.0, 6_600_200.0],
            "kind": ["presence_absence", "presence_absence", "count"],
            "plot_id": ["p1", "p2", "p3"],
            "plot_area_m2": [100.0, 100.0, 400.0],
            "value": [1.0, 0.0, 7.0],
            "date": pd.to_datetime(["2022-05-01"] * 3),
        }
    )
    p = tmp_path / "surveys.parquet"
    surveys.to_parquet(p)
    with pytest.raises(InputError, match="no CRS"):
        read_records(p)  # projected x/y and no CRS: an error, never a guess
    recs = read_records(p, crs="EPSG:2154")
    assert recs["crs"].unique().tolist() == ["EPSG:2154"]
    assert recs["kind"].astype(str).tolist() == ["presence_absence", "presence_absence", "count"]
    assert recs["plot_area_m2"].tolist() == [100.0, 100.0, 400.0]
    geo = write_records(recs, tmp_path / "surveys.geoparquet", geoparquet=True)
    back = read_records(geo)
    pd.testing.assert_frame_equal(back[list(COLUMNS)], recs[list(COLUMNS)])
    plain = write_records(recs, tmp_path / "plain.parquet")
    pd.testing.assert_frame_equal(read_records(plain)[list(COLUMNS)], recs[list(COLUMNS)])


def test_schema_errors_are_explicit(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no x coordinate"):
        records_from_frame(pd.DataFrame({"species": ["a"], "lat": [1.0]}))
    with pytest.raises(InputError, match="value column but no 'kind'"):
        records_from_frame(pd.DataFrame({"species": ["a"], "x": [1.0], "y": [2.0], "occ": [0]}), crs="EPSG:2154")
    with pytest.raises(InputError, match="not understood"):
        records_from_frame(pd.DataFrame({"species": ["a"], "x": [1.0], "y": [2.0]}), crs="EPSG:0")
    with pytest.raises(InputError, match="unknown value"):
        conform(pd.DataFrame({"x": [1.0], "y": [2.0], "crs": ["EPSG:4326"], "kind": ["maybe"], "value": [1.0]}))
    with pytest.raises(MissingVariableError, match="lacks column"):
        conform(pd.DataFrame({"x": [1.0]}))
    with pytest.raises(DataSourceError, match="does not exist"):
        read_records(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="cannot tell the format"):
        (tmp_path / "r.xlsx").write_text("")
        read_records(tmp_path / "r.xlsx")
    empty = empty_records()
    check_records(empty)
    assert {c: empty[c].dtype for c in empty.columns} == DTYPES


def test_rename_and_semicolon_csv(tmp_path: Path) -> None:
    p = tmp_path / "plots.csv"
    p.write_text("taxon;E;N;present;site\nSalix alba;700000;6600000;1;s1\nSalix alba;700100;6600100;0;s2\n")
    recs = read_records(p, crs=2154, kind="presence_absence", rename={"E": "x", "N": "y", "present": "value"})
    assert recs["plot_id"].tolist() == ["s1", "s2"] and recs["value"].tolist() == [1.0, 0.0]
    assert recs["crs"].iloc[0] == "EPSG:2154" and np.isnan(recs["plot_area_m2"]).all()
