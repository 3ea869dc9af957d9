"""Numba kernels of the one-read order statistics (trimmed means and medians of log2(CPM + 1)).

Pure compute: arrays in, arrays out. The order statistics need every stored value of a
(group, gene) pair at once. Instead of holding all of them, one pass over the counts writes
each stored value, tagged with its pair, into *fine gene bands* (a few hundred genes each);
each band is then read back alone and its pairs' statistics computed.

* :func:`csr_band_records` - a CSR row block's stored counts as records grouped by fine band
  (a counting sort: one pass to count, one to place): per record the gene's position in its
  band and the count, and per run of records of one cell that cell; 4 bytes a record (plus 6
  a run) for counts below 65,536 (:func:`record_dtypes`); and each cell's total.
* :func:`band_order_stats` - one band's records -> per pair R's ``mean(x, trim)`` and the
  median, the group's zero counts implied (a pair of a group of ``n`` cells with ``k`` records
  has ``n - k`` zeros). Records are placed by pair (a counting sort) as CPM; each pair's kept
  values and middle values are found by selection on CPM (quickselect, O(k) per
  pair of k stored values; insertion sort for the smallest), not by a full sort; only those
  values are turned into log2(CPM + 1), and the kept ones are summed with Neumaier
  compensation, so the result does not depend on the order the records came in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._cache import cached_njit
from .lookup import lower_bound


@cached_njit(nogil=True)
def _offsets(counts):
    """Start of each band's records: ``[0, c0, c0 + c1, ...]``."""
    out = np.zeros(counts.size + 1, np.int64)
    for b in range(counts.size):
        out[b + 1] = out[b] + counts[b]
    return out


@cached_njit(nogil=True)
def _band_records(indptr, indices, data, labels, band_of, local, n_bands, n_rec, n_run,
                  totals, rec_local, rec_x, run_cell, run_len):
    n_rows = indptr.size - 1
    last = np.full(n_bands, -1, np.int64)
    for r in range(n_rows):
        t = 0.0
        keep = labels[r] >= 0
        for p in range(indptr[r], indptr[r + 1]):
            t += data[p]
            if keep:
                b = band_of[indices[p]]
                if b >= 0:
                    n_rec[b] += 1
                    if last[b] != r:
                        last[b] = r
                        n_run[b] += 1
        totals[r] = t
    roffs = _offsets(n_rec)
    qoffs = _offsets(n_run)
    rfill = roffs[:-1].copy()
    qfill = qoffs[:-1].copy()
    last[:] = -1
    for r in range(n_rows):
        if labels[r] < 0:
            continue
        for p in range(indptr[r], indptr[r + 1]):
            j = indices[p]
            b = band_of[j]
            if b < 0:
                continue
            if last[b] != r:
                # the row's first record in this band opens a run
                last[b] = r
                q = qfill[b]
                qfill[b] = q + 1
                run_cell[q] = r
                run_len[q] = 0
            run_len[qfill[b] - 1] += 1
            at = rfill[b]
            rec_local[at] = local[j]
            rec_x[at] = data[p]
            rfill[b] = at + 1
    return roffs, qoffs


@cached_njit(nogil=True)
def _band_records_sorted(indptr, indices, data, labels, width, n_bands, n_genes, totals,
                         rec_local, rec_x, run_cell, run_len):
    """:func:`_band_records` for rows with increasing columns and every gene selected: each
    row's records of a band are one contiguous range (found by binary search), copied whole,
    and a row's total is summed as its records are copied (rows in no group get 0: no record
    refers to them)."""
    n_rows = indptr.size - 1
    ptr = np.empty((n_rows, n_bands + 1), np.int64)
    n_rec = np.zeros(n_bands, np.int64)
    n_run = np.zeros(n_bands, np.int64)
    for r in range(n_rows):
        a = indptr[r]
        b = indptr[r + 1]
        ptr[r, 0] = a
        for k in range(1, n_bands + 1):
            ptr[r, k] = lower_bound(indices, ptr[r, k - 1], b, min(k * width, n_genes))
        if labels[r] >= 0:
            for k in range(n_bands):
                c = ptr[r, k + 1] - ptr[r, k]
                if c:
                    n_rec[k] += c
                    n_run[k] += 1
    roffs = _offsets(n_rec)
    qoffs = _offsets(n_run)
    rfill = roffs[:-1].copy()
    qfill = qoffs[:-1].copy()
    for r in range(n_rows):
        if labels[r] < 0:
            # no records; its total is not needed either (only the records' cells' are)
            totals[r] = 0.0
            continue
        t = 0.0
        for k in range(n_bands):
            p0 = ptr[r, k]
            c = ptr[r, k + 1] - p0
            if c == 0:
                continue
            q = qfill[k]
            run_cell[q] = r
            run_len[q] = c
            qfill[k] = q + 1
            at = rfill[k]
            base = k * width
            for i in range(c):
                rec_local[at + i] = indices[p0 + i] - base
                v = data[p0 + i]
                rec_x[at + i] = v
                t += v
            rfill[k] = at + c
        totals[r] = t
    return roffs, qoffs


def record_dtypes(width: int, n_rows: int, data: np.ndarray) -> tuple[type, type, np.dtype]:
    """The narrowest dtypes of a block's records: the gene within its band (uint16 for bands
    up to 65,536 genes), a run's cell (uint16 for blocks up to 65,536 rows) and the stored
    count (uint16 for integer counts below 65,536, else the data's own dtype)."""
    data = np.asarray(data)
    local_t = np.uint16 if width <= 2**16 else np.uint32
    cell_t = np.uint16 if n_rows <= 2**16 else np.uint32
    x_t = data.dtype
    if data.dtype.kind in "iu" and (data.size == 0 or (int(data.min()) >= 0
                                                       and int(data.max()) < 2**16)):
        x_t = np.dtype(np.uint16)
    return local_t, cell_t, x_t


@dataclass
class BandRecords:
    """A row block's records by fine band (:func:`csr_band_records`).

    Band ``b`` holds records ``rec_offsets[b]:rec_offsets[b + 1]`` (``local``: the gene's
    position in the band; ``count``: the stored value) in runs ``run_offsets[b]:run_offsets[b
    + 1]``: run ``q`` is ``run_len[q]`` consecutive records of the block's row ``run_cell[q]``.
    ``totals`` holds each row's sum over all its stored values (0 for a row in no group when
    the rows were known sorted: no record refers to it).
    """

    rec_offsets: np.ndarray
    run_offsets: np.ndarray
    local: np.ndarray
    count: np.ndarray
    run_cell: np.ndarray
    run_len: np.ndarray
    totals: np.ndarray


def csr_band_records(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, labels: np.ndarray,
    colpos: np.ndarray, width: int, n_bands: int, *, alloc: Callable[..., np.ndarray] = np.empty,
    sorted_rows: bool = False,
) -> BandRecords:
    """A CSR row block's stored counts as records grouped by fine band, in runs of one cell.

    Parameters
    ----------
    indptr, indices, data : CSR arrays of the block (rows = cells, columns = all genes)
    labels : (rows,) int
        Group of each row; < 0 = in no group (its records are dropped).
    colpos : (genes,) int64
        Position of each gene among the selected ones, -1 = not selected; band ``b`` holds
        positions ``[b * width, (b + 1) * width)``.
    width, n_bands : int
    alloc : callable
        ``alloc(size, dtype)`` gives the record arrays (default ``np.empty``; a caller may hand
        out reused memory).
    sorted_rows : bool
        The rows' columns are known to increase: with every gene selected, each row's records
        of a band are copied as one range (same records, faster).

    Returns
    -------
    BandRecords
        In the narrowest dtypes (:func:`record_dtypes`): 4 bytes a record for counts below
        65,536, plus 6 bytes a run (one run per row and band it has records in). Rows keep
        their order within a band.
    """
    indptr = np.asarray(indptr, np.int64)
    colpos = np.asarray(colpos, np.int64)
    data = np.asarray(data)
    n_rows = indptr.size - 1
    cap = int(indptr[-1] - indptr[0])
    local_t, cell_t, x_t = record_dtypes(width, n_rows, data)
    band_of = np.where(colpos >= 0, colpos // width, -1).astype(np.int32)
    local = np.where(colpos >= 0, colpos % width, 0).astype(local_t)
    rec_local = alloc(cap, local_t)
    rec_x = alloc(cap, x_t)
    run_cell = alloc(min(cap, n_rows * n_bands), cell_t)
    run_len = alloc(run_cell.size, np.uint32)
    totals = np.empty(n_rows, np.float64)
    n_rec = np.zeros(n_bands, np.int64)
    n_run = np.zeros(n_bands, np.int64)
    if sorted_rows and colpos.size and np.array_equal(colpos, np.arange(colpos.size)):
        roffs, qoffs = _band_records_sorted(indptr, np.asarray(indices), data,
                                            np.asarray(labels, np.int64), int(width),
                                            int(n_bands), int(colpos.size), totals, rec_local,
                                            rec_x, run_cell, run_len)
    else:
        roffs, qoffs = _band_records(indptr, np.asarray(indices), data,
                                     np.asarray(labels, np.int64), band_of, local,
                                     int(n_bands), n_rec, n_run, totals, rec_local, rec_x,
                                     run_cell, run_len)
    n, m = int(roffs[-1]), int(qoffs[-1])
    return BandRecords(roffs, qoffs, rec_local[:n], rec_x[:n], run_cell[:m], run_len[:m],
                       totals)


#: ranges up to this length are insertion-sorted instead of partitioned
SMALL = 16


@cached_njit(nogil=True)
def _insertion_sort(a, lo, hi):
    for i in range(lo + 1, hi):
        x = a[i]
        j = i - 1
        while j >= lo and a[j] > x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x


@cached_njit(nogil=True)
def _select(a, lo, hi, k):
    """Reorder ``a[lo:hi]`` so that ``a[k]`` holds its k-th smallest value, the values before
    it are <= it and those after >= it.

    Quickselect with median-of-three pivots and a branch-free Lomuto partition (every element
    swapped, the boundary advanced by the comparison's result: no mispredicted branches,
    ~3x faster here than a three-way partition). Many equal values shrink a range by one
    element a step, so after 64 steps the rest is sorted instead.
    """
    depth = 0
    while hi - lo > SMALL:
        depth += 1
        if depth > 64:
            a[lo:hi].sort()
            return
        m = (lo + hi - 1) // 2
        x = a[lo]
        y = a[m]
        z = a[hi - 1]
        if (x <= y) == (y <= z):
            piv = m
        elif (y <= x) == (x <= z):
            piv = lo
        else:
            piv = hi - 1
        p = a[piv]
        a[piv] = a[hi - 1]
        a[hi - 1] = p
        i = lo
        for j in range(lo, hi - 1):
            v = a[j]
            a[j] = a[i]
            a[i] = v
            i += v < p
        a[hi - 1] = a[i]
        a[i] = p
        if k < i:
            hi = i
        elif k > i:
            lo = i + 1
        else:
            return
    _insertion_sort(a, lo, hi)


@cached_njit(nogil=True)
def _band_stats(local, x, run_cell, run_len, piece_rec, piece_run, piece_first, labels, scale,
                n_cells, width, trim, tmean, med, seg):
    n_slots = tmean.size
    starts = np.zeros(n_slots + 1, np.int64)
    for pc in range(piece_first.size):
        first = piece_first[pc]
        i = piece_rec[pc]
        for q in range(piece_run[pc], piece_run[pc + 1]):
            base = labels[first + run_cell[q]] * width + 1
            for _ in range(run_len[q]):
                starts[base + local[i]] += 1
                i += 1
    for q in range(n_slots):
        starts[q + 1] += starts[q]
    # CPM (count × 1e6 / total) placed by pair: log2(CPM + 1) is increasing in it, so the
    # selections below run on CPM and only the values they keep pay for a log2
    fill = starts[:-1].copy()
    for pc in range(piece_first.size):
        first = piece_first[pc]
        i = piece_rec[pc]
        for q in range(piece_run[pc], piece_run[pc + 1]):
            c = first + run_cell[q]
            base = labels[c] * width
            f = scale[c]
            for _ in range(run_len[q]):
                slot = base + local[i]
                seg[fill[slot]] = np.float64(x[i]) * f
                fill[slot] += 1
                i += 1
    for q in range(n_slots):
        g = q // width
        n = n_cells[g]
        if n == 0:
            tmean[q] = np.nan
            med[q] = np.nan
            continue
        s = starts[q]
        k = starts[q + 1] - s
        lo = int(math.floor(n * trim))
        if k <= lo:
            # every stored value sorts into the trimmed top end (and above the median)
            tmean[q] = 0.0
            med[q] = 0.0
            continue
        z = n - k
        # stored values are ranks z..n-1 of the pair's n; the kept ones are ranks lo..n-lo-1,
        # i.e. stored positions a0..a1-1 in ascending order (the median's ranks lie inside)
        a0 = max(lo - z, 0) + s
        a1 = k - lo + s
        if k <= SMALL:
            _insertion_sort(seg, s, s + k)
        else:
            if a1 < s + k:
                _select(seg, s, s + k, a1)
            if a0 > s:
                _select(seg, s, a1, a0)
        # Neumaier-compensated sum: the same to rounding whatever the values' order
        acc = 0.0
        comp = 0.0
        for p in range(a0, a1):
            v = math.log2(seg[p] + 1.0)
            t = acc + v
            if abs(acc) >= abs(v):
                comp += (acc - t) + v
            else:
                comp += (v - t) + acc
            acc = t
        tmean[q] = (acc + comp) / (n - 2 * lo)
        ia = (n - 1) // 2 - z
        ib = n // 2 - z
        va = 0.0
        vb = 0.0
        if ia >= 0:
            if k > SMALL:
                _select(seg, a0, a1, s + ia)
            va = seg[s + ia]
        if ib >= 0:
            if ib == ia:
                vb = va
            elif k > SMALL:
                # the smallest value after position ia (all of them are >= seg[s + ia])
                vb = seg[s + ib]
                for p in range(s + ib + 1, a1):
                    if seg[p] < vb:
                        vb = seg[p]
            else:
                vb = seg[s + ib]
        if ia >= 0:
            va = math.log2(va + 1.0)
        if ib >= 0:
            vb = math.log2(vb + 1.0)
        med[q] = 0.5 * (va + vb)


def cpm_scale(totals: np.ndarray) -> np.ndarray:
    """Each cell's CPM factor ``1e6 / total`` (0 for a cell without counts)."""
    totals = np.asarray(totals, np.float64)
    with np.errstate(divide="ignore"):
        return np.where(totals > 0, 1e6 / np.where(totals > 0, totals, 1.0), 0.0)


def band_order_stats(
    local: np.ndarray, count: np.ndarray, run_cell: np.ndarray, run_len: np.ndarray,
    labels: np.ndarray, scale: np.ndarray, n_cells: np.ndarray, width: int,
    trim: float = 0.25, *, pieces: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    alloc: Callable[..., np.ndarray] = np.empty,
) -> tuple[np.ndarray, np.ndarray]:
    """Trimmed mean and median of log2(CPM + 1) of every (group, gene) pair of one band.

    Parameters
    ----------
    local, count : 1-D arrays
        Every stored count of the band (any order of cells): its gene within the band and its
        value.
    run_cell, run_len : 1-D arrays
        The records as runs of one cell each: run ``q`` is the next ``run_len[q]`` records, of
        cell ``run_cell[q]`` (:func:`csr_band_records`).
    labels : (cells,) int
        Each cell's group (cells of runs must have one: >= 0).
    scale : (cells,) float64
        Each cell's CPM factor (:func:`cpm_scale`); a value is log2(count × scale + 1).
    n_cells : (G,) int
        Cells of each group (a pair's ``n``; the pair has ``n - k`` zeros when ``k`` of its
        values are stored).
    width : int
        Genes in the band.
    trim : float, default 0.25
        R's ``mean(x, trim)``: ``floor(n * trim)`` values dropped at each end.
    pieces : (record starts, run starts, first cells), optional
        The records as consecutive pieces (one per row block): piece ``p`` is records
        ``rec[p]:rec[p + 1]`` in runs ``run[p]:run[p + 1]``, its ``run_cell`` values counting
        from cell ``first[p]``. Default: one piece, ``run_cell`` indexing ``labels`` directly.
    alloc : callable
        ``alloc(size, dtype)`` gives the work array (8 bytes a record; default ``np.empty``).

    Returns
    -------
    (trimmed_mean, median) : (G, width) float64
        NaN for groups without cells.
    """
    if not 0 <= trim < 0.5:
        raise ValueError("trim must be in [0, 0.5)")
    n_cells = np.asarray(n_cells, np.int64)
    g = n_cells.size
    local = np.asarray(local)
    run_cell = np.asarray(run_cell)
    run_len = np.asarray(run_len)
    labels = np.asarray(labels, np.int64)
    scale = np.asarray(scale, np.float64)
    if pieces is None:
        rec = np.array([0, local.size], np.int64)
        run = np.array([0, run_cell.size], np.int64)
        first = np.zeros(1, np.int64)
    else:
        rec, run, first = (np.asarray(a, np.int64) for a in pieces)
    if (rec.size != first.size + 1 or run.size != first.size + 1 or rec[0] != 0
            or rec[-1] != local.size or run[0] != 0 or run[-1] != run_cell.size):
        raise ValueError("pieces do not cover the records")
    if local.size and int(local.max()) >= width:
        raise ValueError("gene outside the band")
    for p in range(first.size):
        lens = run_len[run[p]:run[p + 1]]
        if int(lens.sum()) != rec[p + 1] - rec[p]:
            raise ValueError("run lengths do not add up to the records")
        c = run_cell[run[p]:run[p + 1]]
        if c.size:
            if int(c.min()) < 0 or first[p] + int(c.max()) >= min(scale.size, labels.size):
                raise ValueError("cell outside scale")
            lab = labels[first[p] + c.astype(np.int64)]
            if int(lab.min()) < 0 or int(lab.max()) >= g:
                raise ValueError("a run's cell is in no group")
    tm = np.empty(g * width)
    md = np.empty(g * width)
    seg = alloc(local.size, np.float64)
    _band_stats(local, np.asarray(count), run_cell, run_len, rec, run, first, labels, scale,
                n_cells, int(width), float(trim), tm, md, seg)
    return tm.reshape(g, width), md.reshape(g, width)
