"""Grouped reductions over one axis of a 2-D block: the checked entry points to the numba loops.

Every function takes ``values`` of shape ``(n_probe, n_sample)`` and integer ``labels`` along
``axis`` (1: per sample, e.g. structure labels, giving ``(n_probe, n_groups)``; 0: per probe,
e.g. gene labels, giving ``(n_groups, n_sample)``). ``labels < 0`` means "no group"; NaN values
are skipped and not counted; a label ``>= n_groups`` raises :class:`~atlas_engine.errors.ConfigError`.
float32 and float64 input are accepted as they are (other dtypes are cast to float64);
accumulation and outputs are float64, counts are int64.

These functions allocate their outputs and do input checks only; the loops live in
:mod:`._loops`. ``parallel=True`` uses the ``prange`` build (for in-memory arrays); keep the
default serial build inside Dask tasks.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ._jit import loop

__all__ = [
    "check_inputs", "divide_counts", "group_mean_probe", "group_minmax", "group_moments",
    "group_sum_count", "rows_by_group",
]


def check_inputs(
    values: np.ndarray, labels: np.ndarray, n_groups: int, axis: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and normalise ``(values, labels)`` for the loops (C order, float32/64, int64)."""
    values = np.asarray(values)
    if values.ndim != 2:
        raise ConfigError(f"values must be 2-D (probe, sample), got shape {values.shape}")
    if axis not in (0, 1):
        raise ConfigError(f"axis must be 0 (probe) or 1 (sample), got {axis!r}")
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    values = np.ascontiguousarray(values)
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != values.shape[axis]:
        raise ConfigError(
            f"labels must be 1-D with {values.shape[axis]} entries (axis {axis} of values), "
            f"got shape {labels.shape}"
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"labels must be integers, got dtype {labels.dtype}")
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    if n_groups < 0:
        raise ConfigError(f"n_groups must be >= 0, got {n_groups}")
    if labels.size and int(labels.max()) >= n_groups:
        raise ConfigError(
            f"label {int(labels.max())} out of range: n_groups is {n_groups} "
            "(labels must be < n_groups; use -1 for 'no group')"
        )
    return values, labels


def _out_shape(values: np.ndarray, n_groups: int, axis: int) -> tuple[int, int]:
    return (values.shape[0], n_groups) if axis == 1 else (n_groups, values.shape[1])


def rows_by_group(labels: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR listing of the rows of each group: rows ``order[indptr[g]:indptr[g + 1]]``.

    Rows with label < 0 are left out; within a group rows keep their input order.
    """
    labels = np.asarray(labels, dtype=np.int64)
    keep = np.flatnonzero(labels >= 0)
    order = keep[np.argsort(labels[keep], kind="stable")]
    indptr = np.zeros(n_groups + 1, np.int64)
    np.cumsum(np.bincount(labels[keep], minlength=n_groups), out=indptr[1:])
    return order.astype(np.int64), indptr


def spill_slots(labels: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` with -1 replaced by ``n_groups`` (a spill cell), and the size of each group.

    The sample-axis sum kernel scatters every value without a label test; the spill cell
    takes the values of unlabelled samples and is never written out.
    """
    labels = np.asarray(labels, dtype=np.int64)
    slot = np.where(labels < 0, n_groups, labels).astype(np.int64)
    sizes = np.bincount(slot, minlength=n_groups + 1)[:n_groups].astype(np.int64)
    return slot, sizes


def _run(name: str, values: np.ndarray, labels: np.ndarray, n_groups: int, axis: int,
         parallel: bool, *outs: np.ndarray) -> None:
    if axis == 1 and name == "sum_count":
        slot, sizes = spill_slots(labels, n_groups)
        loop("sum_count_sample", parallel)(values, slot, sizes, *outs)
    elif axis == 1:
        loop(f"{name}_sample", parallel)(values, labels, *outs)
    else:
        order, indptr = rows_by_group(labels, n_groups)
        loop(f"{name}_probe", parallel)(values, order, indptr, *outs)


def group_sum_count(
    values: np.ndarray, labels: np.ndarray, n_groups: int, *, axis: int, parallel: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Grouped NaN-skipping sum (float64) and count of non-NaN values (int64)."""
    values, labels = check_inputs(values, labels, n_groups, axis)
    shape = _out_shape(values, n_groups, axis)
    sums = np.empty(shape, np.float64)
    counts = np.empty(shape, np.int64)
    _run("sum_count", values, labels, n_groups, axis, parallel, sums, counts)
    return sums, counts


def group_mean_probe(
    values: np.ndarray, labels: np.ndarray, n_groups: int, *, parallel: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Per-probe-group NaN-skipping means ``(n_groups, n_sample)`` (probes → genes), written
    into ``out`` (float32 or float64 with contiguous rows, e.g. the columns of one donor in a
    larger result; a new float64 array by default).

    The same values as ``divide_counts(*group_sum_count(values, labels, n_groups, axis=0))``
    cast to ``out``'s dtype (same float64 sums in the same order), without allocating the
    float64 sums and int64 counts (each as large as the output).
    """
    values, labels = check_inputs(values, labels, n_groups, 0)
    shape = (n_groups, values.shape[1])
    if out is None:
        out = np.empty(shape, np.float64)
    elif (out.shape != shape or out.dtype not in (np.float32, np.float64)
          or (out.size and out.strides[1] != out.itemsize)):
        raise ConfigError(f"out must be a float32/float64 array of shape {shape} with "
                          "contiguous rows (e.g. a column slice of a larger result)")
    order, indptr = rows_by_group(labels, n_groups)
    loop("mean_probe", parallel)(values, order, indptr, out)
    return out


def group_moments(
    values: np.ndarray, labels: np.ndarray, n_groups: int, *, axis: int, parallel: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grouped count, sum and ``m2`` (sum of squared deviations about the group mean).

    Computed in one pass with shifted sums (see :mod:`._loops`); ``m2`` is 0 where count is 0.
    """
    values, labels = check_inputs(values, labels, n_groups, axis)
    shape = _out_shape(values, n_groups, axis)
    counts = np.empty(shape, np.int64)
    sums = np.empty(shape, np.float64)
    m2 = np.empty(shape, np.float64)
    shift = np.zeros(shape, np.float64)
    _run("moments", values, labels, n_groups, axis, parallel, counts, sums, m2, shift)
    return counts, sums, m2


def group_minmax(
    values: np.ndarray, labels: np.ndarray, n_groups: int, *, axis: int, parallel: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Grouped NaN-skipping min and max (float64; NaN where a group has no valid value)."""
    values, labels = check_inputs(values, labels, n_groups, axis)
    shape = _out_shape(values, n_groups, axis)
    mins = np.empty(shape, np.float64)
    maxs = np.empty(shape, np.float64)
    _run("minmax", values, labels, n_groups, axis, parallel, mins, maxs)
    return mins, maxs


def divide_counts(num: np.ndarray, count: np.ndarray, ddof: int = 0, *,
                  parallel: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """``num / (count - ddof)`` where ``count > ddof``, NaN elsewhere (float64).

    One pass (finalize runs on full-size outputs, e.g. 20k genes × 3.7k samples); the result
    goes to a new array, or to ``out`` (which may be ``num`` itself: each element is read
    before it is written). C-contiguous float64/int64 inputs go through the numba loop,
    anything else through numpy.
    """
    num = np.asarray(num)
    count = np.asarray(count)
    if num.shape != count.shape:
        raise ConfigError(f"sums {num.shape} and counts {count.shape} differ in shape")
    if out is None:
        out = np.empty(num.shape, np.float64)
    elif out.shape != num.shape or out.dtype != np.float64 or not out.flags.c_contiguous:
        raise ConfigError("out must be a C-contiguous float64 array shaped like num")
    if (num.dtype == np.float64 and count.dtype == np.int64 and num.flags.c_contiguous
            and count.flags.c_contiguous):
        loop("divide_counts", parallel)(num.reshape(-1), count.reshape(-1), int(ddof),
                                        out.reshape(-1))
        return out
    den = count - ddof
    res = np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)
    out[...] = res
    return out
