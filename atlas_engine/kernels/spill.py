"""Numba kernels of the one-read order statistics (trimmed means and medians of log2(CPM + 1)).

Pure compute: arrays in, arrays out. The order statistics need every stored value of a
(group, gene) pair at once. Instead of holding all of them, one pass over the counts writes
each stored value, tagged with its pair, into *fine gene bands* (a few hundred genes each);
each band is then read back alone and its pairs' statistics computed.

* :func:`csr_band_records` - a CSR row block's stored counts as ``(slot, cell, count)``
  records, grouped by fine band (a counting sort: one pass to count, one to place), with
  ``slot = group * width + (gene position - band start)``, in the narrowest dtypes
  (:func:`record_dtypes`: 6 bytes a record for counts below 65,536), and each cell's total.
* :func:`band_order_stats` - one band's records (any order) -> per pair R's
  ``mean(x, trim)`` and the median, the group's zero counts implied (a pair of a group of ``n``
  cells with ``k`` records has ``n - k`` zeros). Records are placed by pair (a counting sort on
  ``slot``) as log2(count / cell total × 1e6 + 1); each pair's kept values and middle values are found by selection (three-way
  quickselect, O(k) per pair of k stored values; insertion sort for the smallest), not by a full
  sort, and the kept values are summed with Neumaier compensation, so the result does not
  depend on the order the records came in.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def _band_records(indptr, indices, data, labels, band_of, local, width, n_bands, counts,
                  totals, slot, cell, x):
    n_rows = indptr.size - 1
    for r in range(n_rows):
        t = 0.0
        keep = labels[r] >= 0
        for p in range(indptr[r], indptr[r + 1]):
            t += data[p]
            if keep:
                b = band_of[indices[p]]
                if b >= 0:
                    counts[b] += 1
        totals[r] = t
    offs = np.zeros(n_bands + 1, np.int64)
    for b in range(n_bands):
        offs[b + 1] = offs[b] + counts[b]
    fill = offs[:-1].copy()
    for r in range(n_rows):
        g = labels[r]
        if g < 0:
            continue
        base = g * width
        for p in range(indptr[r], indptr[r + 1]):
            j = indices[p]
            b = band_of[j]
            if b < 0:
                continue
            at = fill[b]
            slot[at] = base + local[j]
            cell[at] = r
            x[at] = data[p]
            fill[b] = at + 1
    return offs


def record_dtypes(n_slots: int, n_rows: int, data: np.ndarray) -> tuple[type, type, np.dtype]:
    """The narrowest dtypes of a block's records: ``slot`` (uint16 below 65,536 slots),
    ``cell`` (uint16 for blocks below 65,536 rows) and the stored value (uint16 for integer
    counts below 65,536, else the data's own dtype)."""
    data = np.asarray(data)
    slot_t = np.uint16 if n_slots <= 2**16 else np.uint32
    cell_t = np.uint16 if n_rows <= 2**16 else np.uint32
    x_t = data.dtype
    if data.dtype.kind in "iu" and (data.size == 0 or (int(data.min()) >= 0
                                                       and int(data.max()) < 2**16)):
        x_t = np.dtype(np.uint16)
    return slot_t, cell_t, x_t


def csr_band_records(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, labels: np.ndarray,
    colpos: np.ndarray, width: int, n_bands: int, n_groups: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A CSR row block's stored counts as ``(slot, cell, count)`` records by fine band.

    Parameters
    ----------
    indptr, indices, data : CSR arrays of the block (rows = cells, columns = all genes)
    labels : (rows,) int
        Group of each row; < 0 = in no group (its records are dropped).
    colpos : (genes,) int64
        Position of each gene among the selected ones, -1 = not selected; band ``b`` holds
        positions ``[b * width, (b + 1) * width)``.
    width, n_bands, n_groups : int

    Returns
    -------
    offsets : (n_bands + 1,) int64
        Band ``b``'s records are ``[offsets[b], offsets[b + 1])``.
    slot : uint16 or uint32
        ``group * width + position within the band``.
    cell : uint16 or uint32
        The record's row in the block.
    count : the stored value (uint16 or the data's dtype, :func:`record_dtypes`), in block
        order within each band.
    totals : (rows,) float64
        Each row's sum over all its stored values (CPM's denominator).
    """
    indptr = np.asarray(indptr, np.int64)
    colpos = np.asarray(colpos, np.int64)
    data = np.asarray(data)
    n_rows = indptr.size - 1
    cap = int(indptr[-1] - indptr[0])
    if n_groups * width >= 2**31:
        raise ValueError("groups × band width must stay below 2**31")
    slot_t, cell_t, x_t = record_dtypes(n_groups * width, n_rows, data)
    band_of = np.where(colpos >= 0, colpos // width, -1).astype(np.int32)
    local = np.where(colpos >= 0, colpos % width, 0).astype(np.int32)
    slot = np.empty(cap, slot_t)
    cell = np.empty(cap, cell_t)
    x = np.empty(cap, x_t)
    totals = np.empty(n_rows, np.float64)
    counts = np.zeros(n_bands, np.int64)
    offs = _band_records(indptr, np.asarray(indices), data, np.asarray(labels, np.int64),
                         band_of, local, int(width), int(n_bands), counts, totals, slot, cell,
                         x)
    n = int(offs[-1])
    return offs, slot[:n], cell[:n], x[:n], totals


#: ranges up to this length are insertion-sorted instead of partitioned
SMALL = 16


@numba.njit(nogil=True, cache=True)
def _insertion_sort(a, lo, hi):
    for i in range(lo + 1, hi):
        x = a[i]
        j = i - 1
        while j >= lo and a[j] > x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x


@numba.njit(nogil=True, cache=True)
def _select(a, lo, hi, k):
    """Reorder ``a[lo:hi]`` so that ``a[k]`` holds its k-th smallest value, the values before
    it are <= it and those after >= it (three-way quickselect, median-of-three pivots)."""
    depth = 0
    while hi - lo > SMALL:
        depth += 1
        if depth > 64:  # a pathological order: sort the rest
            a[lo:hi].sort()
            return
        x = a[lo]
        y = a[(lo + hi - 1) // 2]
        z = a[hi - 1]
        if x > y:
            x, y = y, x
        if y > z:
            y = z
        pivot = y if y > x else x
        lt = lo
        i = lo
        gt = hi - 1
        while i <= gt:
            v = a[i]
            if v < pivot:
                a[i] = a[lt]
                a[lt] = v
                lt += 1
                i += 1
            elif v > pivot:
                a[i] = a[gt]
                a[gt] = v
                gt -= 1
            else:
                i += 1
        if k < lt:
            hi = lt
        elif k > gt:
            lo = gt + 1
        else:
            return
    _insertion_sort(a, lo, hi)


@numba.njit(nogil=True, cache=True)
def _band_stats(slot, cell, x, piece_start, piece_first, scale, n_cells, width, trim, tmean,
                med):
    n_slots = tmean.size
    starts = np.zeros(n_slots + 1, np.int64)
    for i in range(slot.size):
        starts[slot[i] + 1] += 1
    for q in range(n_slots):
        starts[q + 1] += starts[q]
    # CPM (count × 1e6 / total) placed by pair: log2(CPM + 1) is increasing in it, so the
    # selections below run on CPM and only the values they keep pay for a log2
    seg = np.empty(slot.size, np.float64)
    fill = starts[:-1].copy()
    for pc in range(piece_first.size):
        first = piece_first[pc]
        for i in range(piece_start[pc], piece_start[pc + 1]):
            q = slot[i]
            seg[fill[q]] = np.float64(x[i]) * scale[first + cell[i]]
            fill[q] += 1
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
    slot: np.ndarray, cell: np.ndarray, count: np.ndarray, scale: np.ndarray,
    n_cells: np.ndarray, width: int, trim: float = 0.25, *,
    pieces: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Trimmed mean and median of log2(CPM + 1) of every (group, gene) pair of one band.

    Parameters
    ----------
    slot, cell, count : 1-D arrays
        Every stored count of the band's pairs, any order: its pair
        (``slot = group * width + gene``), its cell and its value (:func:`csr_band_records`).
    scale : (cells,) float64
        Each cell's CPM factor (:func:`cpm_scale`); a value is
        log2(count × scale + 1).
    n_cells : (G,) int
        Cells of each group (a pair's ``n``; the pair has ``n - k`` zeros when ``k`` of its
        values are stored).
    width : int
        Genes in the band.
    trim : float, default 0.25
        R's ``mean(x, trim)``: ``floor(n * trim)`` values dropped at each end.
    pieces : (starts, first_cells), optional
        The records as consecutive pieces (one per row block): piece ``p`` is records
        ``starts[p]:starts[p + 1]`` and its ``cell`` values count from cell
        ``first_cells[p]``. Default: one piece, ``cell`` indexes ``scale`` directly.

    Returns
    -------
    (trimmed_mean, median) : (G, width) float64
        NaN for groups without cells.
    """
    if not 0 <= trim < 0.5:
        raise ValueError("trim must be in [0, 0.5)")
    n_cells = np.asarray(n_cells, np.int64)
    g = n_cells.size
    slot = np.asarray(slot)
    cell = np.asarray(cell)
    scale = np.asarray(scale, np.float64)
    if pieces is None:
        starts = np.array([0, slot.size], np.int64)
        first = np.zeros(1, np.int64)
    else:
        starts = np.asarray(pieces[0], np.int64)
        first = np.asarray(pieces[1], np.int64)
        if starts.size != first.size + 1 or starts[0] != 0 or starts[-1] != slot.size:
            raise ValueError("pieces do not cover the records")
    if slot.size and (int(slot.min()) < 0 or int(slot.max()) >= g * width):
        raise ValueError("slot outside groups × width")
    for p in range(first.size):
        c = cell[starts[p]:starts[p + 1]]
        if c.size and (int(c.min()) < 0 or first[p] + int(c.max()) >= scale.size):
            raise ValueError("cell outside scale")
    tm = np.empty(g * width)
    md = np.empty(g * width)
    _band_stats(slot, cell, np.asarray(count), starts, first, scale, n_cells, int(width),
                float(trim), tm, md)
    return tm.reshape(g, width), md.reshape(g, width)
