"""Numba grouped kernels ``(values, labels) -> per-group intermediates``; label < 0 = no group.

Pure compute: numpy and numba only (no Dask, no I/O). See :mod:`.grouped` for the entry points
and :mod:`._loops` for the loops and the numerical choices.
"""

from __future__ import annotations

from .grouped import (
    check_inputs,
    divide_counts,
    group_mean_probe,
    group_minmax,
    group_moments,
    group_sum_count,
    rows_by_group,
)

__all__ = [
    "check_inputs", "divide_counts", "group_mean_probe", "group_minmax", "group_moments", "group_sum_count",
    "rows_by_group",
]
