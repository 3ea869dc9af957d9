"""Normalisation of expression matrices, exactly as abagen's ``correct.py``.

Every method works on a 2-D array and normalises each *column* over the rows when ``axis=0``
(abagen's convention: samples × genes in, each gene normalised across samples). ``axis=1``
normalises each row across the columns (abagen's sample-wise normalisation on the transposed
matrix). Slices that are entirely NaN along the normalised axis' complement are skipped and stay
NaN (abagen skips all-NaN rows). NaN elsewhere propagates as in numpy (no NaN-aware median).

Methods (aliases in brackets): ``srs`` (scaled_rsig, scaled_robust_sigmoid), ``rs`` (rsig,
robust_sigmoid), ``sig`` (sigmoid), ``scaled_sig`` (scaled_sigmoid), ``scaled_sig_qnt``
(scaled_sigmoid_quantiles), ``mixed_sig`` (mixed_sigmoid), ``zscore``, ``center`` (demean),
``minmax`` and ``batch`` (needs donor labels; see :func:`batch_correct`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..choices import NORM_METHODS
from ..errors import ConfigError
from ._stats import IQR_NORMAL_SCALE
from .registry import Registry

NORMALIZERS: Registry = Registry("normalisation")


def _rescale(x: np.ndarray) -> np.ndarray:
    lo = x.min(axis=0, keepdims=True)
    hi = x.max(axis=0, keepdims=True)
    return (x - lo) / (hi - lo)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    mean = np.mean(x, axis=0, keepdims=True)
    std = np.std(x, ddof=1, axis=0, keepdims=True)
    return 1.0 / (1.0 + np.exp(-(np.asarray(x) - mean) / std))


def iqr_normal(x: np.ndarray) -> np.ndarray:
    """``scipy.stats.iqr(x, axis=0, scale='normal', keepdims=True)`` (linear percentiles)."""
    q25, q75 = np.percentile(x, [25.0, 75.0], axis=0, keepdims=True)
    return (q75 - q25) / IQR_NORMAL_SCALE


@NORMALIZERS.register("rs", "rsig", "robust_sigmoid")
def robust_sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-(x - median) / (IQR / 1.349)))`` per column."""
    x = np.asarray(x, dtype=np.float64)
    med = np.median(x, axis=0, keepdims=True)
    return 1.0 / (1.0 + np.exp(-(x - med) / iqr_normal(x)))


@NORMALIZERS.register("srs", "scaled_rsig", "scaled_robust_sigmoid")
def scaled_robust_sigmoid(x: np.ndarray) -> np.ndarray:
    """Robust sigmoid rescaled to [0, 1] per column (abagen's default)."""
    return _rescale(robust_sigmoid(x))


@NORMALIZERS.register("sig", "sigmoid")
def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-(x - mean) / std(ddof=1)))`` per column."""
    return _sigmoid(np.asarray(x, dtype=np.float64))


@NORMALIZERS.register("scaled_sig", "scaled_sigmoid")
def scaled_sigmoid(x: np.ndarray) -> np.ndarray:
    """Sigmoid rescaled to [0, 1] per column."""
    return _rescale(_sigmoid(np.asarray(x, dtype=np.float64)))


@NORMALIZERS.register("scaled_sig_qnt", "scaled_sigmoid_quantiles")
def scaled_sigmoid_quantiles(x: np.ndarray) -> np.ndarray:
    """Scaled sigmoid of each column with values outside its 5th–95th percentiles masked out
    of the statistics (masked entries come back as computed from the unmasked ones)."""
    x = np.asarray(x, dtype=np.float64)
    lq, hq = np.percentile(x, [5.0, 95.0], axis=0, keepdims=True)
    masked = np.ma.masked_array(x, np.logical_or(x > hq, x < lq))
    return np.asarray(_rescale(_sigmoid(masked)))


@NORMALIZERS.register("mixed_sig", "mixed_sigmoid")
def mixed_sigmoid(x: np.ndarray) -> np.ndarray:
    """Scaled sigmoid where a column's IQR is 0, else scaled robust sigmoid; NaN/inf → 0."""
    x = np.asarray(x, dtype=np.float64)
    zero = (iqr_normal(x) == 0).reshape(-1)
    out = np.zeros_like(x)
    with np.errstate(all="ignore"):
        out[:, zero] = scaled_sigmoid(x[:, zero])
        out[:, ~zero] = scaled_robust_sigmoid(x[:, ~zero])
    return np.nan_to_num(out)


@NORMALIZERS.register("zscore")
def zscore(x: np.ndarray) -> np.ndarray:
    """``(x - mean) / std(ddof=1)`` per column."""
    x = np.asarray(x, dtype=np.float64)
    return (x - x.mean(axis=0, keepdims=True)) / x.std(axis=0, ddof=1, keepdims=True)


@NORMALIZERS.register("center", "demean")
def center(x: np.ndarray) -> np.ndarray:
    """``x - mean`` per column."""
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(axis=0, keepdims=True)


@NORMALIZERS.register("minmax")
def minmax(x: np.ndarray) -> np.ndarray:
    """Rescale each column to [0, 1]."""
    return _rescale(np.asarray(x, dtype=np.float64))


#: Every method name :func:`normalize` accepts besides the aliases (the registry's names and
#: ``batch``); ``tests/test_choices.py`` checks them against the registry.
METHODS: tuple[str, ...] = NORM_METHODS


def check_method(method: str) -> str:
    """Canonical name of a normalisation ``method``; :class:`ConfigError` lists valid ones."""
    if method == "batch":
        return "batch"
    try:
        return NORMALIZERS.canonical(method)
    except ConfigError:
        raise ConfigError(
            f"unknown normalisation method {method!r}; valid: {', '.join(METHODS)}"
        ) from None


def normalize(
    x: np.ndarray,
    method: str = "srs",
    axis: int = 0,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Normalise ``x`` (2-D) with ``method`` along ``axis``.

    Parameters
    ----------
    x : (n, m) array
        Values (float64 recommended for parity).
    method : str
        A name from :data:`METHODS` (aliases allowed) except ``"batch"``.
    axis : {0, 1}
        0: normalise each column across rows; 1: each row across columns.
    groups : (n,) or (m,) array, optional
        Labels along ``axis``; normalisation runs separately within each group (abagen's
        ``norm_structures``).

    Returns
    -------
    ndarray of float64, same shape; all-NaN slices (and ungrouped entries) stay NaN.
    """
    name = check_method(method)
    if name == "batch":
        raise ConfigError("method 'batch' needs donor labels; use batch_correct()")
    func = NORMALIZERS.get(name)
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ConfigError(f"normalize expects a 2-D array, got shape {a.shape}")
    if axis not in (0, 1):
        raise ConfigError(f"axis must be 0 or 1, got {axis}")
    if axis == 1:
        a = a.T
    out = np.full(a.shape, np.nan)
    notna = ~np.all(np.isnan(a), axis=1)
    if groups is None:
        sel = [np.flatnonzero(notna)]
    else:
        g = np.asarray(groups)
        if g.shape != (a.shape[0],):
            raise ConfigError(f"groups must have length {a.shape[0]}, got shape {g.shape}")
        sel = [np.flatnonzero((g == u) & notna) for u in _unique_in_order(g)]
    with np.errstate(all="ignore"):
        for idx in sel:
            if idx.size:
                out[idx] = func(a[idx])
    return out.T if axis == 1 else out


def _unique_in_order(values: np.ndarray) -> list:
    seen: dict = {}
    for v in values.tolist():
        seen.setdefault(v, None)
    return list(seen)


def batch_correct(blocks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Remove donor (batch) effects by least squares (abagen's ``norm='batch'``).

    Each block is one donor's samples × genes. All-NaN rows are left out of the fit and stay
    NaN; the model is donor dummies plus an intercept, and only the donor terms are
    subtracted. Returns blocks of the input shapes.
    """
    if len(blocks) < 2:
        raise ConfigError("batch correction needs at least two donors")
    data = [np.asarray(b, dtype=np.float64) for b in blocks]
    keep = [~np.all(np.isnan(d), axis=1) for d in data]
    sizes = [int(k.sum()) for k in keep]
    donor = np.repeat(np.arange(len(data)), sizes)
    design = np.column_stack(
        [(donor == k).astype(np.float64) for k in range(len(data))] + [np.ones(len(donor))]
    )
    raw = np.vstack([d[k] for d, k in zip(data, keep, strict=True)])
    betas = np.linalg.lstsq(design, raw, rcond=None)[0]
    resid = np.split(raw - design[:, :-1] @ betas[:-1], np.cumsum(sizes)[:-1])
    out = []
    for d, k, r in zip(data, keep, resid, strict=True):
        o = np.full(d.shape, np.nan)
        o[k] = r
        out.append(o)
    return out


def normalize_donor(
    x: np.ndarray,
    sample_norm: str | None = "srs",
    gene_norm: str | None = "srs",
    classes: np.ndarray | None = None,
) -> np.ndarray:
    """One donor's samples × genes matrix normalised as abagen does.

    ``sample_norm`` works on each sample across genes, then ``gene_norm`` on each gene across
    the samples, separately per value of ``classes`` (broad structural class per sample,
    abagen's ``norm_structures=True``) when given. Select the matched samples beforehand for
    ``norm_matched=True``.
    """
    out = np.asarray(x, dtype=np.float64)
    if sample_norm is not None:
        out = normalize(out, sample_norm, axis=1)
    if gene_norm is not None:
        out = normalize(out, gene_norm, axis=0, groups=classes)
    return out
