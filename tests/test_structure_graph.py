"""Structure graph JSON ↔ ontology table: round trips and refused graphs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from atlas_engine.errors import FormatError
from atlas_engine.store.graph import (
    check_against_ontology_csv,
    graph_table,
    ontology_from_structure_graph,
    read_structure_graph,
)
from atlas_engine.testing.synth_mouse import build_mouse_ontology, mouse_structure_graph
from atlas_engine.testing.synth_ontology import build_ontology, structure_graph

COLS = ["id", "acronym", "name", "parent_structure_id", "graph_order", "structure_id_path",
        "color_hex_triplet", "hemisphere"]


@pytest.mark.parametrize("which", ["mouse", "human"])
def test_round_trip(tmp_path, which):
    table = build_mouse_ontology() if which == "mouse" else build_ontology()
    doc = mouse_structure_graph(table) if which == "mouse" else structure_graph(table)
    path = tmp_path / "g.json"
    path.write_text(json.dumps(doc))
    got = read_structure_graph(path)
    pd.testing.assert_frame_equal(got[COLS].reset_index(drop=True),
                                  table[COLS].reset_index(drop=True), check_dtype=False)
    # structure_id_path is built by walking the tree; depth is its length - 1
    assert (got["depth"] == got["structure_id_path"].str.count("/") - 2).all()
    check_against_ontology_csv(got, table)
    onto = ontology_from_structure_graph(path)
    assert len(onto) == len(table)
    assert onto.root == (997 if which == "mouse" else 4005)


def test_mouse_top_level_and_liberal_nulls():
    doc = mouse_structure_graph()
    root = doc["msg"][0]
    # the real generator writes "null" strings: accepted
    root["parent_structure_id"] = "null"
    root["st_level"] = "null"
    root["children"][0]["color_hex_triplet"] = "#bfdae3"
    t = graph_table(doc)
    r = t.set_index("id")
    assert r.loc[997, "acronym"] == "root" and pd.isna(r.loc[997, "parent_structure_id"])
    assert r.loc[8, "acronym"] == "grey" and r.loc[8, "color_hex_triplet"] == "BFDAE3"
    assert r.loc[8, "structure_id_path"] == "/997/8/"
    assert t["id"].max() > 65535           # ids beyond 16 bits exist, as in CCFv3


def test_flat_graph_is_accepted():
    table = build_mouse_ontology()
    flat = [{"id": int(r.id), "acronym": r.acronym, "name": r.name,
             "parent_structure_id": None if pd.isna(r.parent_structure_id)
             else int(r.parent_structure_id), "graph_order": int(r.graph_order),
             "color_hex_triplet": r.color_hex_triplet, "children": []}
            for r in table.itertuples()][::-1]
    got = graph_table({"success": True, "msg": flat})
    assert list(got["id"]) == list(table["id"])
    assert list(got["structure_id_path"]) == list(table["structure_id_path"])


def test_cycle_refused():
    nodes = [{"id": 1, "parent_structure_id": None, "children": []},
             {"id": 2, "parent_structure_id": 3, "children": []},
             {"id": 3, "parent_structure_id": 2, "children": []}]
    with pytest.raises(FormatError, match="cycle"):
        graph_table({"success": True, "msg": nodes}, "g.json")


def test_duplicate_id_refused():
    doc = {"success": True, "msg": [{"id": 1, "children": [{"id": 2, "children": [
        {"id": 1, "children": []}]}]}]}
    with pytest.raises(FormatError, match=r"g.json: msg\[0\].children\[0\].children\[0\]: "
                                          r"structure id 1 appears twice"):
        graph_table(doc, "g.json")


def test_missing_parent_refused():
    nodes = [{"id": 1, "parent_structure_id": None, "children": []},
             {"id": 2, "parent_structure_id": 99, "children": []}]
    with pytest.raises(FormatError, match="parent_structure_id 99 is not in the graph"):
        graph_table({"success": True, "msg": nodes}, "g.json")


def test_contradicting_parent_refused():
    doc = {"msg": [{"id": 1, "children": [{"id": 2, "parent_structure_id": 5,
                                            "children": []}]}]}
    with pytest.raises(FormatError, match="parent_structure_id 5 but nested under 1"):
        graph_table(doc, "g.json")


def test_bad_json_names_line_and_column(tmp_path):
    p = tmp_path / "g.json"
    p.write_text('{"msg": [\n  {"id": 1,,}]}')
    with pytest.raises(FormatError, match=r"g.json, line 2, column \d+"):
        read_structure_graph(p)


def test_non_integer_id_and_failed_envelope():
    with pytest.raises(FormatError, match="id 'x' is not an integer"):
        graph_table({"msg": [{"id": "x"}]}, "g.json")
    with pytest.raises(FormatError, match="success=false"):
        graph_table({"success": False, "msg": "no such graph"}, "g.json")


def test_csv_disagreement_refused():
    table = build_mouse_ontology()
    graph = graph_table(mouse_structure_graph(table))
    other = table.copy()
    other.loc[other["id"] == 8, "acronym"] = "GREY"
    with pytest.raises(FormatError, match="structure 8: acronym 'GREY' here but 'grey'"):
        check_against_ontology_csv(graph, other)
