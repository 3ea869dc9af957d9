"""Small numeric helpers shared by the pipeline steps (pandas/scipy-compatible semantics)."""

from __future__ import annotations

import numpy as np

#: scipy.stats.iqr(scale='normal'): the IQR of a standard normal, 2·√2·erfinv(1/2).
from ..kernels.srs import IQR_NORMAL_SCALE  # noqa: F401 - re-exported


def rank_average(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Average-tie ranks (1-based) along ``axis``, NaN kept as NaN (pandas ``rank()``)."""
    from scipy import stats as sstats  # imported here: scipy.stats takes ~0.4 s to import

    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x.copy()
    nan = np.isnan(x)
    if not nan.any():
        return sstats.rankdata(x, method="average", axis=axis).astype(np.float64)
    xm = np.moveaxis(x, axis, -1)
    out = np.full(xm.shape, np.nan)
    flat_x = xm.reshape(-1, xm.shape[-1])
    flat_o = out.reshape(-1, xm.shape[-1])
    for i in range(flat_x.shape[0]):
        row = flat_x[i]
        ok = ~np.isnan(row)
        if ok.any():
            flat_o[i, ok] = sstats.rankdata(row[ok], method="average")
    return np.moveaxis(flat_o.reshape(xm.shape), -1, axis)


def zscore_ddof1(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """``(x - mean) / std(ddof=1)`` along ``axis``, NaN-propagating (scipy ``zscore``)."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x - mean) / x.std(axis=axis, ddof=1, keepdims=True)


def column_corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching columns of ``x`` and ``y`` (n × k each).

    ``Σ zscore(x)·zscore(y) / (n - 1)`` with ddof=1 z-scores; n = 0 gives NaN for every column.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    k = x.shape[1] if x.ndim == 2 else 1
    n = x.shape[0]
    if n == 0 or x.size == 0:
        return np.full(k, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(zscore_ddof1(x) * zscore_ddof1(y), axis=0) / (n - 1)


def group_codes(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique keys and each element's index into them."""
    uniq, codes = np.unique(np.asarray(keys), return_inverse=True)
    return uniq, codes.reshape(-1)


def group_mean_columns(x: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the columns of ``x`` (rows × samples) per sample key, skipping NaN (pandas
    ``groupby(axis=1).mean()``). Returns (sorted keys, rows × keys).

    The sums run over each row's columns in order (:func:`~atlas_engine.kernels.blockgroups.
    group_mean_rows`), so a block of rows gives the values it has in the whole matrix, bit
    for bit, whatever BLAS is installed."""
    from ..kernels.blockgroups import group_mean_rows

    uniq, codes = group_codes(keys)
    return uniq, group_mean_rows(x, codes, len(uniq))
