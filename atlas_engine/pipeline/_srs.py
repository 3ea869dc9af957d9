"""Numba kernels for the scaled robust sigmoid (abagen's default normalisation).

Same arithmetic as :func:`~.normalize.scaled_robust_sigmoid`: median and linear-interpolated
quartiles (numpy's defaults), IQR scaled to a standard normal's, logistic, then min-max
rescaling. A NaN anywhere in a slice makes the whole slice NaN (as numpy's median/percentile
do); IQR = 0 gives inf/NaN exactly as the numpy version.

The median and the quartiles need only the order statistics at a few ranks (the k-th and
(k+1)-th for each linear interpolation), found by in-place quickselect on a scratch copy:
O(n) per slice instead of a full O(n log n) sort. The values are the same order statistics a
sort would give, combined with the same formulas, so the results are those of the sort-based
version.

* :func:`srs_columns` normalises each column of a 2-D array;
* :func:`srs_rows` normalises each row over a chosen list of its columns (repeats allowed),
  e.g. a genes × samples matrix over one donor's matched samples.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._stats import IQR_NORMAL_SCALE


@njit(nogil=True, cache=True, inline="always")
def _lerp(a: float, b: float, t: float) -> float:
    # numpy's _lerp: a + (b - a)·t, computed from b when t >= 0.5
    d = b - a
    return b - d * (1.0 - t) if t >= 0.5 else a + d * t


@njit(nogil=True, cache=True)
def _select(v: np.ndarray, lo: int, hi: int, k: int) -> None:
    """Rearrange ``v[lo:hi]`` so ``v[k]`` holds the value a sort would put there, with
    ``v[lo:k] <= v[k] <= v[k+1:hi]`` (no NaN in ``v``; median-of-three Hoare quickselect)."""
    hi -= 1
    while hi > lo:
        mid = (lo + hi) >> 1
        # median of three into v[mid], then use it as the pivot
        if v[mid] < v[lo]:
            v[mid], v[lo] = v[lo], v[mid]
        if v[hi] < v[lo]:
            v[hi], v[lo] = v[lo], v[hi]
        if v[hi] < v[mid]:
            v[hi], v[mid] = v[mid], v[hi]
        pivot = v[mid]
        i = lo
        j = hi
        while i <= j:
            while v[i] < pivot:
                i += 1
            while pivot < v[j]:
                j -= 1
            if i <= j:
                v[i], v[j] = v[j], v[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return


@njit(nogil=True, cache=True)
def _order_stats(v: np.ndarray, ranks: np.ndarray, out: np.ndarray) -> None:
    """``out[i]`` = the ``ranks[i]``-th smallest value of ``v`` (0-based; ``ranks``
    ascending, repeats allowed). ``v`` is reordered in place."""
    n = v.size
    lo = 0
    last = -1
    for i in range(ranks.size):
        k = ranks[i]
        if k == last:
            out[i] = v[k]
            continue
        if k == lo:
            # smallest of the rest: one linear scan
            m = lo
            for t in range(lo + 1, n):
                if v[t] < v[m]:
                    m = t
            v[lo], v[m] = v[m], v[lo]
        else:
            _select(v, lo, n, k)
        out[i] = v[k]
        lo = k + 1
        last = k


@njit(nogil=True, cache=True)
def _srs_into(col: np.ndarray, work: np.ndarray, out: np.ndarray, scale: float) -> None:
    """Scaled robust sigmoid of ``col`` into ``out`` (``work``: scratch of the same size)."""
    n = col.size
    bad = n == 0
    for i in range(n):
        work[i] = col[i]
        if np.isnan(col[i]):
            bad = True
    if bad:
        for i in range(n):
            out[i] = np.nan
        return
    # ranks: the two around each quartile's virtual index, and the median's
    p25 = 0.25 * (n - 1)
    p75 = 0.75 * (n - 1)
    a = int(np.floor(p25))
    b = int(np.floor(p75))
    half = n // 2
    ranks = np.empty(6, dtype=np.int64)
    ranks[0] = a
    ranks[1] = min(a + 1, n - 1)
    ranks[2] = half - 1 if n % 2 == 0 else half
    ranks[3] = half
    ranks[4] = b
    ranks[5] = min(b + 1, n - 1)
    ranks.sort()
    vals = np.empty(6)
    _order_stats(work, ranks, vals)
    # look the order statistics up by rank
    qa = qa1 = qb = qb1 = m0 = m1 = 0.0
    for i in range(6):
        r = ranks[i]
        if r == a:
            qa = vals[i]
        if r == min(a + 1, n - 1):
            qa1 = vals[i]
        if r == b:
            qb = vals[i]
        if r == min(b + 1, n - 1):
            qb1 = vals[i]
        if r == (half - 1 if n % 2 == 0 else half):
            m0 = vals[i]
        if r == half:
            m1 = vals[i]
    med = (m0 + m1) / 2.0 if n % 2 == 0 else m1
    s = (_lerp(qb, qb1, p75 - b) - _lerp(qa, qa1, p25 - a)) / scale
    lo = np.inf
    hi = -np.inf
    nan = False
    for i in range(n):
        r = 1.0 / (1.0 + np.exp(-(col[i] - med) / s))
        out[i] = r
        if np.isnan(r):
            nan = True
        else:
            lo = min(lo, r)
            hi = max(hi, r)
    for i in range(n):
        out[i] = np.nan if nan else (out[i] - lo) / (hi - lo)


@njit(nogil=True, cache=True, parallel=True, error_model="numpy")
def _srs_columns(x: np.ndarray, scale: float) -> np.ndarray:
    n, m = x.shape
    out = np.empty((n, m))
    for j in prange(m):
        col = np.empty(n)
        for i in range(n):
            col[i] = x[i, j]
        work = np.empty(n)
        res = np.empty(n)
        _srs_into(col, work, res, scale)
        for i in range(n):
            out[i, j] = res[i]
    return out


@njit(nogil=True, cache=True, parallel=True, error_model="numpy")
def _srs_rows(x: np.ndarray, cols: np.ndarray, scale: float) -> np.ndarray:
    n = cols.size
    out = np.empty((x.shape[0], n))
    for r in prange(x.shape[0]):
        row = np.empty(n)
        for i in range(n):
            row[i] = x[r, cols[i]]
        work = np.empty(n)
        _srs_into(row, work, out[r], scale)
    return out


def srs_columns(x: np.ndarray) -> np.ndarray:
    """Scaled robust sigmoid of every column of a 2-D array (float64 result)."""
    a = np.asarray(x, dtype=np.float64)
    if a.flags.f_contiguous and not a.flags.c_contiguous:
        # columns are contiguous: work on the transposed (C-ordered) view row by row
        return _srs_rows(a.T, np.arange(a.shape[0], dtype=np.int64), IQR_NORMAL_SCALE).T
    return _srs_columns(a, IQR_NORMAL_SCALE)


def srs_rows(x: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
    """Scaled robust sigmoid of every row of a 2-D array over the columns ``cols`` (all
    columns when None; repeated columns count as often as they appear).

    Returns a C-ordered float64 array of shape ``(x.shape[0], len(cols))``.
    """
    a = np.ascontiguousarray(x, dtype=np.float64)
    idx = np.arange(a.shape[1]) if cols is None else np.asarray(cols)
    return _srs_rows(a, idx.astype(np.int64), IQR_NORMAL_SCALE)
