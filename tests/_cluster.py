"""Helpers for tests that start a `dask scheduler` / `dask worker` cluster as subprocesses."""

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


def executed(client) -> int:
    """Tasks the cluster's workers have run so far (all workers together)."""
    return sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())


@contextmanager
def subprocess_cluster(cwd: Path, n_workers: int = 2) -> Iterator[str]:
    """A `dask scheduler` and `dask worker --nworkers N --nthreads 1` as subprocesses on
    loopback; yields the scheduler address once every worker has connected."""
    from distributed import Client

    dask_exe = Path(sys.executable).with_name("dask")
    if not dask_exe.exists():
        dask_exe = Path(shutil.which("dask") or "dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = []
    try:
        procs.append(subprocess.Popen(
            [str(dask_exe), "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--no-dashboard"],
            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            [str(dask_exe), "worker", address, "--host", "127.0.0.1", "--nworkers",
             str(n_workers), "--nthreads", "1", "--no-dashboard", "--memory-limit", "1GB"],
            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 40
        while True:  # the scheduler may not listen yet
            try:
                client = Client(address, timeout="2s")
                break
            except OSError:
                if time.monotonic() > deadline or procs[0].poll() is not None:
                    raise
                time.sleep(0.3)
        with client:
            client.wait_for_workers(n_workers, timeout=40)
        yield address
    finally:
        for p in reversed(procs):
            stop(p)
