"""The pipeline's passes over the store's arrays, as Dask tasks.

Every pass that reads a donor's expression or PACall array — the intensity-filter signal,
differential-stability scores, per-probe moments, the per-gene means of ``average`` (reduced
in the tasks by the serial kernel), the chosen rows, the striped sample normalisation — is a
Dask graph of tasks over ``(donor, chunk row)`` (or ``(donor, chunk column)``), each reading
its blocks with :class:`~atlas_engine.store.blockread.BlockArray` (one block reader, buffers
reused per thread). The passes over matrices already in memory or in the cache are in
:mod:`.matrix_passes`; the streamed output (:mod:`.output`) runs its spill and write the same
way.

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
    from ..kernels.ranks import mean_pair_spearman_side_by_side, side_by_side_offsets

    # every donor's structure means of the block written straight into one array, the
    # donors side by side (reused by this thread's next block, like the decoded block
    # itself; no padding to the widest donor: a third less than a donors × rows × widest
    # array on AHBA's 97–224 structures); Kahan-summed in sample order as pandas' groupby
    # mean in abagen, so the ranks see the same ties (values saturated at one level give
    # means equal in pandas that plain sums can split)
    shape = (len(local), sum(widths))
    vals = thread_buffer("ds_vals", shape, np.float64)
    orders = thread_buffer("ds_orders", shape, np.int32)
    offsets = side_by_side_offsets(widths).tolist()
    for k, (src, arr, (sids, codes)) in enumerate(zip(srcs, arrays, groups, strict=True)):
        sums = vals[:, offsets[k]:offsets[k] + len(sids)]   # this donor's means, once summed
        if not ordered[k]:
            group_mean_select(arr.read(a, b), local, src, codes, len(sids), out=sums,
                              compensated=True)
            continue
        # columns in increasing order: one chunk at a time (a chunk in memory, not a chunk
        # row), the sums added in the same order
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
    return mean_pair_spearman_side_by_side(vals, widths, pairs, shared, orders)


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
