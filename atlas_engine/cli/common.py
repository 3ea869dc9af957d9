"""Options shared by several commands: Dask execution, memory limit, quiet."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from click.core import ParameterSource

from ..atomic import atomic_output  # noqa: F401  (re-exported for the commands)
from ..config import parse_size


def dask_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--workers N`` (local cluster), ``--scheduler ADDRESS`` (existing cluster; also
    ``DASK_SCHEDULER_ADDRESS``) and ``--memory-limit`` (bounds Dask block sizes).

    ``--workers`` together with a scheduler address is refused before the command runs (see
    :func:`check_cluster_options`)."""

    @click.option("--workers", type=int, default=None,
                  help="Compute on a local Dask cluster of N worker processes (default: "
                       "this process's threads); not with --scheduler or "
                       "DASK_SCHEDULER_ADDRESS.")
    @click.option("--scheduler", default=None, envvar="DASK_SCHEDULER_ADDRESS",
                  help="Compute on a running dask.distributed scheduler (tcp://host:8786); "
                       "its workers must reach the store (the same path, or s3://...).")
    @click.option("--memory-limit", default=None,
                  help="Memory budget, e.g. 512MB or 2GiB; bounds block sizes (and each "
                       "local worker's memory).")
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        check_cluster_options(kwargs.get("workers"), kwargs.get("scheduler"))
        return f(*args, **kwargs)

    return wrapper


def scheduler_from_env() -> bool:
    """Whether the current command's ``--scheduler`` value came from
    ``DASK_SCHEDULER_ADDRESS`` rather than the command line."""
    ctx = click.get_current_context(silent=True)
    return (ctx is not None
            and ctx.get_parameter_source("scheduler") is ParameterSource.ENVIRONMENT)


def check_cluster_options(workers: int | None, scheduler: str | None) -> None:
    """Refuse ``--workers`` (a local cluster) together with a scheduler address (a running
    cluster), naming where the address came from: the option or ``DASK_SCHEDULER_ADDRESS``.

    Raises
    ------
    click.UsageError
        Both were given.
    """
    if workers is None or not scheduler:
        return
    if scheduler_from_env():
        source, hint = ("the environment variable DASK_SCHEDULER_ADDRESS",
                        "unset DASK_SCHEDULER_ADDRESS to use --workers")
    else:
        source, hint = "--scheduler", "give one"
    raise click.UsageError(f"--workers {workers} (a local cluster) and {source}={scheduler} "
                           f"(a running scheduler) were both given: {hint}")


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
