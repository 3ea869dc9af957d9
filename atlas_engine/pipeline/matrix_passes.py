"""The pipeline's passes over matrices in memory or in the cache, as Dask tasks.

Tasks over blocks of rows, columns or genes: the scaled-robust-sigmoid normalisations and
region means of abagen's defaults (over a :class:`~.cache.StripedMatrix`, each task reads its
rows itself), and for other options the other normalisation methods, a donor's region values
with its pseudo-samples, its pooled samples and the combination over donors. Each block's
values are those of one call on the whole matrix, bit for bit. The passes over the store's
arrays are in :mod:`.passes`; both run on
:func:`~atlas_engine.aggregate.rowtasks.compute` (Dask's threads, or an active client's
workers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..aggregate.rowtasks import compute, task
from ..kernels.blockgroups import group_mean_rows


# --------------------------------------------------------------------------------------------
# scaled robust sigmoid and region means over matrices (in memory or cached stripes)
# --------------------------------------------------------------------------------------------
def _spans(n: int, per_block: int) -> list[tuple[int, int]]:
    """``0:n`` in ranges of ``per_block``: one block of the srs kernel per task (larger
    tasks were measured to hold more memory at once for no speed)."""
    return [(a, min(n, a + per_block)) for a in range(0, n, per_block)]


def _into(out: np.ndarray, spans: list[tuple[int, int]], tasks: list[Any], axis: int
          ) -> np.ndarray:
    """Run ``tasks`` (one per span, in one Dask computation) and write each result into its
    span ``a:b`` of ``out`` along ``axis`` (0: rows, 1: columns); ``out`` returned."""
    for (a, b), part in zip(spans, compute(tasks), strict=True):
        if axis == 0:
            out[a:b] = part
        else:
            out[:, a:b] = part
    return out


def _rows_of(x: Any, r0: int, r1: int) -> Any:
    """What a task over rows ``r0:r1`` of ``x`` gets: the slice itself (in memory), or ``x``
    (a file-backed :class:`~.cache.StripedMatrix`, read in the task)."""
    return x[r0:r1] if isinstance(x, np.ndarray) else x


def _gathered_srs(x: Any, r0: int, r1: int, idx: np.ndarray, codes: np.ndarray | None,
                  n_groups: int) -> np.ndarray:
    """Rows ``r0:r1`` of the file-backed ``x`` over the columns ``idx`` (gathered into a
    pooled block), srs-normalised, then averaged per group when ``codes`` is given."""
    from ..kernels.srs import srs_rows_inplace
    from ..store.bufferpool import pooled_empty

    g = srs_rows_inplace(x.gather_rows(r0, r1, idx, pooled_empty((r1 - r0, len(idx)),
                                                                 np.float64)))
    return g if codes is None else group_mean_rows(g, codes, n_groups)


def _srs_rows_task(x: Any, r0: int, r1: int, idx: np.ndarray, codes: np.ndarray | None,
                   n_groups: int) -> np.ndarray:
    from ..kernels.srs import srs_rows

    if hasattr(x, "gather_rows"):
        return _gathered_srs(x, r0, r1, idx, codes, n_groups)
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
    return _into(np.empty((x.shape[0], len(idx) if codes is None else n_groups)), spans,
                 tasks, 0)


def _srs_region_sums_task(bases: Sequence[Any], cols: Sequence[np.ndarray],
                          codes: Sequence[np.ndarray], n_groups: int, r0: int, r1: int,
                          acc_sum: np.ndarray, acc_cnt: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Genes ``r0:r1`` of every donor in turn (:func:`_gathered_srs`), each donor's group
    means added to a copy of the block's running sum and count (NaN left out), in donor
    order: the additions the per-donor passes make, block by block."""
    total, count = acc_sum.copy(), acc_cnt.copy()
    for x, idx, c in zip(bases, cols, codes, strict=True):
        add_finite(total, count, _gathered_srs(x, r0, r1, idx, c, n_groups))
    return total, count


def add_finite(total: np.ndarray, count: np.ndarray, values: np.ndarray) -> None:
    """``values`` added to the running ``total`` and 1 to ``count`` where they are not NaN,
    in place: one donor's step of the mean over donors."""
    ok = ~np.isnan(values)
    np.add(total, values, out=total, where=ok)
    np.add(count, ok, out=count, casting="unsafe")


def srs_region_sums(bases: Sequence[Any], cols: Sequence[np.ndarray],
                    codes: Sequence[np.ndarray], n_groups: int, acc_sum: np.ndarray,
                    acc_cnt: np.ndarray) -> None:
    """Several donors' :func:`srs_rows` group means (file-backed ``bases``: genes × each
    donor's columns; ``cols`` and ``codes`` per donor) added, NaN left out, to the running
    genes × groups ``acc_sum`` and ``acc_cnt`` in place, in donor order — the same values
    as one :func:`srs_rows` pass and one addition per donor — as one Dask computation of
    tasks over blocks of genes, each doing every donor, so no computation waits for the
    last block of a donor before the next donor starts."""
    from ..kernels.srs import rows_per_block

    n = acc_sum.shape[0]
    widest = max((len(c) for c in cols), default=0)
    # half the single-donor block: twice the tasks, so the last ones balance the threads
    spans = _spans(n, max(1, rows_per_block(widest) // 2))
    idx = [np.asarray(c, dtype=np.int64) for c in cols]
    results = compute([task(_srs_region_sums_task, list(bases), idx, list(codes), n_groups,
                            a, b, acc_sum[a:b], acc_cnt[a:b]) for a, b in spans])
    for (a, b), (total, count) in zip(spans, results, strict=True):
        acc_sum[a:b] = total
        acc_cnt[a:b] = count


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
    return _into(res, spans, [task(_srs_columns_task, a[:, c0:c1]) for c0, c1 in spans], 1)


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
    return _into(res, spans, [task(_normalize_task, x[a:b], method, 1, None)
                              for a, b in spans], 0)


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
    return _into(res, spans, [task(_normalize_task, x[:, a:b], method, 0, groups)
                              for a, b in spans], 1)


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
    spans = _gene_spans(n_genes, max(n, xg.shape[1]))
    tasks = [task(_group_means_task, xg[a:b], codes, n, fill, all_labels) for a, b in spans]
    return _into(np.empty((n, n_genes), order="F"), spans, tasks, 1)


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
    spans = _gene_spans(n_genes, max(len(all_labels), x.shape[0]))
    tasks = [task(_region_values_task, x[:, a:b], labels, all_labels, metric, fill)
             for a, b in spans]
    return _into(np.empty((len(all_labels), n_genes)), spans, tasks, 1)


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
    _into(out[n:], spans, [task(_pseudo_task, x[:, a:b], fill) for a, b in spans], 1)
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
    spans = _gene_spans(n_genes, len(per) * n_regions)
    tasks = [task(_combine_task, [v[:, a:b] for v in per], metric) for a, b in spans]
    return _into(np.empty((n_regions, n_genes)), spans, tasks, 1)
