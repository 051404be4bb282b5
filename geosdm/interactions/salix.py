"""The willow - galling sawfly - parasitoid food web of Kopelke et al. (2017) as a :class:`Network` and records.

Source: Kopelke, J.-P., Nyman, T., Cazelles, K., Gravel, D., Vissault, S. & Roslin, T. (2017) Food-web structure
of willow-galling sawflies and their natural enemies across Europe. *Ecology* 98:1730 (data paper; copy in the
Zenodo archive of Galiana et al., doi:10.5281/zenodo.8399873, folder ``Salix/``). Files are ``;``-separated
with decimal commas:

========================= =================================================================================
``df_interact.csv``       one row per (rearing, emerging parasitoid): REARING_NUMBER, RSAL (willow code),
                          RGALLER (sawfly code), RPAR (parasitoid/inquiline code; ``none`` = nothing emerged),
                          N_GALLS, NB_GALLS_PAR
``df_salix.csv``          RSAL, SPECIES (epithet; hybrids as ``caprea x appendiculata``), AUTHOR
``df_galler.csv``         RGALLER, GENUS, SPECIES, GENUS_SPECIES, AUTHOR, gall type
``df_parasit.csv``        RPAR, taxonomy, ``P/I`` (parasitoid or inquiline), FULL_NAME (with author)
``df_site.csv``           REARING_NUMBER, YEAR_OF_COLL, LEG (date), COUNTRY, REGION, SITE, NDECDEG (lat),
                          EDECDEG (lon), ELEVATION
========================= =================================================================================

The network: willows (role ``plant``) -> sawflies (``pest``, interaction ``herbivory``: galling) ->
parasitoids (``enemy``, ``parasitism``) and inquilines (``enemy``, ``inquilinism``). Edge weights count the
rearings in which the interaction was seen. The ``none`` code is not a species and is dropped: the source
README's "127 parasitoids/inquilines" counts it, the web has 126.
"""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path

import pandas as pd

from geosdm.errors import DataSourceError
from geosdm.interactions.network import Network, network_from_frames

__all__ = ["read_salix_network", "read_salix_records", "salix_folder"]

_FILES = ("df_interact.csv", "df_salix.csv", "df_galler.csv", "df_parasit.csv")


def salix_folder(path: str | PathLike[str]) -> Path:
    """The folder holding the ``df_*.csv`` files: ``path`` itself, its ``Salix/`` subfolder, or
    ``networks/salix_galler_parasitoid/Salix`` under a shared-data root.

    Raises
    ------
    DataSourceError
        None of them holds the files.
    """
    p = Path(path)
    for cand in (p, p / "Salix", p / "salix_galler_parasitoid" / "Salix",
                 p / "networks" / "salix_galler_parasitoid" / "Salix"):
        if all((cand / f).is_file() for f in _FILES):
            return cand
    raise DataSourceError(
        f"no Kopelke et al. (2017) willow-sawfly-parasitoid files {list(_FILES)} under {str(p)!r} (or its Salix/ "
        "subfolder); download the Salix folder of doi:10.5281/zenodo.8399873 and point to it")


def _read(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / name, sep=";", decimal=",", encoding="utf-8-sig")


def _strip_author(name: str) -> str:
    """``'Eurytoma aciculata Ratzeburg 1848'`` / ``'Pnigalio nemati (Westwood 1838)'`` -> binomial part."""
    return re.sub(r"\s+\(?[A-Z][^()]*\d{4}\)?\s*$", "", str(name)).strip()


def read_salix_network(path: str | PathLike[str]) -> Network:
    """Read the willow -> galling sawfly -> parasitoid/inquiline food web (Kopelke et al. 2017).

    Parameters
    ----------
    path
        The ``Salix`` folder of the data (or a folder above it, e.g. ``../shared/data/networks``).

    Returns
    -------
    Network
        Nodes ``species`` (``Salix <epithet>``, sawfly ``Genus species``, parasitoid name without author),
        ``role``, ``code`` (the source's RSAL/RGALLER/RPAR), ``full_name``, ``family`` (enemies) and
        ``n_rearings``; edges weighted by the number of rearings showing the interaction.

    Raises
    ------
    DataSourceError
        The files are not there.

    Example
    -------
    >>> net = read_salix_network("../shared/data/networks/salix_galler_parasitoid")  # doctest: +SKIP
    >>> network_structure(net).nodes_per_role  # doctest: +SKIP
    {'plant': 52, 'pest': 96, 'enemy': 126}
    """
    folder = salix_folder(path)
    inter = _read(folder, "df_interact.csv")
    salix, galler, par = (_read(folder, f) for f in ("df_salix.csv", "df_galler.csv", "df_parasit.csv"))
    sal_name = {str(c): f"Salix {s}".strip() for c, s in zip(salix["RSAL"], salix["SPECIES"])}
    gal_name = {str(c): str(s).strip() for c, s in zip(galler["RGALLER"], galler["GENUS_SPECIES"])}
    par_name = {str(c): _strip_author(s) for c, s in zip(par["RPAR"], par["FULL_NAME"])}
    dup = pd.Series(list(par_name.values()))
    if dup.duplicated().any():  # keep names unique (e.g. two codes for one unnamed morphospecies)
        par_name = {c: (n if (dup == n).sum() == 1 else f"{n} [{c}]") for c, n in par_name.items()}
    kind = {str(c): "inquilinism" if str(t).strip().upper() == "I" else "parasitism"
            for c, t in zip(par["RPAR"], par["P/I"])}
    sg = inter.groupby(["RSAL", "RGALLER"])["REARING_NUMBER"].nunique().reset_index()
    gp = (inter[inter["RPAR"].astype(str).str.lower() != "none"]
          .groupby(["RGALLER", "RPAR"])["REARING_NUMBER"].nunique().reset_index())
    edges = pd.concat([
        pd.DataFrame({"source": sg["RSAL"].astype(str).map(sal_name), "target": sg["RGALLER"].astype(str).map(gal_name),
                      "interaction": "herbivory", "weight": sg["REARING_NUMBER"].astype(float)}),
        pd.DataFrame({"source": gp["RGALLER"].astype(str).map(gal_name), "target": gp["RPAR"].astype(str).map(par_name),
                      "interaction": gp["RPAR"].astype(str).map(kind), "weight": gp["REARING_NUMBER"].astype(float)}),
    ], ignore_index=True)
    if edges[["source", "target"]].isna().any().any():
        raise DataSourceError(f"{folder}/df_interact.csv has codes missing from the name tables; check the files")
    rear = pd.concat([inter.groupby("RSAL")["REARING_NUMBER"].nunique().rename(lambda c: sal_name[str(c)]),
                      inter.groupby("RGALLER")["REARING_NUMBER"].nunique().rename(lambda c: gal_name[str(c)]),
                      inter[inter["RPAR"].astype(str).str.lower() != "none"].groupby("RPAR")["REARING_NUMBER"]
                      .nunique().rename(lambda c: par_name[str(c)])])
    nodes = pd.concat([
        pd.DataFrame({"species": list(sal_name.values()), "role": "plant", "code": list(sal_name),
                      "full_name": [f"Salix {s} {a}".strip()
                                    for s, a in zip(salix["SPECIES"], salix["AUTHOR"].fillna(""))],
                      "family": "Salicaceae"}),
        pd.DataFrame({"species": list(gal_name.values()), "role": "pest", "code": list(gal_name),
                      "full_name": [f"{s} {a}".strip()
                                    for s, a in zip(galler["GENUS_SPECIES"], galler["AUTHOR"].fillna(""))],
                      "family": "Tenthredinidae"}),
        pd.DataFrame({"species": list(par_name.values()), "role": "enemy", "code": list(par_name),
                      "full_name": par["FULL_NAME"].astype(str).tolist(),
                      "family": par["FAMILY"].astype(str).tolist()}),
    ], ignore_index=True)
    nodes["n_rearings"] = nodes["species"].map(rear).fillna(0).astype("int64")
    return network_from_frames(edges, nodes, name="kopelke2017-salix-galler-parasitoid", what=str(folder))


def read_salix_records(path: str | PathLike[str]) -> pd.DataFrame:
    """Presence-only records of the web's species at the rearing sites (one per species, site and year).

    Each rearing (galls of one sawfly on one willow at one site) records the willow, the sawfly and every
    parasitoid/inquiline that emerged; sites carry WGS84 coordinates (``NDECDEG``, ``EDECDEG``). These records
    (with covariates of your cube) are a starting point to fit models for the web's species; absences cannot
    be inferred from rearings.

    Returns
    -------
    pandas.DataFrame
        A records table (:mod:`geosdm.records.schema`), EPSG:4326, ``kind="presence_only"``,
        ``dataset="kopelke2017"``, ``plot_id`` the site name, plus ``country``, ``elevation``, ``role``.

    Example
    -------
    >>> recs = read_salix_records("../shared/data/networks/salix_galler_parasitoid")  # doctest: +SKIP
    """
    from geosdm.records import records_from_frame

    folder = salix_folder(path)
    if not (folder / "df_site.csv").is_file():
        raise DataSourceError(f"{folder}/df_site.csv (rearing sites) is missing; it holds the coordinates")
    net = read_salix_network(folder)
    code_name = dict(zip(net.nodes["code"], net.nodes["species"]))
    role = dict(zip(net.nodes["species"], net.nodes["role"]))
    inter = _read(folder, "df_interact.csv")
    sites = _read(folder, "df_site.csv").drop_duplicates("REARING_NUMBER")
    long = pd.concat([inter[["REARING_NUMBER", c]].rename(columns={c: "code"}) for c in ("RSAL", "RGALLER", "RPAR")])
    long = long[long["code"].astype(str).str.lower() != "none"]
    long["species"] = long["code"].astype(str).map(code_name)
    m = long.merge(sites, on="REARING_NUMBER", how="inner")
    m = m.drop_duplicates(["species", "SITE", "NDECDEG", "EDECDEG", "YEAR_OF_COLL"])
    frame = pd.DataFrame({
        "species": m["species"], "decimalLongitude": m["EDECDEG"].astype(float),
        "decimalLatitude": m["NDECDEG"].astype(float), "plot_id": m["SITE"].astype(str),
        "date": pd.to_datetime(m["YEAR_OF_COLL"].astype(int).astype(str) + "-07-01"),
        "country": m["COUNTRY"].astype(str), "elevation": pd.to_numeric(m["ELEVATION"], errors="coerce"),
        "role": m["species"].map(role),
    })
    return records_from_frame(frame.reset_index(drop=True), kind="presence_only", dataset="kopelke2017",
                              source="kopelke2017")
