"""Numba kernel of the moments merge (Chan et al., 1979) in one pass, without temporaries.

Pure compute. :func:`merge_moments` computes, element by element,
``m2a + m2b + delta² · (na · nb) / n`` with ``delta = sb / nb - sa / na`` (0 where either part
is empty): the numbers of the equivalent numpy expression, bit for bit (same operations in the
same order; tests/test_aggregate_engine.py), reading each input once and writing each output
once, possibly into the first operand's arrays. Every merge of the engine
(:func:`atlas_engine.aggregate.specs.merge_pair`) goes through it.
"""

from __future__ import annotations

import numpy as np

from ._cache import cached_njit


@cached_njit(nogil=True)
def _merge(na, sa, ma, nb, sb, mb, out_s, out_m):
    rows, cols = sa.shape
    for i in range(rows):
        for j in range(cols):
            ca = na[i, j]
            cb = nb[i, j]
            xa = sa[i, j]
            xb = sb[i, j]
            n = ca + cb
            extra = 0.0
            if ca > 0 and cb > 0:
                delta = xb / cb - xa / ca
                extra = delta * delta * (ca * cb) / n
            out_m[i, j] = ma[i, j] + mb[i, j] + extra
            out_s[i, j] = xa + xb


def merge_moments(
    count_a: np.ndarray, sum_a: np.ndarray, m2_a: np.ndarray,
    count_b: np.ndarray, sum_b: np.ndarray, m2_b: np.ndarray,
    out_sum: np.ndarray | None = None, out_m2: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Merged ``sum`` and ``m2`` of two disjoint sets of values (2-D, same shapes).

    ``count_*`` may be broadcast views (stride 0). ``out_sum`` / ``out_m2`` may be the first
    operand's own arrays (each element is read before it is written).
    """
    shape = np.shape(sum_a)
    out_s = np.empty(shape) if out_sum is None else out_sum
    out_m = np.empty(shape) if out_m2 is None else out_m2
    _merge(count_a, sum_a, m2_a, count_b, sum_b, m2_b, out_s, out_m)
    return out_s, out_m
