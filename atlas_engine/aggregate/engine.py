"""``groupby_reduce``: grouped statistics over numpy arrays (directly) or Dask arrays (lazily).

One code path for every scheduler:

1. **chunk** — per block, the numba kernels compute the intermediates the requested statistics
   need (:func:`chunk_reduce`; the same function runs on a whole numpy array or on one Dask
   block);
2. **combine** — blocks along the grouped axis are merged in a tree, ``split_every`` at a time
   (:func:`atlas_engine.aggregate.specs.merge`);
3. **finalize** — optional ontology roll-up of the merged intermediates, then each statistic
   (:func:`atlas_engine.aggregate.specs.finalize`).

Dask is imported only when a Dask array comes in. Building the graph computes nothing.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from ..choices import DONOR_MODES
from ..errors import ConfigError
from ..kernels import check_inputs, group_minmax, group_moments, group_sum_count
from . import specs
from .csr import CsrBlock, csr_chunk_reduce
from .specs import Aggregation, Intermediates

__all__ = ["DONOR_MODES", "chunk_reduce", "combine_donors", "groupby_reduce"]

DEFAULT_SPLIT_EVERY = 8


# ------------------------------------------------------------------------------------------
# chunk
# ------------------------------------------------------------------------------------------
def chunk_reduce(
    values: np.ndarray,
    labels: np.ndarray,
    n_groups: int,
    axis: int,
    needed: Sequence[str],
    parallel: bool = False,
) -> Intermediates:
    """Intermediates ``needed`` (see :mod:`.specs`) of one block, one kernel pass per family."""
    if isinstance(values, CsrBlock):
        if axis != 0:
            raise ConfigError("sparse cell blocks are grouped along cells (axis 0)")
        return csr_chunk_reduce(values, labels, n_groups, needed)
    if set(needed) & specs.SPARSE_ONLY:
        raise ConfigError(f"statistics {sorted(set(needed) & specs.SPARSE_ONLY)} need "
                          "single-cell count blocks")
    out: Intermediates = {}
    for fam in specs.kernel_families(needed):
        if fam == "sum_count":
            out["sum"], out["count"] = group_sum_count(values, labels, n_groups, axis=axis,
                                                       parallel=parallel)
        elif fam == "moments":
            out["count"], out["sum"], out["m2"] = group_moments(values, labels, n_groups,
                                                                axis=axis, parallel=parallel)
        else:
            out["min"], out["max"] = group_minmax(values, labels, n_groups, axis=axis,
                                                  parallel=parallel)
    return {k: out[k] for k in needed}


def _median(
    values: np.ndarray, labels: np.ndarray, n_groups: int, axis: int,
    membership: np.ndarray | None,
) -> np.ndarray:
    """NaN-skipping median per group of a block that holds every member of each group."""
    values, labels = check_inputs(values, labels, n_groups, axis)
    member = (np.eye(n_groups, dtype=bool) if membership is None
              else np.asarray(membership, dtype=bool))
    v = values if axis == 1 else values.T
    out = np.full((v.shape[0], member.shape[1]), np.nan)
    valid = labels >= 0
    for k in range(member.shape[1]):
        cols = np.flatnonzero(valid & member[np.where(valid, labels, 0), k])
        if cols.size:
            block = v[:, cols].astype(np.float64)
            has = ~np.isnan(block).all(axis=1)
            if has.any():
                out[has, k] = np.nanmedian(block[has], axis=1)
    return out if axis == 1 else out.T


def _finish(
    inter: Mapping[str, np.ndarray], aggs: Sequence[Aggregation], ddof: int, axis: int,
    membership: np.ndarray | None, median: np.ndarray | None = None, parallel: bool = False,
    reuse: bool = False,
) -> Intermediates:
    merged = dict(inter)
    if membership is not None:
        merged = specs.rollup(merged, membership, group_axis=axis)
    if median is not None:
        merged["median"] = median
    return specs.finalize(merged, aggs, ddof, parallel, reuse)


# ------------------------------------------------------------------------------------------
# Dask task functions (module level so that distributed workers unpickle them by reference)
# ------------------------------------------------------------------------------------------
def _chunk_task(block: np.ndarray, labels: np.ndarray, n_groups: int, axis: int,
                needed: tuple[str, ...]) -> Intermediates:
    return chunk_reduce(block, labels, n_groups, axis, needed, parallel=False)


def _merge_task(parts: list[Intermediates]) -> Intermediates:
    return specs.merge(parts)


def _finalize_task(inter: Intermediates, aggs: tuple[Aggregation, ...], ddof: int, axis: int,
                   membership: np.ndarray | None) -> Intermediates:
    return _finish(inter, aggs, ddof, axis, membership)


def _median_task(block: np.ndarray, labels: np.ndarray, n_groups: int, axis: int,
                 membership: np.ndarray | None) -> np.ndarray:
    return _median(block, labels, n_groups, axis, membership)


def _finalize_with_median_task(inter: Intermediates, median: np.ndarray,
                               aggs: tuple[Aggregation, ...], ddof: int, axis: int,
                               membership: np.ndarray | None) -> Intermediates:
    return _finish(inter, aggs, ddof, axis, membership, median)


def _is_dask(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "dask" and hasattr(x, "dask")


def _has_sparse_blocks(values: Any) -> bool:
    """A Dask array whose blocks are :class:`CsrBlock` (its meta is a scipy sparse matrix)."""
    meta = getattr(values, "_meta", None)
    return type(meta).__module__.startswith("scipy.sparse")


#: Target bytes of one block when :func:`_whole_groups_if_cheaper` rechunks.
REBLOCK_BYTES = 64 << 20


def _whole_groups_if_cheaper(values: Any, n_groups: int, axis: int) -> Any:
    """Rechunk to one block along the grouped axis when per-block intermediates would outweigh
    the blocks themselves (over 4× a block and over :data:`REBLOCK_BYTES`).

    Every block yields dense intermediates for all ``n_groups`` (float64 sums + int64 counts),
    so grouping 58k probes into 20k genes from 2k-row probe blocks would make each block's
    output ~20× its input. Blocks holding the whole grouped axis (and a slice of the other)
    give outputs no larger than the input and need no combine step.
    """
    if values.numblocks[axis] == 1:
        return values
    rows = max(values.chunks[axis])
    other = max(values.chunks[1 - axis])
    out_bytes = n_groups * other * 16
    if out_bytes <= max(4 * rows * other * values.dtype.itemsize, REBLOCK_BYTES):
        return values
    n_axis = values.shape[axis]
    width = max(1, REBLOCK_BYTES // max(1, n_axis * values.dtype.itemsize))
    return values.rechunk({axis: -1, 1 - axis: width})


def _dask_groupby(
    values: Any, labels: np.ndarray, n_groups: int, axis: int,
    aggs: tuple[Aggregation, ...], ddof: int, membership: np.ndarray | None,
    split_every: int, finalize: bool = True,
) -> dict[str, Any]:
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    if values.ndim != 2:
        raise ConfigError(f"values must be 2-D (probe, sample), got shape {values.shape}")
    needed = specs.needed_intermediates(aggs)
    want_median = any(not a.mergeable for a in aggs)
    if not _has_sparse_blocks(values):
        values = _whole_groups_if_cheaper(values, n_groups, axis)
    if want_median and _has_sparse_blocks(values):
        raise ConfigError("median of counts is not available on sparse cell blocks "
                          "(aggregate_cells computes medians of log2(CPM + 1))")
    if want_median and values.numblocks[axis] != 1:
        raise ConfigError(
            "median needs whole groups in one block: the grouped axis "
            f"({'sample' if axis == 1 else 'probe'}) has {values.numblocks[axis]} chunks; "
            f"rechunk it to one chunk (e.g. values.rechunk({{{axis}: -1}}))"
        )
    token = tokenize(values, labels, n_groups, axis, [a.name for a in aggs], ddof, membership,
                     split_every)
    other = 1 - axis
    bounds = np.cumsum((0, *values.chunks[axis]))
    n_other = values.numblocks[other]
    n_red = values.numblocks[axis]

    def block_key(i: int, j: int) -> tuple[str, int, int]:
        # i indexes the kept axis, j the grouped axis
        return (values.name, i, j) if axis == 1 else (values.name, j, i)

    chunk_name = f"groupby-chunk-{token}"
    final_name = f"groupby-finalize-{token}"
    dsk: dict[Any, Any] = {}
    tops: list[Any] = []
    for i in range(n_other):
        level = []
        for j in range(n_red):
            lab = labels[bounds[j]:bounds[j + 1]]
            key = (chunk_name, i, j)
            dsk[key] = (_chunk_task, block_key(i, j), lab, n_groups, axis, needed)
            level.append(key)
        depth = 0
        while len(level) > 1:  # 2. tree combine along the grouped axis
            combine_name = f"groupby-combine-{depth}-{token}"
            nxt = []
            for k in range(0, len(level), split_every):
                key = (combine_name, i, k // split_every)
                dsk[key] = (_merge_task, list(level[k:k + split_every]))
                nxt.append(key)
            level = nxt
            depth += 1
        tops.append(level[0])
        if not finalize:
            continue
        if want_median:
            median_key = (f"groupby-median-{token}", i)
            dsk[median_key] = (_median_task, block_key(i, 0), labels, n_groups, axis, membership)
            dsk[(final_name, i)] = (_finalize_with_median_task, level[0], median_key, aggs, ddof,
                                    axis, membership)
        else:
            dsk[(final_name, i)] = (_finalize_task, level[0], aggs, ddof, axis, membership)

    if not finalize:
        from dask.delayed import Delayed

        name = f"groupby-intermediates-{token}"
        alias = {f"{name}-{i}": top for i, top in enumerate(tops)}
        graph = dict(HighLevelGraph.from_collections(name, {**dsk, **alias},
                                                     dependencies=[values]))
        return {"intermediates": [Delayed(key, graph) for key in alias]}
    n_out = n_groups if membership is None else membership.shape[1]
    out_chunks = ((values.chunks[0], (n_out,)) if axis == 1 else ((n_out,), values.chunks[1]))
    results: dict[str, Any] = {}
    for agg in aggs:
        name = f"groupby-{agg.name}-{token}"
        layer = {}
        for i in range(n_other):
            key = (name, i, 0) if axis == 1 else (name, 0, i)
            layer[key] = (operator.getitem, (final_name, i), agg.name)
        graph = HighLevelGraph.from_collections(name, {**dsk, **layer}, dependencies=[values])
        dtype = np.dtype(np.int64 if agg.name == "count" else np.float64)
        results[agg.name] = da.Array(graph, name, out_chunks, dtype=dtype)
    return results


# ------------------------------------------------------------------------------------------
# public
# ------------------------------------------------------------------------------------------
def groupby_reduce(
    values: Any,
    labels: np.ndarray,
    *,
    axis: int | Literal["sample", "probe"],
    n_groups: int | None = None,
    stats: str | Iterable[str] = ("mean",),
    ddof: int = 1,
    membership: np.ndarray | None = None,
    split_every: int | None = None,
    parallel: bool = True,
    finalize: bool = True,
) -> dict[str, Any]:
    """Grouped statistics of a ``(probe, sample)`` array along one axis.

    Parameters
    ----------
    values : (P, S) float32/float64 numpy or Dask array
        Expression values, P probes × S samples. NaN values are skipped.
    labels : (S,) or (P,) int numpy array
        Group of each sample (``axis=1`` / ``"sample"``, per-structure) or of each probe
        (``axis=0`` / ``"probe"``, per-gene). -1 = in no group.
    axis : {1, "sample", 0, "probe"}
        The axis that is grouped (reduced).
    n_groups : int, optional
        Number of labels (default ``labels.max() + 1``); labels must be ``< n_groups``.
    stats : str or iterable of str
        Any of ``count, sum, mean, var, std, min, max, median``; ``count`` is always returned.
    ddof : int, default 1
        Delta degrees of freedom of ``var``/``std``.
    membership : (n_groups, n_out) bool array, optional
        Roll the per-label results up to ``n_out`` output groups, each the union of its member
        labels (ontology roll-up: a structure with all its descendants). Labels are reduced once
        by the kernels; the roll-up works on the small per-label intermediates.
    split_every : int, optional
        Blocks merged per task in the Dask tree combine (default 8).
    parallel : bool, default True
        numpy input only: use the numba ``prange`` kernels. Dask blocks always use the serial
        ``nogil`` kernels, with parallelism from Dask's workers.
    finalize : bool, default True
        False: stop after the combine step and return ``{"intermediates": [...]}``, the merged
        intermediates (:mod:`.specs`) of each chunk of the kept axis (Dask ``Delayed`` objects
        for Dask input), for the caller to merge with other runs
        (:func:`~atlas_engine.aggregate.specs.merge`) and finalize
        (:func:`~atlas_engine.aggregate.specs.finalize`) — e.g. to reduce a large input in
        bounded waves. Not with ``membership`` or ``median``.

    Returns
    -------
    dict of str to array
        One float64 array per statistic (int64 for ``count``), ``(P, n_out)`` for
        ``axis="sample"`` and ``(n_out, S)`` for ``axis="probe"``; NaN where a group has no
        valid values. Dask input gives lazy Dask arrays (nothing is computed here).
    """
    ax = {"sample": 1, "probe": 0, 1: 1, 0: 0}.get(axis)  # type: ignore[call-overload]
    if ax is None:
        raise ConfigError(f"axis must be 'sample' (1) or 'probe' (0), got {axis!r}")
    if _is_dask(labels):
        raise ConfigError("labels must be a numpy array (they are small; compute them first)")
    labels = np.asarray(labels)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"labels must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.ndim != 1 or labels.shape[0] != values.shape[ax]:
        raise ConfigError(f"labels must be 1-D with {values.shape[ax]} entries (axis {ax} of "
                          f"values), got shape {labels.shape}")
    if n_groups is None:
        n_groups = membership.shape[0] if membership is not None else (
            int(labels.max()) + 1 if labels.size else 0)
    if labels.size and int(labels.max()) >= n_groups:
        raise ConfigError(f"label {int(labels.max())} out of range: n_groups is {n_groups}")
    if membership is not None:
        membership = np.asarray(membership, dtype=bool)
        if membership.ndim != 2 or membership.shape[0] != n_groups:
            raise ConfigError(f"membership must have shape ({n_groups}, n_out), "
                              f"got {membership.shape}")
    if ddof < 0:
        raise ConfigError(f"ddof must be >= 0, got {ddof}")
    aggs = tuple(specs.resolve(stats))
    every = int(split_every or DEFAULT_SPLIT_EVERY)
    if every < 2:
        raise ConfigError(f"split_every must be >= 2, got {split_every}")

    if not finalize and (membership is not None or any(not a.mergeable for a in aggs)):
        raise ConfigError("finalize=False works without membership and median")
    if _is_dask(values):
        return _dask_groupby(values, labels, n_groups, ax, aggs, ddof, membership, every,
                             finalize)

    if isinstance(values, CsrBlock):
        if any(not a.mergeable for a in aggs):
            raise ConfigError("median of counts is not available on sparse cell blocks "
                              "(aggregate_cells computes medians of log2(CPM + 1))")
        inter = chunk_reduce(values, labels, n_groups, ax, specs.needed_intermediates(aggs))
        if not finalize:
            return {"intermediates": [inter]}
        return _finish(inter, aggs, ddof, ax, membership)
    values = np.asarray(values)
    inter = chunk_reduce(values, labels, n_groups, ax, specs.needed_intermediates(aggs),
                         parallel=parallel)
    if not finalize:
        return {"intermediates": [inter]}
    median = (_median(values, labels, n_groups, ax, membership)
              if any(not a.mergeable for a in aggs) else None)
    # the intermediates were made here and go no further: finalize may reuse them
    return _finish(inter, aggs, ddof, ax, membership, median, parallel, reuse=True)


# ------------------------------------------------------------------------------------------
# donors
# ------------------------------------------------------------------------------------------


def combine_donors(
    per_donor_means: Any, per_donor_counts: Any, mode: str = "combined"
) -> dict[str, Any]:
    """Combine per-donor group means (stacked on a leading donor axis) into one result.

    Parameters
    ----------
    per_donor_means : (D, ...) float array
        Each donor's group means (NaN where the donor has no sample in the group).
    per_donor_counts : (D, ...) int array
        Each donor's non-NaN value counts behind those means.
    mode : {"combined", "pooled", "each"}
        ``combined``: the mean of per-donor means over donors that have the group (abagen's
        default); ``pooled``: all samples together, i.e. ``sum(mean_d * n_d) / sum(n_d)`` (the
        per-donor sums added before finalizing); ``each``: the stacked per-donor results as given.

    Returns
    -------
    dict
        ``mean``, ``count`` (total values, or per donor for ``each``) and ``n_donors`` (donors
        with the group; per donor 0/1 for ``each``). Works on numpy and Dask arrays alike.
    """
    means = per_donor_means
    counts = per_donor_counts
    if mode not in DONOR_MODES:
        raise ConfigError(f"unknown donor mode {mode!r} (expected one of {', '.join(DONOR_MODES)})")
    if means.shape != counts.shape or means.ndim < 1:
        raise ConfigError(f"means {means.shape} and counts {counts.shape} must share a shape "
                          "with a leading donor axis")
    has = counts > 0
    if mode == "each":
        return {"mean": np.where(has, means, np.nan), "count": counts,
                "n_donors": has.astype(np.int64)}
    n_donors = has.sum(axis=0)
    total = counts.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if mode == "combined":
            mean = np.where(has, means, 0.0).sum(axis=0) / n_donors
        else:
            mean = np.where(has, means * counts, 0.0).sum(axis=0) / total
    mean = np.where(n_donors > 0, mean, np.nan)
    return {"mean": mean, "count": total, "n_donors": n_donors}


# ------------------------------------------------------------------------------------------
# blocks that carry their own labels (volumes: each voxel's label is data, not a 1-D axis)
# ------------------------------------------------------------------------------------------
def groupby_reduce_blocks(
    blocks: Iterable[tuple[Any, Any]],
    *,
    n_groups: int,
    stats: str | Iterable[str] = ("count",),
    membership: np.ndarray | None = None,
    split_every: int | None = None,
) -> dict[str, Any]:
    """Grouped statistics over ``(values, labels)`` blocks, each ``(1, n)`` with ``(n,)``
    labels: the chunk → combine → finalize path of :func:`groupby_reduce` for data whose
    labels differ per block (a volume's voxels grouped by their annotation).

    ``blocks`` may yield numpy pairs (reduced as they come, in bounded memory) or
    ``dask.delayed`` pairs (a task tree: one chunk task per block, merged ``split_every`` at a
    time, then finalized; returns computed numpy results). Mergeable statistics only.

    Returns
    -------
    dict of str to ndarray
        ``(1, n_out)`` per statistic, as :func:`groupby_reduce` with ``axis="sample"``.
    """
    aggs = tuple(specs.resolve(stats))
    if any(not a.mergeable for a in aggs):
        raise ConfigError("per-block labels support mergeable statistics only (no median)")
    if membership is not None:
        membership = np.asarray(membership, dtype=bool)
        if membership.ndim != 2 or membership.shape[0] != n_groups:
            raise ConfigError(f"membership must have shape ({n_groups}, n_out), "
                              f"got {membership.shape}")
    needed = specs.needed_intermediates(aggs)
    every = int(split_every or DEFAULT_SPLIT_EVERY)
    parts: list[Any] = []
    lazy = False
    for values, labels in blocks:
        if type(values).__module__.startswith("dask"):
            from .rowtasks import task

            lazy = True
            parts.append(task(_chunk_task, values, labels, n_groups, 1, needed))
        else:
            parts.append(chunk_reduce(values, labels, n_groups, 1, needed))
            if len(parts) >= every:
                parts = [specs.merge(parts)]
    if not parts:
        parts = [chunk_reduce(np.zeros((1, 0)), np.zeros(0, np.int64), n_groups, 1, needed)]
    if lazy:
        from .rowtasks import compute, task

        level = parts
        while len(level) > 1:
            level = [task(_merge_task, level[k:k + every]) for k in range(0, len(level), every)]
        return compute([task(_finalize_task, level[0], aggs, 1, 1, membership)])[0]
    return _finish(specs.merge(parts) if len(parts) > 1 else parts[0], aggs, 1, 1, membership)
