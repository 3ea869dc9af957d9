"""The pipeline's passes over the store's arrays, as Dask tasks.

Every pass that reads a donor's expression or PACall array — the intensity-filter signal,
differential-stability scores, per-probe moments, the per-gene means of ``average`` (reduced
in the tasks by the serial kernel), the chosen rows, the striped sample normalisation — is a
Dask graph of tasks over ``(donor, chunk row)`` (or ``(donor, chunk column)``), each reading
its blocks with :class:`~atlas_engine.store.blockread.BlockArray` (one block reader, buffers
reused per thread). The passes over in-memory or cached matrices are tasks over blocks of
rows, columns or genes: the scaled-robust-sigmoid normalisations and region means of
abagen's defaults, and for other options the other normalisation methods, a donor's region
values with its pseudo-samples, its pooled samples and the combination over donors (each
block's values those of one call on the whole matrix, bit for bit). The streamed output
(:mod:`.output`) runs its spill and write the same way.

:func:`~atlas_engine.aggregate.rowtasks.compute` runs them on whatever Dask runs on in the caller: the threaded scheduler by
default, or the workers of an active ``dask.distributed`` client (``aggregate --workers`` /
``--scheduler``, :func:`atlas_engine.aggregate.cluster.get_client`). The tasks are module-level
functions of plain arguments (arrays, :class:`BlockArray`, :class:`~.cache.StripedMatrix`),
so workers run them by importing :mod:`atlas_engine`; each task reads a whole chunk row (or
more), so a pass is a few dozen tasks and Dask's overhead stays in the milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..aggregate.rowtasks import compute, open_array, sort_rows, take_task, task
from ..kernels.blockgroups import (
    finish_means,
    group_mean_rows,
    group_mean_select,
    group_sum_select,
    take_rows,
    weighted_true_count,
)
from ..store import layout as L
from ..store.blockread import BlockArray, thread_buffer


# --------------------------------------------------------------------------------------------
# intensity filter
# --------------------------------------------------------------------------------------------
def _ibf_task(arr: BlockArray, a: int, b: int, local: np.ndarray, weight: np.ndarray
              ) -> np.ndarray:
    return weighted_true_count(arr.read(a, b), local, weight)


def ibf_signal(url: str, donors: Sequence[int], srcs: Sequence[np.ndarray], rows: np.ndarray
               ) -> list[np.ndarray]:
    """Per donor the PACall count of each probe (``rows``, store rows) over its kept sample
    columns ``srcs[k]`` (a column kept twice counts twice): a task per (donor, chunk row)."""
    order, sorted_rows = sort_rows(rows)
    tasks, where = [], []
    for k, (donor, src) in enumerate(zip(donors, srcs, strict=True)):
        arr = open_array(url, donor, L.PACALL)
        weight = np.bincount(src, minlength=arr.shape[1]).astype(np.float64)
        for a, b, lo, hi in arr.row_jobs(sorted_rows):
            tasks.append(task(_ibf_task, arr, a, b, sorted_rows[lo:hi] - a, weight))
            where.append((k, lo, hi))
    signal = [np.zeros(len(rows)) for _ in donors]
    for (k, lo, hi), part in zip(where, compute(tasks), strict=True):
        signal[k][order[lo:hi]] = part
    return signal


# --------------------------------------------------------------------------------------------
# differential stability
# --------------------------------------------------------------------------------------------
def _ds_task(arrays: list[BlockArray], srcs: list[np.ndarray], groups: list[tuple[Any, Any]],
             ordered: list[bool], col_ranges: list[list[tuple[int, int]]], a: int, b: int,
             local: np.ndarray, widths: list[int], pairs: list[tuple[int, int]],
             shared: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    from ..kernels.ranks import mean_pair_spearman_padded

    # every donor's structure means of the block written straight into one padded array
    # (reused by this thread's next block, like the decoded block itself); Kahan-summed in
    # sample order as pandas' groupby mean in abagen, so the ranks see the same ties (values
    # saturated at one level give means equal in pandas that plain sums can split)
    shape = (len(arrays), len(local), max(widths))
    vals = thread_buffer("ds_vals", shape, np.float64)
    orders = thread_buffer("ds_orders", shape, np.int32)
    for k, (src, arr, (sids, codes)) in enumerate(zip(srcs, arrays, groups, strict=True)):
        if not ordered[k]:
            group_mean_select(arr.read(a, b), local, src, codes, len(sids),
                              out=vals[k, :, :len(sids)], compensated=True)
            continue
        # columns in increasing order: one chunk at a time (a chunk in memory, not a chunk
        # row), the sums added in the same order
        sums = vals[k, :, :len(sids)]
        sums[...] = 0.0
        counts = thread_buffer("ds_counts", sums.shape, np.float64)
        counts[...] = 0.0
        comp = thread_buffer("ds_comp", sums.shape, np.float64)
        comp[...] = 0.0
        for j, (c0, c1) in enumerate(col_ranges[k]):
            if c0 < c1:
                group_sum_select(arr.read_chunk(a, j), local, src[c0:c1] - j * arr.chunks[1],
                                 codes[c0:c1], sums, counts, comp)
        finish_means(sums, counts)
    return mean_pair_spearman_padded(vals, widths, pairs, shared, orders)


def ds_scores(url: str, donors: Sequence[int], srcs: Sequence[np.ndarray],
              structure_ids: Sequence[np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Differential stability of the probes at store ``rows``: a task per chunk row computing
    each donor's structure means of the block (grouped kernels), then the pairwise Spearman
    correlations (:mod:`atlas_engine.kernels.ranks`). Memory per task: one block × all donors' structures."""
    from itertools import combinations

    order, sorted_rows = sort_rows(rows)
    arrays = [open_array(url, d, L.EXPRESSION) for d in donors]
    srcs = [np.asarray(s) for s in srcs]
    groups = []
    for sid in structure_ids:
        sids, codes = np.unique(np.asarray(sid), return_inverse=True)
        groups.append((sids, codes.reshape(-1).astype(np.int64)))
    # the donor pairs and the structures each pair shares (diff_stability_from_means' rule)
    pairs, shared = [], []
    for (d1, (ids1, _)), (d2, (ids2, _)) in combinations(enumerate(groups), 2):
        _, i1, i2 = np.intersect1d(ids1, ids2, return_indices=True)
        pairs.append((d1, d2))
        shared.append((i1, i2))
    widths = [len(sids) for sids, _ in groups]
    ordered = [bool(np.all(np.diff(src) >= 0)) for src in srcs]
    col_ranges = [[tuple(int(v) for v in np.searchsorted(src, [c0, c1]))
                   for c0, c1 in arr.column_chunks()] for src, arr in zip(srcs, arrays,
                                                                          strict=True)]
    jobs = arrays[0].row_jobs(sorted_rows)
    tasks = [task(_ds_task, arrays, srcs, groups, ordered, col_ranges, a, b,
                  sorted_rows[lo:hi] - a, widths, pairs, shared) for a, b, lo, hi in jobs]
    out = np.empty(len(rows))
    for (_, _, lo, hi), values in zip(jobs, compute(tasks), strict=True):
        out[order[lo:hi]] = values
    return out


# --------------------------------------------------------------------------------------------
# per-probe moments (max_intensity / max_variance) and per-gene means (average)
# --------------------------------------------------------------------------------------------
def _moments_task(arr: BlockArray, a: int, b: int, local: np.ndarray, src: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from ..aggregate.engine import groupby_reduce

    block = take_task(arr, a, b, local, np.float64)
    res = groupby_reduce(block[:, src], np.zeros(len(src), dtype=np.int64), axis="sample",
                         n_groups=1, stats=("mean", "var"), parallel=False)
    return res["count"][:, 0], res["mean"][:, 0], res["var"][:, 0]


def probe_moments(url: str, donors: Sequence[int], srcs: Sequence[np.ndarray],
                  rows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per donor, per probe ``(count, mean, var ddof=1)`` over its kept sample columns: a task
    per (donor, chunk row)."""
    order, sorted_rows = sort_rows(rows)
    tasks, where = [], []
    for k, (donor, src) in enumerate(zip(donors, srcs, strict=True)):
        arr = open_array(url, donor, L.EXPRESSION)
        for a, b, lo, hi in arr.row_jobs(sorted_rows):
            tasks.append(task(_moments_task, arr, a, b, sorted_rows[lo:hi] - a, src))
            where.append((k, lo, hi))
    n = len(rows)
    out = [(np.zeros(n), np.full(n, np.nan), np.full(n, np.nan)) for _ in donors]
    for (k, lo, hi), parts in zip(where, compute(tasks), strict=True):
        for dest, part in zip(out[k], parts, strict=True):
            dest[order[lo:hi]] = part
    return out


def _gene_sums_task(arr: BlockArray, a: int, b: int, local: np.ndarray, codes: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One task of :func:`gene_means`: rows ``local`` of the chunk row ``a:b`` summed per
    gene (``codes``, one per row) with the serial kernel. ``(the genes of the block (sorted),
    their sums over the block's probes (0 where no value), the counts of those values)``."""
    from ..kernels import group_sum_count

    block = take_task(arr, a, b, local, np.float64)
    genes, inv = np.unique(codes, return_inverse=True)
    sums, counts = group_sum_count(block, inv.reshape(-1), len(genes), axis=0)
    # a gene without a value in a column of this block adds nothing there
    return genes, np.where(counts > 0, sums, 0.0), counts


def gene_means(arr: BlockArray, rows: np.ndarray, codes: np.ndarray, n_genes: int
               ) -> np.ndarray:
    """Genes × all columns of ``arr``: the mean of each gene's probes (``average``; ``codes``
    the gene of each of ``rows``). A task per chunk row reads its rows and sums them per gene
    (the genes it holds only); the caller adds the blocks' sums in block order (a gene's sums
    over the blocks holding its probes)."""
    order, sorted_rows = sort_rows(rows)
    jobs = arr.row_jobs(sorted_rows)
    codes = np.asarray(codes, dtype=np.int64)
    tasks = [task(_gene_sums_task, arr, a, b, sorted_rows[lo:hi] - a, codes[order[lo:hi]])
             for a, b, lo, hi in jobs]
    sums = np.zeros((n_genes, arr.shape[1]))
    counts = np.zeros((n_genes, arr.shape[1]))
    for genes, part_sums, part_counts in compute(tasks):
        sums[genes] += part_sums
        counts[genes] += part_counts
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


# --------------------------------------------------------------------------------------------
# sample normalisation, one stripe (chunk column) of the chosen rows at a time
# --------------------------------------------------------------------------------------------
def _stripe_task(arr: BlockArray, jobs: list[tuple[int, int, int, int]],
                 sorted_rows: np.ndarray, order: np.ndarray, j: int, method: str,
                 dest: str) -> tuple[str, float, float, dict[str, Any] | None]:
    """Read stripe ``j`` of the chosen rows, normalise each sample over the genes and save
    it as ``dest`` (.npy, :func:`~.cache.save_stripe`). ``("nan" | "error" | "ok", seconds
    normalising, seconds writing, the file's checks)``."""
    from ..kernels.srs import srs_columns
    from .cache import save_stripe
    from .normalize import check_method, normalize

    c0, c1 = arr.column_chunks()[j]
    stripe = np.empty((len(order), c1 - c0))
    for a, _, lo, hi in jobs:
        take_rows(arr.read_chunk(a, j), sorted_rows[lo:hi] - a, order[lo:hi], stripe)
    if np.isnan(stripe).any():
        return "nan", 0.0, 0.0, None
    t0 = time.perf_counter()
    if check_method(method) == "srs":
        stripe = srs_columns(stripe, out=stripe)
    else:
        stripe = normalize(stripe, method, axis=0)
    t1 = time.perf_counter()
    try:
        checks = save_stripe(dest, stripe)
    except OSError:
        return "error", t1 - t0, time.perf_counter() - t1, None
    return "ok", t1 - t0, time.perf_counter() - t1, checks


def stripe_tasks(arr: BlockArray, rows: np.ndarray, method: str, dest: Callable[[int], str]
                 ) -> list[Any]:
    """A task per chunk column of ``arr``: the chosen ``rows`` of that stripe, sample-
    normalised by ``method`` and saved to ``dest(j)`` (see :func:`_stripe_task`)."""
    order, sorted_rows = sort_rows(rows)
    jobs = arr.row_jobs(sorted_rows)
    return [task(_stripe_task, arr, jobs, sorted_rows, order, j, method, dest(j))
            for j in range(len(arr.column_chunks()))]


# --------------------------------------------------------------------------------------------
# scaled robust sigmoid and region means over matrices (in memory or cached stripes)
# --------------------------------------------------------------------------------------------
def _spans(n: int, per_block: int) -> list[tuple[int, int]]:
    """``0:n`` in ranges of ``per_block``: one block of the srs kernel per task (larger
    tasks were measured to hold more memory at once for no speed)."""
    return [(a, min(n, a + per_block)) for a in range(0, n, per_block)]


def _rows_of(x: Any, r0: int, r1: int) -> Any:
    """What a task over rows ``r0:r1`` of ``x`` gets: the slice itself (in memory), or ``x``
    (a file-backed :class:`~.cache.StripedMatrix`, read in the task)."""
    return x[r0:r1] if isinstance(x, np.ndarray) else x


def _srs_rows_task(x: Any, r0: int, r1: int, idx: np.ndarray, codes: np.ndarray | None,
                   n_groups: int) -> np.ndarray:
    from ..kernels.srs import srs_rows, srs_rows_inplace

    if hasattr(x, "gather_rows"):
        # a file-backed matrix: only the columns ``idx`` gathered, into a pooled block
        from ..store.bufferpool import pooled_empty

        g = srs_rows_inplace(x.gather_rows(r0, r1, idx, pooled_empty((r1 - r0, len(idx)),
                                                                     np.float64)))
        return g if codes is None else group_mean_rows(g, codes, n_groups)
    block = x if isinstance(x, np.ndarray) else x[r0:r1]
    if codes is None:
        return srs_rows(block, idx)
    return srs_rows(block, idx, reduce=lambda b: group_mean_rows(b, codes, n_groups),
                    width=n_groups)


def srs_rows(x: Any, cols: np.ndarray | None = None, codes: np.ndarray | None = None,
             n_groups: int = 0) -> np.ndarray:
    """:func:`atlas_engine.kernels.srs.srs_rows` of ``x`` (array or :class:`~.cache.StripedMatrix`) over the
    columns ``cols``, as tasks over blocks of rows; with ``codes`` (the group of each of
    ``cols``, -1 left out) each block's normalised rows averaged per group instead
    (``(rows, n_groups)``), so the normalised matrix never exists whole."""
    from ..kernels.srs import rows_per_block

    idx = np.arange(x.shape[1]) if cols is None else np.asarray(cols, dtype=np.int64)
    spans = _spans(x.shape[0], rows_per_block(len(idx)))
    tasks = [task(_srs_rows_task, _rows_of(x, r0, r1), r0, r1, idx, codes, n_groups)
             for r0, r1 in spans]
    out = np.empty((x.shape[0], len(idx) if codes is None else n_groups))
    for (r0, r1), part in zip(spans, compute(tasks), strict=True):
        out[r0:r1] = part
    return out


def _srs_columns_task(x: np.ndarray) -> np.ndarray:
    from ..kernels.srs import srs_columns

    return srs_columns(x)


def srs_columns(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """:func:`atlas_engine.kernels.srs.srs_columns` of ``x`` as tasks over blocks of columns (``out`` may be
    ``x`` itself, float64, to normalise in place)."""
    from ..kernels.srs import rows_per_block

    a = np.asarray(x, dtype=np.float64)
    res = np.empty(a.shape) if out is None else out
    spans = _spans(a.shape[1], rows_per_block(a.shape[0]))
    tasks = [task(_srs_columns_task, a[:, c0:c1]) for c0, c1 in spans]
    for (c0, c1), part in zip(spans, compute(tasks), strict=True):
        res[:, c0:c1] = part
    return res


# --------------------------------------------------------------------------------------------
# the other normalisations (:func:`~.normalize.normalize`), over blocks of rows or columns
# --------------------------------------------------------------------------------------------
def _wide_spans(n: int, per_block: int) -> list[tuple[int, int]]:
    """:func:`_spans` without a block of one column (unless ``n`` is 1): numpy sums a
    single column pairwise, but the columns of a wider block one row after the other, as
    over the whole matrix, so per-column reductions over the blocks equal the whole's."""
    spans = _spans(n, max(2, per_block))
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] == 1:
        spans[-2:] = [(spans[-2][0], n)]
    return spans


#: bytes of a task's block of columns or genes (the larger of its input and its result)
TASK_BYTES = 32 * 2**20


def _gene_spans(n_genes: int, per_gene: int) -> list[tuple[int, int]]:
    """Blocks of genes of about :data:`TASK_BYTES` (``per_gene`` float64 values a gene), none
    of a single gene (see :func:`_wide_spans`)."""
    return _wide_spans(n_genes, TASK_BYTES // (8 * max(1, per_gene)))


def _normalize_task(x: np.ndarray, method: str, axis: int, groups: np.ndarray | None
                    ) -> np.ndarray:
    from .normalize import normalize

    return normalize(x, method, axis=axis, groups=groups)


def normalize_rows(x: np.ndarray, method: str, per_task: int, out: np.ndarray | None = None
                   ) -> np.ndarray:
    """Each row of ``x`` normalised over the columns by ``method``
    (:func:`~.normalize.normalize` with ``axis=1``), as tasks over blocks of ``per_task`` rows,
    written into ``out`` (may be ``x`` itself, float64; a new array by default)."""
    res = np.empty(x.shape) if out is None else out
    spans = _spans(x.shape[0], per_task)
    tasks = [task(_normalize_task, x[a:b], method, 1, None) for a, b in spans]
    for (a, b), part in zip(spans, compute(tasks), strict=True):
        res[a:b] = part
    return res


def normalize_columns(x: np.ndarray, method: str, per_task: int | None = None,
                      groups: np.ndarray | None = None, out: np.ndarray | None = None,
                      whole: bool = False) -> np.ndarray:
    """Each column of ``x`` normalised over the rows by ``method`` (:func:`~.normalize.
    normalize` with ``axis=0``; separately per value of ``groups``, one per row), as tasks
    over blocks of ``per_task`` columns (default: about :data:`TASK_BYTES` of ``x`` a task),
    written into ``out`` (may be ``x`` itself, float64; a new array by default).

    Each block is normalised as :func:`~.normalize.normalize` would on its own. With
    ``whole`` the values are those of one call on the whole matrix: no block is a single
    column (see :func:`_wide_spans`), and a matrix holding NaN (whose all-NaN rows depend on
    the columns looked at) or normalised by ``mixed_sig`` (which normalises subsets of the
    columns together) is one task."""
    from .normalize import check_method

    res = np.empty(x.shape) if out is None else out
    n = x.shape[1]
    if per_task is None:
        per_task = TASK_BYTES // (8 * max(1, x.shape[0]))
    if not whole:
        spans = _spans(n, per_task)
    elif check_method(method) == "mixed_sig" or np.isnan(x).any():
        spans = [(0, n)]
    else:
        spans = _wide_spans(n, per_task)
    tasks = [task(_normalize_task, x[:, a:b], method, 0, groups) for a, b in spans]
    for (a, b), part in zip(spans, compute(tasks), strict=True):
        res[:, a:b] = part
    return res


# --------------------------------------------------------------------------------------------
# one donor's region values (other region_agg / agg_metric / missing than abagen's defaults)
# and the combination over donors, as tasks over blocks of genes
# --------------------------------------------------------------------------------------------
def _group_means_task(g: np.ndarray, codes: np.ndarray, n_groups: int, fill: Any,
                      all_labels: np.ndarray) -> np.ndarray:
    from .interpolate import with_pseudo

    return with_pseudo(group_mean_rows(g, codes, n_groups).T, fill, g.T, all_labels)


def group_means(xg: np.ndarray, codes: np.ndarray, all_labels: np.ndarray, fill: Any
                ) -> np.ndarray:
    """Regions (``all_labels``) × genes: per region the mean of genes × samples ``xg`` over
    its samples (``codes``: each sample's position in ``all_labels``, -1 none; NaN skipped),
    with the pseudo-samples of ``fill`` (:class:`~.interpolate.InterpolationFill`) in its
    labels (:func:`~.interpolate.with_pseudo`); a task per block of genes. A transposed view
    of genes × regions, as ``group_mean_rows(xg, codes, n).T``."""
    n_genes, n = xg.shape[0], len(all_labels)
    out = np.empty((n_genes, n))
    spans = _gene_spans(n_genes, max(n, xg.shape[1]))
    tasks = [task(_group_means_task, xg[a:b], codes, n, fill, all_labels) for a, b in spans]
    for (a, b), part in zip(spans, compute(tasks), strict=True):
        out[a:b] = part.T
    return out.T


def _region_values_task(x: np.ndarray, labels: np.ndarray, all_labels: np.ndarray,
                        metric: str, fill: Any) -> np.ndarray:
    from .interpolate import with_pseudo
    from .regions import region_values

    vals = region_values(x, labels, all_labels, metric)
    return vals if fill is None else with_pseudo(vals, fill, x, all_labels)


def region_values(x: np.ndarray, labels: np.ndarray, all_labels: np.ndarray, metric: str,
                  fill: Any = None) -> np.ndarray:
    """:func:`.regions.region_values` of samples × genes ``x`` (with the pseudo-samples of
    ``fill`` in its labels, :func:`~.interpolate.with_pseudo`), a task per block of genes
    (each gene's values depend on its column only)."""
    n_genes = x.shape[1]
    out = np.empty((len(all_labels), n_genes))
    spans = _gene_spans(n_genes, max(len(all_labels), x.shape[0]))
    tasks = [task(_region_values_task, x[:, a:b], labels, all_labels, metric, fill)
             for a, b in spans]
    for (a, b), part in zip(spans, compute(tasks), strict=True):
        out[:, a:b] = part
    return out


def _pseudo_task(x: np.ndarray, fill: Any) -> np.ndarray:
    return fill.values(x)


def pooled_samples(x: np.ndarray, labels: np.ndarray, fill: Any
                   ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~.interpolate.pooled_with_pseudo`: one donor's samples × genes ``x`` and their
    ``labels`` with the pseudo-samples of ``fill`` appended, these computed by a task per
    block of genes (:meth:`~.interpolate.InterpolationFill.values`; each gene's from its
    column only)."""
    from .interpolate import pooled_with_pseudo

    if not len(fill.labels) or not x.shape[1]:
        return pooled_with_pseudo(x, labels, fill)
    n = x.shape[0]
    out = np.empty((n + len(fill.labels), x.shape[1]))
    out[:n] = x
    spans = _gene_spans(x.shape[1], max(n, len(fill.labels)))
    tasks = [task(_pseudo_task, x[:, a:b], fill) for a, b in spans]
    for (a, b), part in zip(spans, compute(tasks), strict=True):
        out[n:, a:b] = part
    return out, np.concatenate([np.asarray(labels, dtype=np.int64), fill.labels])


def _combine_task(parts: list[np.ndarray], metric: str) -> np.ndarray:
    if metric == "mean":
        from ..kernels.blockgroups import nanmean_stack

        return nanmean_stack(parts)
    from ..kernels.nanreduce import nanmedian_quiet

    return nanmedian_quiet(np.stack(parts), axis=0)


def combine_donors(per: Sequence[np.ndarray], metric: str = "mean") -> np.ndarray:
    """Regions × genes: the NaN-skipping ``metric`` (``mean`` or ``median``) over the donors'
    regions × genes ``per``, element by element; a task per block of genes."""
    n_regions, n_genes = np.shape(per[0])
    out = np.empty((n_regions, n_genes))
    spans = _gene_spans(n_genes, len(per) * n_regions)
    tasks = [task(_combine_task, [v[:, a:b] for v in per], metric) for a, b in spans]
    for (a, b), part in zip(spans, compute(tasks), strict=True):
        out[:, a:b] = part
    return out


# --------------------------------------------------------------------------------------------
# per-structure means of one donor (probe_selection='rnaseq')
# --------------------------------------------------------------------------------------------
def _structure_means_task(arr: BlockArray, a: int, b: int, local: np.ndarray,
                          src: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    from ..kernels.compensated import group_mean_compensated

    block = take_task(arr, a, b, local, np.float64)
    return group_mean_compensated(block[:, src], codes, n_groups)


def structure_means(url: str, donor: int, src: np.ndarray, structure_ids: np.ndarray,
                    rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sorted structure ids, len(rows) × n_structures means)`` of one donor's kept sample
    columns ``src``, a task per chunk row, Kahan-summed in sample order as pandas' groupby
    mean (abagen's ``_groupby_structure_id``): with ``lr_mirror`` a structure and its mirror
    hold the same samples in another order, and their means must tie exactly as in abagen
    for the ranks of ``probe_selection='rnaseq'`` (:mod:`atlas_engine.kernels.compensated`)."""
    sids, codes = np.unique(np.asarray(structure_ids), return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    order, sorted_rows = sort_rows(rows)
    arr = open_array(url, donor, L.EXPRESSION)
    jobs = arr.row_jobs(sorted_rows)
    tasks = [task(_structure_means_task, arr, a, b, sorted_rows[lo:hi] - a, src, codes,
                  len(sids)) for a, b, lo, hi in jobs]
    out = np.empty((len(rows), len(sids)))
    for (_, _, lo, hi), part in zip(jobs, compute(tasks), strict=True):
        out[order[lo:hi]] = part
    return sids, out


def release_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``; no-op elsewhere). The
    block-wise passes free many large temporaries from worker threads; without this their
    arenas keep the pages and the resident size ratchets up between steps."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
