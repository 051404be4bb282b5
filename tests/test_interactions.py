"""Networks: reading edge lists, roles, name matching, structure metrics (hand-computed), the real Salix web."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geosdm.errors import DataSourceError, InputError, MissingVariableError
from geosdm.interactions import (
    match_species,
    network_from_frames,
    network_structure,
    read_network,
    read_salix_network,
    read_salix_records,
    trophic_levels,
)

# A tiny tri-trophic web: 2 plants, 3 pests, 2 enemies, 7 links (metrics computed by hand below).
EDGES = pd.DataFrame({
    "source": ["P1", "P1", "P2", "P2", "H1", "H2", "H3"],
    "target": ["H1", "H2", "H2", "H3", "E1", "E1", "E2"],
    "interaction": ["herbivory"] * 4 + ["parasitism", "parasitism", "predation"],
})
NODES = pd.DataFrame({"name": ["P1", "P2", "H1", "H2", "H3", "E1", "E2"],
                      "Role": ["crop", "plant", "herbivore", "pest", "pest", "parasitoid", "predator"],
                      "guild": ["crop", "wild", "", "", "", "", ""]})


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    return network_from_frames(EDGES, NODES)


def test_roles_from_synonyms_and_inference(tiny) -> None:  # type: ignore[no-untyped-def]
    assert tiny.roles == {"P1": "plant", "P2": "plant", "H1": "pest", "H2": "pest", "H3": "pest",
                          "E1": "enemy", "E2": "enemy"}
    assert tiny.crops() == ["P1"]
    assert tiny.resources("E1") == ["H1", "H2"] and tiny.consumers("P2") == ["H2", "H3"]
    inferred = network_from_frames(EDGES)  # no node table: roles from trophic position
    assert inferred.roles == tiny.roles
    assert list(inferred.edges["weight"]) == [1.0] * 7


def test_read_network_csv_and_parquet(tmp_path: Path) -> None:
    e = EDGES.rename(columns={"source": "From", "target": "To", "interaction": "Type"}).assign(Strength=2.0)
    e = pd.concat([e, e.iloc[:1]])  # a duplicate edge: weights summed
    e.to_csv(tmp_path / "edges.csv", sep=";", index=False)
    NODES.to_parquet(tmp_path / "nodes.parquet")
    net = read_network(tmp_path / "edges.csv", tmp_path / "nodes.parquet")
    assert len(net.edges) == 7 and net.edges.loc[0, "weight"] == 4.0
    assert set(net.edges["interaction"]) == {"herbivory", "parasitism", "predation"}


def test_network_errors_name_the_input() -> None:
    with pytest.raises(MissingVariableError, match="target"):
        network_from_frames(pd.DataFrame({"source": ["a"], "other": ["b"]}))
    with pytest.raises(InputError, match="self-loops"):
        network_from_frames(pd.DataFrame({"source": ["a"], "target": ["a"]}))
    with pytest.raises(InputError, match="not in the nodes table"):
        network_from_frames(EDGES, NODES.iloc[:3])
    with pytest.raises(InputError, match="unknown role"):
        network_from_frames(EDGES, NODES.assign(Role="fungus"))
    with pytest.raises(DataSourceError, match="does not exist"):
        read_network("/nonexistent/edges.csv")


def test_match_species_rules_and_report(tiny) -> None:  # type: ignore[no-untyped-def]
    net = network_from_frames(pd.DataFrame({
        "source": ["Salix alba", "Salix_caprea", "Salix alba"],
        "target": ["Pontania proxima (Serville 1823)", "Euura mucronata", "Eurytoma aciculata Ratzeburg 1848"]}))
    model = ["salix alba", "Salix caprea", "Pontania proxima", "Eurytoma aciculata", "Other species"]
    m = match_species(net, model, aliases={"Euura mucronata": "Other species"})
    assert m.mapping == {"Salix alba": "salix alba", "Salix_caprea": "Salix caprea",
                         "Pontania proxima (Serville 1823)": "Pontania proxima", "Euura mucronata": "Other species",
                         "Eurytoma aciculata Ratzeburg 1848": "Eurytoma aciculata"}
    assert m.how["Salix_caprea"] == "normalised" and m.how["Pontania proxima (Serville 1823)"] == "binomial"
    assert m.unmatched_nodes == () and len(m.network.edges) == 3
    partial = match_species(tiny, ["P1", "H1", "E1", "X"])
    assert partial.unmatched_nodes == ("P2", "H2", "H3", "E2") and partial.unmatched_species == ("X",)
    assert partial.network.edge_labels == ["P1->H1", "H1->E1"] and len(partial.dropped_edges) == 5
    assert partial.summary()["edges_dropped"] == 5
    with pytest.raises(InputError, match="same model species"):
        match_species(tiny, ["P1"], aliases={"P2": "P1"})


def test_structure_against_hand_computed_values(tiny) -> None:  # type: ignore[no-untyped-def]
    st = network_structure(tiny)
    assert (st.n_species, st.n_links) == (7, 7)
    assert st.nodes_per_role == {"plant": 2, "pest": 3, "enemy": 2}
    assert st.nodes_per_trophic_level == {1: 2, 2: 3, 3: 2}
    assert st.links_between_roles == {"plant->pest": 4, "pest->enemy": 3}
    assert st.connectance == pytest.approx(7 / 49, abs=1e-6)
    assert st.connectance_between_roles == {"plant->pest": pytest.approx(4 / 6, abs=1e-6),
                                            "pest->enemy": pytest.approx(3 / 6, abs=1e-6)}
    assert st.connectance_multipartite == pytest.approx(7 / 12, abs=1e-6)
    assert st.link_density == 1.0
    assert st.generality == pytest.approx(7 / 5) and st.vulnerability == pytest.approx(7 / 5)
    assert (st.n_basal, st.n_intermediate, st.n_top, st.n_isolated) == (2, 3, 2, 0)
    assert st.degree["pest"] == {"in": {1: 2, 2: 1}, "out": {1: 3}, "total": {2: 2, 3: 1}}
    assert st.degree["plant"]["out"] == {2: 2} and st.degree["enemy"]["in"] == {1: 1, 2: 1}
    assert st.max_degree == {"plant": 2, "pest": 3, "enemy": 2}
    assert set(st.degree_table()["direction"]) == {"in", "out", "total"}
    assert st.to_dict()["nodes_per_trophic_level"] == {"1": 2, "2": 3, "3": 2}


def test_trophic_levels_with_omnivory() -> None:
    e = pd.DataFrame({"source": ["P", "H", "P"], "target": ["H", "O", "O"]})
    assert trophic_levels(["P", "H", "O"], e) == {"P": 1.0, "H": 2.0, "O": 2.5}


def test_salix_web_structure_matches_readme(shared_data: Path) -> None:
    folder = shared_data / "networks" / "salix_galler_parasitoid"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    net = read_salix_network(folder)
    st = network_structure(net)
    # README: 52 willows -> 96 galling sawflies -> 127 parasitoids/inquilines; the 127 codes include 'none'
    # (rearings where nothing emerged), which is not a species.
    assert st.nodes_per_role == {"plant": 52, "pest": 96, "enemy": 126}
    assert st.nodes_per_trophic_level == {1: 52, 2: 96, 3: 126}
    assert st.links_between_roles == {"plant->pest": 141, "pest->enemy": 939}
    assert st.links_per_interaction == {"herbivory": 141, "inquilinism": 115, "parasitism": 824}
    assert st.connectance == pytest.approx(1080 / 274**2, abs=1e-6)
    assert sum(st.degree["enemy"]["in"].values()) == 126 and st.max_degree["enemy"] == 80
    assert net.nodes["n_rearings"].min() >= 1 and "Salix alba" in net.species
    recs = read_salix_records(folder)
    assert recs["plot_id"].nunique() == 374  # README: 2,029 rearings at 374 sites
    assert set(recs["species"]) <= set(net.species) and (recs["crs"] == "EPSG:4326").all()
    assert np.all((recs["y"] > 35) & (recs["y"] < 72))  # European latitudes


def test_salix_folder_missing(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="zenodo"):
        read_salix_network(tmp_path)


def test_reversed_edge_lists_are_refused() -> None:
    rev = EDGES.rename(columns={"source": "target", "target": "source"})
    with pytest.raises(InputError, match="consumer to resource"):
        network_from_frames(rev, NODES)
    net = network_from_frames(rev, NODES, source="target", target="source")
    assert net.resources("E1") == ["H1", "H2"]
