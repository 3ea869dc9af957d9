"""Voxel label → position in a sorted id list, one pass, no temporaries (numba).

Pure compute: arrays in, array out. Used to turn annotation voxels (structure ids, up to ~6e8
in CCFv3) into group labels for the grouped kernels.
"""

from __future__ import annotations

import numpy as np

from ._cache import cached_njit


@cached_njit(nogil=True)
def lower_bound(a, lo, hi, value):  # pragma: no cover - compiled
    """First position in ``a[lo:hi]`` (ascending) whose value is not below ``value``."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@cached_njit(nogil=True)
def _index_sorted(values, ids, background, out):  # pragma: no cover - compiled
    k = ids.size
    last_v = np.int64(background)
    last_r = np.int64(-1)
    for i in range(values.size):
        v = np.int64(values[i])
        if v == last_v:                  # runs of one label are the common case in volumes
            out[i] = last_r
            continue
        if v == background:
            r = np.int64(-1)
        else:
            lo = lower_bound(ids, 0, k, v)
            r = np.int64(lo) if lo < k and ids[lo] == v else np.int64(-2)
        last_v = v
        last_r = r
        out[i] = r


def index_in_sorted(values: np.ndarray, ids: np.ndarray, background: int = 0) -> np.ndarray:
    """Position of each of ``values`` (1-D integers) in ``ids`` (sorted, unique int64):
    ``-1`` where the value is ``background``, ``-2`` where it is not in ``ids``."""
    values = np.ascontiguousarray(values)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise ValueError("values must be a 1-D integer array")
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    out = np.empty(values.size, dtype=np.int64)
    _index_sorted(values, ids, np.int64(background), out)
    return out
