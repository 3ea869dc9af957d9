import numpy as np
import pandas as pd
import pytest

from atlas_engine.errors import ConfigError
from atlas_engine.store.ontology import Ontology, parse_path

ROWS = [
    (4005, "Br", "brain", None, None, 0, "/4005/"),
    (4006, "GM", "gray matter", 4005, None, 1, "/4005/4006/"),
    (4007, "Tel", "telencephalon", 4006, None, 2, "/4005/4006/4007/"),
    (4008, "Cx", "cerebral cortex", 4007, None, 3, "/4005/4006/4007/4008/"),
    (4054, "AOrG", "anterior orbital gyrus, left", 4008, "L", 4, "/4005/4006/4007/4008/4054/"),
    (4055, "AOrG", "anterior orbital gyrus, right", 4008, "R", 5, "/4005/4006/4007/4008/4055/"),
    (4275, "CN", "cerebral nuclei", 4007, None, 6, "/4005/4006/4007/4275/"),
    (4322, "Cl", "claustrum, left", 4275, "L", 7, "/4005/4006/4007/4275/4322/"),
    (9352, "SS", "sulci & spaces", 4005, None, 8, "/4005/9352/"),
]


@pytest.fixture
def onto():
    df = pd.DataFrame(ROWS, columns=["id", "acronym", "name", "parent_structure_id",
                                     "hemisphere", "graph_order", "structure_id_path"])
    return Ontology(df)


def test_paths_and_tree(onto):
    assert parse_path("/4005/4006/") == [4005, 4006]
    assert onto.root == 4005
    assert onto.depth(4054) == 4
    assert onto.ancestors(4054) == [4005, 4006, 4007, 4008]
    assert sorted(onto.children(4008)) == [4054, 4055]
    assert sorted(onto.descendants(4007)) == [4008, 4054, 4055, 4275, 4322]
    assert onto.is_leaf(4322) and not onto.is_leaf(4275)
    assert onto.broad_class(4322) == "subcortex/brainstem"
    assert onto.broad_class(4054) == "cortex"
    assert onto.broad_class(9352) == "other"


def test_lookup(onto):
    assert onto.lookup("cerebral cortex") == 4008
    assert onto.lookup("4275") == 4275
    with pytest.raises(ConfigError, match="ambiguous"):
        onto.lookup("AOrG")
    with pytest.raises(ConfigError, match="unknown structure"):
        onto.lookup("nope")


def test_rollup_membership_matches_path_oracle(onto):
    samples = [4054, 4055, 4322, 9352, 4054, 12345]
    groups = [4008, 4275, 4007, 9352]
    m = onto.membership(samples, groups)
    for i, s in enumerate(samples):
        path = onto.path(s) if s in onto else ()
        assert list(m[i]) == [g in path for g in groups]
    np.testing.assert_array_equal(onto.labels_for(samples, [4008, 4275]), [0, 0, 1, -1, 0, -1])
    np.testing.assert_array_equal(onto.ancestor_at_depth(samples, 3), [4008, 4008, 4275, -1, 4008, -1])
