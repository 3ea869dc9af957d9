"""Grouped means over selected rows/columns of a block: plain and Kahan-compensated (pandas')."""

from __future__ import annotations

import numpy as np
import pandas as pd

from atlas_engine.kernels.blockgroups import finish_means, group_mean_select, group_sum_select


def _saturated(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Rows × samples with many values saturated at 14.9 (as a clipped microarray probe), so
    that equal means in pandas depend on how the sums are rounded."""
    rng = np.random.default_rng(seed)
    x = np.where(rng.random((40, 300)) < 0.7, 14.9, rng.normal(12, 1, (40, 300)))
    x[rng.random(x.shape) < 0.02] = np.nan
    codes = rng.integers(0, 25, 300)
    return x, codes


def _pandas_means(x: np.ndarray, codes: np.ndarray, n: int) -> np.ndarray:
    df = pd.DataFrame(x.T)
    return df.groupby(codes).mean().reindex(range(n)).to_numpy().T


def test_compensated_means_equal_pandas_bit_for_bit():
    x, codes = _saturated()
    rows = np.arange(x.shape[0])
    cols = np.arange(x.shape[1])
    want = _pandas_means(x, codes, 25)
    got = group_mean_select(x, rows, cols, codes, 25, compensated=True)
    np.testing.assert_array_equal(got, want)
    # the plain sums round differently somewhere (what the compensation is for)
    plain = group_mean_select(x, rows, cols, codes, 25)
    assert not np.array_equal(plain, want)
    np.testing.assert_allclose(plain, want, rtol=1e-14)


def test_compensated_sums_carried_across_column_chunks():
    x, codes = _saturated(11)
    rows = np.array([3, 0, 17, 39])
    want = _pandas_means(x[rows], codes, 25)
    cc = 64
    chunked = np.stack([np.pad(x[:, c:c + cc], ((0, 0), (0, cc - x[:, c:c + cc].shape[1])))
                        for c in range(0, x.shape[1], cc)])
    sums = np.zeros((rows.size, 25))
    counts = np.zeros_like(sums)
    comp = np.zeros_like(sums)
    for j in range(chunked.shape[0]):
        cols = np.arange(j * cc, min(x.shape[1], (j + 1) * cc))
        group_sum_select(chunked[j], rows, cols - j * cc, codes[cols], sums, counts, comp)
    np.testing.assert_array_equal(finish_means(sums, counts), want)
