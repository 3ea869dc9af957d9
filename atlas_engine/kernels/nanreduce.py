"""NaN-skipping median and mean over one axis, quiet on all-NaN slices, safe in threads.

``np.nanmedian`` / ``np.nanmean`` warn (``RuntimeWarning``) on a slice with no value, and the
usual way to silence them, ``warnings.catch_warnings``, swaps the process-wide filter list: two
Dask threads doing it at once can restore each other's filters and leave one in force for the
rest of the process. These compute numpy's values, bit for bit, without a warning: the median
of only the slices that hold a value (each slice's median does not depend on the others), the
mean by numpy's own steps with the division left quiet; all-NaN slices are NaN.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["nanmean_quiet", "nanmedian_quiet"]


def _reduce(func: Callable[..., np.ndarray], x: np.ndarray, axis: int) -> np.ndarray:
    a = np.moveaxis(np.asarray(x), axis, 0)
    dtype = a.dtype if a.dtype.kind == "f" else np.dtype(np.float64)
    out = np.full(a.shape[1:], np.nan, dtype=dtype)
    if a.shape[0] == 0:
        return out
    has = ~np.isnan(a).all(axis=0)
    if has.all():
        out[...] = func(a, axis=0)
    elif has.any():
        out[has] = func(a[:, has], axis=0)
    return out


def nanmedian_quiet(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """``np.nanmedian(x, axis)``, NaN where a slice has no value, without a warning."""
    return _reduce(np.nanmedian, x, axis)


def nanmean_quiet(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """``np.nanmean(x, axis)``, NaN where a slice has no value, without a warning: numpy's
    own steps (NaN replaced by 0, the sum and the count over the whole array, one division),
    since a sum over a subset of the slices may add in another order."""
    a = np.asarray(x)
    if a.dtype.kind != "f":
        return np.mean(a, axis=axis)
    mask = np.isnan(a)
    cnt = np.sum(~mask, axis=axis, dtype=np.intp)
    tot = np.sum(np.where(mask, 0, a), axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.true_divide(tot, cnt, out=tot, casting="unsafe")
