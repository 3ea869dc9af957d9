"""numba's on-disk cache for this package's kernels, renewed when any kernel module changes.

numba keys a cached function by its own source file (and its bytecode) only. A kernel that
calls a jitted function from another module embeds that function's compiled code, so an edit
to the other module alone left the cached kernel running the old code: the sigmoid kernels in
:mod:`.srs` embed :mod:`.expglibc`'s ``exp``, the CSV parsers :mod:`.floatscan`'s scanners. An
editable install updated by ``git pull`` would meet exactly that.

:func:`cached_njit` is ``numba.njit(cache=True)`` with one difference: the stamp that decides
whether a cached entry is current also covers the content of every module in the decorated
function's directory (here, every kernel module), so a change to any of them recompiles every
kernel on its next use. Where the entries live is numba's choice as before
(``NUMBA_CACHE_DIR``, else ``__pycache__`` next to the module, else the user's cache
directory). The cache is attached to each dispatcher; numba's own
settings and other packages' functions are left alone.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numba
from numba.core import caching

__all__ = ["cached_njit", "sources_digest"]


def _numba_class(name: str) -> type:
    # public since numba 0.61, with a leading underscore before
    return getattr(caching, name, None) or getattr(caching, "_" + name)


@cache
def sources_digest(directory: str | Path) -> str:
    """SHA-256 over the names and contents of the ``*.py`` files in ``directory``, computed
    once per directory and process."""
    h = hashlib.sha256()
    for path in sorted(Path(directory).glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


class _KernelsStamp:
    """A locator's stamp extended by :func:`sources_digest` of the function's directory."""

    _py_file: str

    def get_source_stamp(self) -> Any:
        return (super().get_source_stamp(),  # type: ignore[misc]
                sources_digest(os.path.dirname(os.path.realpath(self._py_file))))


def _stamped(name: str) -> type:
    base = _numba_class(name)
    return type(f"Kernels{name}", (_KernelsStamp, base), {"__module__": __name__})


class _KernelsCacheImpl(caching.CompileResultCacheImpl):
    # numba's own order: an explicit NUMBA_CACHE_DIR, the module's __pycache__, the user's
    # cache directory (a read-only installation)
    _locator_classes = [_stamped("UserProvidedCacheLocator"), _stamped("InTreeCacheLocator"),
                        _stamped("UserWideCacheLocator")]


class KernelsCache(caching.FunctionCache):
    """numba's per-function cache with the kernels' stamp."""

    _impl_class = _KernelsCacheImpl


def cached_njit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit(**options)`` cached on disk like ``cache=True``, the cached code renewed
    whenever any module in the decorated function's directory (for this package's kernels,
    :mod:`atlas_engine.kernels`) changes.

    Parameters
    ----------
    **options
        numba's ``njit`` options (``nogil``, ``parallel``, ``error_model``, ``fastmath``,
        ``inline``…); ``cache`` may not be given.
    """
    if "cache" in options:
        raise TypeError("cached_njit always caches; do not pass cache=")

    def decorate(fn: Callable[..., Any]) -> Any:
        dispatcher = numba.njit(**options)(fn)
        dispatcher._cache = KernelsCache(dispatcher.py_func)
        return dispatcher

    return decorate
