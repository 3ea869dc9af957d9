"""Probes → genes on a store: the collapse of an aggregation's probe axis (:func:`_collapse`,
by mean or by the best probe) and the store-level :func:`collapse_probes` (every sample's
gene means, one task per donor: :func:`_collapse_donor`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..kernels import group_sum_count
from ..scheduler import scheduler_for_compute
from ..store import layout as L
from .inputs import _donor_ids, parse_genes, select_probe_rows


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
