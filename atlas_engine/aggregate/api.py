"""Region × gene aggregation on a converted store: the engine behind ``atlas-engine aggregate``.

One pass over the expression data, whatever is asked:

1. every donor's ``(probe, sample)`` array is reduced by the samples' own ``structure_id`` with
   the numba kernels (:func:`~atlas_engine.aggregate.engine.groupby_reduce`), rolled up to the
   requested groups (ontology level, named structures, …) plus one extra "all samples" group
   that gives each probe's overall mean/variance for probe selection;
2. donors are combined lazily (``combine=``: ``combined``: mean of donor means over donors that have the
   group; ``pooled``: all samples together; ``each``: one result per donor);
3. the small results are computed (Dask threads, or whatever ``distributed.Client`` is active)
   and probes are collapsed to genes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..choices import AGGREGATE_STATS, COLLAPSE_METHODS
from ..errors import ConfigError
from ..pipeline.registry import fill_choices
from ..store import layout as L
from .blocks import _BlockSpec, _reduce_rows, _row_parts
from .collapse import _collapse
from .engine import DONOR_MODES
from .grouping import Grouping, resolve_grouping
from .inputs import _donor_ids, parse_genes, select_probe_rows
from .result import AggregateResult
from .result import open_cube as open_cube  # documented import path (README)

STATS = AGGREGATE_STATS
#: target bytes of one Dask block of expression (rows × all of a donor's samples)
DEFAULT_BLOCK_BYTES = 32 * 2**20


# --------------------------------------------------------------------------------------------
# the aggregation
# --------------------------------------------------------------------------------------------
@fill_choices(stat=STATS, combine=DONOR_MODES, collapse=COLLAPSE_METHODS)
def aggregate(
    store: Any,
    *,
    by: str | Sequence[int | str] = "structure",
    stat: str = "mean",
    genes: str | Sequence[str] | None = None,
    combine: str = "combined",
    collapse: str | None = "auto",
    donors: Sequence[int | str] | str | None = None,
    block_bytes: int | None = None,
    ddof: int = 1,
    keep_non_refseq: bool = False,
) -> AggregateResult:
    """Aggregate a store into a group × feature matrix.

    One pass over the expression data: each donor's samples are reduced by structure, rolled
    up to the requested groups, the donors combined and, with ``collapse``, probes collapsed
    to genes (the module docstring gives the steps).

    Parameters
    ----------
    store : AtlasStore, str or os.PathLike
        An opened store (:func:`~atlas_engine.store.open.open_store`), or its path or URL.
    by : str or sequence of int or str, default "structure"
        The groups: ``"structure"`` (every structure with samples, and every ontology leaf),
        ``"depth:N"`` (the ancestors at ontology depth N), ``"broad"`` (abagen's broad
        classes), or structure ids, acronyms or names (a comma-separated string or a list;
        each with its descendants, groups may nest); see
        :func:`~atlas_engine.aggregate.grouping.resolve_grouping`.
    stat : str, default "mean"
        The statistic of each group, one of <choices:stat>.
    genes : str, sequence of str or None, default None
        The genes to aggregate: symbols (``"BDNF,COMT"`` or a list), ``"@file"`` (a file of
        symbols, one per line or comma-separated, ``#`` comments), or None / ``"all"`` (every
        probe of the store).
    combine : str, default "combined"
        How donors are combined, one of <choices:combine>. ``combined`` (abagen's default):
        the statistic per donor, then the mean over donors that have the group (median of
        donor medians for ``median``); ``pooled``: all samples together; ``each``: one result
        per donor.
    collapse : str or None, default "auto"
        Probes → genes: ``"auto"``, None (one column per probe) or one of <choices:collapse>.
        ``max_*`` choose by the probe's mean / variance over all samples of all selected
        donors (abagen's ``donor_probes="aggregate"``). ``"auto"``: ``"mean"`` when ``genes``
        are asked for by symbol (gene columns), else None.
    donors : sequence of int or str, str or None, default None
        The donors to include: ids or names, as a list or a comma-separated string
        (``"9861,10021"``); None or ``"all"``: every donor of the store.
    block_bytes : int, optional
        Target size in bytes of one Dask block of expression (bounds memory; default 32 MiB,
        rounded to whole chunk rows of the store).
    ddof : int, default 1
        Delta degrees of freedom of ``std`` and ``var`` (the divisor is ``n - ddof``).
    keep_non_refseq : bool, default False
        With ``collapse``, keep probes without an Entrez id (each its own "gene", named after
        the probe); by default they are left out and counted
        (``params["non_refseq_probes_left_out"]``).

    Returns
    -------
    AggregateResult
        ``values`` (group × feature, or donor × group × feature for ``combine="each"``),
        ``n_values`` (the non-NaN values behind each entry), ``groups``, ``features``,
        ``n_samples`` (samples of each donor in each group), ``donors``, ``missing_genes``
        (symbols not in the store), the unassigned sample counts and ``params``.

    Raises
    ------
    ConfigError
        A value outside the valid ones above, an unknown group, donor or gene list file,
        a donor not in the store, no selected gene in the store, or nothing left to collapse.
    StoreNotFoundError
        No store at ``store``.
    """
    from ..store.open import AtlasStore, open_store

    if stat not in STATS:
        raise ConfigError(f"unknown --stat {stat!r} (valid: {', '.join(STATS)})")
    if isinstance(donors, str) and donors.strip().lower() in DONOR_MODES:
        raise ConfigError(f"donors={donors!r}: donors are donor ids now; the way donors are "
                          f"combined is combine={donors!r} (--combine {donors})")
    if combine not in DONOR_MODES:
        raise ConfigError(f"unknown --combine {combine!r} (valid: {', '.join(DONOR_MODES)})")
    gene_list = parse_genes(genes)
    if collapse == "auto":
        collapse = "mean" if gene_list is not None else None
    if collapse is not None and collapse not in COLLAPSE_METHODS:
        raise ConfigError(f"unknown collapse method {collapse!r} "
                          f"(valid: {', '.join(COLLAPSE_METHODS)})")
    st = store if isinstance(store, AtlasStore) else open_store(os.fspath(store))
    use = _donor_ids(donors, st.donors)
    block_bytes = int(block_bytes or DEFAULT_BLOCK_BYTES)

    probes_all = st.probes
    rows, missing = select_probe_rows(probes_all, gene_list)
    non_refseq = 0
    if collapse is not None and not keep_non_refseq:
        # probes without an Entrez id (non-RefSeq; their "symbol" is the probe name) are not
        # genes: leave them out of a gene collapse, as abagen does, and say how many
        has_entrez = probes_all["entrez_id"].to_numpy()[rows] != L.MISSING_INT
        non_refseq = int((~has_entrez).sum())
        rows = rows[has_entrez]
        if rows.size == 0:
            raise ConfigError("every selected probe lacks an Entrez id (non-RefSeq): nothing "
                              "to collapse to genes (use keep_non_refseq / --keep-non-refseq)")
    probes = probes_all.iloc[rows]
    samples = st.samples
    in_use = samples["donor"].isin(use).to_numpy()
    grouping: Grouping = resolve_grouping(by, samples.loc[in_use, "structure_id"].to_numpy(),
                                          st.ontology)
    labels_all = np.full(len(samples), -1, dtype=np.int64)
    labels_all[in_use] = grouping.labels
    n_struct = len(grouping.structures)
    need_scores = collapse in ("max_intensity", "max_variance")
    stats = {stat, "count"}
    struct_labels = labels_all.copy()
    # groups that do not nest (a structure level, broad classes): label samples by group
    # directly, no roll-up; nested groups (named structures) reduce by structure, then roll up
    if (grouping.rollup.sum(axis=1) <= 1).all():
        group_of = np.where(grouping.rollup.any(axis=1), grouping.rollup.argmax(axis=1), -1)
        labels_all = np.where(labels_all >= 0, group_of[np.maximum(labels_all, 0)], -1)
        n_labels, member = grouping.n_groups, None
    else:
        n_labels, member = n_struct, grouping.rollup
    samples_donor = samples["donor"].to_numpy()
    donor_cols = [np.flatnonzero(samples_donor == d) for d in use]
    labels_used = np.concatenate([labels_all[c] for c in donor_cols]).astype(np.int64)
    n_cols = len(labels_used)
    # row blocks are whole chunk-rows of the store (every chunk is decoded exactly once)
    from ..store.blockread import array_shape

    _, (chunk_rows, _), dtype = array_shape(st.url, f"{L.donor_path(use[0])}/{L.EXPRESSION}")
    per_row = max(1, n_cols * dtype.itemsize)
    block_rows = max(chunk_rows, (block_bytes // per_row) // chunk_rows * chunk_rows)
    spec = _BlockSpec(url=st.url, paths=[f"{L.donor_path(d)}/{L.EXPRESSION}" for d in use],
                      widths=[len(c) for c in donor_cols], dtype=np.dtype(dtype),
                      labels=labels_used, n_donors=len(use),
                      n_labels=n_labels, member=member, mode=combine, stat=stat,
                      stats=tuple(sorted(stats)), ddof=ddof, need_scores=need_scores)

    from .rowtasks import compute, ordered_tasks

    parts = compute(ordered_tasks(_reduce_rows, [(spec, part)
                                                 for part in _row_parts(rows, block_rows)]))
    computed = {k: np.concatenate([p[k] for p in parts], axis=-2) for k in parts[0]}
    values = np.swapaxes(computed["value"], -1, -2)        # (G, P) or (D, G, P)
    n_values = np.swapaxes(computed["count"], -1, -2)
    score_mean = computed["score_mean"][..., 0] if need_scores else None
    score_var = computed["score_var"][..., 0] if need_scores else None

    if collapse is not None:
        values, n_values, features = _collapse(values, n_values, probes, collapse,
                                               score_mean, score_var)  # type: ignore[arg-type]
    else:
        features = probes[["probe_id", "probe_name", "gene_symbol"]].copy()
        features.index = probes["probe_id"].astype(str).to_numpy()

    per_struct = np.stack([np.bincount(lab[lab >= 0], minlength=n_struct)
                           for lab in (struct_labels[c] for c in donor_cols)])
    n_samples = pd.DataFrame((per_struct @ grouping.rollup.astype(np.int64)).T,
                             columns=[str(d) for d in use])
    groups = grouping.groups.copy().reset_index(drop=True)
    groups["n_samples"] = n_samples.sum(axis=1).to_numpy()
    groups["n_donors"] = (n_samples > 0).sum(axis=1).to_numpy()
    n_samples.index = groups["structure_id"].to_numpy()
    n_samples.index.name = "structure_id"
    return AggregateResult(
        values=values, n_values=n_values, groups=groups, features=features,
        n_samples=n_samples, donors=use, missing_genes=missing,
        unassigned_samples=int(grouping.unassigned.sum()),
        unassigned_by_donor={d: int(n) for d, n in zip(use, (
            grouping.unassigned[samples.loc[in_use, "donor"].to_numpy() == d].sum()
            for d in use), strict=True)},
        params={"by": str(by), "stat": stat, "combine": combine, "collapse": collapse or "",
                "genes": ",".join(gene_list or []) or "all", "store": st.url,
                "ddof": ddof, "non_refseq_probes_left_out": non_refseq},
    )
