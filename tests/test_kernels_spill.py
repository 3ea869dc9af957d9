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


def _runs(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run-length form of a record-per-cell array."""
    if cells.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.uint32)
    edge = np.flatnonzero(np.diff(cells)) + 1
    starts = np.concatenate([[0], edge])
    return cells[starts], np.diff(np.concatenate([starts, [cells.size]])).astype(np.uint32)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 13, 40, 97, 500, 1001])
def test_band_order_stats_match_r_rule(n: int) -> None:
    rng = np.random.default_rng(n)
    # log2(count × scale + 1) with scale 1: ties included (a few distinct counts)
    counts = np.where(rng.random((n, 9)) < 0.55, rng.integers(1, 5, (n, 9)), 0).astype(float)
    counts[:, 0] = 0                          # a gene with no stored value
    counts[:, 1] = rng.random(n) * 50 + 0.1   # every cell stored
    counts[:, 2] = np.where(rng.random(n) < 0.9, 1.0, 0.0)  # one value, many ties
    counts[:, 3] = np.sort(rng.random(n))     # stored in ascending order
    counts[:, 4] = -np.sort(-rng.random(n))   # and descending
    rows, cols = np.nonzero(counts)           # cell-major, as a block writes them
    cell, length = _runs(rows)
    tm, md = band_order_stats(cols.astype(np.uint16), counts[rows, cols], cell, length,
                              np.zeros(n, np.int64), np.ones(n), np.array([n]), 9)
    logv = np.log2(counts + 1)
    np.testing.assert_allclose(tm[0], r_trimmed_mean(logv, 0.25, axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(md[0], np.median(logv, axis=0), rtol=0, atol=1e-12)


def test_band_order_stats_groups_pieces_and_empty_group() -> None:
    rng = np.random.default_rng(1)
    n_cells = np.array([6, 0, 11, 30])
    labels = np.repeat([0, 2, 3], [6, 11, 30])
    rng.shuffle(labels)                        # groups interleaved over the cells
    x = np.where(rng.random((47, 4)) < 0.6, rng.integers(1, 30, (47, 4)), 0)
    tot = x.sum(1) + rng.integers(0, 50, 47)   # other genes count too
    tot[5] = 0                                 # an empty cell: value 0
    x[5] = 0
    logv = np.log2(np.where(tot[:, None] > 0, x / np.maximum(tot, 1)[:, None] * 1e6, 0) + 1)
    rows, cols = np.nonzero(x)
    # two pieces (row blocks 0-19 and 20-46), each counting its cells from its first
    cut = int(np.searchsorted(rows, 20))
    c0, l0 = _runs(rows[:cut])
    c1, l1 = _runs(rows[cut:] - 20)
    tm, md = band_order_stats(cols, x[rows, cols], np.concatenate([c0, c1]),
                              np.concatenate([l0, l1]), labels, cpm_scale(tot), n_cells, 4,
                              pieces=(np.array([0, cut, rows.size]),
                                      np.array([0, c0.size, c0.size + c1.size]),
                                      np.array([0, 20])))
    assert np.isnan(tm[1]).all() and np.isnan(md[1]).all()
    for g in (0, 2, 3):
        np.testing.assert_allclose(tm[g], r_trimmed_mean(logv[labels == g], 0.25, axis=0),
                                   atol=1e-12)
        np.testing.assert_allclose(md[g], np.median(logv[labels == g], axis=0), atol=1e-12)


def test_band_order_stats_refuse_bad_input() -> None:
    one = np.ones(1)
    lab = np.zeros(1, np.int64)
    ok = (np.array([1]), one, np.array([0]), np.array([1], np.uint32))
    with pytest.raises(ValueError, match="trim"):
        band_order_stats(*ok, lab, one, np.array([3]), 2, trim=0.5)
    with pytest.raises(ValueError, match="gene outside"):
        band_order_stats(np.array([2]), *ok[1:], lab, one, np.array([3]), 2)
    with pytest.raises(ValueError, match="cell outside"):
        band_order_stats(*ok[:2], np.array([1]), ok[3], lab, one, np.array([3]), 2)
    with pytest.raises(ValueError, match="add up"):
        band_order_stats(*ok[:3], np.array([2], np.uint32), lab, one, np.array([3]), 2)
    with pytest.raises(ValueError, match="no group"):
        band_order_stats(*ok, np.array([-1]), one, np.array([3]), 2)
    with pytest.raises(ValueError, match="pieces"):
        band_order_stats(*ok, lab, one, np.array([3]), 2,
                         pieces=(np.array([0]), np.array([0, 1]), np.array([0])))


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
    rec = csr_band_records(m.indptr, m.indices, m.data, labels, colpos, width, n_bands)
    np.testing.assert_array_equal(rec.totals, dense.sum(1))
    assert (rec.local.dtype, rec.run_cell.dtype, rec.count.dtype) == (np.uint16,) * 3
    for b in range(n_bands):  # rows in order, each row's records of the band one run
        want_cells, want_local, want_x = [], [], []
        for r in range(40):
            if labels[r] < 0:
                continue
            cs = [c for c in selected[b * width:(b + 1) * width] if dense[r, c]]
            want_cells += [r] * len(cs)
            want_local += [int(colpos[c]) % width for c in cs]
            want_x += [int(dense[r, c]) for c in cs]
        lo, hi = rec.rec_offsets[b], rec.rec_offsets[b + 1]
        assert rec.local[lo:hi].tolist() == want_local
        assert rec.count[lo:hi].tolist() == want_x
        q0, q1 = rec.run_offsets[b], rec.run_offsets[b + 1]
        cell, length = _runs(np.asarray(want_cells))
        assert rec.run_cell[q0:q1].tolist() == cell.tolist()
        assert rec.run_len[q0:q1].tolist() == length.tolist()


def test_csr_band_records_unsorted_rows() -> None:
    # a row's columns out of order: its records of one band still form one run
    indptr = np.array([0, 4])
    indices = np.array([5, 0, 4, 1])
    data = np.array([1, 2, 3, 4])
    rec = csr_band_records(indptr, indices, data, np.array([0]), np.arange(6), 3, 2)
    assert rec.local.tolist() == [0, 1, 2, 1] and rec.count.tolist() == [2, 4, 1, 3]
    assert rec.run_cell.tolist() == [0, 0] and rec.run_len.tolist() == [2, 2]


def test_record_dtypes_widen_when_needed() -> None:
    small = np.array([0, 7, 65_535], np.int32)
    assert record_dtypes(2**16, 2**16, small) == (np.uint16, np.uint16, np.uint16)
    assert record_dtypes(2**16 + 1, 2**16 + 1, small)[:2] == (np.uint32, np.uint32)
    assert record_dtypes(10, 10, np.array([65_536], np.int32))[2] == np.int32
    assert record_dtypes(10, 10, np.array([-1], np.int64))[2] == np.int64
    assert record_dtypes(10, 10, np.array([0.5], np.float32))[2] == np.float32


@pytest.mark.parametrize("width", [1, 4, 7, 23, 30])
def test_sorted_rows_path_gives_the_same_records(width: int) -> None:
    rng = np.random.default_rng(width)
    dense = rng.poisson(0.7, (60, 23)).astype(np.int32)
    dense[5] = 0
    m = sparse.csr_matrix(dense)
    labels = rng.integers(-1, 4, 60)
    n_bands = -(-23 // width)
    colpos = np.arange(23)
    fast = csr_band_records(m.indptr, m.indices, m.data, labels, colpos, width, n_bands,
                            sorted_rows=True)
    slow = csr_band_records(m.indptr, m.indices, m.data, labels, colpos, width, n_bands)
    for field in ("rec_offsets", "run_offsets", "local", "count", "run_cell", "run_len"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field), err_msg=field)
    # totals of the cells in a group (the only ones records refer to)
    np.testing.assert_array_equal(fast.totals[labels >= 0], slow.totals[labels >= 0])
