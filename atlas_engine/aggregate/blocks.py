"""The row-block reduction behind :func:`~atlas_engine.aggregate.api.aggregate`: the spec of
one task (:class:`_BlockSpec`), the store rows split into aligned blocks (:func:`_row_parts`),
their reading (:func:`_read_all`, :func:`_read_donor`) and the task itself
(:func:`_reduce_rows`: group reduction, roll-up, donor combination)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .engine import combine_donors


@dataclass(frozen=True)
class _BlockSpec:
    """Everything one row-block task needs (small; shipped to cluster workers)."""

    url: str
    paths: list[str]            # per donor: the expression array inside the store
    widths: list[int]           # per donor: its number of samples
    dtype: np.dtype             # the stored dtype (float32 / float64)
    labels: np.ndarray          # (S,) structure label of every used sample, -1 = none
    n_donors: int
    n_labels: int
    member: np.ndarray | None   # (n_labels, G) roll-up of nested groups, None = labels are groups
    mode: str
    stat: str
    stats: tuple[str, ...]
    ddof: int
    need_scores: bool


def _row_parts(rows: np.ndarray, block_rows: int) -> list[np.ndarray]:
    """Split the (sorted) store rows to read by aligned windows of ``block_rows`` store rows
    (so no chunk is read by two tasks); empty windows are skipped."""
    if rows.size == 0:
        return [rows]
    window = rows // block_rows
    cuts = np.flatnonzero(np.diff(window)) + 1
    return np.split(rows, cuts)


def _read_all(spec: _BlockSpec, rows: np.ndarray) -> np.ndarray:
    """``rows`` of every donor's matrix side by side, (len(rows), S), decoded in place."""
    from ..store.blockread import read_rows

    r0, r1 = int(rows[0]), int(rows[-1]) + 1
    out = np.empty((r1 - r0, len(spec.labels)), dtype=spec.dtype)
    col = 0
    for path, width in zip(spec.paths, spec.widths, strict=True):
        read_rows(spec.url, path, r0, r1, out=out[:, col:col + width])
        col += width
    return out if r1 - r0 == len(rows) else out[rows - r0]


def _read_donor(spec: _BlockSpec, k: int, rows: np.ndarray) -> np.ndarray:
    """``rows`` of donor ``k``'s matrix, (len(rows), S_k), C-contiguous in the stored dtype."""
    from ..store.blockread import read_rows

    r0, r1 = int(rows[0]), int(rows[-1]) + 1
    block = read_rows(spec.url, spec.paths[k], r0, r1)
    return block if r1 - r0 == len(rows) else block[rows - r0]


def _reduce_rows(spec: _BlockSpec, rows: np.ndarray) -> dict[str, np.ndarray]:
    """One task: for a block of rows, reduce each donor's samples by group with the kernels
    (each donor's block is contiguous; no copy of all donors side by side), merge or stack the
    donors' intermediates, roll up nested groups, finalize and combine donors.

    Returns ``value``/``count`` shaped (rows, G) — (D, rows, G) for ``each`` — and, when
    asked, each probe's ``score_mean``/``score_var`` over all used samples (rows, 1)."""
    from . import specs
    from .engine import _median, chunk_reduce

    aggs = specs.resolve(spec.stats)
    needed = specs.needed_intermediates(aggs)
    mom = specs.resolve(("mean", "var"))
    mom_needed = specs.needed_intermediates(mom)
    want_median = spec.stat == "median"
    n, member = spec.n_labels, spec.member
    out: dict[str, np.ndarray] = {}
    if spec.mode == "pooled":
        # one kernel pass over all donors side by side: the kernel's per-row overhead is paid
        # once per row, not once per donor
        x = _read_all(spec, rows)
        if spec.need_scores:   # abagen's donor_probes="aggregate": every sample of every donor
            fin = specs.finalize(chunk_reduce(x, np.zeros(x.shape[1], dtype=np.int64), 1, 1,
                                              mom_needed), mom, 1)
            out["score_mean"], out["score_var"] = fin["mean"], fin["var"]
        merged = chunk_reduce(x, spec.labels, n, 1, needed)
        if member is not None:
            merged = specs.rollup(merged, member, group_axis=1)
        if want_median:
            merged["median"] = _median(x, spec.labels, n, 1, member)
        fin = specs.finalize(merged, aggs, spec.ddof)
        out["value"], out["count"] = fin[spec.stat], fin["count"]
        return _compact(out, spec.dtype)
    # per donor: each donor's block is contiguous and its n labels keep the kernel's
    # accumulators small (donor-offset labels over all donors would make them D times wider)
    parts, score_parts, blocks = [], [], []
    start = 0
    for k, width in enumerate(spec.widths):
        x = _read_donor(spec, k, rows)
        labels = spec.labels[start:start + width]
        start += width
        parts.append(chunk_reduce(x, labels, n, 1, needed))
        if spec.need_scores:
            score_parts.append(chunk_reduce(x, np.zeros(width, dtype=np.int64), 1, 1,
                                            mom_needed))
        if want_median:
            blocks.append((x, labels))
    if spec.need_scores:
        fin = specs.finalize(specs.merge(score_parts), mom, 1)
        out["score_mean"], out["score_var"] = fin["mean"], fin["var"]
    merged = {key: np.stack([p[key] for p in parts], axis=1) for key in parts[0]}  # (rows, D, n)
    if member is not None:
        merged = specs.rollup(merged, member, group_axis=2)                     # (rows, D, G)
    if want_median:
        merged["median"] = np.stack([_median(x, lab, n, 1, member) for x, lab in blocks], axis=1)
    fin = specs.finalize(merged, aggs, spec.ddof)
    v = np.moveaxis(fin[spec.stat], 1, 0)                                      # (D, rows, G)
    c = np.moveaxis(fin["count"], 1, 0)
    if spec.mode == "each":
        out["value"], out["count"] = np.where(c > 0, v, np.nan), c
    elif spec.stat == "mean":
        comb = combine_donors(v, c, "combined")
        out["value"], out["count"] = comb["mean"], comb["count"]
    else:
        masked = np.where(c > 0, v, np.nan)
        from ..kernels.nanreduce import nanmean_quiet, nanmedian_quiet

        agg = nanmedian_quiet if spec.stat == "median" else nanmean_quiet
        out["value"], out["count"] = agg(masked, axis=0), c.sum(axis=0)
    return _compact(out, spec.dtype)


def _compact(out: dict[str, np.ndarray], dtype: np.dtype) -> dict[str, np.ndarray]:
    """Results in the store's precision (accumulation was float64) and counts as int32, which
    halves the result memory of fine groupings (e.g. every structure)."""
    out["value"] = out["value"].astype(dtype, copy=False)
    out["count"] = out["count"].astype(np.int32, copy=False)
    return out
