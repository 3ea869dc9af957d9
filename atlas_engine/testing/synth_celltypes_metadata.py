"""Cell names and metadata tables of the generated Cell Types data sets, in each data set's
style: 10x barcodes or SMART-seq wells (:func:`sample_names`), the portal ``metadata.csv``
with its column order and quirks (:func:`portal_metadata`), and the 2018 zips'
samples-columns and genes-rows tables. Written by :mod:`.synth_celltypes`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..celltypes.datasets import CellTypeDataset
from .synth_celltypes_world import CellTypeWorld

_PALETTE = np.array([f"#{(i * 2654435761) & 0xFFFFFF:06X}" for i in range(1, 4096)])


# ------------------------------------------------------------------------------------------
# metadata
# ------------------------------------------------------------------------------------------
def sample_names(world: CellTypeWorld, dataset: CellTypeDataset) -> list[str]:
    """Cell names in the data set's style (10x barcodes or SMART-seq plate wells)."""
    rng = np.random.default_rng(world.spec.seed + 11)
    n = world.spec.n_cells
    if "10x" in dataset.name or dataset.name == "human-m1":
        bases = np.array(list("ACGT"))
        codes = rng.integers(0, 4, (n, 16))
        return [f"{''.join(bases[c])}-{1 + i % 9}" + f"-L8TX_{180221 + i // 50000}_0{i % 3}"
                for i, c in enumerate(codes)]
    return [f"F{1 + i % 9}S4_{160106 + i // 384}_{i % 1000:03d}_{chr(65 + i % 8)}{1 + i % 12:02d}"
            for i in range(n)]


def _triples(values: np.ndarray, order_name: str, *, label_first: bool, name: str,
             order_col: str | None = None) -> dict[str, object]:
    # taxonomy labels keep the taxonomy's order (cluster C1, C2, ...); others first appearance
    uniq = pd.unique(values)
    key = [int(str(u).rsplit("C", 1)[-1]) if str(u).rsplit("C", 1)[-1].isdigit() else i
           for i, u in enumerate(uniq)]
    cats = pd.Index(uniq[np.argsort(key, kind="stable")] if name in ("cluster", "cell_type_alias")
                    else uniq)
    code = cats.get_indexer(values)
    order = code + 1
    color = _PALETTE[(code + 7 * len(name)) % len(_PALETTE)]
    cols = {f"{name}_label": values, f"{name}_{order_name}": order, f"{name}_color": color}
    if order_col:
        cols[order_col] = cols.pop(f"{name}_{order_name}")
    keys = list(cols)
    if not label_first:
        keys = keys[::-1]
    return {k: cols[k] for k in keys}


def portal_metadata(world: CellTypeWorld, dataset: CellTypeDataset,
                    names: list[str]) -> pd.DataFrame:
    """``metadata.csv`` of a portal data set, with its column order and quirks."""
    rng = np.random.default_rng(world.spec.seed + 13)
    tax = world.clusters
    k = world.cell_cluster
    cluster = tax["cluster"].to_numpy(dtype=object)[k]
    cls = tax["class"].to_numpy(dtype=object)[k].copy()
    sub = tax["subclass"].to_numpy(dtype=object)[k]
    human = dataset.species == "human"
    donors = (np.array([f"H18.30.00{i + 1}" for i in range(world.spec.n_donors)]) if human
              else np.array([f"{400000 + i}" for i in range(world.spec.n_donors)]))
    donor = donors[world.cell_donor]
    if dataset.name == "human-m1":
        regions = np.array(["M1", "M1", "M1"])
        cls = np.where(cls == "Non-neuronal", "Non-Neuronal", cls)
    elif dataset.name == "human-mca":
        regions = np.array(["MTG", "V1C", "A1C"])
    else:
        regions = np.array(["ACA", "SSp", "HIP"])
    region = regions[world.cell_region]
    accession = np.array([f"CS19121310{j + 1:02d}" for j in range(len(tax))], dtype=object)[k]
    sex = np.where(world.cell_donor % 2 == 0, "M", "F")
    cols: dict[str, object] = {"sample_name": names}
    if dataset.name == "human-mca":
        # colour-first triples; the alias triple's order column is called cell_type_order
        outlier = rng.random(len(names)) < 0.04
        cls = np.where(outlier, "", cls)
        cols["exp_component_name"] = [f"{n}-1" for n in names]
        cols["specimen_type"] = "nucleus"
        for name, vals in (("cluster", cluster), ("class", cls), ("subclass", sub),
                           ("donor_sex", sex), ("region", region),
                           ("cell_type_accession", accession)):
            cols.update(_triples(vals, "order", label_first=False, name=name))
        cols.update(_triples(cluster, "order", label_first=False, name="cell_type_alias",
                             order_col="cell_type_order"))
        cols.update(_triples(donor, "order", label_first=False, name="external_donor_name"))
        cols["outlier_call"] = np.where(outlier, "True", "False")
        cols["outlier_type"] = np.where(outlier, "Low quality", "")
    elif dataset.name == "human-m1":
        cols["exp_component_name"] = [f"{n}-1" for n in names]
        for name, vals in (("cluster", cluster), ("class", cls), ("subclass", sub),
                           ("donor_sex", sex), ("region", region),
                           ("cortical_layer", np.full(len(names), "all", dtype=object)),
                           ("cell_type_accession", accession),
                           ("cell_type_alias", cluster),
                           ("external_donor_name", donor)):
            cols.update(_triples(vals, "order", label_first=True, name=name))
        cols["specimen_type"] = "nucleus"
        cols["full_genotype_label"] = ""
        cols["outlier_call"] = "False"
        cols["outlier_type"] = ""
    else:
        # mouse: _label/_id/_color, a platform label and a neighborhood triple
        cols["exp_component_name"] = [f"{n}-1" for n in names]
        cols["platform_label"] = "10X" if "10x" in dataset.name else "SSv4"
        for name, vals in (("cluster", cluster), ("class", cls), ("subclass", sub),
                           ("neighborhood", cls), ("region", region), ("sex", sex),
                           ("external_donor_name", donor),
                           ("cell_type_accession", accession)):
            cols.update(_triples(vals, "id", label_first=True, name=name))
        cols["cortical_layer_label"] = "all"
    return pd.DataFrame(cols)


def samples_columns(world: CellTypeWorld, dataset: CellTypeDataset,
                    names: list[str]) -> pd.DataFrame:
    """``{prefix}_samples-columns.csv`` of a 2018 zip (plain label columns)."""
    tax = world.clusters
    k = world.cell_cluster
    human = dataset.species == "human"
    donors = np.array([f"H200.10{30 + i}" for i in range(world.spec.n_donors)]) if human else \
        np.array([f"{300000 + i}" for i in range(world.spec.n_donors)])
    region = dataset.prefix.split("_")[1] if dataset.prefix else "MTG"
    rng = np.random.default_rng(world.spec.seed + 17)
    cols: dict[str, object] = {
        "sample_name": names, "sample_id": 600000000 + np.arange(len(names)),
        "sample_type": "Nuclei" if human else "Cells",
        "organism": "Homo sapiens" if human else "Mus musculus",
        "donor_id": donors[world.cell_donor], "sex": np.where(world.cell_donor % 2, "F", "M"),
        "age_days": 18000, "brain_hemisphere": "L", "brain_region": region,
        "brain_subregion": np.array(["L1", "L2", "L3", "L4", "L5", "L6"])[world.cell_region * 2],
        "total_reads": rng.integers(500_000, 3_000_000, len(names)),
        "percent_exon_reads": np.round(rng.uniform(10, 40, len(names)), 2),
        "percent_intron_reads": np.round(rng.uniform(30, 60, len(names)), 2),
    }
    cls = tax["class"].to_numpy(dtype=object)[k]
    if human:
        cols["class"] = cls
        cols["cluster"] = tax["cluster"].to_numpy(dtype=object)[k]
    else:
        cols["class"] = cls
        cols["subclass"] = tax["subclass"].to_numpy(dtype=object)[k]
        cols["cluster"] = tax["cluster"].to_numpy(dtype=object)[k]
    return pd.DataFrame(cols)


def genes_rows(world: CellTypeWorld, dataset: CellTypeDataset) -> pd.DataFrame:
    """``{prefix}_genes-rows.csv`` (human and mouse column sets differ)."""
    g = world.genes
    if dataset.species == "human":
        return pd.DataFrame({"gene": g["gene"], "chromosome": g["chromosome"],
                             "entrez_id": g["entrez_id"], "gene_name": g["gene_name"],
                             "mouse_homologenes": [s.capitalize() for s in g["gene"]]})
    return pd.DataFrame({"gene_symbol": g["gene"],
                         "gene_id": 500700000 + np.arange(len(g)),
                         "chromosome": g["chromosome"], "gene_entrez_id": g["entrez_id"],
                         "gene_name": g["gene_name"]})
