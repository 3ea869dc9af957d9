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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..choices import AGGREGATE_STATS, COLLAPSE_METHODS
from ..errors import ConfigError
from ..kernels import group_sum_count
from ..pipeline.registry import fill_choices
from ..scheduler import scheduler_for_compute
from ..store import layout as L
from .engine import DONOR_MODES, combine_donors
from .grouping import Grouping, resolve_grouping

STATS = AGGREGATE_STATS
#: target bytes of one Dask block of expression (rows × all of a donor's samples)
DEFAULT_BLOCK_BYTES = 32 * 2**20


@dataclass
class AggregateResult:
    """Aggregated values with everything needed to explain them.

    ``values`` is ``(group, feature)`` — or ``(donor, group, feature)`` for ``combine="each"`` —
    where a feature is a gene (after collapse) or a probe. ``n_samples`` counts the samples of
    each donor in each group (``(donor, group)``), ``n_values`` the non-NaN values behind each
    entry of ``values``.
    """

    values: np.ndarray
    n_values: np.ndarray
    groups: pd.DataFrame
    features: pd.DataFrame
    n_samples: pd.DataFrame
    donors: list[int]
    missing_genes: list[str] = field(default_factory=list)
    unassigned_samples: int = 0
    #: samples of each donor that fall in no group (included in ``unassigned_samples``)
    unassigned_by_donor: dict[int, int] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return [str(x) for x in self.features.index]

    def to_frame(self) -> pd.DataFrame:
        """A wide table: structure id/acronym/name columns, then one column per feature
        (with a leading ``donor`` column for ``combine="each"``)."""
        meta = self.groups[["structure_id", "acronym", "name"]].reset_index(drop=True)
        if self.values.ndim == 2:
            body = pd.DataFrame(self.values, columns=self.feature_names)
            return pd.concat([meta, body], axis=1)
        parts = []
        for k, d in enumerate(self.donors):
            body = pd.DataFrame(self.values[k], columns=self.feature_names)
            parts.append(pd.concat([pd.DataFrame({"donor": d}, index=meta.index), meta, body],
                                   axis=1))
        return pd.concat(parts, ignore_index=True)

    def to_dataset(self) -> Any:
        """An ``xarray.Dataset`` cube: ``value`` and ``n_values`` on (donor,) group, feature;
        ``n_samples`` on donor × group; group and feature annotations as coordinates.

        The ``group`` axis is indexed by structure id (``ds.sel(group=4249)``) and, in memory,
        also by ``acronym`` and ``name`` (``ds.sel(acronym="CN")`` gives every group with that
        acronym, e.g. both hemispheres); a probe axis carries each probe's ``gene_symbol``,
        indexed as well (``ds.sel(gene_symbol="BDNF")``). Files keep the coordinates but not
        the extra indexes: :func:`open_cube` restores them."""
        import xarray as xr

        feat_dim = "gene" if self.params.get("collapse") else "probe"
        dims = ("group", feat_dim) if self.values.ndim == 2 else ("donor", "group", feat_dim)
        coords: dict[str, Any] = {
            "group": self.groups["structure_id"].to_numpy(),
            "structure_id": ("group", self.groups["structure_id"].to_numpy()),
            "acronym": ("group", self.groups["acronym"].astype(str).to_numpy()),
            "name": ("group", self.groups["name"].astype(str).to_numpy()),
            feat_dim: np.asarray(self.feature_names, dtype=str),
            "donor": np.asarray(self.donors),
        }
        if feat_dim == "probe":
            coords["gene_symbol"] = ("probe",
                                     self.features["gene_symbol"].astype(str).to_numpy())
        ds = xr.Dataset(
            {
                "value": (dims, self.values),
                "n_values": (dims, self.n_values),
                "n_samples": (("donor", "group"), self.n_samples.to_numpy().T),
            },
            coords=coords,
        )
        ds.attrs.update({k: str(v) for k, v in self.params.items()})
        return index_cube(ds)


#: non-dimension coordinates of a cube that get an index of their own (``.sel`` on them)
CUBE_INDEXES = ("acronym", "name", "gene_symbol")


def index_cube(ds: Any) -> Any:
    """Index a cube's ``acronym``, ``name`` and (probe cubes) ``gene_symbol`` coordinates, so
    ``ds.sel(acronym="CN")`` or ``ds.sel(gene_symbol="BDNF")`` select by them."""
    for name in CUBE_INDEXES:
        if name in ds.coords and name not in ds.indexes:
            ds = ds.set_xindex(name)
    return ds


def open_cube(path: str | os.PathLike) -> Any:
    """Open a cube written by ``atlas-engine aggregate --out X.nc|X.zarr``, with its indexes.

    The cube (also what :meth:`AggregateResult.to_dataset` returns) is loaded into memory and
    indexed by ``group`` (structure id) and by ``acronym``, ``name`` and, for probe cubes,
    ``gene_symbol``, so ``ds.sel(acronym="CN")`` selects by them.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.zarr`` directory, or a netCDF file (any other name; read with ``h5netcdf``).

    Returns
    -------
    xarray.Dataset
        The cube, in memory, with the indexes above.
    """
    import xarray as xr

    path = Path(path)
    if path.suffix == ".zarr":
        ds = xr.open_zarr(path, consolidated=False)
    else:
        ds = xr.open_dataset(path, engine="h5netcdf")
    return index_cube(ds.load())


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def parse_genes(spec: str | Sequence[str] | None) -> list[str] | None:
    """``"BDNF,COMT"`` / ``["BDNF", "COMT"]`` / ``"@genes.txt"`` (one symbol per line or
    comma-separated; ``#`` comments) → symbols; ``None``/``"all"`` → ``None`` (every gene)."""
    if spec is None:
        return None
    items = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in items:
        text = str(item).strip()
        if text.lower() == "all":
            return None
        if text.startswith("@"):
            path = Path(text[1:]).expanduser()
            if not path.is_file():
                raise ConfigError(f"gene list file {path} does not exist")
            lines = [ln.split("#", 1)[0] for ln in path.read_text().splitlines()]
            text = ",".join(lines)
        out.extend(s.strip() for s in text.replace("\n", ",").split(",") if s.strip())
    return list(dict.fromkeys(out))


def select_probe_rows(probes: pd.DataFrame, genes: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """Store rows of the probes of ``genes`` (all rows for ``None``) and the symbols not found."""
    if genes is None:
        return np.arange(len(probes)), []
    symbols = probes["gene_symbol"].astype(str).to_numpy()
    wanted = set(genes)
    rows = np.flatnonzero(np.isin(symbols, list(wanted)))
    found = set(symbols[rows])
    missing = [g for g in genes if g not in found]
    if rows.size == 0:
        raise ConfigError(f"none of the genes {', '.join(genes[:10])} is in the store's probe table")
    return rows, missing


# --------------------------------------------------------------------------------------------
# the aggregation
# --------------------------------------------------------------------------------------------
def _collapse(values: np.ndarray, n_values: np.ndarray, probes: pd.DataFrame,
              method: str, score_mean: np.ndarray, score_var: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Collapse the probe axis (last) of ``values`` to genes by ``method``."""
    symbols = probes["gene_symbol"].astype(str).to_numpy()
    genes, gene_of_probe = np.unique(symbols, return_inverse=True)
    n_genes = len(genes)
    probe_ids = probes["probe_id"].to_numpy()
    info = pd.DataFrame({"gene_symbol": genes}).set_index("gene_symbol")
    info["n_probes"] = np.bincount(gene_of_probe, minlength=n_genes)
    if method == "mean":
        lead = values.shape[:-1]
        flat = values.reshape(-1, values.shape[-1])
        sums, cnts = group_sum_count(flat, gene_of_probe, n_genes, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(cnts > 0, sums / cnts, np.nan)
        nv = n_values.reshape(-1, n_values.shape[-1])
        nsum, _ = group_sum_count(nv.astype(np.float64), gene_of_probe, n_genes, axis=1)
        info["chosen_probe"] = -1
        info["reason"] = "mean of the gene's probes"
        return out.reshape(*lead, n_genes), nsum.reshape(*lead, n_genes).astype(np.int64), info
    from ..pipeline.probes import pick_best

    score = score_mean if method == "max_intensity" else score_var
    # the pipeline's rule (highest finite score; NaN skipped; ties to the first row) over the
    # probes in probe_id order: ties go to the smallest probe_id (abagen's idxmax on sorted ids)
    by_id = np.argsort(probe_ids, kind="stable")
    finite = np.where(np.isfinite(score), score, np.nan)[by_id]
    best = pick_best(finite, gene_of_probe[by_id], n_genes)
    chosen = np.where(best >= 0, by_id[np.maximum(best, 0)], -1)
    ok = chosen >= 0
    take = np.where(ok, chosen, 0)
    out = np.where(ok, values[..., take], np.nan)
    nv = np.where(ok, n_values[..., take], 0)
    info["chosen_probe"] = np.where(ok, probe_ids[take], -1)
    label = "overall mean" if method == "max_intensity" else "overall variance"
    info["reason"] = np.where(ok, f"largest {label} of the gene's probes",
                              f"no probe with a finite {label}")
    return out, nv, info


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



def _donor_ids(donors: Sequence[int | str] | str | None, in_store: list[int]) -> list[int]:
    """Donor ids or names (a list or a comma-separated string) → ids, each checked against
    the store; ``None`` or ``"all"`` → every donor of the store."""
    if donors is None or (isinstance(donors, str) and donors.strip().lower() in ("", "all")):
        return list(in_store)
    from ..sources.donors import resolve_donors

    use = [d.id for d in resolve_donors(donors)]
    for d in use:
        if d not in in_store:
            raise ConfigError(f"donor {d} is not in the store (complete donors: {in_store})")
    return use


def _collapse_donor(url: str, path: str, gene_of_probe: np.ndarray, n_genes: int,
                    biggest: int, out: np.ndarray | None = None) -> np.ndarray | None:
    """One task: a donor's whole matrix reduced over probes to (genes, samples) means.

    The matrix is decoded into a pooled buffer of ``biggest`` values (every donor's task asks
    for the same size, so the next donor reuses the pages: fresh pages are what the work would
    otherwise be spent zeroing). The means go into ``out`` (the donor's columns of the
    caller's result, on local threads) and nothing is returned, or into a new array that is
    returned (on a cluster's workers); never through float64 sums and counts.
    """
    from ..kernels import group_mean_probe
    from ..store.blockread import array_shape, read_rows
    from ..store.bufferpool import pooled_empty

    (n_rows, n_cols), _, dtype = array_shape(url, path)
    buf = pooled_empty(max(biggest, n_rows * n_cols), dtype)
    x = read_rows(url, path, 0, n_rows, out=buf[:n_rows * n_cols].reshape(n_rows, n_cols))
    res = np.empty((n_genes, n_cols), dtype) if out is None else out
    group_mean_probe(x, gene_of_probe, n_genes, out=res)
    return None if out is not None else res


def collapse_probes(
    store: Any,
    *,
    genes: str | Sequence[str] | None = None,
    donors: Sequence[int | str] | str | None = None,
    keep_non_refseq: bool = False,
) -> Any:
    """Probes → genes for every sample: the mean of each gene's probes.

    One task per donor: on the workers of an active dask.distributed client, else on local
    threads writing into one preallocated result.

    Parameters
    ----------
    store : AtlasStore, str or os.PathLike
        An opened store (:func:`~atlas_engine.store.open.open_store`), or its path or URL.
    genes : str, sequence of str or None, default None
        The genes: symbols (``"BDNF,COMT"`` or a list), ``"@file"`` (a file of symbols, one
        per line or comma-separated, ``#`` comments), or None / ``"all"`` (every gene).
    donors : sequence of int or str, str or None, default None
        The donors whose samples are included: ids or names, as a list or a comma-separated
        string (``"9861,10021"``); None or ``"all"``: every donor of the store.
    keep_non_refseq : bool, default False
        Keep probes without an Entrez id (each its own "gene", named after the probe); by
        default they are left out.

    Returns
    -------
    xarray.DataArray
        ``expression``, gene × sample, in the store's precision, with ``gene`` (symbols,
        sorted) and the sample coordinates ``donor``, ``sample_id``, ``structure_id`` and
        ``well_id``; ``attrs["missing_genes"]`` lists the asked-for symbols not in the store.

    Raises
    ------
    ConfigError
        An unknown donor or one not in the store, a missing gene list file, or none of
        ``genes`` in the store.
    StoreNotFoundError
        No store at ``store``.
    """
    import xarray as xr

    from ..store.blockread import array_shape
    from ..store.open import AtlasStore, open_store
    from .rowtasks import compute, task

    st = store if isinstance(store, AtlasStore) else open_store(os.fspath(store))
    use = _donor_ids(donors, st.donors)
    probes = st.probes
    rows, missing = select_probe_rows(probes, parse_genes(genes))
    keep = np.zeros(len(probes), dtype=bool)
    keep[rows] = True
    if not keep_non_refseq:
        keep &= probes["entrez_id"].to_numpy() != L.MISSING_INT
    symbols = probes["gene_symbol"].astype(str).to_numpy()
    names, codes = np.unique(symbols[keep], return_inverse=True)
    gene_of_probe = np.full(len(probes), -1, dtype=np.int64)
    gene_of_probe[keep] = codes
    paths = [f"{L.donor_path(d)}/{L.EXPRESSION}" for d in use]
    shapes = [array_shape(st.url, p) for p in paths]
    offsets = np.concatenate([[0], np.cumsum([c for (_, c), _, _ in shapes])]).astype(int)
    biggest = max(r * c for (r, c), _, _ in shapes)
    # one task per donor; on Dask's local threads each writes its columns of one
    # preallocated result, on a cluster's workers each returns them
    local = scheduler_for_compute() is not None   # Dask's threads: no other scheduler named
    values = np.empty((len(names), offsets[-1]), shapes[0][2]) if local else None
    parts = compute([task(_collapse_donor, st.url, p, gene_of_probe, len(names), biggest,
                          None if values is None else values[:, offsets[k]:offsets[k + 1]])
                     for k, p in enumerate(paths)])
    if values is None:
        values = np.concatenate(parts, axis=1)
    samples = st.samples[st.samples["donor"].isin(use)].reset_index(drop=True)
    order = np.concatenate([np.flatnonzero(samples["donor"].to_numpy() == d) for d in use])
    samples = samples.iloc[order].reset_index(drop=True)
    out = xr.DataArray(values, dims=("gene", "sample"),
                       coords={"gene": names,
                               **{c: ("sample", samples[c].to_numpy())
                                  for c in ("donor", "sample_id", "structure_id", "well_id")}},
                       name="expression")
    out.attrs["missing_genes"] = ",".join(missing)
    return out
