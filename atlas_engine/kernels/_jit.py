"""Compile each loop of :mod:`._loops` twice, lazily: serial ``nogil`` and ``parallel=True``.

``numba.njit`` without explicit signatures compiles on the first call for each argument type
(float32 or float64 values), so importing this module costs no compilation. Compiled code
holds no state, so the serial build is safe to call from many Dask threads at once.

The parallel build is for in-memory arrays only: inside Dask's thread pool it would
oversubscribe the cores (Dask threads × numba threads), so the engine uses the serial build there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from numba import njit

from . import _loops

_NAMES = (
    "sum_count_sample", "moments_sample", "minmax_sample",
    "sum_count_probe", "moments_probe", "minmax_probe",
    "divide_counts",
)

SERIAL: dict[str, Callable[..., Any]] = {
    name: njit(nogil=True, cache=False, error_model="numpy")(getattr(_loops, name))
    for name in _NAMES
}
PARALLEL: dict[str, Callable[..., Any]] = {
    name: njit(nogil=True, cache=False, parallel=True, error_model="numpy")(getattr(_loops, name))
    for name in _NAMES
}


def loop(name: str, parallel: bool) -> Callable[..., Any]:
    """The compiled loop ``name`` (see :mod:`._loops`), serial or parallel."""
    return (PARALLEL if parallel else SERIAL)[name]
