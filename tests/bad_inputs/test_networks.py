"""Interaction networks that do not fit the species they are used with: errors naming the file, species and fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_zeros

from geosdm.errors import InputError
from geosdm.interactions import interaction_layers, read_network


def _files(tmp_path: Path, edges: str, nodes: str | None = None) -> tuple[Path, Path | None]:
    e = tmp_path / "edges.csv"
    e.write_text(edges)
    n = None
    if nodes is not None:
        n = tmp_path / "nodes.csv"
        n.write_text(nodes)
    return e, n


@pytest.mark.parametrize(("edges", "nodes", "match"), [
    ("source,target\nwheat,aphid\naphid,aphid\n", None,
     r"edges file '.*edges\.csv': self-loops are not interactions between species: \['aphid'\]; drop them"),
    ("source,target\nwheat,aphid\naphid,ladybird\n", "species,role\nwheat,plant\naphid,pest\n",
     r"edges file '.*edges\.csv': 1 species in edges are not in the nodes table: \['ladybird'\]; add them to the "
     r"nodes file \(with their role\) or drop their edges"),
    ("source,target\nwheat,aphid\n", "species,role\nwheat,plant\naphid,vampire\n",
     r"nodes: unknown role\(s\) \['vampire'\]; use one of \['plant', 'pest', 'enemy', 'other'\]"),
    ("source,target,interaction\nwheat,aphid,herbivory\nwheat,aphid,pollination\n", None,
     r"edges file '.*edges\.csv': pairs with several interaction types "
     r"\{'wheat->aphid': \['herbivory', 'pollination'\]\}; keep one type"),
])
def test_malformed_networks_are_refused(tmp_path: Path, edges: str, nodes: str | None, match: str) -> None:
    e, n = _files(tmp_path, edges, nodes)
    with pytest.raises(InputError, match=match):
        read_network(e, n)


def test_a_network_of_species_the_model_does_not_know(tmp_path: Path) -> None:
    gbox = GeoBox.from_bbox((0, 0, 1_600, 1_600), "EPSG:2154", resolution=100)
    species = ["Triticum aestivum", "Sitobion avenae"]
    prob = xr.concat([xr_zeros(gbox, "float32") + np.float32(0.5)] * 2, dim="species").assign_coords(species=species)
    prob = prob.to_dataset(name="probability")
    e, _ = _files(tmp_path, "source,target\nwheat,grain aphid\n")
    with pytest.raises(InputError, match=r"no interaction has both partners in the probability cube \(unmatched "
                                         r"network nodes: \['wheat', 'grain aphid'\]\); pass aliases= to match names"):
        interaction_layers(prob, read_network(e))
    fixed = interaction_layers(prob, read_network(e), aliases={"wheat": species[0], "grain aphid": species[1]})
    assert list(fixed["edge"].values) == ["Triticum aestivum->Sitobion avenae"]
