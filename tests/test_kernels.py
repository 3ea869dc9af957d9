"""Numba grouped kernels against a pandas groupby oracle (NaN skipped, label -1 dropped)."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest

from atlas_engine.errors import ConfigError
from atlas_engine.kernels import (
    divide_counts,
    group_mean_probe,
    group_minmax,
    group_moments,
    group_sum_count,
    rows_by_group,
)


def oracle(values: np.ndarray, labels: np.ndarray, n_groups: int, axis: int) -> dict:
    """pandas groupby over the grouped axis; rows of the result = groups, reindexed to all."""
    v = values.astype(np.float64)
    frame = pd.DataFrame(v.T if axis == 1 else v)
    keep = labels >= 0
    g = frame[keep].groupby(labels[keep])
    idx = range(n_groups)
    res = {
        "sum": g.sum(min_count=1).reindex(idx),
        "count": g.count().reindex(idx).fillna(0),
        "var": g.var(ddof=1).reindex(idx),
        "mean": g.mean().reindex(idx),
        "min": g.min().reindex(idx),
        "max": g.max().reindex(idx),
    }
    out = {k: r.to_numpy(dtype=np.float64) for k, r in res.items()}
    if axis == 1:
        out = {k: r.T for k, r in out.items()}
    return out


def make_case(rng: np.random.Generator, shape: tuple[int, int], n_groups: int, axis: int,
              dtype: type) -> tuple[np.ndarray, np.ndarray]:
    values = rng.normal(8.0, 2.0, shape).astype(dtype)
    values[rng.random(shape) < 0.15] = np.nan
    values[0, :] = np.nan  # an all-NaN row
    labels = rng.integers(-1, n_groups, shape[axis])
    return values, labels


def _seed(*parts: object) -> int:
    """A seed fixed across processes (``hash()`` of a string changes with every process)."""
    return zlib.crc32(repr(parts).encode())


CASES = [((31, 47), 6), ((1, 1), 2), ((5, 1), 3), ((1, 9), 4), ((40, 300), 25), ((3, 0), 2)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize(("shape", "n_groups"), CASES)
def test_kernels_match_pandas(shape, n_groups, axis, dtype, parallel):
    rng = np.random.default_rng(_seed(shape, n_groups, axis))
    values, labels = make_case(rng, shape, n_groups, axis, dtype)
    n_groups += 1  # always leave one group that no label points at (an empty group)
    exp = oracle(values, labels, n_groups, axis)

    sums, counts = group_sum_count(values, labels, n_groups, axis=axis, parallel=parallel)
    assert sums.dtype == np.float64 and counts.dtype == np.int64
    np.testing.assert_array_equal(counts, exp["count"])
    np.testing.assert_allclose(np.where(counts > 0, sums, np.nan), exp["sum"], rtol=1e-10)
    assert np.all(sums[counts == 0] == 0)

    c2, s2, m2 = group_moments(values, labels, n_groups, axis=axis, parallel=parallel)
    np.testing.assert_array_equal(c2, exp["count"])
    np.testing.assert_allclose(np.where(c2 > 0, s2, np.nan), exp["sum"], rtol=1e-10)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(c2 > 1, m2 / (c2 - 1), np.nan)
    np.testing.assert_allclose(var, exp["var"], rtol=1e-9, atol=1e-12)

    lo, hi = group_minmax(values, labels, n_groups, axis=axis, parallel=parallel)
    np.testing.assert_array_equal(lo, exp["min"])
    np.testing.assert_array_equal(hi, exp["max"])


def test_variance_is_stable_with_a_large_offset():
    # naive sum-of-squares loses everything here: mean 1e8, spread 1e-2
    rng = np.random.default_rng(3)
    x = 1e8 + rng.normal(0, 1e-2, (4, 500))
    labels = rng.integers(0, 3, 500)
    counts, sums, m2 = group_moments(x, labels, 3, axis=1)
    exp = np.stack([np.var(x[:, labels == g], axis=1, ddof=1) for g in range(3)], axis=1)
    np.testing.assert_allclose(m2 / (counts - 1), exp, rtol=1e-5)
    # the textbook one-pass formula is useless at this offset
    sq = np.stack([(x[:, labels == g] ** 2).sum(axis=1) for g in range(3)], axis=1)
    naive = (sq - sums**2 / counts) / (counts - 1)
    assert not np.allclose(naive, exp, rtol=1e-2)


def test_infinities_are_values_not_missing():
    x = np.array([[np.inf, 1.0, -np.inf, np.nan]])
    labels = np.array([0, 0, 1, 1])
    lo, hi = group_minmax(x, labels, 3, axis=1)
    np.testing.assert_array_equal(lo, [[1.0, -np.inf, np.nan]])
    np.testing.assert_array_equal(hi, [[np.inf, -np.inf, np.nan]])


def test_integer_values_are_cast():
    x = np.arange(12).reshape(3, 4)
    sums, counts = group_sum_count(x, np.array([0, 1, 0, 1]), 2, axis=1)
    np.testing.assert_array_equal(sums, [[2, 4], [10, 12], [18, 20]])
    np.testing.assert_array_equal(counts, 2)


def test_fortran_order_input():
    rng = np.random.default_rng(5)
    x = np.asfortranarray(rng.normal(size=(20, 30)).astype(np.float32))
    labels = rng.integers(0, 4, 30)
    sums, _ = group_sum_count(x, labels, 4, axis=1)
    exp = oracle(np.ascontiguousarray(x), labels, 4, 1)["sum"]
    np.testing.assert_allclose(sums, exp, rtol=1e-6)


@pytest.mark.parametrize("axis", [0, 1])
def test_label_out_of_range_raises(axis):
    x = np.zeros((4, 4), np.float32)
    with pytest.raises(ConfigError, match="out of range"):
        group_sum_count(x, np.array([0, 1, 5, -1]), 3, axis=axis)


def test_bad_shapes_raise():
    with pytest.raises(ConfigError, match="1-D with 4 entries"):
        group_sum_count(np.zeros((3, 4)), np.zeros(3, np.int64), 2, axis=1)
    with pytest.raises(ConfigError, match="2-D"):
        group_sum_count(np.zeros(4), np.zeros(4, np.int64), 2, axis=1)
    with pytest.raises(ConfigError, match="integers"):
        group_sum_count(np.zeros((3, 4)), np.zeros(4), 2, axis=1)


def test_rows_by_group_lists_rows_in_order():
    order, indptr = rows_by_group(np.array([2, -1, 0, 2, 0]), 4)
    np.testing.assert_array_equal(indptr, [0, 2, 2, 4, 4])
    np.testing.assert_array_equal(order, [2, 4, 0, 3])


def test_kernels_in_threads_agree():
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(11)
    blocks = [rng.normal(size=(200, 300)).astype(np.float32) for _ in range(8)]
    labels = rng.integers(-1, 10, 300)
    serial = [group_sum_count(b, labels, 10, axis=1) for b in blocks]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda b: group_sum_count(b, labels, 10, axis=1), blocks))
    for (s1, c1), (s2, c2) in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(s1, s2)
        np.testing.assert_array_equal(c1, c2)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("parallel", [False, True])
def test_sum_count_fast_path_and_nan_rows(axis, parallel):
    """Clean rows (no NaN: counts are the group sizes) next to rows with NaN, +inf and both
    infinities in one group; sizes that are not multiples of the kernels' row blocks."""
    rng = np.random.default_rng(5)
    values = rng.normal(3.0, 1.0, (37, 29))
    values[3, 4] = np.nan
    values[10, :] = np.nan
    values[20, 7] = np.inf
    values[30, 1], values[30, 2] = np.inf, -np.inf
    values[36, 28] = np.nan
    labels = rng.integers(-1, 5, values.shape[axis])
    labels[:3] = [0, 0, 1]  # inf and -inf (row 30 / probes 1, 2) share group 0 on axis 1
    n_groups = 6
    values = values.astype(np.float32)
    exp = oracle(values, labels, n_groups, axis)
    sums, counts = group_sum_count(values, labels, n_groups, axis=axis, parallel=parallel)
    np.testing.assert_array_equal(counts, exp["count"])
    got = np.where(counts > 0, sums, np.nan)
    np.testing.assert_allclose(got, exp["sum"], rtol=1e-10)
    assert np.isnan(got).any() and np.isinf(got).any()
    assert np.all(sums[counts == 0] == 0)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("ddof", [0, 1])
def test_divide_counts_matches_numpy(parallel, ddof):
    rng = np.random.default_rng(3)
    num = rng.normal(size=(7, 300))
    count = rng.integers(0, 4, (7, 300))
    with np.errstate(divide="ignore", invalid="ignore"):
        exp = np.where(count - ddof > 0, num / (count - ddof), np.nan)
    np.testing.assert_array_equal(divide_counts(num, count, ddof, parallel=parallel), exp)
    # non-contiguous and int32 inputs take the numpy route, same answer
    got = divide_counts(num.T, count.T.astype(np.int32), ddof, parallel=parallel)
    np.testing.assert_array_equal(got, exp.T)
    with pytest.raises(ConfigError):
        divide_counts(num, count[:, :5])


def test_divide_counts_in_place():
    rng = np.random.default_rng(8)
    num = rng.normal(size=(5, 64))
    count = rng.integers(0, 3, (5, 64))
    with np.errstate(divide="ignore", invalid="ignore"):
        exp = np.where(count > 0, num / count, np.nan)
    got = divide_counts(num, count, 0, out=num)
    assert got is num
    np.testing.assert_array_equal(num, exp)
    with pytest.raises(ConfigError):
        divide_counts(num, count, out=np.empty((5, 64), np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("out_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize(("shape", "n_groups"), CASES)
def test_group_mean_probe_matches_pandas_and_sum_count(shape, n_groups, dtype, out_dtype,
                                                       parallel):
    rng = np.random.default_rng(_seed(shape, n_groups, "mean"))
    values, labels = make_case(rng, shape, n_groups, 0, dtype)
    if values.size:
        values[rng.random(shape) < 0.02] = np.inf     # infinities are values
    n_groups += 1  # an empty group
    out = np.empty((n_groups, shape[1]), out_dtype)
    got = group_mean_probe(values, labels, n_groups, parallel=parallel, out=out)
    assert got is out
    exp = oracle(values, labels, n_groups, 0)["mean"]
    np.testing.assert_allclose(got, exp.astype(out_dtype), rtol=1e-6 if out_dtype == np.float32
                               else 1e-12, equal_nan=True)
    # bit for bit what the two-step path (float64 sums and counts, divide, cast) gives
    sums, counts = group_sum_count(values, labels, n_groups, axis=0)
    two_step = divide_counts(sums, counts).astype(out_dtype)
    assert np.array_equal(got.view(np.uint8), two_step.view(np.uint8))


def test_group_mean_probe_default_out_and_bad_out():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    got = group_mean_probe(x, np.array([1, 0, 1, -1]), 2)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [[3, 4, 5], [3, 4, 5]])
    with pytest.raises(ConfigError, match="out must be"):
        group_mean_probe(x, np.array([1, 0, 1, -1]), 2, out=np.empty((2, 3), np.int64))
    with pytest.raises(ConfigError, match="out must be"):
        group_mean_probe(x, np.array([1, 0, 1, -1]), 2, out=np.empty((3, 2)))


def test_compensated_group_mean_is_pandas_groupby_mean():
    from atlas_engine.kernels.compensated import group_mean_compensated

    rng = np.random.default_rng(5)
    x = rng.normal(5, 3, (40, 300)) * 10.0 ** rng.integers(-3, 4, (40, 1))
    x[rng.random(x.shape) < 0.05] = np.nan
    codes = rng.integers(0, 17, 300)
    want = pd.DataFrame(x).T.groupby(codes).mean().T.to_numpy()
    got = group_mean_compensated(x, codes, 17)
    np.testing.assert_array_equal(got, want)  # bit for bit, as abagen's pandas computes it
    with pytest.raises(ValueError):
        group_mean_compensated(x, codes, 3)


def test_take_columns_matches_numpy_fancy_indexing():
    from atlas_engine.kernels.blockgroups import take_columns

    rng = np.random.default_rng(11)
    block = rng.normal(size=(7, 9))
    src = np.array([3, 0, 3, 8])             # repeats allowed
    dst = np.array([1, 4, 0, 2])
    out = np.full((7, 5), np.nan)
    take_columns(block, src, dst, out)
    want = np.full((7, 5), np.nan)
    want[:, dst] = block[:, src]
    np.testing.assert_array_equal(out, want)
    with pytest.raises(ValueError):
        take_columns(block, src, dst[:3], out)
