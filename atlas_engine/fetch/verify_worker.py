"""The zip CRC pass off the event loop, in worker processes that die with their owner.

:func:`verify_in_worker` runs :func:`~.verify.verify_file` in a process pool (:func:`_verify_pool`)
for the CRC pass of a zip, in a thread for everything else.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from .verify import verify_file

_POOL: ProcessPoolExecutor | None = None


#: The write end of the pool's lifeline pipe; held only by this process, never written.
_LIFELINE: Any = None


def _die_with_parent(lifeline: Any) -> None:
    """Worker initializer: the worker exits as soon as the process that owns the pool dies.

    The workers are forked by the multiprocessing forkserver, which itself waits for every
    worker before it exits, and a worker busy inflating a zip (or waiting on a call queue
    nobody will write to) would otherwise outlive a killed ``fetch`` for minutes, holding its
    stdout. Each worker gets the read end of a pipe whose only write end stays in the owner; a
    daemon thread waits on it and ends the worker with ``os._exit`` at end-of-file - which the
    kernel delivers however the owner died (SIGKILL included). The forkserver and the resource
    tracker then exit on their own, their last clients gone.
    """

    def watch() -> None:
        try:
            lifeline.recv_bytes()
        except (EOFError, OSError):
            pass
        os._exit(1)

    threading.Thread(target=watch, name="atlas-engine-lifeline", daemon=True).start()


def _verify_pool() -> ProcessPoolExecutor:
    """Worker processes for the zip CRC pass: ISA-L inflate holds the GIL, so threads would
    serialise it with each other and with the event loop. Workers die with this process
    (:func:`_die_with_parent`)."""
    global _POOL, _LIFELINE
    if _POOL is None:
        ctx = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
        read_end, write_end = ctx.Pipe(duplex=False)
        if _LIFELINE is not None:
            _LIFELINE.close()  # the workers of a pool given up on exit too
        _LIFELINE = write_end
        _POOL = ProcessPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                    mp_context=ctx, initializer=_die_with_parent,
                                    initargs=(read_end,))
    return _POOL


async def verify_in_worker(path: Path, kind: str, crc: bool = True) -> None:
    """:func:`verify_file` off the event loop (the zip CRC pass in a worker process, the rest,
    including the structure-only zip check, in a thread)."""
    if kind != "zip" or not crc:
        await asyncio.to_thread(verify_file, path, kind, crc=crc)
        return
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(_verify_pool(), verify_file, path, kind)
    except BrokenProcessPool:
        global _POOL
        _POOL = None
        await asyncio.to_thread(verify_file, path, kind)
