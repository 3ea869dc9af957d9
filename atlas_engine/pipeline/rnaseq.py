"""``probe_selection='rnaseq'`` on a store: each probe scored by how well its microarray pattern
over structures agrees with its gene's RNA-seq TPM pattern (abagen ``_rnaseq``).

Per RNA-seq donor among the donors used (9861, 10021; sorted by id as abagen does):

1. microarray structure means of every kept probe over the donor's QC-kept samples (block-wise
   from the store, mirrored duplicates counted as abagen counts them);
2. TPM structure means of every gene over all of the donor's RNA-seq samples (``rnaseq/{id}``,
   keyed by ``ontology_structure_id``); genes whose structure means have a (near) zero standard
   deviation (ddof=1, ``numpy.isclose(sd, 0)``) are ignored;
3. for every probe whose gene remains, the Spearman correlation (average-tie ranks, ddof=1
   z-scores) between its means and its gene's means over the structures both have.

A probe's score is the NaN-mean over donors; a probe without any correlation has a NaN score, so
its gene is dropped when no probe of it has one (pandas ``idxmax`` on the remaining probes).
Memory: the kept probes × the donor's structures, plus one store block.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ._stats import column_corr, rank_average


def rnaseq_structure_means(store: Any, donor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(gene symbols, sorted structure ids, genes × structures mean TPM)`` of one RNA-seq
    donor of ``store``, the TPM values read as float64."""
    ds = store.rnaseq(donor)
    tpm = np.asarray(ds["tpm"].values, dtype=np.float64)
    sids = np.asarray(ds["ontology_structure_id"].values, dtype=np.int64)
    genes = np.array([str(g) for g in ds["gene"].values.tolist()], dtype=object)
    from ..kernels.compensated import group_mean_compensated

    uniq, codes = np.unique(sids, return_inverse=True)  # pandas' groupby mean, Kahan-summed
    return genes, uniq, group_mean_compensated(tpm, codes.reshape(-1), len(uniq))


def correlate_with_rnaseq(
    symbols: np.ndarray,
    micro: tuple[np.ndarray, np.ndarray],
    rna: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """Per probe the Spearman correlation over shared structures between its microarray
    structure means and its gene's TPM structure means (NaN when its gene is absent or
    constant).

    Parameters
    ----------
    symbols : (P,) gene symbol of each probe
    micro : (sorted structure ids, P × R1 microarray means)
    rna : (gene symbols, sorted structure ids, G × R2 TPM means)
    """
    mid, mmeans = micro
    genes, rid, rmeans = rna
    with np.errstate(invalid="ignore"):
        sd = np.std(rmeans, axis=1, ddof=1) if rmeans.shape[1] > 1 else np.full(len(genes),
                                                                               np.nan)
    keep = ~np.isclose(sd, 0)
    genes, rmeans = genes[keep], rmeans[keep]
    out = np.full(len(symbols), np.nan)
    _, im, ir = np.intersect1d(mid, rid, return_indices=True)
    where = pd.Index(genes).get_indexer(np.asarray(symbols).astype(str))
    mask = where >= 0
    if not mask.any():
        return out
    m = rank_average(mmeans[mask][:, im], axis=1)
    r = rank_average(rmeans[where[mask]][:, ir], axis=1)
    out[mask] = column_corr(m.T, r.T)
    return out


def rnaseq_scores(store: Any, donors: Sequence[Any], kept: pd.DataFrame) -> np.ndarray:
    """Scores of the kept probes (store rows ``kept['row']``, symbols ``kept['gene_symbol']``)
    for ``select_probes``: the NaN-mean over the RNA-seq donors among ``donors`` (QC'd donor
    samples of :mod:`.expression`) of :func:`correlate_with_rnaseq`."""
    from .expression import structure_means

    have = set(getattr(store, "rnaseq_donors", []))
    use = sorted((ds for ds in donors if ds.donor in have), key=lambda ds: ds.donor)
    if not use:
        raise ConfigError(
            "probe_selection='rnaseq' needs the RNA-seq data of at least one donor used "
            f"(donors used: {[ds.donor for ds in donors]}; RNA-seq in the store: "
            f"{sorted(have) or 'none'}); convert rnaseq_donor9861.zip / rnaseq_donor10021.zip "
            "into the store (atlas-engine convert RAW STORE)")
    rows = kept["row"].to_numpy()
    symbols = kept["gene_symbol"].to_numpy().astype(str)
    cols = [correlate_with_rnaseq(symbols, structure_means(store, ds, rows),
                                  rnaseq_structure_means(store, ds.donor)) for ds in use]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN rows: NaN
        return np.nanmean(np.column_stack(cols), axis=1)
