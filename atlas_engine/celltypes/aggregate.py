"""Per-cell-type statistics of a Cell Types store, through the engine's one Dask path.

``aggregate_cells(store, by="cluster", stats=[...])`` groups cells by one or more ``obs``
columns and computes, per group and gene:

============== ==================================================================================
``n_cells``    cells in the group (``obs`` of the result)
``sum``        sum of counts
``mean``       mean count (zeros included)
``var``        variance of the counts (``ddof``, default 1 as ``scanpy.get.aggregate``)
``nnz``        cells with a non-zero count (scanpy's ``count_nonzero``)
``frac``       fraction of the group's cells expressing the gene (``nnz / n_cells``)
``cpm``        mean over cells of CPM = count / cell total × 1e6
``logcpm``     mean over cells of log2(CPM + 1)
``trimmed_mean`` Allen's trimmed mean: R's ``mean(x, trim = 0.25)`` of log2(CPM + 1), i.e.
               ``floor(n / 4)`` values dropped at each end. Groups of 1-3 cells drop nothing
               (the plain mean); a group of 4 drops one value at each end.
``median``     Allen's median: the median of log2(CPM + 1) (mean of the two middle values for
               an even count)
============== ==================================================================================

Cell totals are over all genes of the store, whatever ``genes`` selects. Every statistic runs
as chunk -> combine -> finalize in :func:`atlas_engine.aggregate.engine.groupby_reduce` on CSR row
blocks; the order statistics read the counts once more, spilling every stored value by gene
band to disk, then compute each band's pairs from its records
(:mod:`atlas_engine.celltypes.orderstats`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..aggregate.engine import groupby_reduce
from ..choices import CELL_STATS
from ..errors import ConfigError
from ..store.bufferpool import release_pool
from .orderstats import order_stats
from .store import CellStore, cell_blocks, gene_bands, open_cell_store

#: statistic name -> engine statistic (the order statistics, ``trimmed_mean`` and ``median``,
#: are not the engine's: :mod:`.orderstats` computes them)
STATS: dict[str, str] = {name: name for name in CELL_STATS}
#: names of statistics in the result's layers (scanpy's where it has them)
LAYER_NAMES = {"nnz": "count_nonzero"}
DEFAULT_STATS = ("sum", "mean", "var", "nnz")
ORDER_STATS = ("trimmed_mean", "median")
#: byte budget of one band's per-block intermediates (groups × genes × float64 × ~6)
BAND_BYTES = 48 << 20
#: partial results merged per combine task: small, so that few wait in memory at once
SPLIT_EVERY = 2
#: cells read per task by default (about 150 MB of CSR rows at M1 density)
BLOCK_CELLS = 4096
#: at most this many cells per task of the order statistics' spill pass (its records double
#: a block's size)
SPILL_BLOCK_CELLS = 2048


@dataclass
class CellAggregate:
    """Per-group statistics: ``groups`` (one row per group with ``n_cells``), ``genes``
    (``var`` rows of the genes kept) and one groups × genes float64 array per statistic."""

    groups: pd.DataFrame
    genes: pd.DataFrame
    stats: dict[str, np.ndarray]
    unassigned_cells: int = 0
    missing_genes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def to_anndata(self) -> Any:
        """An AnnData (groups × genes) with one layer per statistic, as
        ``scanpy.get.aggregate`` returns."""
        import anndata as ad

        layers = {LAYER_NAMES.get(k, k): v for k, v in self.stats.items()}
        obs = self.groups.copy()
        obs.index = obs.index.astype(str)
        var = self.genes.copy()
        var.index = var.index.astype(str)
        return ad.AnnData(obs=obs, var=var, layers=layers)

    def table(self, stat: str) -> pd.DataFrame:
        """Genes × groups table of one statistic, first column ``feature`` (Allen's layout)."""
        df = pd.DataFrame(self.stats[stat].T, index=pd.Index(self.genes.index, name="feature"),
                          columns=self.groups.index.astype(str))
        return df


def group_labels(obs: pd.DataFrame, by: Sequence[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Integer group of every cell (-1 where a ``by`` value is missing) and the groups table.

    One column keeps its categorical order (Allen's ``_order``); several columns make one group
    per combination present, in the order of their categories.
    """
    for col in by:
        if col not in obs.columns:
            raise ConfigError(f"--by {col!r}: not an obs column (have: {', '.join(obs.columns)})")
    codes = []
    cats = []
    for col in by:
        s = obs[col]
        cat = s if isinstance(s.dtype, pd.CategoricalDtype) else s.astype("category")
        codes.append(cat.cat.codes.to_numpy(np.int64))
        cats.append(list(cat.cat.categories))
    valid = np.all([c >= 0 for c in codes], axis=0)
    if len(by) == 1:
        labels = np.where(valid, codes[0], -1)
        used = np.bincount(labels[valid], minlength=len(cats[0]))
        keep = np.flatnonzero(used > 0)
        remap = np.full(len(cats[0]), -1, np.int64)
        remap[keep] = np.arange(keep.size)
        labels = np.where(valid, remap[np.where(valid, labels, 0)], -1)
        groups = pd.DataFrame({by[0]: [cats[0][k] for k in keep]})
    else:
        stacked = np.stack(codes, axis=1)[valid]
        uniq, inv = np.unique(stacked, axis=0, return_inverse=True)
        labels = np.full(len(obs), -1, np.int64)
        labels[valid] = inv.ravel()
        groups = pd.DataFrame({col: [cats[i][u] for u in uniq[:, i]] for i, col in enumerate(by)})
    groups.index = pd.Index(["|".join(str(v) for v in row) for row in
                             groups.itertuples(index=False)], name="group")
    groups["n_cells"] = np.bincount(labels[labels >= 0], minlength=len(groups))
    return labels, groups


def _columns(store: CellStore, genes: Iterable[str] | None) -> tuple[np.ndarray, list[str]]:
    if genes is None:
        return np.arange(store.n_genes), []
    wanted = [g.strip() for g in genes if g.strip()]
    index = pd.Index(store.var.index.astype(str))
    pos = []
    missing = []
    for g in wanted:
        hits = np.flatnonzero(index == g)
        if hits.size == 0:
            missing.append(g)
        pos.extend(hits.tolist())
    if not pos:
        raise ConfigError(f"none of the genes are in the store: {', '.join(wanted[:10])}")
    return np.asarray(sorted(set(pos)), np.int64), missing


def _run_waves(st: CellStore, bands: list[tuple[int, int]], labels: np.ndarray,
               n_groups: int, stats: list[str], ddof: int, block_cells: int
               ) -> dict[str, np.ndarray]:
    """Statistics ``stats`` over all cells, in waves of one row block (two when there is a
    single gene band, so that both threads have work).

    Each wave is one ``groupby_reduce`` graph stopped after its combine step; the threads share
    the wave's gene bands, and its intermediates are merged into one accumulator per band, in
    place (:func:`atlas_engine.aggregate.specs.merge_pair`), finalized once at the end. Memory:
    one wave's rows and partial results (groups × genes per block), plus the accumulator (the
    result's size), whatever the number of cells.
    """
    from ..aggregate import specs
    from ..aggregate.rowtasks import compute

    aggs = specs.resolve(stats)
    acc: list[Any] = [None] * len(bands)
    step = block_cells * (1 if len(bands) >= 2 else 2)
    for a in range(0, st.n_cells, step):
        b = min(st.n_cells, a + step)
        arr = cell_blocks(st, bands, block_cells, rows=(a, b),
                          totals=bool({"cpm", "logcpm"} & set(stats)))
        parts = groupby_reduce(arr, labels[a:b], axis=0, n_groups=n_groups, stats=stats,
                               ddof=ddof, split_every=SPLIT_EVERY, finalize=False)
        # the pooled read buffers are kept from wave to wave (released below)
        for k, part in enumerate(compute(parts["intermediates"], release=False)):
            # acc holds this function's own arrays: merged into in place
            acc[k] = part if acc[k] is None else specs.merge_pair(acc[k], part, into=True)
    release_pool()  # the read buffers' pages are not needed while finalizing
    widths = [c1 - c0 for c0, c1 in bands]
    out = {name: np.empty((n_groups, sum(widths))) for name in stats}
    at = 0
    for k, w in enumerate(widths):
        done = specs.finalize(acc[k], aggs, ddof)
        acc[k] = None
        for name in stats:
            out[name][:, at:at + w] = done[name]
        at += w
    return out


def _compute(st: CellStore, bands: list[tuple[int, int]], cols: np.ndarray,
             labels: np.ndarray, groups: pd.DataFrame, names: list[str], mergeable: list[str],
             order: list[str], ddof: int, block_cells: int, spill_dir: str | None,
             out: dict[str, np.ndarray]) -> None:
    """The passes of :func:`aggregate_cells`, their results into ``out``."""
    n_groups = len(groups)
    if mergeable:
        res = _run_waves(st, bands, labels, n_groups, list(dict.fromkeys(mergeable)), ddof,
                         block_cells)
        # the computed columns are the bands' concatenation; keep the selected genes
        covered = np.concatenate([np.arange(c0, c1) for c0, c1 in bands])
        take = np.searchsorted(covered, cols)
        whole = covered.size == cols.size
        for n in names:
            if n not in ORDER_STATS:
                out[n] = (res[STATS[n]] if whole
                          else np.ascontiguousarray(res[STATS[n]][:, take]))
    if order:
        tm, md = order_stats(st, cols, labels, groups["n_cells"].to_numpy(np.int64),
                             min(block_cells, SPILL_BLOCK_CELLS), spill_dir=spill_dir)
        out.update({"trimmed_mean": tm, "median": md})


def aggregate_cells(
    store: str | CellStore,
    by: str | Sequence[str] = "cluster",
    stats: str | Sequence[str] = DEFAULT_STATS,
    *,
    genes: Iterable[str] | None = None,
    ddof: int = 1,
    block_cells: int = BLOCK_CELLS,
    band_genes: int | None = None,
    spill_dir: str | None = None,
) -> CellAggregate:
    """Per-group statistics of a Cell Types store (see the module docstring).

    Parameters
    ----------
    store : path or CellStore
        A store written by ``atlas-engine convert`` from a cell-types data set.
    by : str or sequence of str
        ``obs`` column(s): ``cluster``, ``subclass``, ``class``, ``donor``, ``region``, ...
        (comma-separated in a string).
    stats : str or sequence of str
        Any of ``sum, mean, var, nnz, frac, cpm, logcpm, trimmed_mean, median`` (or ``all``).
    genes : iterable of str, optional
        Gene symbols (``var`` index) to keep; default all.
    ddof : int
        Delta degrees of freedom of ``var``.
    block_cells : int
        Cells read per block (memory: one block of CSR rows per worker).
    band_genes : int, optional
        Genes per band of intermediates (default: about 48 MiB of intermediates per block).
    spill_dir : str, optional
        Where trimmed means and medians spill their values (12 bytes per stored count of the
        selected genes, removed at the end); default the system's temporary directory. On a
        cluster over several machines, a directory every worker sees.

    Returns
    -------
    CellAggregate
    """
    by_cols = [b.strip() for b in (by.split(",") if isinstance(by, str) else by) if b.strip()]
    st = store if isinstance(store, CellStore) else open_cell_store(store, obs_columns=by_cols)
    names = [s.strip().lower() for s in (stats.split(",") if isinstance(stats, str) else stats)]
    if names == ["all"]:
        names = list(STATS)
    for n in names:
        if n not in STATS:
            raise ConfigError(f"unknown statistic {n!r} (expected {', '.join(STATS)} or all)")
    labels, groups = group_labels(st.obs, by_cols)
    n_groups = len(groups)
    if n_groups == 0:
        raise ConfigError(f"--by {','.join(by_cols)}: no cell has a value")
    cols, missing = _columns(st, genes)
    width = band_genes or max(256, BAND_BYTES // (n_groups * 8 * 6))
    bands = gene_bands(cols, width)
    mergeable = [STATS[n] for n in names if n not in ORDER_STATS]
    order = [n for n in names if n in ORDER_STATS]
    out: dict[str, np.ndarray] = {}
    try:
        _compute(st, bands, cols, labels, groups, names, mergeable, order, ddof, block_cells,
                 spill_dir, out)
    finally:
        release_pool()
    out = {n: out[n] for n in names}
    var = st.var.iloc[cols]
    return CellAggregate(groups, var, out, unassigned_cells=int((labels < 0).sum()),
                         missing_genes=missing,
                         params={"by": by_cols, "stats": names, "ddof": ddof,
                                 "block_cells": block_cells, "band_genes": width,
                                 "spill_dir": spill_dir})


def write_cell_aggregate(result: CellAggregate, out: str) -> list[str]:
    """Write ``result``: ``.zarr`` / ``.h5ad`` as AnnData (one layer per statistic), ``.csv`` /
    ``.parquet`` as genes × groups tables (Allen's layout, first column ``feature``): ``out``
    itself for one statistic, ``{stem}.{stat}{suffix}`` for several; the groups table (with
    ``n_cells``) always goes to ``{stem}.groups.csv``."""
    import warnings
    from pathlib import Path

    import anndata as ad

    from ..cli.common import atomic_output

    path = Path(out)
    suffix = path.suffix.lower()
    written: list[str] = []
    if suffix in (".zarr", ".h5ad"):
        adata = result.to_anndata()
        with ad.settings.override(allow_write_nullable_strings=True, zarr_write_format=3,
                                  auto_shard_zarr_v3=False), warnings.catch_warnings():
            # zarr's notice that consolidated metadata is not in the v3 spec yet (anndata
            # consolidates; its readers use it)
            warnings.filterwarnings("ignore", message="Consolidated metadata")
            if suffix == ".zarr":
                atomic_output(path, lambda p: adata.write_zarr(p))
            else:
                atomic_output(path, lambda p: adata.write_h5ad(p))
        return [str(path)]
    if suffix not in (".csv", ".parquet"):
        raise ConfigError(f"--out {out}: use .csv, .parquet, .zarr or .h5ad")
    for stat in result.stats:
        target = path if len(result.stats) == 1 else path.with_name(f"{path.stem}.{stat}{suffix}")
        table = result.table(stat)
        if suffix == ".csv":
            atomic_output(target, lambda p, t=table: t.to_csv(p))
        else:
            atomic_output(target, lambda p, t=table: t.reset_index().to_parquet(p, index=False))
        written.append(str(target))
    groups = path.with_name(f"{path.stem}.groups.csv")
    atomic_output(groups, lambda p: result.groups.to_csv(p))
    written.append(str(groups))
    return written
