"""Numba kernel for the scaled robust sigmoid (abagen's default normalisation), column-wise.

Same arithmetic as :func:`~.normalize.scaled_robust_sigmoid`: median and linear-interpolated
quartiles of each column (numpy's defaults), IQR scaled to a standard normal's, logistic,
then min-max rescaling. A NaN anywhere in a column makes the whole column NaN (as numpy's
median/percentile do); IQR = 0 gives inf/NaN exactly as the numpy version.
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


@njit(nogil=True, cache=True, inline="always")
def _quantile(v: np.ndarray, q: float) -> float:
    pos = q * (v.size - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, v.size - 1)
    return _lerp(v[lo], v[hi], pos - lo)


@njit(nogil=True, cache=True, parallel=True, error_model="numpy")
def _srs_columns(x: np.ndarray, scale: float) -> np.ndarray:
    n, m = x.shape
    out = np.empty((n, m))
    for j in prange(m):
        col = np.empty(n)
        bad = False
        for i in range(n):
            col[i] = x[i, j]
            if np.isnan(col[i]):
                bad = True
        if bad or n == 0:
            for i in range(n):
                out[i, j] = np.nan
            continue
        v = np.sort(col)
        half = n // 2
        med = v[half] if n % 2 else (v[half - 1] + v[half]) / 2.0
        s = (_quantile(v, 0.75) - _quantile(v, 0.25)) / scale
        lo = np.inf
        hi = -np.inf
        nan = False
        for i in range(n):
            r = 1.0 / (1.0 + np.exp(-(col[i] - med) / s))
            out[i, j] = r
            if np.isnan(r):
                nan = True
            else:
                lo = min(lo, r)
                hi = max(hi, r)
        for i in range(n):
            out[i, j] = np.nan if nan else (out[i, j] - lo) / (hi - lo)
    return out


def srs_columns(x: np.ndarray) -> np.ndarray:
    """Scaled robust sigmoid of every column of a 2-D array (float64 result)."""
    return _srs_columns(np.asarray(x, dtype=np.float64), IQR_NORMAL_SCALE)
