"""Numerical parity of atlas_engine.pipeline with abagen 0.1.3.

The goldens in tests/data/abagen_golden/ were produced by abagen's own functions on the same
inputs (benchmarks/abagen_oracle/make_goldens.py, run in an abagen virtualenv).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atlas_engine.pipeline.intensity import intensity_filter
from atlas_engine.pipeline.matching import VolumeAtlas
from atlas_engine.pipeline.normalize import batch_correct, normalize
from atlas_engine.pipeline.probes import collapse_probes
from atlas_engine.pipeline.regions import aggregate_samples
from atlas_engine.pipeline.stability import keep_stable_genes

GOLDEN = Path(__file__).parent / "data" / "abagen_golden"
NORMS = ["srs", "rs", "sig", "scaled_sig", "scaled_sig_qnt", "mixed_sig", "zscore", "center",
         "minmax"]
TOL = dict(rtol=0, atol=1e-6, equal_nan=True)


def load(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / f"{name}.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def norm_gold():
    return load("normalize")


@pytest.mark.parametrize("method", NORMS)
def test_gene_normalisation_matches_abagen(norm_gold, method):
    g = norm_gold
    np.testing.assert_allclose(normalize(g["x"], method, axis=0), g[f"gene_{method}"], **TOL)


@pytest.mark.parametrize("method", NORMS)
def test_sample_normalisation_matches_abagen(norm_gold, method):
    g = norm_gold
    np.testing.assert_allclose(normalize(g["x"], method, axis=1), g[f"sample_{method}"], **TOL)


@pytest.mark.parametrize("method", NORMS)
def test_per_class_normalisation_matches_abagen(norm_gold, method):
    g = norm_gold
    got = normalize(g["x"], method, axis=0, groups=g["classes"])
    np.testing.assert_allclose(got, g[f"group_{method}"], **TOL)


def test_batch_correction_matches_abagen(norm_gold):
    g = norm_gold
    blocks = [g[f"batch_in_{k}"] for k in range(3)]
    got = batch_correct(blocks)
    for k in range(3):
        rows = ~np.all(np.isnan(blocks[k]), axis=1)
        np.testing.assert_allclose(got[k][rows], g[f"batch_out_{k}"], **TOL)
        assert np.isnan(got[k][~rows]).all()


def _probe_inputs(g):
    expr = [g[f"expr_{d}"] for d in range(3)]
    sids = [g[f"sid_{d}"] for d in range(3)]
    probes = pd.DataFrame({"probe_id": g["probe_id"], "gene_symbol": g["gene_symbol"]})
    return expr, sids, probes


@pytest.fixture(scope="module", params=["cont", "ties"])
def probe_gold(request):
    return load(f"probes_{request.param}")


@pytest.mark.parametrize("threshold", [0.0, 0.25, 0.5, 1.0])
def test_intensity_filter_matches_abagen(probe_gold, threshold):
    g = probe_gold
    res = intensity_filter([g[f"pacall_{d}"] for d in range(3)], threshold)
    np.testing.assert_array_equal(res.keep, g[f"ibf_{threshold}"])


CASES = [("diff_stability", "aggregate"), ("average", "aggregate")] + [
    (m, mode)
    for m in ("max_intensity", "max_variance", "pc_loading", "corr_intensity", "corr_variance")
    for mode in ("aggregate", "independent", "common")
]


@pytest.mark.parametrize(("method", "mode"), CASES)
def test_probe_selection_matches_abagen(probe_gold, method, mode):
    g = probe_gold
    expr, sids, probes = _probe_inputs(g)
    out, sel = collapse_probes(expr, sids, probes, method, mode)
    for d in range(3):
        want_genes = g[f"{method}_{mode}_{d}_genes"]
        np.testing.assert_array_equal(sel.genes, want_genes)
        np.testing.assert_allclose(out[d], g[f"{method}_{mode}_{d}"], **TOL)


@pytest.fixture(scope="module")
def stab_gold():
    return load("stability")


@pytest.mark.parametrize("rank", [True, False])
@pytest.mark.parametrize(("pct", "thr"), [(True, 0.9), (True, 0.5), (False, 0.2)])
def test_gene_stability_matches_abagen(stab_gold, rank, pct, thr):
    g = stab_gold
    regions = [g[f"regions_{d}"] for d in range(4)]
    keep, stab = keep_stable_genes(regions, threshold=thr, percentile=pct, rank=rank)
    key = f"{int(rank)}_{int(pct)}_{thr}"
    np.testing.assert_allclose(stab, g[f"stab_{key}"], **TOL)
    np.testing.assert_array_equal(keep, g[f"keep_{key}"])


@pytest.fixture(scope="module")
def match_gold():
    return load("matching")


@pytest.mark.parametrize("use_info", [False, True])
@pytest.mark.parametrize("tol", [0, 1, 2, 3])
def test_volume_matching_matches_abagen(match_gold, use_info, tol):
    g = match_gold
    info = None
    if use_info:
        info = pd.DataFrame({"id": g["info_id"], "hemisphere": g["info_hemi"],
                             "structure": g["info_struct"]})
    atlas = VolumeAtlas(g["atlas"], g["affine"], info)
    got = atlas.label_samples(g["xyz"], tolerance=tol, hemisphere=g["hemi"],
                              structure=g["struct"])
    np.testing.assert_array_equal(got, g[f"labels_{int(use_info)}_{tol}"])


@pytest.fixture(scope="module")
def agg_gold():
    return load("aggregate")


@pytest.mark.parametrize("region_agg", ["donors", "samples"])
@pytest.mark.parametrize("metric", ["mean", "median"])
def test_aggregation_matches_abagen(agg_gold, region_agg, metric):
    g = agg_gold
    xs = [g[f"x_{d}"] for d in range(3)]
    labs = [g[f"lab_{d}"] for d in range(3)]
    res = aggregate_samples(xs, labs, g["all_labels"], region_agg, metric)
    np.testing.assert_array_equal(res.labels, g[f"agg_{region_agg}_{metric}_index"])
    np.testing.assert_array_equal(np.flatnonzero(res.keep_genes),
                                  g[f"agg_{region_agg}_{metric}_genes"])
    np.testing.assert_allclose(res.values, g[f"agg_{region_agg}_{metric}"], **TOL)


def test_return_donors_matches_abagen(agg_gold):
    g = agg_gold
    xs = [g[f"x_{d}"] for d in range(3)]
    labs = [g[f"lab_{d}"] for d in range(3)]
    res = aggregate_samples(xs, labs, g["all_labels"], return_donors=True)
    for d in range(3):
        np.testing.assert_allclose(res.values[d], g[f"donor_{d}"], **TOL)


def test_toy_differential_stability_matches_abagen():
    g = load("toy_ds")
    probes = pd.DataFrame({"probe_id": [1000, 2000, 3000, 4000, 5000, 6000],
                           "gene_symbol": list("aaabbc")})
    out, sel = collapse_probes([g["e0"], g["e1"]], [np.array([0, 0, 1, 2]), np.array([0, 1, 2])],
                               probes)
    chosen = probes["probe_id"].to_numpy()[sel.rows[0]]
    np.testing.assert_array_equal(chosen, [1000, 5000, 6000])
    np.testing.assert_array_equal(chosen, g["chosen"])
    np.testing.assert_allclose(out[0], g["out0"], **TOL)
    np.testing.assert_allclose(out[1], g["out1"], **TOL)
