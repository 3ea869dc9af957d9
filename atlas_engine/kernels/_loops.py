"""Raw numba loops over ``(values, labels, out...)``; no checks, no allocation policy, no Dask.

Each loop is written once as a plain Python function and compiled twice by :mod:`._jit`:
a serial ``nogil`` version (for Dask's thread pool, where parallelism comes from Dask) and a
``parallel=True`` version (``prange`` over independent output slices) for in-memory arrays.
``prange`` degrades to ``range`` in the serial build.

Conventions shared by every loop
--------------------------------
* ``values`` is 2-D, C-contiguous, float32 or float64; accumulation is float64.
* ``labels`` is int64; a label < 0 means "no group" and the element is skipped. The caller
  guarantees ``labels < n_groups`` (the loops do not bounds-check).
* NaN elements are skipped and not counted.
* "sample" loops group along axis 1: ``values (P, S)``, ``labels (S,)``, ``out (P, G)``.
  Rows are independent, so rows are the parallel unit; each row scans samples in memory order
  and scatters into its own output row (which stays in L1/L2 for any realistic ``G``).
* "probe" loops group along axis 0: ``values (P, S)``, rows listed per group CSR-style
  (``order``, ``indptr``), ``out (G, S)``. Each input row is added as a whole into its group's
  output row (a contiguous, vectorisable add); groups are the parallel unit.
* Outputs are initialised by the loops themselves (sums 0, counts 0, min/max NaN).

Variance intermediates use *shifted sums* (one pass): each (row, group) cell keeps the first
valid value it sees as a shift ``K`` and accumulates ``s1 = sum(x - K)``, ``s2 = sum((x - K)**2)``.
At the end of the loop the cell is rewritten to ``sum = n*K + s1`` and ``m2 = s2 - s1**2 / n``
(the sum of squared deviations about the block's group mean). Because ``K`` is a value of the
group, ``s1`` is small and the cancellation in ``m2`` is negligible, unlike the naive
``sum(x**2) - sum(x)**2 / n``; and unlike Welford there is no division per element. Blocks are
then merged with Chan et al.'s pairwise formula (see :mod:`atlas_engine.aggregate.specs`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# --------------------------------------------------------------------------------------------
# grouping along the sample axis (per structure): out[i, labels[j]] <- values[i, j]
# --------------------------------------------------------------------------------------------
#: probe rows summed together by :func:`sum_count_sample`: each label load serves this many rows,
#: and their partial sums sit side by side (``acc[slot * ROWS + r]``), one vector add per sample
ROWS = 8


def sum_count_sample(values, slot, sizes, sums, counts):
    """``slot``: the labels with -1 replaced by ``n_groups`` (a spill cell that is never
    written out); ``sizes[g]``: the number of samples labelled ``g``.

    Fast path: every value is added into its group without a NaN test (a NaN makes its group's
    sum NaN) and the counts are the group sizes. Only the rows whose sums come out NaN are done
    again with the NaN-skipping loop, so clean rows cost one branch-free scatter-add."""
    n_probe, n_sample = values.shape
    n_groups = sums.shape[1]
    width = (n_groups + 1) * ROWS
    n_blocks = (n_probe + ROWS - 1) // ROWS
    for b in prange(n_blocks):
        i0 = b * ROWS
        nr = min(ROWS, n_probe - i0)
        acc = np.zeros(width)
        if nr == ROWS:
            r0 = values[i0]
            r1 = values[i0 + 1]
            r2 = values[i0 + 2]
            r3 = values[i0 + 3]
            r4 = values[i0 + 4]
            r5 = values[i0 + 5]
            r6 = values[i0 + 6]
            r7 = values[i0 + 7]
            for j in range(n_sample):
                k = slot[j] * ROWS
                acc[k] += r0[j]
                acc[k + 1] += r1[j]
                acc[k + 2] += r2[j]
                acc[k + 3] += r3[j]
                acc[k + 4] += r4[j]
                acc[k + 5] += r5[j]
                acc[k + 6] += r6[j]
                acc[k + 7] += r7[j]
        else:
            for r in range(nr):
                row = values[i0 + r]
                for j in range(n_sample):
                    acc[slot[j] * ROWS + r] += row[j]
        for r in range(nr):
            srow = sums[i0 + r]
            crow = counts[i0 + r]
            clean = True
            for g in range(n_groups):
                s = acc[g * ROWS + r]
                srow[g] = s
                crow[g] = sizes[g]
                clean &= s == s
            if not clean:
                _sum_count_row_nan(values[i0 + r], slot, srow, crow)


@njit(nogil=True, cache=False)
def _sum_count_row_nan(vrow, slot, srow, crow):
    n_groups = srow.shape[0]
    srow[:] = 0.0
    crow[:] = 0
    for j in range(vrow.shape[0]):
        lab = slot[j]
        v = vrow[j]
        if lab < n_groups and v == v:
            srow[lab] += v
            crow[lab] += 1


def moments_sample(values, labels, counts, sums, m2, shift):
    n_probe, n_sample = values.shape
    n_groups = sums.shape[1]
    for i in prange(n_probe):
        crow = counts[i]
        s1 = sums[i]
        s2 = m2[i]
        k = shift[i]
        crow[:] = 0
        s1[:] = 0.0
        s2[:] = 0.0
        vrow = values[i]
        for j in range(n_sample):
            lab = labels[j]
            v = vrow[j]
            if lab >= 0 and v == v:
                x = np.float64(v)
                if crow[lab] == 0:
                    k[lab] = x
                d = x - k[lab]
                s1[lab] += d
                s2[lab] += d * d
                crow[lab] += 1
        for g in range(n_groups):
            n = crow[g]
            if n > 0:
                a = s1[g]
                s2[g] = max(s2[g] - a * a / n, 0.0)
                s1[g] = n * k[g] + a


def minmax_sample(values, labels, mins, maxs):
    n_probe, n_sample = values.shape
    for i in prange(n_probe):
        lo = mins[i]
        hi = maxs[i]
        lo[:] = np.inf
        hi[:] = -np.inf
        vrow = values[i]
        for j in range(n_sample):
            lab = labels[j]
            if lab >= 0:
                x = np.float64(vrow[j])
                # NaN compares false both ways, so it never replaces the running value
                lo[lab] = x if x < lo[lab] else lo[lab]
                hi[lab] = x if x > hi[lab] else hi[lab]
        _unset_to_nan(lo, hi)


@njit(nogil=True, cache=False)
def _unset_to_nan(lo, hi):
    # a cell never written still holds (+inf, -inf); a written one has lo <= hi
    for g in range(lo.shape[0]):
        if lo[g] > hi[g]:
            lo[g] = np.nan
            hi[g] = np.nan


# --------------------------------------------------------------------------------------------
# grouping along the probe axis (per gene): out[g, j] <- values[rows of g, j]
#
# The rows of each group are given CSR-style: rows order[indptr[g]:indptr[g + 1]]. The wrapper
# builds this from a stable argsort of the labels, so one input row may also be listed under
# several groups (membership). Each group is then owned by one thread (prange over groups): its
# output row stays in cache while its input rows (long contiguous reads) are added into it, and
# output rows are written once, in order.
# --------------------------------------------------------------------------------------------
def sum_count_probe(values, order, indptr, sums, counts):
    """Fast path per group: the first row is copied and the others added without NaN tests;
    the counts are the group's row count. A group whose sums come out NaN (some value was NaN)
    is done again with the NaN-skipping loop. Each output row is written once."""
    n_groups = sums.shape[0]
    n_sample = values.shape[1]
    for g in prange(n_groups):
        srow = sums[g]
        crow = counts[g]
        lo = indptr[g]
        hi = indptr[g + 1]
        if hi == lo:
            srow[:] = 0.0
            crow[:] = 0
            continue
        first = values[order[lo]]
        for j in range(n_sample):
            srow[j] = first[j]
        for r in range(lo + 1, hi):
            vrow = values[order[r]]
            for j in range(n_sample):
                srow[j] += vrow[j]
        n = hi - lo
        clean = True
        for j in range(n_sample):
            crow[j] = n
            clean &= srow[j] == srow[j]
        if not clean:
            srow[:] = 0.0
            crow[:] = 0
            for r in range(lo, hi):
                vrow = values[order[r]]
                for j in range(n_sample):
                    v = vrow[j]
                    ok = v == v
                    srow[j] += v if ok else 0.0
                    crow[j] += 1 if ok else 0


def moments_probe(values, order, indptr, counts, sums, m2, shift):
    n_groups = sums.shape[0]
    n_sample = values.shape[1]
    for g in prange(n_groups):
        crow = counts[g]
        s1 = sums[g]
        s2 = m2[g]
        k = shift[g]
        crow[:] = 0
        s1[:] = 0.0
        s2[:] = 0.0
        for r in range(indptr[g], indptr[g + 1]):
            vrow = values[order[r]]
            for j in range(n_sample):
                v = vrow[j]
                if v == v:
                    x = np.float64(v)
                    if crow[j] == 0:
                        k[j] = x
                    d = x - k[j]
                    s1[j] += d
                    s2[j] += d * d
                    crow[j] += 1
        for j in range(n_sample):
            n = crow[j]
            if n > 0:
                a = s1[j]
                s2[j] = max(s2[j] - a * a / n, 0.0)
                s1[j] = n * k[j] + a


def minmax_probe(values, order, indptr, mins, maxs):
    n_groups = mins.shape[0]
    n_sample = values.shape[1]
    for g in prange(n_groups):
        lo = mins[g]
        hi = maxs[g]
        lo[:] = np.inf
        hi[:] = -np.inf
        for r in range(indptr[g], indptr[g + 1]):
            vrow = values[order[r]]
            for j in range(n_sample):
                x = np.float64(vrow[j])
                # NaN compares false both ways, so it never replaces the running value
                lo[j] = x if x < lo[j] else lo[j]
                hi[j] = x if x > hi[j] else hi[j]
        _unset_to_nan(lo, hi)


def mean_probe(values, order, indptr, out):
    """Per group the NaN-skipping mean of its rows, written straight into ``out`` (float32 or
    float64; NaN where a group has no valid value). Same sums, in the same order, as
    :func:`sum_count_probe` followed by :func:`divide_counts`, without the two (G, S)
    intermediates: one float64 row of scratch per group instead."""
    n_groups = out.shape[0]
    n_sample = values.shape[1]
    for g in prange(n_groups):
        orow = out[g]
        lo = indptr[g]
        hi = indptr[g + 1]
        if hi == lo:
            orow[:] = np.nan
            continue
        acc = np.empty(n_sample, np.float64)
        first = values[order[lo]]
        for j in range(n_sample):
            acc[j] = first[j]
        for r in range(lo + 1, hi):
            vrow = values[order[r]]
            for j in range(n_sample):
                acc[j] += vrow[j]
        clean = True
        for j in range(n_sample):
            clean &= acc[j] == acc[j]
        if clean:
            n = hi - lo
            for j in range(n_sample):
                orow[j] = acc[j] / n
            continue
        cnt = np.zeros(n_sample, np.int64)
        acc[:] = 0.0
        for r in range(lo, hi):
            vrow = values[order[r]]
            for j in range(n_sample):
                x = np.float64(vrow[j])
                if x == x:
                    acc[j] += x
                    cnt[j] += 1
        for j in range(n_sample):
            orow[j] = acc[j] / cnt[j] if cnt[j] > 0 else np.nan


# --------------------------------------------------------------------------------------------
# finalize: out = num / (count - ddof) where count > ddof, else NaN (flat, C-contiguous arrays)
# --------------------------------------------------------------------------------------------
def divide_counts(num, count, ddof, out):
    n = out.shape[0]
    step = 1 << 16
    for b in prange((n + step - 1) // step):
        for i in range(b * step, min(n, (b + 1) * step)):
            c = count[i] - ddof
            out[i] = num[i] / c if c > 0 else np.nan
