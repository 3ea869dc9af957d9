"""Compile each loop of :mod:`._loops` twice, lazily: serial ``nogil`` and ``parallel=True``.

``numba.njit`` without explicit signatures compiles on the first call for each argument type
(float32 or float64 values), so importing this module costs no compilation; compiled code is
cached on disk, so later processes load it instead of compiling. Compiled code
holds no state, so the serial build is safe to call from many Dask threads at once.

The parallel build is for in-memory arrays only: inside Dask's thread pool it would
oversubscribe the cores (Dask threads × numba threads), so the engine uses the serial build there.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from . import _loops
from ._cache import cached_njit

_NAMES = (
    "sum_count_sample", "moments_sample", "minmax_sample",
    "sum_count_probe", "moments_probe", "minmax_probe",
    "divide_counts", "mean_probe",
)


def _renamed(fn: Callable[..., Any], suffix: str) -> Callable[..., Any]:
    """``fn`` under another qualified name: numba's on-disk cache is keyed by the function's
    file, line and qualified name (not by the compile flags), so the serial and parallel builds
    of one loop need distinct names to get distinct cache entries."""
    clone = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix,
                               fn.__defaults__, fn.__closure__)
    clone.__qualname__ = fn.__qualname__ + suffix
    clone.__module__ = fn.__module__
    clone.__doc__ = fn.__doc__
    return clone


# compiled code is cached on disk (numba's cache next to the module, or NUMBA_CACHE_DIR), so
# only the first process to use a loop with a dtype pays the ~1-2 s compilation
SERIAL: dict[str, Callable[..., Any]] = {
    name: cached_njit(nogil=True, error_model="numpy")(
        _renamed(getattr(_loops, name), "_serial"))
    for name in _NAMES
}
PARALLEL: dict[str, Callable[..., Any]] = {
    name: cached_njit(nogil=True, parallel=True, error_model="numpy")(
        _renamed(getattr(_loops, name), "_parallel"))
    for name in _NAMES
}


def loop(name: str, parallel: bool) -> Callable[..., Any]:
    """The compiled loop ``name`` (see :mod:`._loops`), serial or parallel."""
    return (PARALLEL if parallel else SERIAL)[name]
