"""Pooled scratch arrays: memory comes back only when no view of it is left."""

from __future__ import annotations

import gc

import numpy as np

from atlas_engine.store import bufferpool
from atlas_engine.store.bufferpool import pooled_empty, release_pool


def _address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def test_memory_is_reused_after_the_last_view_is_gone() -> None:
    release_pool()
    a = pooled_empty(1000, np.int32)
    where = _address(a)
    view = a[10:20].view(np.uint8)   # a view outliving the array
    del a
    gc.collect()
    b = pooled_empty(1000, np.int32)
    assert _address(b) != where      # still in use through the view: not handed out
    view[:] = 7
    del view
    gc.collect()
    c = pooled_empty(900, np.float32)  # fits (at most twice the size asked for)
    assert _address(c) == where
    assert c.shape == (900,) and c.dtype == np.float32 and c.flags.c_contiguous
    del b, c
    release_pool()
    assert bufferpool._FREE == []


def test_sizes_that_do_not_fit_get_new_memory_and_the_pool_is_bounded(monkeypatch) -> None:
    release_pool()
    big = pooled_empty(10_000, np.uint8)
    where = _address(big)
    del big
    gc.collect()
    small = pooled_empty(100, np.uint8)  # far smaller: not given the big buffer
    assert _address(small) != where
    monkeypatch.setattr(bufferpool, "KEEP_BYTES", 5_000)
    del small
    gc.collect()
    assert sum(b.nbytes for b in bufferpool._FREE) <= 5_000
    release_pool()
    shaped = pooled_empty((3, 4), np.float64)
    shaped[:] = 1.0
    assert shaped.shape == (3, 4) and shaped.sum() == 12
