"""A small, plausible adult mouse ontology (structure graph 1) for generated data.

Top-level ids and acronyms are the CCFv3 ones (root 997, grey 8 "Basic cell groups and
regions", CH 567, BS 343, CB 512, fiber tracts 1009, VS 73, ...; shared more_datasets.md §2.3
gives root and grey, the others are the well-known CCF ids); the layers and sub-areas below
them are generated, some with ids above 65535 (CCFv3 ids go beyond 16 bits, so volumes are
``uint32``). The tree does not depend on a seed.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from ..store.ontology import ONTOLOGY_COLUMNS

#: ontology_id of the adult mouse ontology in structure graph 1 nodes (root record, §2.3).
MOUSE_ONTOLOGY_ID = 1

# (id, acronym, name, children)
_Tree = tuple[int, str, str, list["_Tree"]]


def _layers(base_id: int, acronym: str, name: str) -> list[_Tree]:
    return [(base_id + k, f"{acronym}{lay}", f"{name}, layer {lay}", [])
            for k, lay in enumerate(("1", "2/3", "4", "5", "6a", "6b"))]


def _spec() -> _Tree:
    iso = (315, "Isocortex", "Isocortex", [
        (500, "MO", "Somatomotor areas", [
            (985, "MOp", "Primary motor area", _layers(614454001, "MOp", "Primary motor area")),
            (993, "MOs", "Secondary motor area", _layers(614454011, "MOs",
                                                           "Secondary motor area"))]),
        (453, "SS", "Somatosensory areas", [
            (322, "SSp", "Primary somatosensory area", _layers(614454021, "SSp",
                                                               "Primary somatosensory area")),
            (378, "SSs", "Supplemental somatosensory area", [])]),
        (669, "VIS", "Visual areas", [
            (385, "VISp", "Primary visual area", _layers(614454031, "VISp",
                                                         "Primary visual area"))]),
        (247, "AUD", "Auditory areas", []),
    ])
    hpf = (1089, "HPF", "Hippocampal formation", [
        (1080, "HIP", "Hippocampal region", [
            (382, "CA1", "Field CA1", []), (463, "CA3", "Field CA3", []),
            (726, "DG", "Dentate gyrus", [])]),
        (822, "RHP", "Retrohippocampal region", [])])
    ctx = (688, "CTX", "Cerebral cortex", [
        (695, "CTXpl", "Cortical plate", [iso, (698, "OLF", "Olfactory areas", []), hpf]),
        (703, "CTXsp", "Cortical subplate", [])])
    cnu = (623, "CNU", "Cerebral nuclei", [
        (477, "STR", "Striatum", [(672, "CP", "Caudoputamen", []),
                                  (56, "ACB", "Nucleus accumbens", [])]),
        (803, "PAL", "Pallidum", [])])
    bs = (343, "BS", "Brain stem", [
        (1129, "IB", "Interbrain", [(549, "TH", "Thalamus", []),
                                    (1097, "HY", "Hypothalamus", [])]),
        (313, "MB", "Midbrain", []),
        (1065, "HB", "Hindbrain", [(771, "P", "Pons", []), (354, "MY", "Medulla", [])])])
    cb = (512, "CB", "Cerebellum", [(528, "CBX", "Cerebellar cortex", []),
                                    (519, "CBN", "Cerebellar nuclei", [])])
    grey = (8, "grey", "Basic cell groups and regions", [
        (567, "CH", "Cerebrum", [ctx, cnu]), bs, cb])
    fibers = (1009, "fiber tracts", "fiber tracts", [
        (776, "cc", "corpus callosum", []), (784, "cst", "corticospinal tract", [])])
    vs = (73, "VS", "ventricular systems", [(81, "VL", "lateral ventricle", []),
                                            (129, "V3", "third ventricle", [])])
    return (997, "root", "root", [grey, fibers, vs])


def _color(structure_id: int) -> str:
    return hashlib.sha256(f"mouse{structure_id}".encode()).hexdigest()[:6].upper()


#: Colours known for real nodes (§2.3: root FFFFFF, grey BFDAE3).
_KNOWN_COLORS = {997: "FFFFFF", 8: "BFDAE3"}


def build_mouse_ontology() -> pd.DataFrame:
    """The mouse ontology table (:data:`ONTOLOGY_COLUMNS`), rows in graph pre-order."""
    rows: list[tuple[object, ...]] = []
    stack: list[tuple[_Tree, int | None, str]] = [(_spec(), None, "/")]
    while stack:
        (sid, acr, name, kids), parent, prefix = stack.pop()
        path = f"{prefix}{sid}/"
        rows.append((sid, acr, name, parent, "", len(rows), path,
                     _KNOWN_COLORS.get(sid, _color(sid))))
        for child in reversed(kids):
            stack.append((child, sid, path))
    table = pd.DataFrame(rows, columns=list(ONTOLOGY_COLUMNS))
    table["id"] = table["id"].astype("int64")
    table["parent_structure_id"] = table["parent_structure_id"].astype("Int64")
    table["graph_order"] = table["graph_order"].astype("int64")
    return table


def mouse_structure_graph(table: pd.DataFrame | None = None) -> dict[str, object]:
    """``structure_graph_download/1.json`` for the mouse ontology (nested, envelope as §2.3)."""
    table = build_mouse_ontology() if table is None else table
    nodes: dict[int, dict[str, object]] = {}
    roots: list[dict[str, object]] = []
    for row in table.itertuples(index=False):
        sid = int(row.id)
        parent = None if pd.isna(row.parent_structure_id) else int(row.parent_structure_id)
        node: dict[str, object] = {
            "id": sid, "atlas_id": -1 if parent is None else sid % 1000,
            "ontology_id": MOUSE_ONTOLOGY_ID, "acronym": row.acronym, "name": row.name,
            "color_hex_triplet": row.color_hex_triplet, "graph_order": int(row.graph_order),
            "st_level": None if parent is None else
            len(str(row.structure_id_path).strip("/").split("/")) - 1,
            "hemisphere_id": 3, "parent_structure_id": parent, "children": [],
        }
        nodes[sid] = node
        if parent is None:
            roots.append(node)
        else:
            nodes[parent]["children"].append(node)  # type: ignore[union-attr]
    return {"success": True, "id": 0, "start_row": 0, "num_rows": len(roots),
            "total_rows": len(roots), "msg": roots}
