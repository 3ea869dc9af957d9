"""Group × gene statistics of a BrainSpan store: by developmental period, age, structure, region,
donor, gender, or any combination (``by="period,structure"``).

Everything runs through :func:`~atlas_engine.aggregate.engine.groupby_reduce` (chunk → combine →
finalize on numpy, Dask threads or a dask.distributed cluster): samples get one label per
(group, donor) pair, the engine reduces the selected gene rows by those labels, and donors are
then combined:

* ``combined`` — the statistic per donor, then the mean of the donor values over donors with the
  group (as :func:`~atlas_engine.aggregate.engine.combine_donors`; median of donor medians for
  ``median``, as for the microarray store). The engine's labels are the (group, donor) pairs
  that have samples — never more than the samples — so memory stays genes × samples;
* ``pooled`` — all samples of the group together;
* ``each`` — one result per donor.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..choices import AGGREGATE_STATS
from ..errors import ConfigError
from ..sources.devtime import STRUCTURE_GROUPS
from .engine import DONOR_MODES, groupby_reduce

#: grouping keys (``group`` and ``structure_group`` are aliases of ``region``)
KEYS = ("period", "age", "structure", "region", "donor", "gender")
_ALIASES = {"group": "region", "structure_group": "region", "sex": "gender", "periods": "period",
            "structures": "structure", "donors": "donor", "regions": "region"}
STATS = AGGREGATE_STATS
TRANSFORMS = ("none", "log2")


def parse_keys(by: str | Sequence[str]) -> list[str]:
    """``"period,structure"`` → ``["period", "structure"]`` (validated, aliases resolved)."""
    items = by.split(",") if isinstance(by, str) else list(by)
    keys = []
    for item in (str(i).strip().lower() for i in items):
        if not item:
            continue
        key = _ALIASES.get(item, item)
        if key not in KEYS:
            raise ConfigError(f"unknown BrainSpan --by {item!r} (valid: {', '.join(KEYS)}, "
                              "comma-separated for combinations)")
        if key not in keys:
            keys.append(key)
    if not keys:
        raise ConfigError(f"empty --by (valid: {', '.join(KEYS)})")
    return keys


def _key_frame(samples: pd.DataFrame, key: str) -> tuple[pd.Series, pd.DataFrame]:
    """Per sample, the code of its ``key`` value; and a table of the values in order (with
    descriptive columns)."""
    if key == "period":
        t = (samples[["period", "period_name"]].drop_duplicates()
             .assign(_o=lambda f: f["period"].str[1:].astype(int)).sort_values("_o"))
        t = t.drop(columns="_o")
        col = "period"
    elif key == "age":
        t = (samples[["age", "age_years", "age_pcd", "period"]].drop_duplicates("age")
             .sort_values("age_pcd"))
        col = "age"
    elif key == "structure":
        region_rank = {g: i for i, g in enumerate(STRUCTURE_GROUPS)}
        t = samples[["structure_acronym", "structure_name", "region"]].drop_duplicates(
            "structure_acronym")
        t = t.assign(_o=t["region"].map(region_rank).fillna(len(region_rank))).sort_values(
            ["_o", "structure_acronym"]).drop(columns="_o").rename(
            columns={"structure_acronym": "structure"})
        col = "structure_acronym"
    elif key == "region":
        order = [g for g in (*STRUCTURE_GROUPS, "other") if g in set(samples["region"])]
        t = pd.DataFrame({"region": order})
        col = "region"
    elif key == "donor":
        t = (samples[["donor_id", "donor_name", "age", "age_pcd", "gender"]]
             .drop_duplicates("donor_id").sort_values(["age_pcd", "donor_id"])
             .drop(columns="age_pcd"))
        col = "donor_id"
    else:
        t = pd.DataFrame({"gender": sorted(set(samples["gender"].astype(str)))})
        col = "gender"
    t = t.reset_index(drop=True)
    first = t.columns[0]
    code = pd.Series(pd.Index(t[first].astype(str)).get_indexer(samples[col].astype(str)),
                     index=samples.index)
    return code, t


def group_samples(samples: pd.DataFrame, keys: Sequence[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Label every sample with its group (combinations of ``keys`` that have samples, in key
    order) and the group table (key columns and descriptions, ``n_samples``, ``n_donors``)."""
    codes, tables = [], []
    for k in keys:
        c, t = _key_frame(samples, k)
        codes.append(c.to_numpy())
        tables.append(t)
    combo = np.ravel_multi_index(tuple(codes), tuple(len(t) for t in tables))
    present, labels = np.unique(combo, return_inverse=True)
    parts = np.unravel_index(present, tuple(len(t) for t in tables))
    cols = []
    for t, idx in zip(tables, parts, strict=True):
        cols.append(t.iloc[idx].reset_index(drop=True))
    groups = pd.concat(cols, axis=1)
    groups = groups.loc[:, ~groups.columns.duplicated()]
    donor = samples["donor_id"].to_numpy()
    groups["n_samples"] = np.bincount(labels, minlength=len(present))
    groups["n_donors"] = [len(set(donor[labels == g])) for g in range(len(present))]
    return labels.astype(np.int64), groups


def select_genes(genes: pd.DataFrame, spec: str | Sequence[str] | None
                 ) -> tuple[np.ndarray, list[str]]:
    """Store rows of the genes named by symbol, Entrez id (digits) or Ensembl id (``ENSG…``,
    version ignored), and the names not found. ``None`` selects every gene."""
    from .inputs import parse_genes

    names = parse_genes(spec)
    if names is None:
        return np.arange(len(genes)), []
    symbol = genes["gene_symbol"].astype(str).to_numpy()
    ensembl = genes["ensembl_gene_id"].astype(str).str.split(".").str[0].to_numpy()
    entrez = genes["entrez_id"].to_numpy()
    rows: list[int] = []
    missing = []
    for name in names:
        if name.upper().startswith("ENSG"):
            hit = np.flatnonzero(ensembl == name.split(".")[0].upper())
        elif name.isdigit():
            hit = np.flatnonzero(entrez == int(name))
        else:
            hit = np.flatnonzero(symbol == name)
            if hit.size == 0:
                hit = np.flatnonzero(np.char.upper(symbol.astype(str)) == name.upper())
        if hit.size == 0:
            missing.append(name)
        rows.extend(int(h) for h in hit)
    rows_arr = np.unique(np.asarray(rows, dtype=np.int64))
    if rows_arr.size == 0:
        raise ConfigError(f"none of the genes {', '.join(names[:10])} is in the BrainSpan store")
    return rows_arr, missing


@dataclass
class BrainSpanResult:
    """``values`` (group, gene) — (donor, group, gene) for ``combine="each"`` — with the counts
    behind each entry (``n_values``), the group table and the gene table."""

    values: np.ndarray
    n_values: np.ndarray
    groups: pd.DataFrame
    features: pd.DataFrame
    donors: list[int]
    missing_genes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        sym = self.features["gene_symbol"].astype(str)
        dup = sym.duplicated(keep=False)
        return [f"{s} ({e})" if d else s for s, e, d in
                zip(sym, self.features["ensembl_gene_id"].astype(str), dup, strict=True)]

    def to_frame(self) -> pd.DataFrame:
        """Wide: the group columns, ``n_samples``, ``n_donors``, then one column per gene (for
        ``each``: a leading ``donor`` column, the donor's own ``n_samples`` (samples with a
        value), no ``n_donors``, and only the groups the donor has)."""
        meta = self.groups.reset_index(drop=True)
        if self.values.ndim == 2:
            return pd.concat([meta, pd.DataFrame(self.values, columns=self.feature_names)], axis=1)
        parts = []
        for k, d in enumerate(self.donors):
            body = pd.DataFrame(self.values[k], columns=self.feature_names)
            own = meta.drop(columns=["n_donors"]).assign(
                n_samples=self.n_values[k].max(axis=1, initial=0))   # this donor's samples
            part = pd.concat([pd.DataFrame({"donor": d}, index=meta.index), own, body], axis=1)
            parts.append(part[self.n_values[k].sum(axis=1) > 0])
        return pd.concat(parts, ignore_index=True)

    def to_long(self) -> pd.DataFrame:
        """Tidy: one row per group (and donor) and gene with ``value`` and ``n_values``."""
        wide = self.to_frame()
        names = self.feature_names
        ids = [c for c in wide.columns if c not in names]
        long = wide.melt(id_vars=ids, value_vars=names, var_name="gene", value_name="value")
        nv = (self.n_values if self.values.ndim == 2 else
              np.concatenate([self.n_values[k][self.n_values[k].sum(axis=1) > 0]
                              for k in range(len(self.donors))]))
        long["n_values"] = nv.T.reshape(-1)
        return long


def _reduce_block(block: np.ndarray, labels: np.ndarray, n_labels: int, stats: tuple[str, ...],
                  ddof: int, pair_group: np.ndarray | None, n_groups: int,
                  second: str) -> np.ndarray:
    """One block of genes × all samples through :func:`groupby_reduce`: the statistic and value
    count per label; then, with ``pair_group`` (labels are (group, donor) pairs), per group over
    its pairs with values (NaN elsewhere, which the kernels skip) the mean of the donor values
    (as combine_donors' "combined") or their median, and the summed counts. Returns
    (genes, 2 × k): values, then counts."""
    r = groupby_reduce(block, labels, axis="sample", n_groups=n_labels, stats=stats, ddof=ddof,
                       parallel=False)
    value, count = r[stats[0]], r["count"]
    if pair_group is None:
        return np.concatenate([value, count], axis=1)
    masked = np.where(count > 0, value, np.nan)
    v = groupby_reduce(masked, pair_group, axis="sample", n_groups=n_groups, stats=(second,),
                       parallel=False)[second]
    c = groupby_reduce(count.astype(np.float64), pair_group, axis="sample", n_groups=n_groups,
                       stats=("sum",), parallel=False)["sum"]
    return np.concatenate([v, c], axis=1)


def _log2p1(block: np.ndarray) -> np.ndarray:
    return np.log2(block.astype(np.float64) + 1.0).astype(block.dtype)


def aggregate_brainspan(
    store: Any,
    *,
    by: str | Sequence[str] = "period",
    stat: str = "mean",
    genes: str | Sequence[str] | None = None,
    combine: str = "combined",
    donors: Sequence[int | str] | None = None,
    transform: str = "none",
    ddof: int = 1,
) -> BrainSpanResult:
    """Aggregate a BrainSpan store into a group × gene matrix.

    Parameters
    ----------
    store : BrainSpanStore or path/URL
    by : str or list of str
        Any of ``period`` (Kang P1–P15), ``age`` (ordered), ``structure`` (BrainSpan's
        acronyms), ``region`` (coarse groups, e.g. neocortex), ``donor``, ``gender``;
        comma-separated for combinations (``"period,structure"``).
    stat : {"mean", "median", "sum", "count", "std", "var", "min", "max"}
    genes : symbols, Entrez ids, Ensembl ids, ``"@file"`` or None (all genes)
    combine : {"combined", "pooled", "each"}
        ``combined``: per donor, then the mean of donor values (median of donor medians);
        ``pooled``: all samples together; ``each``: one result per donor.
    donors : donors to include (ids or names; default all)
    transform : {"none", "log2"}
        ``log2``: statistics of ``log2(RPKM + 1)``.
    ddof : int
        Delta degrees of freedom of ``std``/``var``.
    """
    from ..store.brainspan import BrainSpanStore, open_brainspan
    from .rowtasks import compute

    if stat not in STATS:
        raise ConfigError(f"unknown --stat {stat!r} (valid: {', '.join(STATS)})")
    if combine not in DONOR_MODES:
        raise ConfigError(f"unknown combine mode {combine!r} (valid: {', '.join(DONOR_MODES)})")
    if transform not in TRANSFORMS:
        raise ConfigError(f"unknown transform {transform!r} (valid: {', '.join(TRANSFORMS)})")
    bs = store if isinstance(store, BrainSpanStore) else open_brainspan(os.fspath(store))
    keys = parse_keys(by)
    samples = bs.samples
    use = np.ones(len(samples), dtype=bool)
    if isinstance(donors, str):
        donors = [d.strip() for d in donors.split(",") if d.strip()]
    if donors is not None:
        wanted = {str(d) for d in donors}
        use = (samples["donor_id"].astype(str).isin(wanted)
               | samples["donor_name"].astype(str).isin(wanted)).to_numpy()
        known = set(samples["donor_id"].astype(str)) | set(samples["donor_name"].astype(str))
        unknown = sorted(wanted - known)
        if unknown:
            raise ConfigError(f"donors {', '.join(unknown)} are not in the BrainSpan store")
    sub = samples[use]
    labels_used, groups = group_samples(sub, keys)
    n_groups = len(groups)
    donor_list = sorted(set(sub["donor_id"].astype(int)),
                        key=lambda d: (float(sub.loc[sub.donor_id == d, "age_pcd"].iloc[0]), d))
    d_index = {d: i for i, d in enumerate(donor_list)}
    n_d = len(donor_list)
    per_donor = combine != "pooled"
    labels = np.full(len(samples), -1, dtype=np.int64)
    if per_donor:
        # one label per (group, donor) pair that has samples: at most one per sample, so the
        # engine's output stays genes × samples whatever the number of groups and donors
        didx = np.array([d_index[int(d)] for d in sub["donor_id"]], dtype=np.int64)
        pairs, pair_of = np.unique(labels_used * n_d + didx, return_inverse=True)
        labels[use] = pair_of
        pair_group, pair_donor = pairs // n_d, pairs % n_d
        n_labels = len(pairs)
    else:
        labels[use] = labels_used
        n_labels = n_groups
        pair_group = pair_donor = np.zeros(0, dtype=np.int64)

    rows, missing = select_genes(bs.genes, genes)
    x = bs.expression
    if rows.size != x.shape[0]:
        x = x[rows]
    if transform == "log2":
        x = x.map_blocks(_log2p1, dtype=x.dtype)
    # every block holds all samples (524 × 4,096 float32 = 8.6 MB at the store's chunking) and
    # is reduced to its genes' result in one task (groupby_reduce's numpy path; the combine
    # over donors in the same task), so only genes × groups is ever whole: ~0.9 GB less at full
    # size than holding every block's per-label intermediates
    x = x.rechunk({1: -1})
    stats = tuple(dict.fromkeys((stat, "count")))
    combined = per_donor and combine != "each"
    width = 2 * (n_groups if combined else n_labels)
    both = x.map_blocks(_reduce_block, labels, n_labels, stats, ddof,
                        pair_group if combined else None, n_groups,
                        "median" if stat == "median" else "mean",
                        chunks=(x.chunks[0], (width,)), dtype=np.float64)
    done = np.asarray(compute([both])[0])
    half = width // 2
    value, count = done[:, :half], done[:, half:].astype(np.int64)
    if not per_donor or combined:
        out_v, out_c = value.T, count.T
    else:
        out_v = np.full((n_d, n_groups, len(rows)), np.nan)
        out_c = np.zeros((n_d, n_groups, len(rows)), dtype=np.int64)
        out_v[pair_donor, pair_group] = np.where(count > 0, value, np.nan).T
        out_c[pair_donor, pair_group] = count.T
    features = bs.genes.iloc[rows].reset_index()
    return BrainSpanResult(
        values=np.asarray(out_v, dtype=np.float64), n_values=np.asarray(out_c, dtype=np.int64),
        groups=groups, features=features, donors=donor_list, missing_genes=missing,
        params={"dataset": "brainspan", "by": ",".join(keys), "stat": stat, "combine": combine,
                "transform": transform, "store": bs.url},
    )
