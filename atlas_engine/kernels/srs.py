"""Scaled robust sigmoid (abagen's default normalisation) for whole matrices.

Same arithmetic as :func:`~.normalize.scaled_robust_sigmoid`: median and linear-interpolated
quartiles (numpy's defaults), IQR scaled to a standard normal's, logistic, then min-max
rescaling. A NaN anywhere in a slice makes the whole slice NaN (as numpy's median/percentile
do); IQR = 0 gives inf/NaN exactly as the numpy version.

The median and the quartiles are order statistics at fixed ranks (the k-th and (k+1)-th for
each linear interpolation). They are read off numpy's sort of a block of slices (numpy sorts
float64 with SIMD quicksort: measured 4–6× faster than a scalar quickselect over the same
slices on this data), combined with numpy's own formulas. Then numba loops over each slice
compute -(x - med) / s, its exp and the logistic, the min and max, and the rescale, in place
(the numpy version's operations in its order; loops without branches, so they vectorise).
The exp is :mod:`.expglibc`'s, which gives numpy's result bit for bit where numpy's exp is
glibc's (checked once per process; elsewhere numpy's exp is called on the block, then a numba
pass does the rest), so results agree with the numpy version bit for bit on the tests. Blocks
of slices keep the temporaries small. These run serially on the calling thread: the pipeline
splits its matrices into Dask tasks (:mod:`.passes`), which is where the parallelism is.

* :func:`srs_columns` normalises each column of a 2-D array;
* :func:`srs_rows` normalises each row over a chosen list of its columns (repeats allowed),
  e.g. a genes × samples matrix over one donor's matched samples.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._cache import cached_njit
from .expglibc import fast_exp, glibc_exp, matches_numpy, outside_fast_range

#: interquartile range of the standard normal, 2·√2·erfinv(½) (robust scale → standard
#: deviation): the float64 that ``2.0 * np.sqrt(2.0) * scipy.special.erfinv(0.5)`` gives
#: (tests/test_kernels_srs.py checks it against scipy), written out so that normalising does
#: not import scipy.special
IQR_NORMAL_SCALE = 1.3489795003921636

#: values (slices × slice length) normalised per block: the gathered block and its sorted
#: copy take 2 × 8 × BLOCK_VALUES bytes (16 MiB) per thread; 2**20 values is ~1,900 genes ×
#: 550 samples, or ~58 samples × 18k genes (measured as fast as larger blocks)
BLOCK_VALUES = 2**20


def rows_per_block(n: int) -> int:
    """Slices of length ``n`` normalised per block (``BLOCK_VALUES`` values)."""
    return max(1, BLOCK_VALUES // max(n, 1))


def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    # numpy's _lerp: a + (b - a)·t, computed from b when t >= 0.5
    d = b - a
    return b - d * (1.0 - t) if t >= 0.5 else a + d * t


def _centre_scale(sorted_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and IQR/1.349 of each row of a row-sorted (NaN-free) ``(k, n)`` block, as
    numpy's median and 'linear' percentile compute them."""
    n = sorted_rows.shape[1]
    half = n // 2
    if n % 2:
        med = sorted_rows[:, half].copy()
    else:
        med = (sorted_rows[:, half - 1] + sorted_rows[:, half]) / 2.0
    q = []
    for frac in (0.25, 0.75):
        pos = frac * (n - 1)
        lo = int(np.floor(pos))
        hi = min(lo + 1, n - 1)
        q.append(_lerp(sorted_rows[:, lo], sorted_rows[:, hi], pos - lo))
    return med, (q[1] - q[0]) / IQR_NORMAL_SCALE


@cached_njit(nogil=True, error_model="numpy")
def _sigmoid_row(row: np.ndarray, m: float, sc: float) -> None:
    """``row[:] = 1 / (1 + exp(-(row - m) / sc))`` in place, exp by :mod:`.expglibc`: one
    loop for the argument, one for exp and the logistic, without branches (so both
    vectorise) unless an argument lies outside :func:`.expglibc.fast_exp`'s range."""
    special = False
    for i in range(row.size):
        t = -(row[i] - m) / sc
        row[i] = t
        special |= outside_fast_range(t)
    if special:
        for i in range(row.size):
            row[i] = 1.0 / (1.0 + glibc_exp(row[i]))
    else:
        for i in range(row.size):
            row[i] = 1.0 / (1.0 + fast_exp(row[i]))


@cached_njit(nogil=True, error_model="numpy")
def _has_nan(row: np.ndarray) -> bool:
    found = False
    for i in range(row.size):
        found |= row[i] != row[i]
    return found


@cached_njit(nogil=True, error_model="numpy", fastmath={"nnan", "nsz"})
def _min_max(row: np.ndarray) -> tuple[float, float]:
    """Smallest and largest value of a NaN-free row (the flags let the loop vectorise; the
    values are in [0, 1] with no -0.0, so they change nothing)."""
    lo = np.inf
    hi = -np.inf
    for i in range(row.size):
        v = row[i]
        lo = v if v < lo else lo
        hi = v if v > hi else hi
    return lo, hi


@cached_njit(nogil=True, error_model="numpy")
def _rescale_row(row: np.ndarray) -> None:
    """The min-max rescale of a row of logistic values in place (all NaN when one is)."""
    if _has_nan(row):
        row[:] = np.nan
        return
    lo, hi = _min_max(row)
    d = hi - lo
    for i in range(row.size):
        row[i] = (row[i] - lo) / d


@cached_njit(nogil=True, error_model="numpy")
def _sigmoid_rescale(g: np.ndarray, med: np.ndarray, s: np.ndarray, bad: np.ndarray) -> None:
    """In place, per row of ``g``: e = exp(-(x - med) / s) (:func:`_sigmoid_row`), the
    logistic 1 / (1 + e) and the min-max rescale (rows flagged ``bad`` and rows whose
    logistic has a NaN become NaN)."""
    for r in range(g.shape[0]):
        if bad[r]:
            g[r] = np.nan
            continue
        _sigmoid_row(g[r], med[r], s[r])
        _rescale_row(g[r])


@cached_njit(nogil=True, error_model="numpy")
def _logistic_rescale(e: np.ndarray, bad: np.ndarray) -> None:
    """In place, per row of ``e`` = exp(-(x - med) / s) computed by numpy (where
    :func:`.expglibc.matches_numpy` is false): the logistic 1 / (1 + e), then
    :func:`_rescale_row` (rows flagged ``bad`` become NaN)."""
    for r in range(e.shape[0]):
        row = e[r]
        if bad[r]:
            row[:] = np.nan
            continue
        for i in range(row.size):
            row[i] = 1.0 / (1.0 + row[i])
        _rescale_row(row)


def _srs_block(g: np.ndarray) -> np.ndarray:
    """Scaled robust sigmoid of each row of the C-ordered float64 block ``g``, in place."""
    if g.shape[1] == 0:
        return g
    srt = np.sort(g, axis=1)
    bad = np.isnan(srt[:, -1])           # numpy sorts NaN last
    with np.errstate(invalid="ignore"):
        med, s = _centre_scale(srt)
    del srt
    if matches_numpy():
        # -(x - med) / s, exp, logistic and rescale in one numba pass: numpy's exp's results
        # (see .expglibc), without a pass over the block per operation
        _sigmoid_rescale(g, med, s, bad)
        return g
    # -(x - med) / s with numpy's exp, as the numpy version computes it
    with np.errstate(all="ignore"):
        g -= med[:, None]
        np.negative(g, out=g)
        g /= s[:, None]
        np.exp(g, out=g)
    _logistic_rescale(g, bad)
    return g


def srs_rows_inplace(g: np.ndarray) -> np.ndarray:
    """Scaled robust sigmoid of each row of the C-ordered float64 2-D array ``g``, in place
    (``g`` returned); any number of rows (normalised :data:`BLOCK_VALUES` at a time)."""
    if g.dtype != np.float64 or not g.flags.c_contiguous or g.ndim != 2:
        raise ValueError("srs_rows_inplace needs a C-ordered 2-D float64 array")
    step = rows_per_block(g.shape[1])
    _each_block(g.shape[0], step, lambda r: _srs_block(g[r:r + step]))
    return g


def warm_up() -> None:
    """Load the compiled kernels of the per-atlas path (:func:`srs_rows` with a group-mean
    reduction) from numba's on-disk cache by calling them on a tiny block. numba's first call
    in a process also initialises its compiler and runtime (~0.3 s, much of it in LLVM,
    outside the GIL): run on a thread while the caller reads tables and matches samples, it
    is off the critical path. Results of later calls are unaffected."""
    from .blockgroups import group_mean_rows

    block = _srs_block(np.array([[1.0, 2.0, 4.0]]))
    group_mean_rows(block, np.zeros(3, dtype=np.int64), 1)


def _each_block(n: int, step: int, func: Callable[[int], None]) -> None:
    """``func(start)`` for every block start, in order."""
    for a in range(0, n, step):
        func(a)


#: rows per tile of the blocked transposes (a tile of the columns of one block stays in L1)
_TILE = 64


@cached_njit(nogil=True)
def _columns_to_rows(a: np.ndarray, c0: int, out: np.ndarray) -> None:
    """``out[j, r] = a[r, c0 + j]``, tile by tile (numpy's strided copy of a column slice of a
    wide C-ordered array misses the cache on every element)."""
    n, w = a.shape[0], out.shape[0]
    for r0 in range(0, n, _TILE):
        for r in range(r0, min(r0 + _TILE, n)):
            for j in range(w):
                out[j, r] = a[r, c0 + j]


@cached_njit(nogil=True)
def _rows_to_columns(block: np.ndarray, res: np.ndarray, c0: int) -> None:
    """``res[r, c0 + j] = block[j, r]``, tile by tile."""
    w, n = block.shape
    for r0 in range(0, n, _TILE):
        for r in range(r0, min(r0 + _TILE, n)):
            for j in range(w):
                res[r, c0 + j] = block[j, r]


def srs_columns(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Scaled robust sigmoid of every column of a 2-D array (float64 result, C-ordered when
    allocated here). ``out`` may be ``x`` itself (float64) to normalise in place."""
    a = np.asarray(x, dtype=np.float64)
    res = np.empty(a.shape) if out is None else out
    step = rows_per_block(a.shape[0])
    tiled = a.flags.c_contiguous and isinstance(res, np.ndarray) and res.flags.c_contiguous \
        and res.dtype == np.float64

    def one(c: int) -> None:
        if not tiled:
            res[:, c:c + step] = _srs_block(np.ascontiguousarray(a[:, c:c + step].T)).T
            return
        block = np.empty((min(step, a.shape[1] - c), a.shape[0]))
        _columns_to_rows(a, c, block)
        _rows_to_columns(_srs_block(block), np.asarray(res), c)

    _each_block(a.shape[1], step, one)
    return res


def srs_rows(x: np.ndarray, cols: np.ndarray | None = None,
             reduce: Callable[[np.ndarray], np.ndarray] | None = None,
             width: int | None = None) -> np.ndarray:
    """Scaled robust sigmoid of every row of a 2-D array over the columns ``cols`` (all
    columns when None; repeated columns count as often as they appear).

    Returns a C-ordered float64 array of shape ``(x.shape[0], len(cols))``; with ``reduce``
    (a function of one normalised block of rows returning ``(rows, width)``) the reduced
    rows instead, so the normalised matrix never exists whole.
    """
    # anything with shape and row slicing (e.g. a cache.StripedMatrix) is read block by block
    a = x if hasattr(x, "read_rows") else np.asarray(x)
    idx = np.arange(a.shape[1]) if cols is None else np.asarray(cols, dtype=np.int64)
    out = np.empty((a.shape[0], len(idx) if reduce is None else int(width or 0)))
    step = rows_per_block(len(idx))

    def one(r: int) -> None:
        block = _srs_block(np.ascontiguousarray(np.take(a[r:r + step], idx, axis=1),
                                                dtype=np.float64))
        out[r:r + step] = block if reduce is None else reduce(block)

    _each_block(a.shape[0], step, one)
    return out
