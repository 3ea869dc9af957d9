"""Region × gene aggregation on a converted store: the engine behind ``atlas-engine aggregate``.

One pass over the expression data, whatever is asked:

1. every donor's ``(probe, sample)`` array is reduced by the samples' own ``structure_id`` with
   the numba kernels (:func:`~atlas_engine.aggregate.engine.groupby_reduce`), rolled up to the
   requested groups (ontology level, named structures, …) plus one extra "all samples" group
   that gives each probe's overall mean/variance for probe selection;
2. donors are combined lazily (``combined``: mean of donor means over donors that have the
   group; ``pooled``: all samples together; ``each``: one result per donor);
3. the small results are computed (Dask threads, or whatever ``distributed.Client`` is active)
   and probes are collapsed to genes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..kernels import group_sum_count
from ..store import layout as L
from .engine import DONOR_MODES, combine_donors, groupby_reduce
from .grouping import Grouping, resolve_grouping

STATS = ("mean", "median", "sum", "count", "std", "var", "min", "max")
COLLAPSE_METHODS = ("mean", "max_intensity", "max_variance")
#: target bytes of one Dask block of expression (rows × all of a donor's samples)
DEFAULT_BLOCK_BYTES = 32 * 2**20


@dataclass
class AggregateResult:
    """Aggregated values with everything needed to explain them.

    ``values`` is ``(group, feature)`` — or ``(donor, group, feature)`` for ``donors="each"`` —
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
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return [str(x) for x in self.features.index]

    def to_frame(self) -> pd.DataFrame:
        """A wide table: structure id/acronym/name columns, then one column per feature
        (with a leading ``donor`` column for ``donors="each"``)."""
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
        ``n_samples`` on donor × group; group and feature annotations as coordinates."""
        import xarray as xr

        feat_dim = "gene" if self.params.get("collapse") else "probe"
        dims = ("group", feat_dim) if self.values.ndim == 2 else ("donor", "group", feat_dim)
        coords: dict[str, Any] = {
            "structure_id": ("group", self.groups["structure_id"].to_numpy()),
            "acronym": ("group", self.groups["acronym"].astype(str).to_numpy()),
            "name": ("group", self.groups["name"].astype(str).to_numpy()),
            feat_dim: np.asarray(self.feature_names, dtype=str),
            "donor": np.asarray(self.donors),
        }
        ds = xr.Dataset(
            {
                "value": (dims, self.values),
                "n_values": (dims, self.n_values),
                "n_samples": (("donor", "group"), self.n_samples.to_numpy().T),
            },
            coords=coords,
        )
        ds.attrs.update({k: str(v) for k, v in self.params.items()})
        return ds


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


def _block_rows(n_samples: int, itemsize: int, block_bytes: int, probe_chunk: int) -> int:
    rows = max(1, block_bytes // max(1, n_samples * itemsize))
    return max(probe_chunk, (rows // probe_chunk) * probe_chunk)


def _donor_array(store: Any, donor: int, block_bytes: int) -> Any:
    import dask.array as da
    import zarr

    arr = zarr.open_array(store.url, path=f"{L.donor_path(donor)}/{L.EXPRESSION}", mode="r")
    rows = _block_rows(arr.shape[1], arr.dtype.itemsize, block_bytes, arr.chunks[0])
    return da.from_zarr(arr, chunks=(rows, arr.shape[1]))


# --------------------------------------------------------------------------------------------
# the aggregation
# --------------------------------------------------------------------------------------------
def _pooled_moments(means: np.ndarray, variances: np.ndarray, counts: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Combine per-donor (D, P) means/variances(ddof=1)/counts into pooled mean and variance."""
    n = counts.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(counts > 0, means * counts, 0.0).sum(axis=0) / n
        m2_within = np.where(counts > 1, variances * (counts - 1), 0.0).sum(axis=0)
        between = np.where(counts > 0, counts * (means - mean) ** 2, 0.0).sum(axis=0)
        var = np.where(n > 1, (m2_within + between) / (n - 1), np.nan)
    return np.where(n > 0, mean, np.nan), var


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
    score = score_mean if method == "max_intensity" else score_var
    # probe order by probe_id: ties go to the smallest probe_id (abagen's idxmax on sorted ids)
    order = np.lexsort((probe_ids, gene_of_probe))
    chosen = np.full(n_genes, -1, dtype=np.int64)
    best = np.full(n_genes, -np.inf)
    for r in order:
        s = score[r]
        g = gene_of_probe[r]
        if np.isfinite(s) and s > best[g]:
            best[g] = s
            chosen[g] = r
    ok = chosen >= 0
    take = np.where(ok, chosen, 0)
    out = np.where(ok, values[..., take], np.nan)
    nv = np.where(ok, n_values[..., take], 0)
    info["chosen_probe"] = np.where(ok, probe_ids[take], -1)
    label = "overall mean" if method == "max_intensity" else "overall variance"
    info["reason"] = np.where(ok, f"largest {label} of the gene's probes",
                              f"no probe with a finite {label}")
    return out, nv, info


def aggregate(
    store: Any,
    *,
    by: str | Sequence[int | str] = "structure",
    stat: str = "mean",
    genes: str | Sequence[str] | None = None,
    donors: str = "combined",
    collapse: str | None = None,
    donor_ids: Sequence[int] | None = None,
    block_bytes: int | None = None,
    ddof: int = 1,
    keep_non_refseq: bool = False,
) -> AggregateResult:
    """Aggregate a store into a group × feature matrix.

    Parameters
    ----------
    store : AtlasStore or path/URL
    by : str or list
        ``"structure"``, ``"depth:N"``, ``"broad"`` or structure ids/acronyms/names (each with
        its descendants); see :func:`~atlas_engine.aggregate.grouping.resolve_grouping`.
    stat : {"mean", "median", "sum", "count", "std", "var", "min", "max"}
    genes : symbols, ``"@file"`` or None (all)
    donors : {"combined", "pooled", "each"}
        ``combined`` (abagen's default): the statistic per donor, then the mean over donors that
        have the group (median of donor medians for ``median``); ``pooled``: all samples
        together; ``each``: one result per donor.
    collapse : {None, "mean", "max_intensity", "max_variance"}
        Probes → genes. ``max_*`` choose by the probe's mean / variance over all samples of all
        selected donors (abagen's ``donor_probes="aggregate"``).
    donor_ids : donors to include (default: all in the store)
    keep_non_refseq : with ``collapse``, keep probes without an Entrez id (each its own
        "gene", named after the probe); by default they are left out and counted
    block_bytes : target size of one Dask block (bounds memory; default 32 MiB)
    """
    from ..store.open import AtlasStore, open_store

    if stat not in STATS:
        raise ConfigError(f"unknown --stat {stat!r} (valid: {', '.join(STATS)})")
    if donors not in DONOR_MODES:
        raise ConfigError(f"unknown --donors {donors!r} (valid: {', '.join(DONOR_MODES)})")
    if collapse is not None and collapse not in COLLAPSE_METHODS:
        raise ConfigError(f"unknown collapse method {collapse!r} "
                          f"(valid: {', '.join(COLLAPSE_METHODS)})")
    st = store if isinstance(store, AtlasStore) else open_store(os.fspath(store))
    use = list(st.donors) if donor_ids is None else [int(d) for d in donor_ids]
    for d in use:
        if d not in st.donors:
            raise ConfigError(f"donor {d} is not in the store (complete donors: {st.donors})")
    block_bytes = int(block_bytes or DEFAULT_BLOCK_BYTES)

    probes_all = st.probes
    rows, missing = select_probe_rows(probes_all, parse_genes(genes))
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
    n_groups = grouping.n_groups
    member = np.concatenate([grouping.rollup, np.ones((n_struct, 1), dtype=bool)], axis=1)
    need_scores = collapse in ("max_intensity", "max_variance")
    stats = {stat, "count"} | ({"mean", "var"} if need_scores else set())
    subset = rows.size != len(probes_all)

    arrays = []
    donor_labels = []
    for d in use:
        arr = _donor_array(st, d, block_bytes)
        arrays.append(arr[rows] if subset else arr)
        donor_labels.append(labels_all[(samples["donor"] == d).to_numpy()])

    lazy: dict[str, Any] = {}
    if donors == "pooled":
        import dask.array as da

        big = da.concatenate(arrays, axis=1)
        if stat == "median":
            big = big.rechunk({1: -1})
        res = groupby_reduce(big, np.concatenate(donor_labels), axis="sample", n_groups=n_struct,
                             stats=sorted(stats), membership=member, ddof=ddof)
        lazy = {f"{k}": v for k, v in res.items()}
    else:
        for k, (arr, lab) in enumerate(zip(arrays, donor_labels, strict=True)):
            res = groupby_reduce(arr, lab, axis="sample", n_groups=n_struct,
                                 stats=sorted(stats), membership=member, ddof=ddof)
            for name, v in res.items():
                lazy[f"{name}/{k}"] = v

    import dask

    keys = list(lazy)
    computed = dict(zip(keys, dask.compute(*[lazy[k] for k in keys]), strict=True))

    if donors == "pooled":
        values = computed[stat][:, :n_groups].T
        n_values = computed["count"][:, :n_groups].T
        score_mean = computed["mean"][:, -1] if need_scores else None
        score_var = computed["var"][:, -1] if need_scores else None
    else:
        per = {s: np.stack([computed[f"{s}/{k}"] for k in range(len(use))]) for s in stats}
        v = per[stat][:, :, :n_groups]          # (D, P, G)
        c = per["count"][:, :, :n_groups]
        if donors == "each":
            values = np.where(c > 0, v, np.nan).transpose(0, 2, 1)
            n_values = c.transpose(0, 2, 1)
        elif stat == "mean":
            comb = combine_donors(v, c, "combined")
            values, n_values = comb["mean"].T, comb["count"].T
        else:
            masked = np.where(c > 0, v, np.nan)
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                agg = np.nanmedian if stat == "median" else np.nanmean
                values = agg(masked, axis=0).T
            n_values = c.sum(axis=0).T
        if need_scores:
            score_mean, score_var = _pooled_moments(per["mean"][:, :, -1], per["var"][:, :, -1],
                                                    per["count"][:, :, -1])
        else:
            score_mean = score_var = None

    if collapse is not None:
        values, n_values, features = _collapse(values, n_values, probes, collapse,
                                               score_mean, score_var)  # type: ignore[arg-type]
    else:
        features = probes[["probe_id", "probe_name", "gene_symbol"]].copy()
        features.index = probes["probe_id"].astype(str).to_numpy()

    per_struct = np.stack([np.bincount(lab[lab >= 0], minlength=n_struct) for lab in donor_labels])
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
        params={"by": str(by), "stat": stat, "donors": donors, "collapse": collapse or "",
                "genes": ",".join(parse_genes(genes) or []) or "all", "store": st.url,
                "ddof": ddof, "non_refseq_probes_left_out": non_refseq},
    )

