"""Numba kernel: per-group means of the columns of a rows × samples matrix, skipping NaN.

The region step of the pipeline: genes × samples values and each sample's region code give
genes × regions means (pandas ``groupby(...).mean()`` semantics: NaN skipped, a group whose
values are all NaN gives NaN). One pass over the matrix.
"""

from __future__ import annotations

import numpy as np

from ._cache import cached_njit


@cached_njit(nogil=True, error_model="numpy")
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


def _chunked(block: np.ndarray) -> np.ndarray:
    """A 2-D ``(rows, columns)`` block as the chunked layout ``(1, rows, columns)``; a 3-D
    ``(column chunks, rows, chunk columns)`` block (:func:`~atlas_engine.store.blockread.
    read_chunk_row`) as it is."""
    if block.ndim == 2:
        return block[None]
    if block.ndim != 3:
        raise ValueError(f"expected a 2-D or chunked 3-D block, got {block.ndim} dimensions")
    return block


def _column_map(block: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chunk and offset of each column ``cols`` in a chunked block."""
    cc = block.shape[2]
    cols = np.asarray(cols, dtype=np.int64)
    return cols // cc, cols % cc


@cached_njit(nogil=True)
def _group_mean_select(block: np.ndarray, rows: np.ndarray, cj: np.ndarray, co: np.ndarray,
                       codes: np.ndarray, n_groups: int, out: np.ndarray) -> None:
    s = np.empty(n_groups)
    c = np.empty(n_groups)
    for i in range(rows.size):
        r = rows[i]
        s[:] = 0.0
        c[:] = 0.0
        for j in range(cj.size):
            v = np.float64(block[cj[j], r, co[j]])
            if not np.isnan(v):
                s[codes[j]] += v
                c[codes[j]] += 1.0
        for g in range(n_groups):
            out[i, g] = s[g] / c[g] if c[g] > 0 else np.nan


@cached_njit(nogil=True)
def _group_mean_select_kahan(block: np.ndarray, rows: np.ndarray, cj: np.ndarray,
                             co: np.ndarray, codes: np.ndarray, n_groups: int,
                             out: np.ndarray) -> None:
    s = np.empty(n_groups)
    k = np.empty(n_groups)
    c = np.empty(n_groups)
    for i in range(rows.size):
        r = rows[i]
        s[:] = 0.0
        k[:] = 0.0
        c[:] = 0.0
        for j in range(cj.size):
            v = np.float64(block[cj[j], r, co[j]])
            if not np.isnan(v):
                g = codes[j]
                y = v - k[g]
                t = s[g] + y
                k[g] = t - s[g] - y
                s[g] = t
                c[g] += 1.0
        for g in range(n_groups):
            out[i, g] = s[g] / c[g] if c[g] > 0 else np.nan


def group_mean_select(block: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                      codes: np.ndarray, n_groups: int, out: np.ndarray | None = None,
                      compensated: bool = False) -> np.ndarray:
    """``(len(rows), n_groups)``: per selected row of ``block`` the mean of its non-NaN
    values in the columns ``cols`` (repeats count again) per group ``codes`` (one per entry
    of ``cols``, 0 … n_groups-1), summed in column order. Equivalent to grouping
    ``block[rows][:, cols]`` without building it; the sums are float64 whatever the block's
    dtype. ``block``: 2-D, or chunked 3-D (``[chunk, row, column in chunk]``). ``out``: a
    float64 ``(len(rows), n_groups)`` array (view) to fill. ``compensated``: Kahan sums, as
    pandas' ``groupby(...).mean()`` (bit for bit where ranks of the means must see pandas'
    ties; :mod:`atlas_engine.kernels.compensated`)."""
    blk = _chunked(block)
    cj, co = _column_map(blk, cols)
    rows = np.asarray(rows, dtype=np.int64)
    if out is None:
        out = np.empty((rows.size, int(n_groups)))
    kernel = _group_mean_select_kahan if compensated else _group_mean_select
    kernel(blk, rows, cj, co, np.asarray(codes, dtype=np.int64), int(n_groups), out)
    return out


@cached_njit(nogil=True)
def _group_sum_select(block: np.ndarray, rows: np.ndarray, cj: np.ndarray, co: np.ndarray,
                      codes: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> None:
    for i in range(rows.size):
        r = rows[i]
        for j in range(cj.size):
            v = np.float64(block[cj[j], r, co[j]])
            if not np.isnan(v):
                sums[i, codes[j]] += v
                counts[i, codes[j]] += 1.0


@cached_njit(nogil=True)
def _group_sum_select_kahan(block: np.ndarray, rows: np.ndarray, cj: np.ndarray,
                            co: np.ndarray, codes: np.ndarray, sums: np.ndarray,
                            counts: np.ndarray, comp: np.ndarray) -> None:
    for i in range(rows.size):
        r = rows[i]
        for j in range(cj.size):
            v = np.float64(block[cj[j], r, co[j]])
            if not np.isnan(v):
                g = codes[j]
                y = v - comp[i, g]
                t = sums[i, g] + y
                comp[i, g] = t - sums[i, g] - y
                sums[i, g] = t
                counts[i, g] += 1.0


def group_sum_select(block: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                     codes: np.ndarray, sums: np.ndarray, counts: np.ndarray,
                     comp: np.ndarray | None = None) -> None:
    """Add to ``sums`` / ``counts`` (``(len(rows), n_groups)`` float64) the non-NaN values of
    the selected rows of ``block`` in the columns ``cols`` per group ``codes``, in column
    order. Called on the column chunks of a row block one after the other (each with its own
    columns, in increasing order), then :func:`finish_means`, it gives exactly
    :func:`group_mean_select` of the whole rows with the columns in that order. ``comp``
    (same shape, zeros before the first call, kept between calls): Kahan compensation, giving
    ``group_mean_select(..., compensated=True)``."""
    blk = _chunked(block)
    cj, co = _column_map(blk, cols)
    rows = np.asarray(rows, dtype=np.int64)
    codes = np.asarray(codes, dtype=np.int64)
    if comp is None:
        _group_sum_select(blk, rows, cj, co, codes, sums, counts)
    else:
        _group_sum_select_kahan(blk, rows, cj, co, codes, sums, counts, comp)


def finish_means(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``sums / counts`` in place (NaN where a count is 0), as :func:`group_mean_select`."""
    np.divide(sums, counts, out=sums, where=counts > 0)
    sums[counts == 0] = np.nan
    return sums


@cached_njit(nogil=True)
def _weighted_true_count(block: np.ndarray, rows: np.ndarray, weight: np.ndarray,
                         n_cols: int) -> np.ndarray:
    out = np.zeros(rows.size)
    cc = block.shape[2]
    for i in range(rows.size):
        r = rows[i]
        t = 0.0
        for jc in range(block.shape[0]):
            w0 = jc * cc
            for c in range(min(cc, n_cols - w0)):
                if block[jc, r, c]:
                    t += weight[w0 + c]
        out[i] = t
    return out


@cached_njit(nogil=True)
def _integer_true_count(block: np.ndarray, rows: np.ndarray, weight: np.ndarray,
                        n_cols: int) -> np.ndarray:
    # integer weights: the sum is exact in any order, so it can be branch-free (vectorised)
    out = np.zeros(rows.size)
    cc = block.shape[2]
    for i in range(rows.size):
        r = rows[i]
        t = 0
        for jc in range(block.shape[0]):
            w0 = jc * cc
            for c in range(min(cc, n_cols - w0)):
                t += weight[w0 + c] * np.int64(block[jc, r, c] != 0)
        out[i] = t
    return out


def weighted_true_count(block: np.ndarray, rows: np.ndarray, weight: np.ndarray
                        ) -> np.ndarray:
    """Per selected row of a boolean (or 0/1) ``block``: the sum of ``weight`` over the
    columns that are set (``block[rows].astype(float) @ weight`` without the copy or BLAS).
    ``block``: 2-D, or chunked 3-D with ``len(weight)`` columns. Integer weights (e.g.
    how often each column is used) are summed exactly as integers."""
    blk = _chunked(block)
    rows = np.asarray(rows, dtype=np.int64)
    w = np.asarray(weight, dtype=np.float64)
    if blk.shape[0] * blk.shape[2] < len(w):
        raise ValueError(f"{len(w)} weights for a block of {blk.shape[0] * blk.shape[2]} "
                         "columns")
    if np.all(w == np.round(w)) and np.abs(w).sum() < 2.0**52:
        return _integer_true_count(blk, rows, w.astype(np.int64), len(w))
    return _weighted_true_count(blk, rows, w, len(w))


@cached_njit(nogil=True)
def _nanmean_stack(stack: np.ndarray) -> np.ndarray:
    d, n = stack.shape
    out = np.empty(n)
    for j in range(n):
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
    summed in array order). Serial and ``nogil``: no thread pool of its own, so it can run
    inside Dask tasks over blocks of columns (each element depends on that element of the
    arrays only)."""
    stack = np.stack([np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays])
    return _nanmean_stack(stack).reshape(np.shape(arrays[0]))


@cached_njit(nogil=True)
def _take_rows(block: np.ndarray, src: np.ndarray, dst: np.ndarray, out: np.ndarray) -> None:
    cc = block.shape[2]
    n_cols = out.shape[1]
    for i in range(src.size):
        r = src[i]
        o = dst[i]
        for jc in range(block.shape[0]):
            w0 = jc * cc
            for c in range(min(cc, n_cols - w0)):
                out[o, w0 + c] = block[jc, r, c]


def take_rows(block: np.ndarray, src: np.ndarray, dst: np.ndarray, out: np.ndarray) -> None:
    """``out[dst] = block[src]`` (cast to ``out``'s dtype) without a temporary, the GIL
    released (several threads fill disjoint rows of one ``out``). ``block``: 2-D, or chunked
    3-D with ``out.shape[1]`` columns."""
    blk = _chunked(block)
    if blk.shape[0] * blk.shape[2] < out.shape[1] or (block.ndim == 2
                                                       and block.shape[1] != out.shape[1]):
        raise ValueError(f"block has {blk.shape[0] * blk.shape[2]} columns, out "
                         f"{out.shape[1]}")
    _take_rows(blk, np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64),
               np.asarray(out))


@cached_njit(nogil=True)
def _take_columns(block: np.ndarray, src: np.ndarray, dst: np.ndarray, out: np.ndarray) -> None:
    for r in range(block.shape[0]):
        for i in range(src.size):
            out[r, dst[i]] = block[r, src[i]]


def take_columns(block: np.ndarray, src: np.ndarray, dst: np.ndarray, out: np.ndarray) -> None:
    """``out[:, dst] = block[:, src]`` (same number of rows) without a temporary, the GIL
    released."""
    if block.shape[0] != out.shape[0] or len(src) != len(dst):
        raise ValueError(f"block {block.shape} and out {out.shape} rows, or {len(src)} "
                         f"sources for {len(dst)} destinations, differ")
    _take_columns(block, np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64), out)
