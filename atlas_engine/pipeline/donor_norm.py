"""Sample and gene normalisation of one donor's chosen rows, and its region means, as Dask
tasks (:mod:`.matrix_passes`): the scaled robust sigmoid in its numba kernels, other methods
in numpy (:func:`~.normalize.normalize`), over blocks of samples or genes."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import matrix_passes
from .normalize import check_method


def normalize_blocks(x: np.ndarray, sample_norm: str | None, gene_norm: str | None,
                     classes: np.ndarray | None = None, block: int = 4096) -> np.ndarray:
    """:func:`~.normalize.normalize_donor` on samples × genes ``x``, a block of samples
    (sample_norm) or genes (gene_norm) a Dask task, so temporaries stay small. Both steps are
    independent per sample / per gene, so the result is the same. The default ``srs`` runs in
    a numba kernel (:mod:`atlas_engine.kernels.srs`), other methods in numpy
    (:func:`.matrix_passes.normalize_rows`, :func:`.matrix_passes.normalize_columns`). A
    float64 ``x`` may be overwritten."""
    from .matrix_passes import srs_columns

    out = np.asarray(x, dtype=np.float64)
    fast = ("srs", "scaled_rsig", "scaled_robust_sigmoid")
    if sample_norm in fast:
        # genes NaN in every sample are left out (and stay NaN), as normalize() does
        ok = ~np.all(np.isnan(out), axis=0)
        out = srs_columns(out.T).T if ok.all() else _on_columns(out, ok, lambda v: srs_columns(
            v.T).T)
        sample_norm = None
    if gene_norm in fast and classes is None:
        ok = ~np.all(np.isnan(out), axis=1)    # samples NaN for every gene are skipped
        if ok.all():
            out = srs_columns(out)
        else:
            res = np.full(out.shape, np.nan)
            res[ok] = srs_columns(out[ok])
            out = res
        gene_norm = None
    if sample_norm is not None:
        out = matrix_passes.normalize_rows(out, sample_norm, block // 8, out=out)
    if gene_norm is not None:
        out = matrix_passes.normalize_columns(out, gene_norm, block, classes, out=out)
    return out


def sample_normalise(raw: np.ndarray, method: str) -> np.ndarray:
    """Genes × samples ``raw`` (no NaN) with each sample (column) normalised over the genes
    by ``method`` (abagen's ``sample_norm``), as Dask tasks over blocks of samples; ``srs``
    overwrites a float64 ``raw``."""
    if check_method(method) == "srs":
        return matrix_passes.srs_columns(raw, out=raw if raw.dtype == np.float64 else None)
    return matrix_passes.normalize_columns(raw, method, whole=True)


def gene_normalise(base: np.ndarray, cols: np.ndarray, method: str | None,
                   classes: np.ndarray | None = None) -> np.ndarray:
    """Genes × samples (C order): the columns ``cols`` of genes × samples ``base`` (repeats
    allowed), each gene normalised over those samples by ``method`` (abagen's ``gene_norm``;
    per value of ``classes`` when given). ``srs`` without classes runs in one numba pass
    straight from ``base``."""
    if method is not None and classes is None and check_method(method) == "srs":
        return matrix_passes.srs_rows(base, cols)
    if method is None or not len(cols):
        return np.ascontiguousarray(base[:, cols])
    x = np.ascontiguousarray(base[:, cols].T)
    return np.ascontiguousarray(normalize_blocks(x, None, method, classes).T)


def srs_region_means(base: np.ndarray, cols: np.ndarray, codes: np.ndarray, n_groups: int
                     ) -> np.ndarray:
    """Genes × groups: each gene of genes × samples ``base`` normalised (srs) over the
    samples ``cols``, then averaged per group ``codes`` (one per entry of ``cols``; -1 left
    out), one block of genes at a time."""
    return matrix_passes.srs_rows(base, cols, codes, n_groups)


def label_codes(lab: np.ndarray, all_labels: np.ndarray) -> np.ndarray:
    """Position of each sample's label in the sorted ``all_labels`` (-1: not there, e.g. 0)."""
    if not len(all_labels):
        return np.full(len(lab), -1, dtype=np.int64)
    pos = np.clip(np.searchsorted(all_labels, lab), 0, len(all_labels) - 1)
    return np.where(all_labels[pos] == lab, pos, -1).astype(np.int64)


def _on_columns(x: np.ndarray, ok: np.ndarray, func: Any) -> np.ndarray:
    """``func`` applied to the columns ``ok`` of ``x``; the other columns NaN."""
    res = np.full(x.shape, np.nan)
    res[:, ok] = func(x[:, ok])
    return res

