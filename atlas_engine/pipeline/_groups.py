"""Numba kernel: per-group means of the columns of a rows × samples matrix, skipping NaN.

The region step of the pipeline: genes × samples values and each sample's region code give
genes × regions means (pandas ``groupby(...).mean()`` semantics: NaN skipped, a group whose
values are all NaN gives NaN). One pass over the matrix, rows in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(nogil=True, cache=True, parallel=True, error_model="numpy")
def _group_mean_rows(x: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    n_rows, n = x.shape
    out = np.empty((n_rows, n_groups))
    for r in prange(n_rows):
        s = np.zeros(n_groups)
        c = np.zeros(n_groups)
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
