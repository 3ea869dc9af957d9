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
* BLAS libraries not yet loaded asked for one thread (:func:`single_thread_blas_env`, before
  the imports): OpenBLAS starts its threads when it is loaded and each spins ~0.1 s waiting
  for work; numpy and scipy bring two copies, so a command that loads both spends ~0.2 CPU-s
  of its 2 cores on idle threads while it is importing (a second atlas from the cache, five
  alternated runs: 2.88–3.75 s, four of them ≤ 3.16 s, against 3.29–3.81 s). An explicit
  ``OPENBLAS_NUM_THREADS`` is kept.
* optionally a shorter thread switch interval (conversion: 0.5 ms instead of 5 ms, so a
  stream thread returning from a GIL-free inflate does not wait up to 5 ms behind a thread
  writing tables). Restored afterwards.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["CONVERT_SWITCH_INTERVAL", "process_tuning", "single_thread_blas_env"]

#: Thread switch interval used while converting (seconds).
CONVERT_SWITCH_INTERVAL = 0.0005


def single_thread_blas_env(*names: str) -> None:
    """Set ``OPENBLAS_NUM_THREADS`` (and any further variables in ``names``) to 1 unless
    already set, for BLAS libraries loaded from now on.

    For the command line only, called before numpy or scipy is imported: it changes the
    process environment (inherited by local Dask workers, whose BLAS then has one thread
    too, as :func:`process_tuning` gives the main process).

    Parameters
    ----------
    *names : str
        Further environment variables to set to 1 the same way, e.g. ``"OMP_NUM_THREADS"``.
    """
    import os

    for var in ("OPENBLAS_NUM_THREADS", *names):
        os.environ.setdefault(var, "1")


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

    from .malloc import limit_arenas

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
