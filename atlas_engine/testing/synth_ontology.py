"""A deterministic, realistic Human Brain Atlas ontology for generated data.

The tree follows the shape of structure graph 10 (``Ontology.csv`` of every AHBA donor zip): root
4005 *brain*; 4006 *gray matter*, 9218 *white matter* and 9352 *sulci & spaces* below it; the
telencephalon (4007) holding cerebral cortex (4008) and cerebral nuclei (4275); the hippocampal
formation (4249) under the limbic lobe (4219) of the cortex, as in abagen's subiculum fixture
path ``/4005/4006/4007/4008/4219/4249/12896/4251/``; diencephalon (4391), mesencephalon (9001),
metencephalon with cerebellum (4696) and pons (9131), and myelencephalon (9512). Named regions end
in left/right leaf pairs that share an acronym (names ``"..., left"`` / ``"..., right"``,
hemisphere ``L``/``R``); a few cortical gyri are split into banks (``"middle temporal gyrus, left,
inferior bank of gyrus"``); midline structures (e.g. 9422 central canal) are leaves with no
hemisphere. The tree does not depend on any seed: it is the same for every generated dataset.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pandas as pd

from ..store.ontology import ONTOLOGY_COLUMNS

#: Hemisphere id used by the structure-graph JSON (1 left, 2 right, 3 both/none as in Allen's
#: mouse graph fixture; the HBA meaning of 3 is UNCONFIRMED).
HEMISPHERE_IDS = {"L": 1, "R": 2, "": 3}
#: ontology_id of the human brain atlas ontology in structure-graph nodes (UNCONFIRMED value).
HBA_ONTOLOGY_ID = 12


@dataclass
class _Node:
    acronym: str
    name: str
    id: int | None = None
    children: list[_Node] = field(default_factory=list)
    lr: bool = False          # expand into ", left"/", right" leaves (with the same acronym)
    banks: bool = False       # also split each hemisphere leaf into superior/inferior banks
    hemisphere: str = ""


def _n(acronym: str, name: str, id: int | None = None, *children: _Node, lr: bool = False,
       banks: bool = False) -> _Node:
    return _Node(acronym, name, id, list(children), lr=lr, banks=banks)


def _lr(acronym: str, name: str, id: int | None = None, ids: tuple[int, int] | None = None,
        banks: bool = False) -> _Node:
    """A region split into a left/right leaf pair (explicit leaf ids optional)."""
    node = _Node(acronym, name, id, [], lr=True, banks=banks)
    if ids is not None:
        node.children = [_Node(acronym, f"{name}, left", ids[0], hemisphere="L"),
                         _Node(acronym, f"{name}, right", ids[1], hemisphere="R")]
        node.lr = False
    return node


def _spec() -> _Node:
    """The hand-written tree; ids given where the real id is known and relied upon."""
    frontal = _n("FL", "frontal lobe", 4009,
                 _lr("AOrG", "anterior orbital gyrus", 4053, ids=(4054, 4055)),
                 _lr("SFG", "superior frontal gyrus", banks=True),
                 _lr("MFG", "middle frontal gyrus", banks=True),
                 _lr("IFG-op", "inferior frontal gyrus, opercular part"),
                 _lr("IFG-tr", "inferior frontal gyrus, triangular part"),
                 _lr("IFG-orb", "inferior frontal gyrus, orbital part"),
                 _lr("PrG", "precentral gyrus", banks=True),
                 _lr("GRe", "gyrus rectus"),
                 _lr("LOrG", "lateral orbital gyrus"),
                 _lr("MOrG", "medial orbital gyrus"),
                 _lr("POrG", "posterior orbital gyrus"),
                 _lr("fro", "frontal operculum"))
    insula = _n("Ins", "insula", 4268,
                _lr("SIG", "short insular gyri", ids=(4273, 4274)),
                _lr("LIG", "long insular gyri"),
                _lr("cis", "central (insular) sulcus"))
    limbic = _n("LL", "limbic lobe", 4219,
                _n("HiF", "hippocampal formation", 4249,
                   _n("S", "subiculum", 12896,
                      _Node("S", "subiculum, left", 4251, hemisphere="L"),
                      _Node("S", "subiculum, right", 4252, hemisphere="R")),
                   _lr("CA1", "CA1 field"),
                   _lr("CA2", "CA2 field"),
                   _lr("CA3", "CA3 field"),
                   _lr("CA4", "CA4 field"),
                   _lr("DG", "dentate gyrus")),
                _lr("CgGf", "cingulate gyrus, frontal part"),
                _lr("CgGp", "cingulate gyrus, parietal part"),
                _lr("PHG", "parahippocampal gyrus", banks=True),
                _lr("SCG", "subcallosal cingulate gyrus"))
    occipital = _n("OL", "occipital lobe", None,
                   _lr("Cun", "cuneus", banks=True),
                   _lr("LinG", "lingual gyrus", banks=True),
                   _lr("IOG", "inferior occipital gyrus"),
                   _lr("SOG", "superior occipital gyrus"),
                   _lr("occ", "occipital pole"),
                   _lr("cal", "calcarine cortex"))
    parietal = _n("PL", "parietal lobe", None,
                  _lr("PoG", "postcentral gyrus", banks=True),
                  _lr("SPL", "superior parietal lobule"),
                  _lr("SMG", "supramarginal gyrus", banks=True),
                  _lr("AnG", "angular gyrus"),
                  _lr("Pcu", "precuneus"),
                  _lr("PCLa", "paracentral lobule, anterior part"))
    temporal = _n("TL", "temporal lobe", None,
                  _lr("STG", "superior temporal gyrus", banks=True),
                  _n("MTG", "middle temporal gyrus", None,
                     _Node("MTG", "middle temporal gyrus, left", hemisphere="L", children=[
                        _Node("MTG-i", "middle temporal gyrus, left, inferior bank of gyrus", 4143,
                              hemisphere="L"),
                        _Node("MTG-s", "middle temporal gyrus, left, superior bank of gyrus", 4142,
                              hemisphere="L")]),
                     _Node("MTG", "middle temporal gyrus, right", hemisphere="R", children=[
                        _Node("MTG-i", "middle temporal gyrus, right, inferior bank of gyrus",
                              hemisphere="R"),
                        _Node("MTG-s", "middle temporal gyrus, right, superior bank of gyrus",
                              hemisphere="R")])),
                  _lr("ITG", "inferior temporal gyrus", banks=True),
                  _lr("FuG", "fusiform gyrus", banks=True),
                  _lr("TP", "temporal pole"),
                  _lr("HG", "transverse gyri"),
                  _lr("PLP", "planum polare"),
                  _lr("PLT", "planum temporale"))
    cortex = _n("CX", "cerebral cortex", 4008, frontal, insula, limbic, occipital, parietal,
                temporal)
    nuclei = _n("CN", "cerebral nuclei", 4275,
                _n("BG", "basal ganglia", None,
                   _n("Str", "striatum", None,
                      _lr("Ca", "caudate nucleus"),
                      _lr("Pu", "putamen"),
                      _lr("Acb", "nucleus accumbens")),
                   _lr("GPe", "globus pallidus, external segment"),
                   _lr("GPi", "globus pallidus, internal segment")),
                _n("Cl", "claustrum", 4321,
                   _Node("Cl", "claustrum, left", 4322, hemisphere="L"),
                   _Node("Cl", "claustrum, right", 4323, hemisphere="R")),
                _n("Amg", "amygdala", None,
                   _lr("BLA", "basolateral nucleus"),
                   _lr("CeA", "central nucleus"),
                   _lr("LA", "lateral nucleus"),
                   _lr("BMA", "basomedial nucleus")),
                _n("BF", "basal forebrain", None,
                   _lr("SI", "substantia innominata"),
                   _lr("SP", "septal nuclei"),
                   _lr("BNST", "bed nucleus of stria terminalis")))
    telencephalon = _n("Tel", "telencephalon", 4007, cortex, nuclei)
    diencephalon = _n("DI", "diencephalon", 4391,
                      _n("Hy", "hypothalamus", None,
                         _lr("PVH", "paraventricular nucleus of the hypothalamus"),
                         _lr("SO", "supraoptic nucleus"),
                         _lr("ARH", "arcuate nucleus of the hypothalamus"),
                         _lr("VMH", "ventromedial hypothalamic nucleus"),
                         _lr("LHA", "lateral hypothalamic area, anterior region"),
                         _lr("mamb", "mammillary body")),
                      _n("DTh", "dorsal thalamus", None,
                         _lr("DTA", "anterior group of nuclei"),
                         _lr("DTMd", "mediodorsal nucleus of thalamus"),
                         _lr("DTLv", "ventral lateral nucleus"),
                         _lr("Pul", "pulvinar"),
                         _lr("LGd", "lateral geniculate body"),
                         _lr("MG", "medial geniculate complex"),
                         _lr("ILc", "intralaminar nuclei, central part")),
                      _n("EpiTh", "epithalamus", None,
                         _lr("LHb", "lateral habenular nucleus"),
                         _n("PG", "pineal gland")),
                      _lr("STh", "subthalamic nucleus"))
    mesencephalon = _n("MES", "mesencephalon", 9001,
                       _lr("SN", "substantia nigra, pars compacta"),
                       _lr("SNr", "substantia nigra, pars reticulata"),
                       _lr("VTA", "ventral tegmental area"),
                       _lr("RN", "red nucleus"),
                       _lr("SC", "superior colliculus"),
                       _lr("ICol", "inferior colliculus"),
                       _n("PAG", "periaqueductal gray"),
                       _n("DR", "dorsal raphe nucleus"),
                       _lr("III", "oculomotor nuclear complex"))
    cerebellum = _n("CB", "cerebellum", 4696,
                    _n("CbCx", "cerebellar cortex", None,
                       _n("Ve", "vermis", None,
                          _n("VeI-II", "lobule I-II"),
                          _n("VeIII", "lobule III"),
                          _n("VeIV", "lobule IV"),
                          _n("VeV", "lobule V"),
                          _n("VeVI", "lobule VI"),
                          _n("VeVIIAf", "lobule VIIAf"),
                          _n("VeVIIB", "lobule VIIB"),
                          _n("VeVIIIA", "lobule VIIIA"),
                          _n("VeIX", "lobule IX"),
                          _n("VeX", "lobule X")),
                       _n("Hem", "hemisphere", None,
                          _lr("HIII", "HIII"),
                          _lr("HIV", "HIV"),
                          _lr("HV", "HV"),
                          _lr("HVI", "HVI"),
                          _lr("Cr I", "Crus I"),
                          _lr("Cr II", "Crus II"),
                          _lr("HVIIB", "HVIIB"),
                          _lr("HVIIIA", "HVIIIA"),
                          _lr("HIX", "HIX"))),
                    _n("CbN", "cerebellar nuclei", None,
                       _lr("DN", "dentate nucleus"),
                       _lr("Fst", "fastigial nucleus"),
                       _lr("IP", "interposed nucleus")))
    pons = _n("Pons", "pons", 9131,
              _n("BPons", "basal part of pons", None,
                 _lr("PGr", "pontine nuclei")),
              _n("PTg", "pontine tegmentum", None,
                 _lr("LC", "locus ceruleus"),
                 _n("CS", "central superior raphe nucleus"),
                 _lr("PB", "parabrachial nuclei"),
                 _lr("V", "trigeminal nuclei"),
                 _lr("VII", "facial motor nucleus"),
                 _lr("VIII", "vestibular nuclei")))
    metencephalon = _n("MET", "metencephalon", 4833, cerebellum, pons)
    myelencephalon = _n("MY", "myelencephalon", 9512,
                        _lr("IO", "inferior olivary complex"),
                        _lr("Cu", "cuneate nucleus"),
                        _lr("Gr", "gracile nucleus"),
                        _lr("XII", "hypoglossal nucleus"),
                        _lr("DMX", "dorsal motor nucleus of the vagus"),
                        _lr("Sol", "nucleus of the solitary tract"),
                        _n("RPa", "raphe pallidus"),
                        _lr("Amb", "nucleus ambiguus"))
    gray = _n("GM", "gray matter", 4006, telencephalon, diencephalon, mesencephalon,
              metencephalon, myelencephalon)
    white = _n("WM", "white matter", 9218,
               _n("cc", "corpus callosum", None,
                  _n("ccg", "genu of corpus callosum"),
                  _n("ccb", "body of corpus callosum"),
                  _n("ccs", "splenium of corpus callosum")),
               _lr("ic", "internal capsule"),
               _lr("ec", "external capsule"),
               _lr("cing", "cingulum"),
               _lr("fx", "fornix"),
               _lr("opt", "optic tract"),
               _lr("mcp", "middle cerebellar peduncle"),
               _lr("scp", "superior cerebellar peduncle"),
               _lr("cst", "corticospinal tract"))
    spaces = _n("SS", "sulci & spaces", 9352,
                _n("Vent", "ventricles", 9418,
                   _n("CeCa", "central canal", 9422),
                   _lr("LV", "lateral ventricle"),
                   _n("3V", "third ventricle"),
                   _n("4V", "fourth ventricle")),
                _n("sul", "sulci", None,
                   _lr("cens", "central sulcus"),
                   _lr("lf", "lateral fissure"),
                   _lr("sts", "superior temporal sulcus")))
    return _n("Br", "brain", 4005, gray, white, spaces)


def _expand(node: _Node) -> None:
    """Turn ``lr`` markers into left/right (and bank) children, recursively."""
    if node.lr:
        kids = []
        for side, word in (("L", "left"), ("R", "right")):
            leaf = _Node(node.acronym, f"{node.name}, {word}", hemisphere=side)
            if node.banks:
                leaf.children = [
                    _Node(f"{node.acronym}-i", f"{node.name}, {word}, inferior bank of gyrus",
                          hemisphere=side),
                    _Node(f"{node.acronym}-s", f"{node.name}, {word}, superior bank of gyrus",
                          hemisphere=side),
                ]
            kids.append(leaf)
        node.children = kids
        node.lr = False
    for child in node.children:
        _expand(child)


def _color(structure_id: int) -> str:
    return hashlib.sha256(str(structure_id).encode()).hexdigest()[:6].upper()


#: Colours of the nodes whose real colour is known (Ontology.csv fixture rows).
_KNOWN_COLORS = {4005: "A0A0A0", 4006: "787878", 4054: "E8BF59"}


def build_ontology() -> pd.DataFrame:
    """The ontology table with :data:`ONTOLOGY_COLUMNS`, rows in graph (pre-)order.

    ``parent_structure_id`` is a nullable Int64 (``<NA>`` for the root); ``hemisphere`` is
    ``"L"``, ``"R"`` or ``""``.
    """
    root = _spec()
    _expand(root)
    fixed: set[int] = set()

    def collect(n: _Node) -> None:
        if n.id is not None:
            if n.id in fixed:
                raise AssertionError(f"duplicate fixed structure id {n.id}")
            fixed.add(n.id)
        for c in n.children:
            collect(c)

    collect(root)
    next_id = 10150
    rows: list[tuple[object, ...]] = []

    def walk(n: _Node, parent: int | None, path: str) -> None:
        nonlocal next_id
        if n.id is None:
            while next_id in fixed:
                next_id += 1
            n.id = next_id
            next_id += 1
        p = f"{path}{n.id}/"
        color = _KNOWN_COLORS.get(n.id, _color(n.id))
        rows.append((n.id, n.acronym, n.name, parent, n.hemisphere, len(rows), p, color))
        for c in n.children:
            walk(c, n.id, p)

    walk(root, None, "/")
    table = pd.DataFrame(rows, columns=list(ONTOLOGY_COLUMNS))
    table["id"] = table["id"].astype("int64")
    table["parent_structure_id"] = table["parent_structure_id"].astype("Int64")
    table["graph_order"] = table["graph_order"].astype("int64")
    return table


def leaf_mask(table: pd.DataFrame) -> pd.Series:
    """True for structures that are no one's parent (where samples are placed)."""
    parents = set(table["parent_structure_id"].dropna().astype(int))
    return ~table["id"].isin(parents)


def _csv_field(value: object) -> str:
    """Minimal quoting, as in the real Ontology.csv: quote only fields holding a comma."""
    if value is None or value is pd.NA:
        return ""
    text = str(value)
    if "," in text or '"' in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def ontology_csv(table: pd.DataFrame) -> bytes:
    """``Ontology.csv`` bytes (header, LF line ends, trailing newline, minimal quoting)."""
    lines = [",".join(ONTOLOGY_COLUMNS)]
    for row in table.itertuples(index=False):
        lines.append(",".join(_csv_field(v) for v in row))
    return ("\n".join(lines) + "\n").encode("utf-8")


def structure_graph(table: pd.DataFrame, graph_id: int = 10) -> dict[str, object]:
    """The ``structure_graph_download/{graph_id}.json`` document for ``table``.

    Envelope keys ``success, id, start_row, num_rows, total_rows, msg`` with ``msg`` a list
    holding the root node; each node has ``id, atlas_id, ontology_id, acronym, name,
    color_hex_triplet, graph_order, st_level, hemisphere_id, parent_structure_id, children``.
    """
    nodes: dict[int, dict[str, object]] = {}
    roots: list[dict[str, object]] = []
    for row in table.itertuples(index=False):
        sid = int(row.id)
        parent = None if pd.isna(row.parent_structure_id) else int(row.parent_structure_id)
        node: dict[str, object] = {
            "id": sid,
            "atlas_id": sid - 4000 if sid < 10000 else None,
            "ontology_id": HBA_ONTOLOGY_ID,
            "acronym": row.acronym,
            "name": row.name,
            "color_hex_triplet": row.color_hex_triplet,
            "graph_order": int(row.graph_order),
            "st_level": len(str(row.structure_id_path).strip("/").split("/")) - 1,
            "hemisphere_id": HEMISPHERE_IDS[row.hemisphere or ""],
            "parent_structure_id": parent,
            "children": [],
        }
        nodes[sid] = node
        if parent is None:
            roots.append(node)
        else:
            nodes[parent]["children"].append(node)  # type: ignore[union-attr]
    return {"success": True, "id": 0, "start_row": 0, "num_rows": len(roots),
            "total_rows": len(roots), "msg": roots}
