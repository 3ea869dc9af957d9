"""Numba kernel: per-group means of the columns of a rows × samples matrix, skipping NaN.

The region step of the pipeline: genes × samples values and each sample's region code give
genes × regions means (pandas ``groupby(...).mean()`` semantics: NaN skipped, a group whose
values are all NaN gives NaN). One pass over the matrix.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(nogil=True, cache=True, error_model="numpy")
def _group_mean_rows(x: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    n_rows, n = x.shape
    out = np.empty((n_rows, n_groups))
    s = np.empty(n_groups)
    c = np.empty(n_groups)
    for r in range(n_rows):
        s[:] = 0.0
        c[:] = 0.0
        for j in range(n):
            g = codes[j]
            v = x[r, j]
            if g >= 0 and not np.isnan(v):
                s[g] += v
                c[g] += 1.0
        for g in range(n_groups):
            out[r, g] = s[g] / c[g] if c[g] > 0 else np.nan
    return out


def group_mean_rows(x: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """``(rows, n_groups)``: for each row of ``x`` (rows × samples) the mean of its non-NaN
    values per sample group ``codes`` (0 … n_groups-1; negative codes are left out). Groups
    without a non-NaN value give NaN."""
    a = np.asarray(x, dtype=np.float64)
    if a.shape[1] != len(codes):
        raise ValueError(f"{len(codes)} codes for {a.shape[1]} columns")
    return _group_mean_rows(a, np.asarray(codes, dtype=np.int64), int(n_groups))


@njit(nogil=True, cache=True)
def _group_mean_select(block: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                       codes: np.ndarray, n_groups: int) -> np.ndarray:
    out = np.empty((rows.size, n_groups))
    s = np.empty(n_groups)
    c = np.empty(n_groups)
    for i in range(rows.size):
        r = rows[i]
        s[:] = 0.0
        c[:] = 0.0
        for j in range(cols.size):
            v = np.float64(block[r, cols[j]])
            if not np.isnan(v):
                s[codes[j]] += v
                c[codes[j]] += 1.0
        for g in range(n_groups):
            out[i, g] = s[g] / c[g] if c[g] > 0 else np.nan
    return out


def group_mean_select(block: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                      codes: np.ndarray, n_groups: int) -> np.ndarray:
    """``(len(rows), n_groups)``: per selected row of ``block`` the mean of its non-NaN
    values in the columns ``cols`` (repeats count again) per group ``codes`` (one per entry
    of ``cols``, 0 … n_groups-1), summed in column order. Equivalent to grouping
    ``block[rows][:, cols]`` without building it; the sums are float64 whatever the block's
    dtype."""
    return _group_mean_select(block, np.asarray(rows, dtype=np.int64),
                              np.asarray(cols, dtype=np.int64),
                              np.asarray(codes, dtype=np.int64), int(n_groups))


@njit(nogil=True, cache=True)
def _weighted_true_count(block: np.ndarray, rows: np.ndarray, weight: np.ndarray
                         ) -> np.ndarray:
    out = np.zeros(rows.size)
    for i in range(rows.size):
        r = rows[i]
        t = 0.0
        for j in range(block.shape[1]):
            if block[r, j]:
                t += weight[j]
        out[i] = t
    return out


def weighted_true_count(block: np.ndarray, rows: np.ndarray, weight: np.ndarray
                        ) -> np.ndarray:
    """Per selected row of a boolean (or 0/1) ``block``: the sum of ``weight`` over the
    columns that are set (``block[rows].astype(float) @ weight`` without the copy or BLAS)."""
    return _weighted_true_count(block, np.asarray(rows, dtype=np.int64),
                                np.asarray(weight, dtype=np.float64))


@njit(nogil=True, cache=True, parallel=True)
def _nanmean_stack(stack: np.ndarray) -> np.ndarray:
    d, n = stack.shape
    out = np.empty(n)
    for j in prange(n):
        s = 0.0
        c = 0
        for k in range(d):
            v = stack[k, j]
            if not np.isnan(v):
                s += v
                c += 1
        out[j] = s / c if c else np.nan
    return out


def nanmean_stack(arrays: list[np.ndarray]) -> np.ndarray:
    """Element-wise mean over ``arrays`` (same shape) skipping NaN; NaN where every array is
    NaN (``np.nanmean(np.stack(arrays), axis=0)`` without its warning and temporaries;
    summed in array order)."""
    stack = np.stack([np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays])
    return _nanmean_stack(stack).reshape(np.shape(arrays[0]))


@njit(nogil=True, cache=True)
def _take_rows(block: np.ndarray, src: np.ndarray, dst: np.ndarray, out: np.ndarray) -> None:
    for i in range(src.size):
        r = src[i]
        o = dst[i]
        for j in range(block.shape[1]):
            out[o, j] = block[r, j]


def take_rows(block: np.ndarray, src: np.ndarray, dst: np.ndarray, out: np.ndarray) -> None:
    """``out[dst] = block[src]`` (cast to ``out``'s dtype) without a temporary, the GIL
    released (several threads fill disjoint rows of one ``out``)."""
    if block.shape[1] != out.shape[1]:
        raise ValueError(f"block has {block.shape[1]} columns, out {out.shape[1]}")
    _take_rows(block, np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64),
               np.asarray(out))
