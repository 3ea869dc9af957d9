"""Behaviour of the pipeline steps against small hand-checked or plain-Python oracles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlas_engine.errors import ConfigError
from atlas_engine.pipeline.intensity import intensity_filter
from atlas_engine.pipeline.matching import VolumeAtlas, inverse_distance_weights
from atlas_engine.pipeline.normalize import normalize
from atlas_engine.pipeline.probes import pick_best, select_probes
from atlas_engine.pipeline.regions import centroid_fill
from atlas_engine.pipeline.samples import (
    drop_mismatch_samples,
    mirror_samples,
    similarity_threshold,
)
from atlas_engine.store.ontology import Ontology


def _ontology() -> Ontology:
    rows = [
        (4005, "Br", "brain", None, None, "/4005/"),
        (4008, "CTX", "cortex", 4005, None, "/4005/4008/"),
        (10, "FG", "frontal gyrus, left", 4008, "L", "/4005/4008/10/"),
        (11, "FG", "frontal gyrus, right", 4008, "R", "/4005/4008/11/"),
        (4275, "SC", "subcortex", 4005, None, "/4005/4275/"),
        (20, "TH", "thalamus, left", 4275, "L", "/4005/4275/20/"),
        (21, "TH", "thalamus, right", 4275, "R", "/4005/4275/21/"),
        (30, "MB", "midbrain", 4275, None, "/4005/4275/30/"),
    ]
    t = pd.DataFrame(rows, columns=["id", "acronym", "name", "parent_structure_id",
                                    "hemisphere", "structure_id_path"])
    return Ontology(t)


def test_hemisphere_mismatch_keeps_consistent_samples():
    annot = pd.DataFrame({"structure_id": [10, 10, 11, 21, 30, 30, 20],
                          "mni_x": [-5.0, 3.0, 4.0, -1.0, 0.0, 2.0, -0.5]})
    out = drop_mismatch_samples(annot, _ontology())
    assert out.index.tolist() == [0, 2, 4, 6]
    assert out["hemisphere"].tolist() == ["L", "R", "B", "L"]
    assert out["structure"].tolist() == ["cortex", "cortex", "subcortex/brainstem",
                                         "subcortex/brainstem"]


@pytest.mark.parametrize(("swap", "dups"), [("bidirectional", [0, 2, 1]),
                                            ("leftright", [0, 2]), ("rightleft", [1])])
def test_mirror_duplicates_into_other_hemisphere(swap, dups):
    annot = pd.DataFrame({"structure_id": [10, 21, 20, 30],
                          "structure_acronym": ["FG", "TH", "TH", "MB"],
                          "structure_name": ["a", "b", "c", "d"],
                          "mni_x": [-5.0, 6.0, -2.0, 0.0]})
    out, src = mirror_samples(annot, _ontology(), swap)
    assert src.tolist() == [0, 1, 2, 3] + dups
    flipped = out.iloc[4:]
    expect_id = {10: 11, 21: 20, 20: 21}
    assert flipped["structure_id"].tolist() == [expect_id[annot.structure_id[i]] for i in dups]
    np.testing.assert_array_equal(flipped["mni_x"], -annot["mni_x"].to_numpy()[dups])
    # mirrored rows pass the hemisphere check just like their sources
    kept = drop_mismatch_samples(out.reset_index(drop=True), _ontology())
    assert len(kept) == len(out)


def test_mirror_rejects_unknown_mode():
    with pytest.raises(ConfigError, match="bidirectional"):
        mirror_samples(pd.DataFrame({"structure_id": [], "mni_x": []}), _ontology(), "up")


def test_similarity_threshold_drops_the_outlier():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(200, 1))
    x = base + 0.1 * rng.normal(size=(200, 12))
    x[:, 5] = rng.normal(size=200)  # unrelated sample
    keep = similarity_threshold(x, 1.0)
    corr = np.corrcoef(x.T).sum(axis=1)
    assert keep.tolist() == (corr >= corr.mean() - corr.std(ddof=1)).tolist()
    assert not keep[5] and keep.sum() == 11


def test_intensity_filter_pooled_and_per_donor():
    a = np.array([[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
    b = np.array([[0, 0], [1, 1], [1, 0]], dtype=bool)
    pooled = intensity_filter([a, b], 0.5)
    np.testing.assert_allclose(pooled.fraction, [4 / 6, 3 / 6, 1 / 6])
    assert pooled.keep.tolist() == [True, True, False]
    each = intensity_filter([a, b], 0.5, per_donor=True)
    np.testing.assert_allclose(each.fraction, [[1, 0], [0.25, 1], [0, 0.5]])
    assert each.keep.tolist() == [False, False, False]
    assert intensity_filter([a, b], 7).threshold == 1.0  # clipped
    assert "dropped" in pooled.reasons()[2]


def test_pick_best_ties_and_nan():
    codes = np.array([0, 0, 0, 1, 1, 2])
    scores = np.array([0.5, 0.9, 0.9, np.nan, np.nan, np.nan])
    assert pick_best(scores, codes, 3).tolist() == [1, -1, -1]
    assert pick_best(scores, codes, 3, nan_wins=True).tolist() == [1, 3, 5]


def test_max_variance_reasons_and_nan_gene_dropped():
    probes = pd.DataFrame({"probe_id": [1, 2, 3, 4], "gene_symbol": ["A", "A", "B", "C"]})
    x = np.array([[1.0, 2, 3], [1, 5, 9], [np.nan, np.nan, np.nan], [4, 4, 5]])
    sel = select_probes([x], [np.zeros(3)], probes, "max_variance")
    assert sel.genes.tolist() == ["A", "C"]
    assert probes.probe_id.to_numpy()[sel.rows[0]].tolist() == [2, 4]
    reasons = sel.table.set_index("probe_id")["reason"]
    assert reasons[1].startswith("not selected") and "probe 2" in reasons[1]
    assert "dropped" in reasons[3]


def test_unknown_names_list_valid_ones():
    with pytest.raises(ConfigError, match="srs"):
        normalize(np.ones((3, 3)), "bogus")
    probes = pd.DataFrame({"probe_id": [1], "gene_symbol": ["A"]})
    with pytest.raises(ConfigError, match="diff_stability"):
        select_probes([np.ones((1, 2))], [np.zeros(2)], probes, "best")
    with pytest.raises(ConfigError, match="independent"):
        select_probes([np.ones((1, 2))], [np.zeros(2)], probes, "max_variance", "some")


def test_srs_by_hand():
    x = np.array([[1.0], [2.0], [3.0], [4.0], [10.0]])
    med, q25, q75 = 3.0, 2.0, 4.0
    s = (q75 - q25) / 1.3489795003921634
    rs = 1 / (1 + np.exp(-(x - med) / s))
    want = (rs - rs.min()) / (rs.max() - rs.min())
    np.testing.assert_allclose(normalize(x, "srs"), want, atol=1e-12)


def test_centroid_fill_inverse_distance():
    labels = np.zeros((10, 4, 4), dtype=int)
    labels[0:3] = 1
    labels[7:10] = 2
    atlas = VolumeAtlas(labels, np.eye(4))
    # both donors only sampled label 1; label 2's centroid is at x = 8
    xyz = [np.array([[1.0, 1.5, 1.5], [6.0, 1.5, 1.5]]), np.array([[2.0, 1.5, 1.5]])]
    vals = [np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[5.0, np.nan]])]
    empty, filled = centroid_fill(atlas, vals, [np.array([1, 1]), np.array([1])], xyz)
    assert empty.tolist() == [2]
    w = inverse_distance_weights(np.array([2.0, 6.0]))
    np.testing.assert_allclose(filled[0], [(3 * w[0] + 5 * w[1]) / w.sum(), 4 * w[0] / w.sum()])
    assert inverse_distance_weights(np.array([0.0, 3.0])).tolist() == [1.0, 0.0]


def test_structure_means_are_pandas_groupby_means_bit_for_bit():
    """The in-memory structure means (diff_stability, rnaseq) sum as pandas' groupby mean
    does (compensated, in sample order, NaN skipped), as the store path does."""
    import pandas as pd

    from atlas_engine.pipeline.probe_scores import structure_means

    rng = np.random.default_rng(3)
    x = rng.normal(loc=8, scale=3, size=(40, 90)) * 1e3
    x[rng.random(x.shape) < 0.1] = np.nan
    ids = rng.choice([4008, 4249, 10161, 12139, 9999], 90)
    ids[:3] = 77777                      # a structure ...
    ids[3:6] = 88888                     # ... and its mirror: the same values, another order
    x[:, 3:6] = x[:, [2, 0, 1]]
    got_ids, got = structure_means(x, ids)
    want = pd.DataFrame(x.T).groupby(ids).mean().T
    assert got_ids.tolist() == want.columns.tolist()
    np.testing.assert_array_equal(got, want.to_numpy())
