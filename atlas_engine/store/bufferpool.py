"""Big scratch arrays handed out again once every view of them is gone.

On the machines this was measured on, a fresh page costs more than the work done in it: reading
a 4,096-cell row block of a Cell Types store into new arrays took 0.46 s, into arrays whose
pages had been touched before 0.10 s. :func:`pooled_empty` gives arrays whose memory comes back
to a small pool when the last view of them is dropped (whatever thread or task holds it last),
so block after block reuses the same pages. Nothing is reused while any view is alive: the
array's owner is a lease object that every view keeps alive, and the memory returns to the pool
only when the lease is collected.

The pool keeps at most :data:`KEEP_BYTES` of idle memory; :func:`release_pool` drops it (the
passes that use it call it when they end, so a library call leaves no memory behind).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

#: idle bytes the pool keeps for reuse at most
KEEP_BYTES = 512 << 20

_FREE: list[np.ndarray] = []
_LOCK = threading.Lock()


class _Lease:
    """Owner of a pooled array's memory (numpy keeps it as every view's ``base``)."""

    def __init__(self, buf: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.buf = buf
        self.__array_interface__ = {"shape": shape, "typestr": dtype.str,
                                    "data": (buf.ctypes.data, False), "version": 3}


def _give_back(buf: np.ndarray) -> None:
    with _LOCK:
        _FREE.append(buf)
        total = sum(b.nbytes for b in _FREE)
        while total > KEEP_BYTES and _FREE:
            total -= _FREE.pop(0).nbytes


def pooled_empty(shape: int | tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised C-contiguous array like ``np.empty``, its memory from the pool when an
    idle buffer of a fitting size is there (at least the size asked for, at most twice it)."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
    buf = None
    with _LOCK:
        fits = [k for k, b in enumerate(_FREE) if nbytes <= b.nbytes <= 2 * nbytes]
        if fits:
            buf = _FREE.pop(min(fits, key=lambda k: _FREE[k].nbytes))
    if buf is None:
        # room to grow: the next block is rarely exactly this size
        buf = np.empty(nbytes + nbytes // 8, dtype=np.uint8)
    lease = _Lease(buf, shape, dtype)
    weakref.finalize(lease, _give_back, buf)
    return np.asarray(lease)


def release_pool() -> None:
    """Drop the pool's idle buffers (those in use go when their last view does)."""
    with _LOCK:
        _FREE.clear()
