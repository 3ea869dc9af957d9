"""Where Dask runs: a remote scheduler, a local process cluster, or the threaded scheduler.

No kernels here. The kernels are plain module-level numba functions, so workers get them by
importing :mod:`atlas_engine` (nothing unpicklable is shipped in the graph).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import ConfigError


@contextmanager
def get_client(
    scheduler: str | None = None,
    workers: int | None = None,
    memory_limit: int | str | None = None,
) -> Iterator[Any]:
    """Context manager yielding a ``distributed.Client``, or ``None`` for Dask's threads.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``); when omitted,
        ``DASK_SCHEDULER_ADDRESS`` is used if set.
    workers : int, optional
        Start a ``LocalCluster`` of this many single-threaded worker processes. Refused
        together with a scheduler address (``scheduler`` or ``DASK_SCHEDULER_ADDRESS``).
    memory_limit : int or str, optional
        Per-worker memory limit of the local cluster (bytes, or e.g. ``"2GB"``).

    Yields
    ------
    distributed.Client or None
        ``None`` means "no cluster": computations use Dask's default threaded scheduler.

    Raises
    ------
    ConfigError
        ``workers`` below 1, ``workers`` together with a scheduler address (naming where the
        address came from), or a scheduler that cannot be reached.

    Examples
    --------
    >>> with get_client(workers=2) as client:  # doctest: +SKIP
    ...     result = dask.compute(*arrays)
    """
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    if address is None and workers is None:
        yield None
        return
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if workers is not None and address is not None:
        source = (f"scheduler={address!r}" if scheduler else
                  f"the environment variable DASK_SCHEDULER_ADDRESS={address}")
        raise ConfigError(f"workers={workers} (a local cluster) and {source} (a running "
                          "scheduler) were both given: pass one")
    from distributed import Client, LocalCluster

    if address is not None:
        try:
            client = Client(address, timeout="10s")
        except OSError as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        memory_limit=memory_limit if memory_limit is not None else "auto",
        dashboard_address=":0",   # its HTTP server on a free port (8787 may be taken)
    )
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()
