"""The intensity filter and the probe-selection scores, computed from the store by the Dask
passes of :mod:`.passes` (atlas-independent: cached by the orchestrator)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..aggregate import rowtasks
from ..store import layout as L
from . import passes
from .intensity import IntensityFilter
from .probes import select_probes
from .result import DonorSamples


def ibf_signal(store: Any, donors: Sequence[DonorSamples], rows: np.ndarray
               ) -> list[np.ndarray]:
    """Per donor the PACall count of each probe (``rows``, store rows) over the kept sample
    columns (a column kept twice counts twice): one pass over the PACall blocks."""
    return passes.ibf_signal(store.url, [ds.donor for ds in donors],
                             [ds.src for ds in donors], rows)


def structure_means(store: Any, ds: DonorSamples, rows: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(sorted structure ids, len(rows) × n_structures means)`` of one donor's kept samples
    (:func:`.passes.structure_means`)."""
    return passes.structure_means(store.url, ds.donor, ds.src,
                                  ds.annotation["structure_id"].to_numpy(), rows)


def ds_scores(store: Any, donors: Sequence[DonorSamples], rows: np.ndarray) -> np.ndarray:
    """Differential stability of the probes at store ``rows`` (:func:`.passes.ds_scores`)."""
    return passes.ds_scores(store.url, [ds.donor for ds in donors], [ds.src for ds in donors],
                            [ds.annotation["structure_id"].to_numpy() for ds in donors], rows)


def pooled_moments(counts: np.ndarray, means: np.ndarray, variances: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Pooled mean and std (ddof=1) from per-donor (D, P) counts, means and variances."""
    n = counts.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(counts > 0, means * counts, 0.0).sum(axis=0) / n
        within = np.where(counts > 1, variances * (counts - 1), 0.0).sum(axis=0)
        between = np.where(counts > 0, counts * (means - mean) ** 2, 0.0).sum(axis=0)
        var = np.where(n > 1, (within + between) / (n - 1), np.nan)
    return np.where(n > 0, mean, np.nan), np.sqrt(var)




def selection_scores(store: Any, donors: list[DonorSamples], kept: pd.DataFrame, method: str,
            mode: str) -> list[np.ndarray] | None:
    """Scores for ``select_probes`` computed from the store (None for ``average``)."""
    rows = kept["row"].to_numpy()
    if method == "average":
        return None
    if method == "diff_stability":
        return [ds_scores(store, donors, rows)]
    if method == "rnaseq":  # the store's rnaseq/{id} groups (see .rnaseq)
        from .rnaseq import rnaseq_scores

        return [rnaseq_scores(store, donors, kept)]
    if method in ("max_intensity", "max_variance"):
        mom = passes.probe_moments(store.url, [ds.donor for ds in donors],
                                   [ds.src for ds in donors], rows)
        c, m, v = (np.stack([x[i] for x in mom]) for i in range(3))
        if mode == "aggregate":
            mean, std = pooled_moments(c, m, v)
            return [mean if method == "max_intensity" else std]
        out = []
        for k in range(len(donors)):
            mean, std = pooled_moments(c[k:k + 1], m[k:k + 1], v[k:k + 1])
            out.append(mean if method == "max_intensity" else std)
        return out
    # pc_loading / corr_*: the probes of multi-probe genes, all donors' samples in memory
    sym = kept["gene_symbol"].to_numpy()
    _, inv, cnt = np.unique(sym, return_inverse=True, return_counts=True)
    multi = np.flatnonzero(cnt[inv.reshape(-1)] > 1)
    sub = kept.iloc[multi].reset_index(drop=True)
    data = [rowtasks.read_rows(rowtasks.open_array(store.url, ds.donor, L.EXPRESSION),
                             sub["row"].to_numpy())[:, ds.src] for ds in donors]
    sids = [ds.annotation["structure_id"].to_numpy() for ds in donors]
    part = select_probes(data, sids, sub, method, mode)
    cols = ["score"] if mode == "aggregate" else [f"score_{k}" for k in range(len(donors))]
    out = []
    for c in cols:
        full = np.full(len(kept), np.nan)
        full[multi] = part.table[c].to_numpy()
        out.append(full)
    return out




def ibf_from_signal(signal: list[np.ndarray], n: list[int], threshold: float
                     ) -> IntensityFilter:
    """The pooled intensity filter (:func:`~.intensity.intensity_filter`'s rule) from per-donor
    PACall sums and sample counts."""
    tot = np.sum(np.stack(signal), axis=0)
    total_n = int(np.sum(n))
    t = float(np.clip(threshold, 0.0, 1.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = tot / total_n
    return IntensityFilter(frac >= t, frac, tot, np.asarray(total_n), t)


