"""The store pipeline's block reads on any chunk layout: chunked-layout kernels against numpy,
striped cache matrices, and get_expression_data on a store with small chunks (many chunk
rows and columns) against abagen's golden output, cold and from the cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _golden import load_golden

from atlas_engine.convert.donor import convert_microarray
from atlas_engine.kernels.blockgroups import group_mean_select, take_rows, weighted_true_count
from atlas_engine.pipeline.cache import StripedMatrix
from atlas_engine.pipeline.expression import get_expression_data

GOLDEN = Path(__file__).parent / "data" / "abagen_golden"
PARAMS = json.loads((GOLDEN / "e2e_params.json").read_text())


def _chunked(x: np.ndarray, cc: int) -> np.ndarray:
    """``x`` in the layout read_chunk_row gives: [column chunk, row, column in chunk]."""
    n_cc = -(-x.shape[1] // cc)
    out = np.full((n_cc, x.shape[0], cc), -7.0, dtype=x.dtype)  # past the edge: junk
    for j in range(n_cc):
        part = x[:, j * cc:(j + 1) * cc]
        out[j, :, :part.shape[1]] = part
    return out


def test_chunked_kernels_match_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 23))
    x[rng.random(x.shape) < 0.1] = np.nan
    blk = _chunked(x, 10)
    rows = np.array([5, 0, 39, 5, 17])
    cols = np.array([22, 0, 3, 11, 11, 20, 9])                # repeats, any order
    codes = np.array([0, 2, 1, 0, 2, 2, 1])
    want = np.full((len(rows), 3), np.nan)
    for i, r in enumerate(rows):
        for g in range(3):
            v = x[r, cols[codes == g]]
            if (~np.isnan(v)).any():
                want[i, g] = np.nanmean(v)
    np.testing.assert_allclose(group_mean_select(blk, rows, cols, codes, 3), want,
                               rtol=1e-14, equal_nan=True)
    np.testing.assert_allclose(group_mean_select(x, rows, cols, codes, 3), want, rtol=1e-14,
                               equal_nan=True)
    flags = rng.random((40, 23)) < 0.4
    for weight in (rng.integers(0, 3, 23).astype(float), rng.random(23)):
        want_w = flags[rows].astype(float) @ weight
        for b in (flags, _chunked(flags, 10)):
            np.testing.assert_allclose(weighted_true_count(b, rows, weight), want_w,
                                       rtol=1e-14)
    out = np.zeros((7, 23))
    take_rows(blk, rows, np.array([6, 1, 2, 3, 4]), out)
    np.testing.assert_array_equal(out[[6, 1, 2, 3, 4]], x[rows])
    assert not out[[0, 5]].any()


def test_striped_matrix_reads_rows(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 17))
    for j, (c0, c1) in enumerate([(0, 8), (8, 16), (16, 17)]):
        np.save(tmp_path / f"m_{j}.npy", x[:, c0:c1])
    m = StripedMatrix.open(tmp_path, "m")
    assert m.shape == (30, 17) and len(m) == 30
    np.testing.assert_array_equal(np.asarray(m), x)
    np.testing.assert_array_equal(m[3:11], x[3:11])
    np.testing.assert_array_equal(m[4, [16, 0, 9]], x[4, [16, 0, 9]])
    np.testing.assert_array_equal(m[:, [2, 15]], x[:, [2, 15]])
    np.testing.assert_array_equal(m.read_rows(28, 40), x[28:])
    cols = np.array([16, 0, 9, 9, 3, 8])      # across stripes, out of order, repeated
    out = np.full((8, len(cols)), np.nan)
    np.testing.assert_array_equal(m.gather_rows(5, 13, cols, out), x[5:13][:, cols])
    with pytest.raises(ValueError, match="shape"):
        m.gather_rows(5, 14, cols, out)
    stripe = tmp_path / "m_1.npy"                  # a stripe cut short: refused, not padded
    stripe.write_bytes(stripe.read_bytes()[:-100])
    with pytest.raises(OSError, match="m_1.npy: truncated"):
        m.gather_rows(20, 30, cols, np.empty((10, len(cols))))
    with pytest.raises(OSError, match="m_1.npy: truncated"):
        m.read_rows(20, 30)
    with pytest.raises(KeyError):
        StripedMatrix.open(tmp_path, "other")


@pytest.fixture(scope="module")
def small_chunks(e2e_source, tmp_path_factory):
    root = tmp_path_factory.mktemp("chunks")
    convert_microarray(e2e_source["raw"], root / "store.zarr", dtype="float64", probe_chunk=96,
                       sample_chunk=7)
    return root / "store.zarr"


ATLAS = str(GOLDEN / "e2e_atlas.nii.gz")
INFO = str(GOLDEN / "e2e_atlas_info.csv")


@pytest.fixture(scope="module")
def golden():
    return load_golden("e2e")


@pytest.mark.parametrize("case", ["defaults", "mirror", "max_variance", "norm_structures",
                                  "centroids", "zscore_minmax"])
def test_small_chunks_match_abagen_cold_and_cached(small_chunks, golden, case):
    kw = PARAMS["cases"][case]
    for computed in (True, False):      # the second call reads the cached sample norm
        if computed:
            shutil.rmtree(small_chunks / "cache", ignore_errors=True)
        res = get_expression_data(str(small_chunks), ATLAS, INFO, corrected_mni=False,
                                  reannotated=False, **kw)
        assert res.computed["sample_norm"] is computed
        assert list(res.expression.index) == golden[f"{case}|labels"].tolist()
        assert list(res.expression.columns) == golden[f"{case}|genes"].tolist()
        np.testing.assert_allclose(res.expression.to_numpy(), golden[f"{case}|values"],
                                   rtol=0, atol=1e-6, equal_nan=True)
