"""Structure graph JSON (``/api/v2/structure_graph_download/{id}.json``) → the ontology table.

Any graph id is read the same way (1 adult mouse, 10 human, 16 developing human, 17 developing
mouse, ...). The envelope is ``{"success", "id", "start_row", "num_rows", "total_rows",
"msg"}`` with ``msg`` a list of root nodes; each node carries ``id, atlas_id, ontology_id,
acronym, name, color_hex_triplet, graph_order, st_level, hemisphere_id, parent_structure_id``
and ``children``. ``structure_id_path`` is not a node key: it is built here by walking the tree.

Acceptance is liberal where the real files are not confirmed (shared more_datasets.md §2.3):
``parent_structure_id``/``st_level`` may be JSON ``null`` or the string ``"null"``; colours may
carry a leading ``#``; a flat ``msg`` (every node at top level, linked by
``parent_structure_id`` only) is accepted as well as the nested form. Structure is checked
strictly: duplicate ids, a parent id that is not in the graph, a cycle, or a
``parent_structure_id`` that contradicts the nesting are refused with the node's position.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import FormatError
from .ontology import ONTOLOGY_COLUMNS, Ontology

#: Hemisphere id of a node → the ``hemisphere`` letter of ``Ontology.csv``
#: (1 left, 2 right, 3 both/none; the HBA meaning of 3 is UNCONFIRMED, read as "").
HEMISPHERE_LETTERS = {1: "L", 2: "R", 3: ""}

#: Columns of :func:`graph_table` beyond :data:`ONTOLOGY_COLUMNS`.
EXTRA_COLUMNS = ("depth", "atlas_id", "ontology_id", "st_level", "hemisphere_id")


def _null_int(value: Any) -> int | None:
    """``None``, ``"null"``, ``""`` → None; ints and integer strings → int; else ValueError."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none")):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not an integer")
        return int(value)
    return int(value)


def load_structure_graph(path: str | Path) -> dict[str, Any]:
    """Parse a structure graph file; returns the JSON document (envelope checked)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            doc = json.load(fh)
    except json.JSONDecodeError as exc:
        raise FormatError(path, f"not valid JSON: {exc.msg}", line=exc.lineno,
                          column=exc.colno) from None
    except UnicodeDecodeError as exc:
        raise FormatError(path, f"not UTF-8 text ({exc.reason})") from None
    return doc


def graph_table(doc: Mapping[str, Any] | list[Any], source: str | Path = "<structure graph>",
                ) -> pd.DataFrame:
    """The structure graph as an ontology table.

    Parameters
    ----------
    doc : dict or list
        The parsed JSON: an envelope with ``msg``, or the ``msg`` list itself.
    source : str or Path
        Named in error messages.

    Returns
    -------
    pandas.DataFrame
        :data:`~atlas_engine.store.ontology.ONTOLOGY_COLUMNS` plus :data:`EXTRA_COLUMNS`, one row
        per structure in pre-order (children in their ``graph_order``); ``parent_structure_id``
        is nullable Int64, ``structure_id_path`` like ``/997/8/567/``, ``depth`` 0 at a root.

    Raises
    ------
    FormatError
        Not an envelope, ``success`` false, a node without an integer ``id``, duplicate ids,
        a missing parent, a cycle, or a parent id contradicting the nesting.
    """
    if isinstance(doc, Mapping):
        if "msg" not in doc:
            raise FormatError(source, "no 'msg' key", expected="a structure graph envelope "
                              "{success, id, ..., msg: [root]}")
        if doc.get("success") is False:
            raise FormatError(source, f"the API answered success=false: {doc.get('msg')!r}")
        roots = doc["msg"]
    else:
        roots = doc
    if not isinstance(roots, list):
        raise FormatError(source, f"'msg' is a {type(roots).__name__}",
                          expected="a list of root nodes")

    nodes: dict[int, dict[str, Any]] = {}
    where: dict[int, str] = {}
    nested_parent: dict[int, int | None] = {}
    kids: dict[int | None, list[int]] = {}

    # iterative walk of the nesting (deep graphs must not hit the recursion limit)
    stack: list[tuple[Any, str, int | None]] = [
        (node, f"msg[{i}]", None) for i, node in reversed(list(enumerate(roots)))]
    while stack:
        node, pos, parent = stack.pop()
        if not isinstance(node, Mapping):
            raise FormatError(source, f"{pos} is a {type(node).__name__}",
                              expected="a structure node object")
        try:
            sid = _null_int(node.get("id"))
        except (TypeError, ValueError):
            sid = None
        if sid is None:
            raise FormatError(source, f"{pos}: id {node.get('id')!r} is not an integer",
                              expected="an integer structure id")
        if sid in nodes:
            raise FormatError(source, f"{pos}: structure id {sid} appears twice (also at "
                              f"{where[sid]}); the graph has a cycle or a duplicate",
                              expected="each id once")
        try:
            declared = _null_int(node.get("parent_structure_id"))
        except (TypeError, ValueError):
            raise FormatError(source, f"{pos} (id {sid}): parent_structure_id "
                              f"{node.get('parent_structure_id')!r} is not an integer or null"
                              ) from None
        if parent is not None and declared is not None and declared != parent:
            raise FormatError(source, f"{pos} (id {sid}): parent_structure_id {declared} but "
                              f"nested under {parent}", expected="the id of the enclosing node")
        nodes[sid] = dict(node)
        where[sid] = pos
        nested_parent[sid] = parent if parent is not None else declared
        children = node.get("children") or []
        if not isinstance(children, list):
            raise FormatError(source, f"{pos} (id {sid}): children is a "
                              f"{type(children).__name__}", expected="a list")
        for j, child in reversed(list(enumerate(children))):
            stack.append((child, f"{pos}.children[{j}]", sid))

    for sid, parent in nested_parent.items():
        if parent is not None and parent not in nodes:
            raise FormatError(source, f"{where[sid]} (id {sid}): parent_structure_id {parent} "
                              "is not in the graph", expected="the id of a structure of the graph")
        kids.setdefault(parent, []).append(sid)
    top = kids.get(None, [])
    if not top:
        raise FormatError(source, "no root structure (every node has a parent: a cycle)",
                          expected="at least one node with parent_structure_id null")

    def order_key(sid: int) -> tuple[int, int]:
        try:
            go = _null_int(nodes[sid].get("graph_order"))
        except (TypeError, ValueError):
            go = None
        return (go if go is not None else 1 << 62, sid)

    rows: list[dict[str, Any]] = []
    todo: list[tuple[int, str, int]] = [(r, "/", 0) for r in sorted(top, key=order_key,
                                                                     reverse=True)]
    while todo:
        sid, prefix, depth = todo.pop()
        n = nodes[sid]
        path = f"{prefix}{sid}/"
        hem = n.get("hemisphere_id")
        try:
            hem_id = _null_int(hem)
        except (TypeError, ValueError):
            hem_id = None
        color = str(n.get("color_hex_triplet") or "").lstrip("#").upper()
        go = order_key(sid)[0]
        rows.append({
            "id": sid, "acronym": n.get("acronym"), "name": n.get("name"),
            "parent_structure_id": nested_parent[sid],
            "hemisphere": HEMISPHERE_LETTERS.get(hem_id, "") if hem_id is not None else "",
            "graph_order": go if go < 1 << 62 else len(rows),
            "structure_id_path": path, "color_hex_triplet": color, "depth": depth,
            "atlas_id": _loose_int(n.get("atlas_id")),
            "ontology_id": _loose_int(n.get("ontology_id")),
            "st_level": _loose_int(n.get("st_level")), "hemisphere_id": hem_id,
        })
        for child in sorted(kids.get(sid, []), key=order_key, reverse=True):
            todo.append((child, path, depth + 1))
    if len(rows) != len(nodes):
        seen = {r["id"] for r in rows}
        lost = sorted(set(nodes) - seen)
        raise FormatError(source, f"structures {lost[:5]} are not reachable from a root: "
                          f"their parent links form a cycle ({where[lost[0]]})",
                          expected="a tree")
    table = pd.DataFrame(rows, columns=[*ONTOLOGY_COLUMNS, *EXTRA_COLUMNS])
    table["id"] = table["id"].astype(np.int64)
    for col in ("parent_structure_id", "atlas_id", "ontology_id", "st_level", "hemisphere_id"):
        table[col] = table[col].astype("Int64")
    table["graph_order"] = table["graph_order"].astype(np.int64)
    table["depth"] = table["depth"].astype(np.int64)
    return table


def _loose_int(value: Any) -> int | None:
    try:
        return _null_int(value)
    except (TypeError, ValueError):
        return None


def read_structure_graph(path: str | Path) -> pd.DataFrame:
    """:func:`graph_table` of a structure graph file."""
    return graph_table(load_structure_graph(path), source=path)


def ontology_from_structure_graph(path: str | Path) -> Ontology:
    """The :class:`~atlas_engine.store.ontology.Ontology` tree of a structure graph file.

    Any graph id reads the same way (1 adult mouse, 10 human, 16/17 developing human/mouse);
    the nested and the flat ``msg`` forms are both accepted (module docstring).

    Parameters
    ----------
    path : str or Path
        A structure graph JSON file, as ``/api/v2/structure_graph_download/{id}.json`` serves
        it (``atlas-engine fetch --what structure-graph:ID`` saves it).

    Returns
    -------
    Ontology
        One structure per node, with ``structure_id_path`` and ``depth`` built from the
        nesting.

    Raises
    ------
    FormatError
        Not valid JSON or UTF-8, not a structure graph envelope, ``success`` false, a node
        without an integer ``id``, duplicate ids, a missing parent, a cycle, or a parent id
        contradicting the nesting.
    """
    return Ontology(read_structure_graph(path))


def check_against_ontology_csv(graph: pd.DataFrame, csv_table: pd.DataFrame,
                               source: str | Path = "Ontology.csv") -> None:
    """Refuse a structure graph and an ``Ontology.csv`` table that disagree.

    Every id of the CSV must be in the graph with the same parent, acronym and
    ``structure_id_path``; names and colours are compared case-insensitively. The graph may
    hold more structures than the CSV.

    Raises
    ------
    FormatError
        On the first disagreeing structure (its CSV row number, 2-based as in a text editor).
    """
    g = graph.set_index("id", drop=False)
    for row_no, row in enumerate(csv_table.itertuples(index=False), start=2):
        sid = int(row.id)
        if sid not in g.index:
            raise FormatError(source, f"structure {sid} is not in the structure graph",
                              line=row_no)
        other = g.loc[sid]
        for col in ("parent_structure_id", "acronym", "structure_id_path", "name",
                    "color_hex_triplet"):
            if not hasattr(row, col):
                continue
            a, b = getattr(row, col), other[col]
            if col == "parent_structure_id":
                a = None if pd.isna(a) else int(a)
                b = None if pd.isna(b) else int(b)
            elif col in ("name", "color_hex_triplet"):
                a, b = str(a).strip().lower().lstrip("#"), str(b).strip().lower().lstrip("#")
            else:
                a, b = str(a).strip(), str(b).strip()
            if a != b:
                raise FormatError(source, f"structure {sid}: {col} {a!r} here but {b!r} in the "
                                  "structure graph", line=row_no)
