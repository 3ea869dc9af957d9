"""A real `dask scheduler` + two `dask worker` processes on loopback, for tests that must prove
the cluster did the work.

* :func:`start_cluster` / :func:`stop_cluster` run the processes (free ports on 127.0.0.1), and
  :func:`subprocess_cluster` wraps them as a context manager; the session fixture
  ``dask_cluster`` of conftest.py yields the address of one started once for the whole run;
* :func:`tasks_run` returns how many tasks each worker has executed (the workers' own
  ``WorkerState.executed_count``), :func:`executed` their sum through an open client, and
  :func:`count_tasks` measures the difference over a block of code. Work done in the test's own process (Dask's threads) leaves these counts unchanged, so
  ``assert sum(ran.values()) > 0`` fails unless the workers ran the tasks.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import atlas_engine

N_WORKERS = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _dask_exe() -> str:
    exe = Path(sys.executable).with_name("dask")
    return str(exe) if exe.exists() else (shutil.which("dask") or "dask")


def start_cluster(workdir: Path, n_workers: int = N_WORKERS) -> tuple[str, list[subprocess.Popen]]:
    """Start ``dask scheduler`` and ``n_workers`` single-threaded ``dask worker`` processes on
    127.0.0.1; returns the scheduler address and the processes once every worker is connected.
    The workers import this checkout's atlas_engine (PYTHONPATH)."""
    from distributed import Client

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    root = str(Path(atlas_engine.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    procs = [subprocess.Popen(
        [_dask_exe(), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard",
         "--dashboard-address", "127.0.0.1:0"],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for k in range(n_workers):
            procs.append(subprocess.Popen(
                [_dask_exe(), "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                 "--no-nanny", "--no-dashboard", "--memory-limit", "1GB", "--name", f"w{k}",
                 "--local-directory", str(workdir / f"w{k}")],
                cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while True:  # the scheduler may not listen yet
            try:
                with Client(address, timeout="5s") as client:
                    client.wait_for_workers(n_workers, timeout=60)
                break
            except OSError:
                if time.monotonic() > deadline or procs[0].poll() is not None:
                    raise
                time.sleep(0.3)
    except BaseException:
        stop_cluster(procs)
        raise
    return address, procs


def stop_cluster(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        stop(p)


@contextmanager
def subprocess_cluster(cwd: Path, n_workers: int = N_WORKERS) -> Iterator[str]:
    """:func:`start_cluster` as a context manager: yields the scheduler address, stops the
    processes on exit."""
    address, procs = start_cluster(cwd, n_workers)
    try:
        yield address
    finally:
        stop_cluster(procs)


def executed(client: Any) -> int:
    """Tasks the workers of ``client``'s cluster have run so far (all workers together)."""
    return sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())


def tasks_run(address: str) -> dict[str, int]:
    """Tasks executed so far by each worker of the cluster at ``address`` (by worker name)."""
    from distributed import Client

    with Client(address, timeout="10s") as client:
        counts = client.run(lambda dask_worker: (dask_worker.name,
                                                 dask_worker.state.executed_count))
    return {str(name): int(n) for name, n in counts.values()}


@contextmanager
def count_tasks(address: str) -> Iterator[dict[str, int]]:
    """Tasks each worker executed while the block ran (filled in when it ends)."""
    before = tasks_run(address)
    ran: dict[str, int] = {}
    yield ran
    after = tasks_run(address)
    ran.update({w: after[w] - before.get(w, 0) for w in after})


def executed_on_workers(client, prefixes) -> dict[str, int]:
    """How many tasks of each function name in ``prefixes`` (e.g. ``"_ibf_task"``) the
    cluster's workers have computed, as its scheduler counted them (tasks that reached
    ``memory`` on a worker, per task prefix, kept for the scheduler's lifetime). Zero when the
    work ran in the client process instead (Dask's local threads never reach a scheduler)."""
    from dask.utils import key_split

    names = {p: key_split(f"{p}-00000000-0000-0000-0000-000000000000") for p in prefixes}

    def count(dask_scheduler) -> dict[str, int]:
        return {name: int(tp.state_counts.get("memory", 0))
                for name, tp in dask_scheduler.task_prefixes.items()}

    seen = client.run_on_scheduler(count)
    return {p: seen.get(name, 0) for p, name in names.items()}
