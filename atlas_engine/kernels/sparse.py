"""Numba grouped kernels on CSR row blocks (cells × genes counts); label < 0 = no group.

Pure compute: arrays in, arrays out. A block is given by its CSR arrays and a gene band
``[col0, col1)``; entries outside the band are skipped, so one block read from the store serves
several gene bands without a copy. Per-cell totals (library sizes over *all* genes) come in
separately, because a band alone does not know them.

* :func:`csr_band_pointers` - for rows with sorted column indices (as written by
  ``convert``), where each row's entries of every gene band start: the bands share one read
  of the rows without a copy.
* :func:`csr_split_bands` - one pass that splits CSR rows into gene bands (and sums each
  row), for rows whose indices are not sorted.
* :func:`csr_group_stats` - per group: cells; per group and gene: stored (non-zero) counts,
  sum, sum of squared deviations about the block's group mean (zeros included), and the sums of
  CPM and of log2(CPM + 1) (CPM = count / cell total × 1e6).

Order statistics (trimmed means, medians) are in :mod:`.spill`.
"""

from __future__ import annotations

import math

import numpy as np

from ._cache import cached_njit
from .lookup import lower_bound


@cached_njit(nogil=True)
def _group_stats(starts, ends, indices, data, labels, totals, n_groups, col0, col1, want_m2,
                 want_cpm):
    width = col1 - col0
    cells = np.zeros(n_groups, np.int64)
    nnz = np.zeros((n_groups, width), np.int32)
    s = np.zeros((n_groups, width), np.float64)
    m2 = np.zeros((n_groups, width) if want_m2 else (0, 0), np.float64)
    cpm = np.zeros((n_groups, width) if want_cpm else (0, 0), np.float64)
    lcpm = np.zeros((n_groups, width) if want_cpm else (0, 0), np.float64)
    # rows in group order (cell order kept within a group, so every sum adds the same values
    # in the same order): consecutive rows update the same accumulator rows, still in cache
    order = np.argsort(labels, kind="mergesort")
    for rr in range(order.size):
        r = order[rr]
        g = labels[r]
        if g < 0:
            continue
        cells[g] += 1
        scale = 1e6 / totals[r] if totals[r] > 0 else 0.0
        for p in range(starts[r], ends[r]):
            j = indices[p]
            if j < col0 or j >= col1:
                continue
            jj = j - col0
            x = np.float64(data[p])
            nnz[g, jj] += 1
            s[g, jj] += x
            if want_m2:
                m2[g, jj] += x * x
            if want_cpm:
                c = x * scale
                cpm[g, jj] += c
                lcpm[g, jj] += math.log2(c + 1.0)
    if want_m2:
        # counts are integers: their sums and sums of squares are exact in float64 (below
        # 2**53), so m2 = sum(x^2) - sum(x)^2 / n loses only the final division's rounding
        for g in range(n_groups):
            n = cells[g]
            if n == 0:
                continue
            for jj in range(width):
                v = m2[g, jj] - s[g, jj] * s[g, jj] / n
                m2[g, jj] = v if v > 0.0 else 0.0
    return cells, nnz, s, m2, cpm, lcpm


@cached_njit(nogil=True)
def _split_bands(indptr, indices, data, bounds, out_indptr, out_indices, out_data, totals):
    n_rows = indptr.size - 1
    n_bands = bounds.size - 1
    n_cols = 0
    for p in range(indices.size):
        if indices[p] + 1 > n_cols:
            n_cols = indices[p] + 1
    band_of = np.full(max(n_cols, 1), -1, np.int64)
    for b in range(n_bands):
        for j in range(bounds[b], min(bounds[b + 1], n_cols)):
            band_of[j] = b
    counts = np.zeros(n_bands, np.int64)
    for r in range(n_rows):
        t = 0
        for p in range(indptr[r], indptr[r + 1]):
            t += data[p]
            b = band_of[indices[p]]
            if b >= 0:
                counts[b] += 1
        totals[r] = t
    offs = np.zeros(n_bands + 1, np.int64)
    for b in range(n_bands):
        offs[b + 1] = offs[b] + counts[b]
    fill = offs[:-1].copy()
    for r in range(n_rows):
        for b in range(n_bands):
            out_indptr[b, r] = fill[b] - offs[b]
        for p in range(indptr[r], indptr[r + 1]):
            j = indices[p]
            b = band_of[j]
            if b >= 0:
                out_indices[fill[b]] = j
                out_data[fill[b]] = data[p]
                fill[b] += 1
    for b in range(n_bands):
        out_indptr[b, n_rows] = fill[b] - offs[b]
    return offs


@cached_njit(nogil=True)
def _band_pointers(indptr, indices, data, bounds, out, totals, check, want_totals):
    n_rows = indptr.size - 1
    for r in range(n_rows):
        a = indptr[r]
        b = indptr[r + 1]
        if check:
            prev = -1
            for p in range(a, b):
                j = indices[p]
                if j <= prev:
                    return False
                prev = j
        if want_totals:
            t = 0
            for p in range(a, b):
                t += data[p]
            totals[r] = t
        for k in range(bounds.size):
            # first entry of the row with a column >= bounds[k]
            out[k, r] = lower_bound(indices, a, b, bounds[k])
    return True


def csr_band_pointers(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                      bounds: np.ndarray, *, check: bool = True, totals: bool = True
                      ) -> tuple[np.ndarray, np.ndarray] | None:
    """Where each row's entries of every gene band start, for rows with sorted column indices,
    and each row's total (one pass over the rows).

    Returns ``(ptr, totals)``: ``ptr`` of shape ``(len(bounds), rows)``, row ``r``'s entries
    with columns in ``[bounds[k], bounds[k + 1])`` being ``ptr[k, r]:ptr[k + 1, r]`` (no copy
    of the rows), and the rows' sums (float64; zeros when ``totals`` is False); None when
    ``check`` finds some row's indices not strictly increasing (then split with
    :func:`csr_split_bands`). ``check=False`` is for rows known to be sorted (a store that
    records it): only the binary searches run.
    """
    indptr = np.asarray(indptr, np.int64)
    bounds = np.asarray(bounds, np.int64)
    out = np.empty((bounds.size, indptr.size - 1), np.int64)
    data = np.asarray(data)
    n_rows = indptr.size - 1
    sums = (np.empty if totals else np.zeros)(n_rows, np.float64 if data.dtype.kind == "f"
                                              else np.int64)
    if not _band_pointers(indptr, np.asarray(indices), data, bounds, out, sums, bool(check),
                          bool(totals)):
        return None
    return out, sums.astype(np.float64, copy=False)


@cached_njit(nogil=True)
def _rows_sorted(indptr, indices):
    for r in range(indptr.size - 1):
        for p in range(indptr[r] + 1, indptr[r + 1]):
            if indices[p] <= indices[p - 1]:
                return False
    return True


def rows_sorted(indptr: np.ndarray, indices: np.ndarray) -> bool:
    """True when every CSR row's column indices are strictly increasing."""
    return bool(_rows_sorted(np.asarray(indptr, np.int64), np.asarray(indices)))


@cached_njit(nogil=True)
def _row_totals(indptr, data, out):
    for r in range(indptr.size - 1):
        t = 0
        for p in range(indptr[r], indptr[r + 1]):
            t += data[p]
        out[r] = t


def csr_row_totals(indptr: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Each row's sum (float64; integer-exact below 2**53)."""
    indptr = np.asarray(indptr, np.int64)
    out = np.empty(indptr.size - 1, np.int64)
    _row_totals(indptr, np.asarray(data), out)
    return out.astype(np.float64)


def csr_split_bands(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, bounds: np.ndarray,
) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], np.ndarray]:
    """Split CSR rows into gene bands ``[bounds[b], bounds[b + 1])`` in one pass.

    Returns one ``(indptr, indices, data)`` per band (column indices unchanged; entries outside
    every band dropped) and each row's total over *all* its entries (float64).
    """
    indptr = np.asarray(indptr, np.int64)
    bounds = np.asarray(bounds, np.int64)
    n_rows = indptr.size - 1
    nb = bounds.size - 1
    cap = int(indptr[-1] - indptr[0])
    out_indptr = np.empty((nb, n_rows + 1), np.int64)
    out_indices = np.empty(cap, np.asarray(indices).dtype)
    out_data = np.empty(cap, np.asarray(data).dtype)
    totals = np.empty(n_rows, np.int64)
    offs = _split_bands(indptr, np.asarray(indices), np.asarray(data), bounds, out_indptr,
                        out_indices, out_data, totals)
    parts = [(out_indptr[b], out_indices[offs[b]:offs[b + 1]], out_data[offs[b]:offs[b + 1]])
             for b in range(nb)]
    return parts, totals.astype(np.float64)


def csr_group_stats(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, labels: np.ndarray,
    totals: np.ndarray, n_groups: int, col0: int, col1: int, *, m2: bool = True,
    cpm: bool = True, row_end: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Grouped sums of one CSR row block over the gene band ``[col0, col1)``.

    Parameters
    ----------
    indptr, indices, data : CSR arrays of the block (rows = cells)
    labels : (rows,) int64
        Group of each row; < 0 = in no group.
    totals : (rows,) float64
        Each cell's total count over all genes (for CPM).
    n_groups, col0, col1 : int
    m2, cpm : bool
        Also compute ``m2`` / ``cpm`` and ``lcpm``.
    row_end : (rows,) int64, optional
        With it, ``indptr`` holds each row's first entry (rows values) and ``row_end`` its
        end: the rows' entries in the band only (:func:`csr_band_pointers`).

    Returns
    -------
    dict
        ``cells`` (G,), ``nnz`` (G, W) int32, ``sum`` (G, W), and when asked ``m2`` (sum of
        squared deviations from the group mean of this block, zeros included; computed as
        ``sum(x^2) - sum(x)^2 / n``, exact up to one rounding for integer counts whose sums of
        squares stay below 2**53), ``cpm`` (sum of
        CPM) and ``lcpm`` (sum of log2(CPM + 1)), all float64.
    """
    indptr = np.asarray(indptr, np.int64)
    if row_end is None:
        starts, ends = indptr[:-1], indptr[1:]
    else:
        starts, ends = indptr, np.asarray(row_end, np.int64)
    cells, nnz, s, m2_, c, lc = _group_stats(
        starts, ends, np.asarray(indices), np.asarray(data),
        np.asarray(labels, np.int64), np.asarray(totals, np.float64), int(n_groups), int(col0),
        int(col1), bool(m2), bool(cpm))
    out = {"cells": cells, "nnz": nnz, "sum": s}
    if m2:
        out["m2"] = m2_
    if cpm:
        out["cpm"] = c
        out["lcpm"] = lc
    return out
