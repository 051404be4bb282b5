"""Interaction-likelihood maps from ecological networks (plant - pest - natural enemy).

A network says who interacts with whom; the species maps say who is where. Typical use::

    from geosdm.interactions import read_network, match_species, fit_associations, interaction_layers
    net = read_network("network/edges.csv", "network/nodes.csv")     # resource -> consumer edges, roles
    prob = open_predictions("predictions/probability.zarr")            # lazy (species, y, x)
    match = match_species(net, prob.species.values)                    # names -> model species; unmatched
    assoc = fit_associations(match.network, read_records("surveys.parquet"), prob)   # from co-detections
    layers = interaction_layers(prob, match, associations=assoc)       # lazy joint / regulation / pressure
    write_layers(layers, "interactions.zarr", dtypes=layer_dtypes(layers))
    unc = interaction_uncertainty(prob, match, model="model-calibrated/",   # mean/sd/q05/q95/width per layer
                                  associations=association_samples(match.network, surveys, prob))

or, for a whole step, :func:`run_interactions` with an :class:`InteractionsConfig`. The real willow - galling
sawfly - parasitoid web of Kopelke et al. (2017) is read by :func:`read_salix_network`; its structure by
:func:`network_structure`.
"""

from __future__ import annotations

from geosdm.interactions.cooccurrence import (
    Associations,
    SurveyMatrix,
    estimate_detection,
    fit_associations,
    marginals_at,
    survey_matrix,
)
from geosdm.interactions.layers import MAX_SET_SPECIES, interaction_layers, layer_dtypes, open_probability
from geosdm.interactions.network import (
    ROLES,
    Network,
    NetworkMatch,
    edge_label,
    match_species,
    network_from_frames,
    read_network,
)
from geosdm.interactions.run import InteractionsConfig, InteractionsReport, run_interactions
from geosdm.interactions.salix import read_salix_network, read_salix_records, salix_folder
from geosdm.interactions.structure import NetworkStructure, network_structure, trophic_levels
from geosdm.interactions.uncertainty import association_samples, interaction_uncertainty

__all__ = [
    "Associations",
    "association_samples",
    "InteractionsConfig",
    "InteractionsReport",
    "MAX_SET_SPECIES",
    "Network",
    "NetworkMatch",
    "NetworkStructure",
    "ROLES",
    "SurveyMatrix",
    "edge_label",
    "estimate_detection",
    "fit_associations",
    "interaction_layers",
    "interaction_uncertainty",
    "layer_dtypes",
    "marginals_at",
    "match_species",
    "network_from_frames",
    "network_structure",
    "open_probability",
    "read_network",
    "read_salix_network",
    "read_salix_records",
    "run_interactions",
    "salix_folder",
    "survey_matrix",
    "trophic_levels",
]
