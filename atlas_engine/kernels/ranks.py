"""Numba kernel for differential stability.

Each donor's structure means are sorted once per probe row (``argsort`` along the structures);
for every donor pair the average-tie ranks over the structures both donors have are read off
that order in one linear walk (excluded structures are skipped; ties stay adjacent), then the
Pearson correlation of the two rank vectors gives the Spearman correlation of the pair.
"""

from __future__ import annotations

import numpy as np

from ._cache import cached_njit


@cached_njit(nogil=True)
def _ranks_from_order(values: np.ndarray, order: np.ndarray, pos: np.ndarray,
                      out: np.ndarray) -> bool:
    """Average-tie ranks of the included columns (``pos[col] >= 0``, rank written at
    ``out[pos[col]]``), walking ``order`` (ascending). False when an included value is NaN."""
    n = order.size
    rank = 0
    i = 0
    while i < n:
        col = order[i]
        if pos[col] < 0:
            i += 1
            continue
        v = values[col]
        if np.isnan(v):
            return False
        # the run of included columns equal to v (equal values are adjacent in order)
        j = i
        count = 1
        k = i + 1
        while k < n and values[order[k]] == v:
            if pos[order[k]] >= 0:
                count += 1
            j = k
            k += 1
        r = rank + (count + 1) / 2.0
        for m in range(i, j + 1):
            c = order[m]
            if pos[c] >= 0:
                out[pos[c]] = r
        rank += count
        i = j + 1
    return True


@cached_njit(nogil=True, inline="always")
def _rank_pearson(ra: np.ndarray, rb: np.ndarray, n: int, m: float) -> float:
    """Pearson's r of the first ``n`` ranks ``ra`` and ``rb`` (mean rank ``m``), NaN when
    either is constant: their Spearman correlation."""
    sab = 0.0
    saa = 0.0
    sbb = 0.0
    for k in range(n):
        da = ra[k] - m
        db = rb[k] - m
        sab += da * db
        saa += da * da
        sbb += db * db
    den = np.sqrt(saa * sbb)
    return sab / den if den > 0 else np.nan


@cached_njit(nogil=True)
def _spearman_sorted(a: np.ndarray, oa: np.ndarray, pa: np.ndarray,
                     b: np.ndarray, ob: np.ndarray, pb: np.ndarray, n: int) -> np.ndarray:
    p = a.shape[0]
    out = np.empty(p)
    ra = np.empty(n)
    rb = np.empty(n)
    m = (n + 1) / 2.0
    for row in range(p):
        if n < 2 or not _ranks_from_order(a[row], oa[row], pa, ra) \
                or not _ranks_from_order(b[row], ob[row], pb, rb):
            out[row] = np.nan
            continue
        out[row] = _rank_pearson(ra, rb, n, m)
    return out


def row_order(means: np.ndarray) -> np.ndarray:
    """Per row, the column order sorting ``means`` ascending (NaN last). The order among
    equal values does not matter (the rank walk gives a run of ties their average rank), so
    numpy's default (SIMD) sort is used rather than a stable one."""
    return np.argsort(means, axis=1).astype(np.int32)


def spearman_pair(a: np.ndarray, order_a: np.ndarray, cols_a: np.ndarray,
                  b: np.ndarray, order_b: np.ndarray, cols_b: np.ndarray) -> np.ndarray:
    """Per row r: Spearman correlation of ``a[r, cols_a]`` and ``b[r, cols_b]`` (average-tie
    ranks; NaN when a value is NaN, fewer than two columns or a constant row), using the row
    orders from :func:`row_order`."""
    n = len(cols_a)
    pa = np.full(a.shape[1], -1, dtype=np.int64)
    pa[np.asarray(cols_a, dtype=np.int64)] = np.arange(n)
    pb = np.full(b.shape[1], -1, dtype=np.int64)
    pb[np.asarray(cols_b, dtype=np.int64)] = np.arange(n)
    return _spearman_sorted(np.ascontiguousarray(a, dtype=np.float64), order_a, pa,
                            np.ascontiguousarray(b, dtype=np.float64), order_b, pb, n)


@cached_njit(nogil=True)
def _plain_row(values: np.ndarray, order: np.ndarray) -> bool:
    """True when a row has no NaN and no tie (its sorted values strictly increase)."""
    w = order.size
    if w == 0:
        return True
    prev = values[order[0]]
    if np.isnan(prev):
        return False
    for k in range(1, w):
        v = values[order[k]]
        if not v > prev:          # equal, or NaN (sorted last)
            return False
        prev = v
    return True


@cached_njit(nogil=True)
def _ranks_plain(order: np.ndarray, slot: np.ndarray, inc: np.ndarray, out: np.ndarray
                 ) -> None:
    """:func:`_ranks_from_order` for a row without NaN or ties, branch-free: the included
    columns get ranks 1, 2, … in sorted order (``slot``: where each column's rank goes, the
    excluded ones to a spare last slot; ``inc``: 1 for included columns, else 0)."""
    rank = 0
    for k in range(order.size):
        c = order[k]
        rank += inc[c]
        out[slot[c]] = rank


@cached_njit(nogil=True)
def _mean_pair_spearman(vals: np.ndarray, orders: np.ndarray, offsets: np.ndarray,
                        widths: np.ndarray, d1: np.ndarray, d2: np.ndarray, pos1: np.ndarray,
                        pos2: np.ndarray, shared: np.ndarray) -> np.ndarray:
    p = vals.shape[0]
    n_donors = widths.size
    width = pos1.shape[1]
    n_pairs = d1.size
    out = np.empty(p)
    ra = np.empty(width + 1)
    rb = np.empty(width + 1)
    # per pair and side: the rank slot of every column (excluded: the spare slot ``width``)
    # and whether it is included, for the branch-free walk of rows without NaN or ties
    slot1 = np.where(pos1 >= 0, pos1, width)
    slot2 = np.where(pos2 >= 0, pos2, width)
    inc1 = (pos1 >= 0).astype(np.int64)
    inc2 = (pos2 >= 0).astype(np.int64)
    plain = np.empty(n_donors, dtype=np.bool_)
    for row in range(p):
        for d in range(n_donors):
            o = offsets[d]
            plain[d] = _plain_row(vals[row, o:o + widths[d]], orders[row, o:o + widths[d]])
        total = 0.0
        for q in range(n_pairs):
            a = d1[q]
            b = d2[q]
            n = shared[q]
            oa, wa = offsets[a], widths[a]
            ob, wb = offsets[b], widths[b]
            if n < 2:
                total += np.nan
                continue
            if plain[a]:
                _ranks_plain(orders[row, oa:oa + wa], slot1[q], inc1[q], ra)
            elif not _ranks_from_order(vals[row, oa:oa + wa], orders[row, oa:oa + wa],
                                       pos1[q, :wa], ra):
                total += np.nan
                continue
            if plain[b]:
                _ranks_plain(orders[row, ob:ob + wb], slot2[q], inc2[q], rb)
            elif not _ranks_from_order(vals[row, ob:ob + wb], orders[row, ob:ob + wb],
                                       pos2[q, :wb], rb):
                total += np.nan
                continue
            total += _rank_pearson(ra, rb, n, (n + 1) / 2.0)
        out[row] = total / n_pairs
    return out


def mean_pair_spearman(means: list[np.ndarray], pairs: list[tuple[int, int]],
                       cols: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per row: the mean over donor ``pairs`` of :func:`spearman_pair` (``cols[q]``: the
    columns of the pair's two donors that are compared), summed in pair order (a NaN pair
    gives NaN). One pass over the rows with every pair of a row at once, so a row's values
    stay in cache."""
    vals = np.hstack([np.asarray(m, dtype=np.float64) for m in means])
    return mean_pair_spearman_side_by_side(vals, [m.shape[1] for m in means], pairs, cols)


def side_by_side_offsets(widths: list[int]) -> np.ndarray:
    """The first column of each donor's block in a side-by-side array of ``widths``."""
    return np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)


def mean_pair_spearman_side_by_side(vals: np.ndarray, widths: list[int],
                                    pairs: list[tuple[int, int]],
                                    cols: list[tuple[np.ndarray, np.ndarray]],
                                    orders: np.ndarray | None = None) -> np.ndarray:
    """:func:`mean_pair_spearman` of the donors' means stored side by side in one ``(rows,
    sum(widths))`` float64 array (donor ``d``'s in the ``widths[d]`` columns after the
    previous donors'; no padding), e.g. written there by the kernel computing them.
    ``orders``: an int32 array of the same shape to use as scratch (allocated when None)."""
    offsets = side_by_side_offsets(widths)
    width = max(widths)
    if orders is None:
        orders = np.empty(vals.shape, dtype=np.int32)
    for o, w in zip(offsets.tolist(), widths, strict=True):
        orders[:, o:o + w] = row_order(vals[:, o:o + w])
    pos1 = np.full((len(pairs), width), -1, dtype=np.int64)
    pos2 = np.full((len(pairs), width), -1, dtype=np.int64)
    shared = np.zeros(len(pairs), dtype=np.int64)
    for q, (ca, cb) in enumerate(cols):
        pos1[q, np.asarray(ca, dtype=np.int64)] = np.arange(len(ca))
        pos2[q, np.asarray(cb, dtype=np.int64)] = np.arange(len(cb))
        shared[q] = len(ca)
    d1 = np.asarray([a for a, _ in pairs], dtype=np.int64)
    d2 = np.asarray([b for _, b in pairs], dtype=np.int64)
    return _mean_pair_spearman(vals, orders, offsets, np.asarray(widths, dtype=np.int64), d1,
                               d2, pos1, pos2, shared)
