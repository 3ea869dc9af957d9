"""Gene differential stability across donors (abagen ``correct.keep_stable_genes``)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from itertools import combinations

import numpy as np

from ..errors import ConfigError
from ._stats import column_corr, rank_average


def gene_stability(regions: Sequence[np.ndarray], rank: bool = True) -> np.ndarray:
    """Per gene the nan-mean over donor pairs of the correlation of its regional profiles.

    Parameters
    ----------
    regions : sequence of (R, G) arrays
        One region × gene matrix per donor (rows = the same regions in every donor; all-NaN
        rows mark regions a donor has no sample in).
    rank : bool
        Rank each donor's genes over all its regions first (average ties, NaN kept); the
        ranks are not recomputed on a pair's common regions.

    Returns
    -------
    (G,) float64, NaN turned into 0.
    """
    if len(regions) < 2:
        raise ConfigError("gene stability needs at least two donors")
    data = [np.asarray(r, dtype=np.float64) for r in regions]
    shapes = {d.shape for d in data}
    if len(shapes) != 1:
        raise ConfigError(f"every donor needs the same regions × genes shape, got {shapes}")
    prepared = [rank_average(d, axis=0) if rank else d for d in data]
    present = [~np.all(np.isnan(d), axis=1) for d in prepared]
    corrs = []
    for i, j in combinations(range(len(data)), 2):
        rows = present[i] & present[j]
        corrs.append(column_corr(prepared[i][rows], prepared[j][rows]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nan_to_num(np.nanmean(np.column_stack(corrs), axis=1))


def keep_stable_genes(
    regions: Sequence[np.ndarray],
    threshold: float = 0.9,
    percentile: bool = True,
    rank: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Genes whose differential stability reaches ``threshold``.

    With ``percentile=True`` the cut-off is the ``threshold·100`` th percentile (linear) of the
    stabilities, so 0.9 keeps the top 10 %. Returns ``(keep mask (G,), stability (G,))``.
    """
    stab = gene_stability(regions, rank=rank)
    cut = float(np.percentile(stab, threshold * 100)) if percentile else float(threshold)
    return stab >= cut, stab
