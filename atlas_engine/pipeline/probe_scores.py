"""Per-probe scores of the probe-selection methods, on arrays in memory: structure means,
differential stability, RNA-seq correlation, pooled mean/std and the per-gene PC1 and
correlation scores (the store path computes them in :mod:`.scoring`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ._stats import column_corr, rank_average

# --------------------------------------------------------------------------------------------
# probe scores
# --------------------------------------------------------------------------------------------


def structure_means(x: np.ndarray, structure_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of every probe over each structure's samples: (sorted ids, P × n_structures),
    Kahan-summed in sample order as pandas' groupby mean (abagen's ``_groupby_structure_id``),
    the same arithmetic as the store path (:func:`.passes.structure_means`), so both see the
    same ties when the means are ranked."""
    from ..kernels.compensated import group_mean_compensated

    uniq, codes = np.unique(np.asarray(structure_ids), return_inverse=True)
    return uniq, group_mean_compensated(np.asarray(x, dtype=np.float64), codes.reshape(-1),
                                        len(uniq))


def diff_stability(
    expression: Sequence[np.ndarray], structure_ids: Sequence[np.ndarray]
) -> np.ndarray:
    """Differential stability per probe (abagen ``_diff_stability``), needs ≥ 2 donors.

    Per donor the structure means; per donor pair the Spearman correlation (average-tie ranks,
    ddof=1 z-scores) over the structures both donors have; DS = the plain mean over pairs (a NaN
    in any pair gives NaN).
    """
    if len(expression) < 2:
        raise ConfigError("differential stability needs at least two donors")
    means = [structure_means(x, s) for x, s in zip(expression, structure_ids, strict=True)]
    return diff_stability_from_means(means)


def diff_stability_from_means(means: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """:func:`diff_stability` from per-donor ``(sorted structure ids, P × n_structures means)``
    (e.g. computed block-wise from a store)."""
    if len(means) < 2:
        raise ConfigError("differential stability needs at least two donors")
    from ..kernels.ranks import mean_pair_spearman

    pairs, cols = [], []
    for (d1, (ids1, _)), (d2, (ids2, _)) in combinations(enumerate(means), 2):
        _, i1, i2 = np.intersect1d(ids1, ids2, return_indices=True)
        pairs.append((d1, d2))
        cols.append((i1, i2))
    return mean_pair_spearman([np.asarray(m, dtype=np.float64) for _, m in means], pairs, cols)


def rnaseq_correlation(
    expression: Sequence[np.ndarray],
    structure_ids: Sequence[np.ndarray],
    gene_symbols: np.ndarray,
    rnaseq: Sequence[tuple[int, pd.DataFrame, np.ndarray]],
) -> np.ndarray:
    """Per probe, the nan-mean over RNA-seq donors of the Spearman correlation between the
    probe's microarray structure means and its gene's TPM structure means (abagen ``_rnaseq``).

    ``rnaseq`` holds ``(donor position in expression, TPM genes × samples frame indexed by gene
    symbol, structure id per RNA-seq sample)``. RNA-seq genes with a (near) zero SD over
    structures are ignored. Probes with no RNA-seq gene get NaN.
    """
    syms = np.asarray(gene_symbols).astype(str)
    out = np.full((len(syms), len(rnaseq)), np.nan)
    for n, (pos, tpm, rna_sid) in enumerate(rnaseq):
        mid, micro = structure_means(expression[pos], structure_ids[pos])
        rid, rna = structure_means(np.asarray(tpm, dtype=np.float64), rna_sid)
        rna_genes = np.asarray(tpm.index).astype(str)
        ok = ~np.isclose(np.std(rna, axis=1, ddof=1), 0)
        rna, rna_genes = rna[ok], rna_genes[ok]
        common, im, ir = np.intersect1d(mid, rid, return_indices=True)
        row_of = pd.Index(rna_genes)
        where = row_of.get_indexer(syms)
        mask = where >= 0
        if not mask.any():
            continue
        m = rank_average(micro[mask][:, im], axis=1)
        r = rank_average(rna[where[mask]][:, ir], axis=1)
        out[mask, n] = column_corr(m.T, r.T)
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(out, axis=1)


def _concat(expression: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(x, dtype=np.float64) for x in expression], axis=1)


def _interleave(expression: Sequence[np.ndarray]) -> np.ndarray:
    """Donors' samples concatenated in abagen's pc_loading column order: by position within the
    donor, then donor (pandas aligns the duplicated sample ids that way). Only the PC1 sign
    tie-break between equal-magnitude weights depends on this order."""
    x = _concat(expression)
    pos = np.concatenate([np.arange(np.shape(e)[1]) for e in expression])
    return x[:, np.argsort(pos, kind="stable")]


def pooled_mean_std(expression: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """NaN-skipping mean and std (ddof=1) of each probe over all donors' samples, without
    concatenating the donors (two passes: mean, then squared deviations)."""
    total = np.zeros(np.shape(expression[0])[0])
    count = np.zeros_like(total)
    for x in expression:
        x = np.asarray(x, dtype=np.float64)
        ok = ~np.isnan(x)
        total += np.sum(x, axis=1, where=ok)
        count += ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        ss = np.zeros_like(total)
        for x in expression:
            x = np.asarray(x, dtype=np.float64)
            d = x - mean[:, None]
            ss += np.sum(d * d, axis=1, where=~np.isnan(d))
        std = np.sqrt(ss / (count - 1))
    std[count < 2] = np.nan
    return mean, std


def _nan_stat(func: Callable, x: np.ndarray, **kw) -> np.ndarray:
    import warnings

    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return func(x, axis=1, **kw)


def _pc1_scores(data: np.ndarray) -> np.ndarray:
    """Scores on the first principal component of a probes × samples block, each sample
    centred across the probes and the component's largest-magnitude weight made positive."""
    centred = data - data.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    # |weights| equal up to rounding noise count as ties (first one wins), so the sign does
    # not depend on the LAPACK build when the data have exact ties
    mag = np.round(np.abs(vt), 12)
    sign = np.sign(vt[np.arange(len(vt)), np.argmax(mag, axis=1)])
    return centred @ (vt[0] * sign[0])


def _corr_scores(data: np.ndarray, fallback: str) -> np.ndarray:
    if len(data) > 2:
        return np.mean((np.corrcoef(data) + 1) / 2, axis=1)
    if fallback == "variance":
        return np.std(data, axis=1)
    return np.mean(data, axis=1)


def _per_gene(
    data: np.ndarray, codes: np.ndarray, func: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Apply ``func`` to each gene's block of probes (genes with one probe get NaN)."""
    score = np.full(len(codes), np.nan)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    with np.errstate(invalid="ignore", divide="ignore"):
        for rows in np.split(order, bounds):
            if len(rows) > 1:
                score[rows] = func(data[rows])
    return score
