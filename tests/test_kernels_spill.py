"""Order-statistic kernels (kernels/spill.py) against numpy and R's ``mean(x, trim)`` rule."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from atlas_engine.kernels.spill import (
    band_order_stats,
    cpm_scale,
    csr_band_records,
    record_dtypes,
)
from atlas_engine.testing.synth_celltypes import r_trimmed_mean


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 13, 40, 97, 500, 1001])
def test_band_order_stats_match_r_rule(n: int) -> None:
    rng = np.random.default_rng(n)
    # ties included: a few distinct values
    vals = np.where(rng.random((n, 9)) < 0.55, rng.integers(1, 5, (n, 9)) * 0.75, 0.0)
    vals[:, 0] = 0.0                      # a gene with no stored value
    vals[:, 1] = rng.random(n) + 0.1      # every cell stored
    vals[:, 2] = np.where(rng.random(n) < 0.9, 1.0, 0.0)  # one value, many ties
    vals[:, 3] = np.sort(rng.random(n))   # stored in ascending order
    vals[:, 4] = -np.sort(-rng.random(n))  # and descending
    rows, cols = np.nonzero(vals)
    order = rng.permutation(rows.size)    # records come in any order
    # the kernel takes log2(count / total * 1e6 + 1): totals of 1e6 give log2(count + 1)
    counts = 2.0 ** vals[rows, cols] - 1
    tm, md = band_order_stats(cols[order].astype(np.uint16), rows[order], counts[order],
                              np.ones(n), np.array([n]), 9)
    logv = np.log2(np.where(vals > 0, 2.0 ** vals - 1, 0) + 1)
    np.testing.assert_allclose(tm[0], r_trimmed_mean(logv, 0.25, axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(md[0], np.median(logv, axis=0), rtol=0, atol=1e-12)


def test_band_order_stats_groups_and_empty_group() -> None:
    rng = np.random.default_rng(1)
    n_cells = np.array([6, 0, 11])
    tm_ref = np.zeros((3, 4))
    md_ref = np.zeros((3, 4))
    slots, cells, values, totals = [], [], [], []
    first = 0
    for g, n in enumerate(n_cells):
        x = np.where(rng.random((n, 4)) < 0.6, rng.integers(1, 30, (n, 4)), 0)
        tot = x.sum(1) + rng.integers(0, 50, n)  # other genes count too
        tot[:1] = 0 if n else tot[:1]           # an empty cell: value 0
        x[:1] = 0
        logv = np.log2(np.where(tot[:, None] > 0, x / np.maximum(tot, 1)[:, None] * 1e6, 0) + 1)
        if n:
            tm_ref[g] = r_trimmed_mean(logv, 0.25, axis=0)
            md_ref[g] = np.median(logv, axis=0)
        r, c = np.nonzero(x)
        slots.append(g * 4 + c)
        cells.append(first + r)
        values.append(x[r, c])
        totals.append(tot.astype(float))
        first += n
    tm, md = band_order_stats(np.concatenate(slots), np.concatenate(cells),
                              np.concatenate(values), cpm_scale(np.concatenate(totals)),
                              n_cells, 4)
    assert np.isnan(tm[1]).all() and np.isnan(md[1]).all()
    np.testing.assert_allclose(tm[[0, 2]], tm_ref[[0, 2]], atol=1e-12)
    np.testing.assert_allclose(md[[0, 2]], md_ref[[0, 2]], atol=1e-12)


def test_band_order_stats_refuse_bad_input() -> None:
    one = np.ones(1)
    with pytest.raises(ValueError, match="trim"):
        band_order_stats(np.zeros(0, np.int32), np.zeros(0, int), np.zeros(0), one,
                         np.array([3]), 2, trim=0.5)
    with pytest.raises(ValueError, match="slot outside"):
        band_order_stats(np.array([2]), np.array([0]), one, one, np.array([3]), 2)
    with pytest.raises(ValueError, match="cell outside"):
        band_order_stats(np.array([1]), np.array([1]), one, one, np.array([3]), 2)
    with pytest.raises(ValueError, match="cell outside"):
        band_order_stats(np.array([1]), np.array([0]), one, one, np.array([3]), 2,
                         pieces=(np.array([0, 1]), np.array([1])))
    with pytest.raises(ValueError, match="pieces"):
        band_order_stats(np.array([1]), np.array([0]), one, one, np.array([3]), 2,
                         pieces=(np.array([0]), np.array([0])))


def test_csr_band_records_match_numpy() -> None:
    rng = np.random.default_rng(2)
    dense = rng.poisson(0.5, (40, 23)).astype(np.int32)
    dense[3] = 0                                     # a cell with no counts
    m = sparse.csr_matrix(dense)
    labels = rng.integers(-1, 3, 40)
    selected = np.array([0, 2, 3, 7, 8, 9, 15, 22])
    colpos = np.full(23, -1)
    colpos[selected] = np.arange(selected.size)
    width, n_bands = 3, 3
    offs, slot, cell, x, totals = csr_band_records(m.indptr, m.indices, m.data, labels, colpos,
                                                   width, n_bands, 3)
    np.testing.assert_array_equal(totals, dense.sum(1))
    assert (slot.dtype, cell.dtype, x.dtype) == (np.uint16, np.uint16, np.uint16)
    assert offs[0] == 0 and offs[-1] == slot.size == cell.size == x.size
    want = {}
    for r, c in zip(*np.nonzero(dense), strict=True):
        if labels[r] >= 0 and colpos[c] >= 0:
            q = colpos[c]
            want.setdefault(q // width, []).append((labels[r] * width + q % width, r,
                                                    dense[r, c]))
    for b in range(n_bands):  # block order kept within a band
        got = list(zip(slot[offs[b]:offs[b + 1]].tolist(), cell[offs[b]:offs[b + 1]].tolist(),
                       x[offs[b]:offs[b + 1]].tolist(), strict=True))
        assert got == [tuple(int(v) for v in w) for w in want.get(b, [])]


def test_record_dtypes_widen_when_needed() -> None:
    small = np.array([0, 7, 65_535], np.int32)
    assert record_dtypes(2**16, 2**16, small) == (np.uint16, np.uint16, np.uint16)
    assert record_dtypes(2**16 + 1, 2**16 + 1, small)[:2] == (np.uint32, np.uint32)
    assert record_dtypes(10, 10, np.array([65_536], np.int32))[2] == np.int32
    assert record_dtypes(10, 10, np.array([-1], np.int64))[2] == np.int64
    assert record_dtypes(10, 10, np.array([0.5], np.float32))[2] == np.float32
