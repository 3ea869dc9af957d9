import numpy as np
import pandas as pd
import pytest

from atlas_engine.aggregate.grouping import resolve_grouping
from atlas_engine.errors import ConfigError
from atlas_engine.store.ontology import Ontology

ROWS = [
    (4005, "Br", "brain", "/4005/"),
    (4006, "GM", "gray matter", "/4005/4006/"),
    (4007, "Tel", "telencephalon", "/4005/4006/4007/"),
    (4008, "Cx", "cerebral cortex", "/4005/4006/4007/4008/"),
    (4054, "AOrG", "anterior orbital gyrus, left", "/4005/4006/4007/4008/4054/"),
    (4055, "AOrG", "anterior orbital gyrus, right", "/4005/4006/4007/4008/4055/"),
    (4275, "CN", "cerebral nuclei", "/4005/4006/4007/4275/"),
    (4322, "Cl", "claustrum, left", "/4005/4006/4007/4275/4322/"),
    (4323, "Cl", "claustrum, right", "/4005/4006/4007/4275/4323/"),
    (9352, "SS", "sulci & spaces", "/4005/9352/"),
]


@pytest.fixture
def onto():
    df = pd.DataFrame(ROWS, columns=["id", "acronym", "name", "structure_id_path"])
    df["parent_structure_id"] = [None] + [int(p.strip("/").split("/")[-2]) for p in df.structure_id_path[1:]]
    return Ontology(df)


SAMPLES = np.array([4054, 4055, 4054, 4322, 9352, 4054])


def _members(g, i):
    """Groups a sample belongs to, by id, through the roll-up matrix."""
    return set(g.groups.structure_id[g.rollup[g.labels[i]]])


def test_structure_grouping_reports_empty_leaves(onto):
    g = resolve_grouping("structure", SAMPLES, onto)
    ids = g.groups.structure_id.tolist()
    assert 4323 in ids  # a leaf with no samples is still a group (reported empty)
    for i, s in enumerate(SAMPLES):
        assert _members(g, i) == {s}
    assert not g.unassigned.any()


def test_depth_grouping_rolls_up_via_path(onto):
    g = resolve_grouping("depth:3", SAMPLES, onto)
    assert g.groups.structure_id.tolist() == [4008, 4275]
    assert [_members(g, i) for i in range(len(SAMPLES))] == [
        {4008}, {4008}, {4008}, {4275}, set(), {4008}]
    assert g.unassigned.tolist() == [False, False, False, False, True, False]


def test_named_structures_include_descendants_and_may_nest(onto):
    g = resolve_grouping("cerebral cortex,4007,CN", SAMPLES, onto)
    assert g.groups.structure_id.tolist() == [4008, 4007, 4275]
    assert _members(g, 0) == {4008, 4007}
    assert _members(g, 3) == {4007, 4275}
    assert _members(g, 4) == set()


def test_broad_classes(onto):
    g = resolve_grouping("broad", SAMPLES, onto)
    assert g.groups.acronym.tolist()[0] == "cortex"
    names = g.groups.acronym.to_numpy()
    assert set(names[g.rollup[g.labels[3]]]) == {"subcortex/brainstem"}
    assert set(names[g.rollup[g.labels[4]]]) == {"other"}


def test_bad_specs(onto):
    with pytest.raises(ConfigError, match="depth 9"):
        resolve_grouping("depth:9", SAMPLES, onto)
    with pytest.raises(ConfigError, match="ambiguous"):
        resolve_grouping("AOrG", SAMPLES, onto)
