"""Dask tasks over row blocks of a store's donor arrays, and how they are run.

The one way the engine's passes outside ``groupby_reduce`` make and run tasks: :func:`task` (a
``dask.delayed`` call whose array arguments are not hashed), :func:`compute` (on Dask's
threads, or the workers of an active ``dask.distributed`` client; per-thread block buffers
and idle pooled blocks released at the end), and the rows of a donor array wherever they lie
(:func:`row_tasks`, :func:`read_rows`: a task per chunk row, read by
:class:`~atlas_engine.store.blockread.BlockArray`). The abagen-grade pipeline's passes
(:mod:`atlas_engine.pipeline.passes`) and per-gene extraction (:mod:`.extract`) build on them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..store import layout as L
from ..store.blockread import BlockArray, release_buffers
from ..store.bufferpool import release_pool

__all__ = ["compute", "open_array", "ordered_tasks", "read_rows", "row_tasks", "share",
           "sort_rows", "take_task", "task"]


#: arguments of a task at least this large (``dask.sizeof``) go to a distributed client's
#: workers ahead of the graph (``Client.scatter``) instead of inside it
SHARE_BYTES = 256 * 1024


def task(func: Callable[..., Any], *args: Any, key: str | None = None) -> Any:
    """A lazy call ``func(*args)`` (``dask.delayed``; array arguments are not hashed), named
    ``key`` when given (else a random name).

    When :func:`compute` will run it on a ``dask.distributed`` client, its arguments of
    :data:`SHARE_BYTES` or more are scattered to the workers now and the task refers to them:
    a pass over blocks of a matrix in memory then sends each block once, to a worker, instead
    of a graph of the whole matrix that the scheduler holds (and warns about over 10 MB). On
    Dask's threads the arguments are the objects themselves."""
    import dask

    client = _tasks_client()
    if client is not None:
        args = tuple(_share_with(client, a) for a in args)
    call = dask.delayed(func, pure=False, traverse=False)
    return call(*args) if key is None else call(*args, dask_key_name=key)


def share(obj: Any) -> Any:
    """``obj`` as an argument for many tasks: on a ``dask.distributed`` client that
    :func:`compute` will use, and when it is :data:`SHARE_BYTES` or larger, a future of its
    copy on the workers (sent once, fetched by each worker that needs it); else ``obj``."""
    return _share_with(_tasks_client(), obj)


def _share_with(client: Any, obj: Any) -> Any:
    """:func:`share` on ``client`` (None: ``obj`` itself)."""
    from dask.sizeof import sizeof

    if client is None or sizeof(obj) < SHARE_BYTES:
        return obj
    return client.scatter(obj, hash=False)


def _tasks_client() -> Any:
    """The ``distributed`` client :func:`compute` runs tasks on, or None (Dask's threads, or
    a Dask config naming another scheduler)."""
    from ..scheduler import client_active

    if not client_active():
        return None
    import dask

    chosen = dask.config.get("scheduler", None)
    if chosen is not None and chosen not in ("dask.distributed", "distributed") \
            and "Client" not in type(chosen).__name__:
        return None
    from distributed import get_client

    return get_client()


def ordered_tasks(func: Callable[..., Any], arg_lists: Sequence[tuple[Any, ...]]) -> list[Any]:
    """:func:`task` ``func(*args)`` for each of ``arg_lists``, named in that order, so a
    scheduler runs them in a fixed order (Dask's threads: last to first) instead of one
    drawn afresh from random key names in every run (the whole-store aggregation as a
    command, four runs each: 2.83-3.14 s in this order, 3.46-3.61 s in random ones)."""
    import uuid

    name = f"{getattr(func, '__name__', 'task')}-{uuid.uuid4().hex}"
    return [task(func, *args, key=f"{name}-{i:06d}") for i, args in enumerate(arg_lists)]


def compute(tasks: Sequence[Any], *, release: bool = True) -> list[Any]:
    """The results of ``tasks`` (in order), computed by the active Dask scheduler: the
    workers of the current ``dask.distributed`` client when there is one, else Dask's
    threads.

    Parameters
    ----------
    tasks : sequence
        :func:`task` calls or other Dask collections.
    release : bool, default True
        Drop the threads' block buffers and the pool's idle blocks afterwards. A pass that
        computes several waves in a row keeps them between its waves (the next wave reuses
        their pages) and releases them when it ends.

    Returns
    -------
    list
        One result per task, in the order of ``tasks``.
    """
    if not tasks:
        return []
    import dask

    from ..scheduler import scheduler_for_compute

    try:
        # Dask's threads, or the active client's workers (decided without importing
        # distributed when no client can exist)
        return list(dask.compute(*tasks, scheduler=scheduler_for_compute()))
    finally:
        if release:
            # the pool threads outlive the pass; their block buffers and idle pooled blocks
            # need not
            release_buffers()
            release_pool()


def open_array(url: str, donor: int, name: str) -> BlockArray:
    """Donor ``donor``'s array ``name`` (``L.EXPRESSION`` or ``L.PACALL``) of the store."""
    return BlockArray.open(str(url), f"{L.donor_path(donor)}/{name}")


def sort_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order, rows[order])``: the stable order sorting store ``rows``, and the rows in it."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    return order, rows[order]


# the rows of a donor array
def take_task(arr: BlockArray, a: int, b: int, local: np.ndarray, dtype: Any) -> np.ndarray:
    """One task: rows ``local`` (relative to ``a``) of the chunk row ``a:b``, as ``dtype``."""
    from ..kernels.blockgroups import take_rows  # numba: imported where rows are taken

    out = np.empty((len(local), arr.shape[1]), dtype=dtype)
    take_rows(arr.read(a, b), local, np.arange(len(local)), out)
    return out


def row_tasks(arr: BlockArray, rows: np.ndarray, dtype: Any = np.float64
              ) -> tuple[list[tuple[int, int, int, int]], np.ndarray, list[Any]]:
    """``(jobs, order, tasks)``: one task per chunk row holding some of ``rows`` (store rows,
    any order, repeats allowed), each giving those rows (all columns) in sorted order."""
    order, sorted_rows = sort_rows(rows)
    jobs = arr.row_jobs(sorted_rows)
    return jobs, order, [task(take_task, arr, a, b, sorted_rows[lo:hi] - a, dtype)
                         for a, b, lo, hi in jobs]


def read_rows(arr: BlockArray, rows: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    """``arr[rows, :]`` for arbitrary (unsorted, repeated) store rows: a task per chunk row."""
    jobs, order, tasks = row_tasks(arr, rows, dtype)
    out = np.empty((len(order), arr.shape[1]), dtype=dtype)
    for (_, _, lo, hi), part in zip(jobs, compute(tasks), strict=True):
        out[order[lo:hi]] = part
    return out
