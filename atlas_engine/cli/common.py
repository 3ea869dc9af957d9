"""Options shared by several commands: Dask execution, memory limit, quiet."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from ..atomic import atomic_output  # noqa: F401  (re-exported for the commands)
from ..config import parse_size


def dask_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--workers N`` (local cluster), ``--scheduler ADDRESS`` (existing cluster; also
    ``DASK_SCHEDULER_ADDRESS``) and ``--memory-limit`` (bounds Dask block sizes)."""

    @click.option("--workers", type=int, default=None,
                  help="Compute on a local Dask cluster of N worker processes (default: "
                       "this process's threads).")
    @click.option("--scheduler", default=None, envvar="DASK_SCHEDULER_ADDRESS",
                  help="Compute on a running dask.distributed scheduler (tcp://host:8786); "
                       "its workers must reach the store (the same path, or s3://...).")
    @click.option("--memory-limit", default=None,
                  help="Memory budget, e.g. 512MB or 2GiB; bounds block sizes (and each "
                       "local worker's memory).")
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return f(*args, **kwargs)

    return wrapper


def block_bytes_for(memory_limit: str | None, default: int = 32 * 2**20) -> int:
    """Dask block size for a memory budget: ~1/16 of it (two threads, inputs + intermediates),
    at most ``default``."""
    limit = parse_size(memory_limit)
    if limit is None:
        return default
    return max(1 << 20, min(default, limit // 16))


@contextmanager
def execution(scheduler: str | None, workers: int | None,
              memory_limit: str | None, quiet: bool = True) -> Iterator[Any]:
    """Dask threads, a local cluster or a remote one, as the options ask; on Dask's threads
    with a terminal and without ``quiet``, a progress bar over the tasks."""
    from ..aggregate.cluster import get_client
    from ..progress import progress_enabled

    per_worker = parse_size(memory_limit)
    with get_client(scheduler, workers, per_worker) as client:
        if client is None and progress_enabled(quiet):
            from tqdm.dask import TqdmCallback

            with TqdmCallback(desc="tasks", leave=False):
                yield client
        else:
            yield client
