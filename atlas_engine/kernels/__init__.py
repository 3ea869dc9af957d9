"""Numba grouped kernels ``(values, labels) -> per-group intermediates``; label < 0 = no group.

Pure compute: numpy and numba only (no Dask, no I/O). See :mod:`.grouped` for the entry points
and :mod:`._loops` for the loops and the numerical choices.

The text parsers' kernels (bytes of whole CSV lines in, filled arrays and error codes out; the
drivers in :mod:`atlas_engine.convert` read the files and word the errors) are imported where
they are used, not here:

* :mod:`.csvparse` - ``id,v1,...,vN`` lines of decimal or 0/1 values, bit-exact float tokens.
* :mod:`.labelscan` - ``label,v1,...,vN`` lines (plain or double-quoted text labels).
* :mod:`.countscan` - ``id,c1,...,cN`` integer count lines straight into CSR pieces.

The data generator under :mod:`atlas_engine.testing` has its kernels here too, also imported
where they are used, not here:

* :mod:`.synthtext` - the generator's value kernels and number-to-text kernels (CSV rows of
  decimals, 0/1 flags and integer counts).
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
