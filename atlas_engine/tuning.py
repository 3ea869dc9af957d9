"""Process-wide settings the heavy commands run with, in one explicit place.

Library functions never change process state; the command line wraps its heavy commands
(convert, the abagen-grade pipeline, run/demo) in :func:`process_tuning`. A Python caller who
wants the same behaviour can do the same::

    from atlas_engine.tuning import process_tuning
    with process_tuning():
        ae.convert("raw/", "ahba.zarr")

What it sets, and why (each measured on the full six donors, 2 cores):

* glibc's malloc arenas capped at two: each stream or decode thread otherwise gets an arena
  that keeps its freed megabyte buffers resident (convert peak RSS 499 → 389 MB; the atlas
  pipeline 741 → 588 MB). glibc offers no way back, so this one stays after the block.
* Python's cyclic garbage collector paused: the table and pandas steps allocate enough objects
  to trigger generation scans over and over (~0.3 CPU-s of a conversion or a cold pipeline
  run), while the big buffers are freed by reference counting anyway. Restored afterwards.
* BLAS single-threaded: conversion does no linear algebra and the pipeline only small
  products, after which OpenBLAS's idle threads spin on the cores the inflate, decode and
  kernel threads need (~0.35 CPU-s). Restored afterwards.
* optionally a shorter thread switch interval (conversion: 0.5 ms instead of 5 ms, so a
  stream thread returning from a GIL-free inflate does not wait up to 5 ms behind a thread
  writing tables). Restored afterwards.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["CONVERT_SWITCH_INTERVAL", "process_tuning"]

#: Thread switch interval used while converting (seconds).
CONVERT_SWITCH_INTERVAL = 0.0005


@contextmanager
def process_tuning(*, switch_interval: float | None = None, arenas: int = 2) -> Iterator[None]:
    """Run the enclosed block with the allocator, GC, BLAS and thread-switch settings above.

    Parameters
    ----------
    switch_interval
        If given, ``sys.setswitchinterval`` to at most this many seconds for the block.
    arenas
        glibc malloc arenas (a no-op on other C libraries).
    """
    from threadpoolctl import threadpool_limits

    from .convert.malloc import limit_arenas

    limit_arenas(arenas)
    enabled = gc.isenabled()
    interval = sys.getswitchinterval()
    gc.disable()
    if switch_interval is not None:
        sys.setswitchinterval(min(interval, switch_interval))
    try:
        with threadpool_limits(1, user_api="blas"):
            yield
    finally:
        sys.setswitchinterval(interval)
        if enabled:
            gc.enable()
