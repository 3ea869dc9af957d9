"""One matrix member streamed into its Zarr array: inflate → whole-line regions → parse into
reusable blocks → encode and write, each stage in its own thread joined by bounded queues."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FormatError
from . import writer
from .memplan import StreamPlan
from .params import ConvertOptions
from .zipstream import MemberSource

if TYPE_CHECKING:
    import zarr

    from .blockparse import Block, ParseStats


def prefetch(it: Iterable[Any], depth: int = 3, name: str = "inflate") -> Iterator[Any]:
    """Run ``it`` in a thread, ``depth`` items ahead of the consumer (inflate or parsing
    overlaps the work on each item). Errors of ``it`` are raised in the consumer; closing the
    generator (or leaving its loop) stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in it:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            put(exc)

    t = threading.Thread(target=work, daemon=True, name=name)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join()


def stream_matrix(src: MemberSource, arr: zarr.Array, kind: str, probe_ids: np.ndarray,
                   ncols: int, opts: ConvertOptions, plan: StreamPlan, other: str | None,
                   cancel: threading.Event, inline: bool = False
                   ) -> tuple[list[list[int]], ParseStats]:
    """Parse one matrix member block by block into ``arr``; returns per-chunk CRCs.

    Three stages overlap, each in its own thread and each releasing the GIL for its heavy
    part: inflate (``prefetch``, ``plan.depth`` pieces ahead), parse (this thread, into
    ``plan.blocks`` reusable block buffers) and write (checksums, Blosc, files). With
    ``inline`` the parse thread inflates too: when every core already runs a donor, the extra
    thread only adds hand-offs (measured on 2 cores, two donors at once: 1.3 CPU-s less).
    """
    from .blockparse import BlockPool, ParseStats, iter_blocks

    stats = ParseStats()
    crcs: list[list[int]] = []
    n = len(probe_ids)
    vdtype = np.dtype(opts.dtype) if kind == "float" else np.dtype(np.uint8)
    pool = BlockPool(plan.blocks, opts.probe_chunk, ncols, vdtype)
    todo: queue.Queue = queue.Queue()
    failed: list[BaseException] = []

    out = writer.BlockWriter(arr)

    def write() -> None:
        while (block := todo.get()) is not None:
            try:
                if not failed:
                    crcs.append(out.write(block.start, block.values))
            except BaseException as exc:  # noqa: BLE001 - re-raised by the parser thread
                failed.append(exc)
            finally:
                pool.release(block)

    wt = threading.Thread(target=write, daemon=True, name=f"write-{kind}")
    wt.start()
    pieces = src.iter_pieces(piece_size=plan.piece)
    blocks = iter_blocks(pieces if inline else prefetch(pieces, plan.depth), ncols,
                         opts.probe_chunk, kind=kind, name=src.display, stats=stats,
                         dtype=vdtype, pool=pool, nonfinite=opts.nonfinite)
    try:
        with contextlib.closing(blocks):
            for block in blocks:
                if cancel.is_set():
                    pool.release(block)
                    raise Cancelled()
                if failed:
                    pool.release(block)
                    break
                err = check_ids(block, probe_ids, src.display, other)
                if err is not None:
                    pool.release(block)
                    raise err
                todo.put(block)
    finally:
        todo.put(None)
        wt.join()
    if failed:
        raise failed[0]
    if stats.rows != n:
        raise FormatError(src.display, f"file ends after {stats.rows} rows",
                          line=stats.rows + 1, expected=f"{n} rows, one per Probes.csv probe")
    return crcs, stats


def check_ids(block: Block, probe_ids: np.ndarray, name: str, other: str | None
               ) -> FormatError | None:
    """The error for a block whose ids are not the Probes.csv ids of its rows, else ``None``."""
    n = len(probe_ids)
    r0, r1 = block.start, block.start + len(block.ids)
    if r1 > n:
        return FormatError(name, "more rows than Probes.csv has probes", line=n + 1, column=1,
                           expected=f"{n} rows")
    bad = np.flatnonzero(block.ids != probe_ids[r0:r1])
    if not bad.size:
        return None
    k = int(bad[0])
    got, want = int(block.ids[k]), int(probe_ids[r0 + k])
    earlier = np.flatnonzero(probe_ids[:r0 + k] == got)
    if earlier.size:   # the id of an earlier row again: a repeated row
        return FormatError(name, f"probe id {got} appears twice (already on line "
                           f"{int(earlier[0]) + 1})", line=r0 + k + 1, column=1,
                           expected=f"probe {want}: one row per Probes.csv probe, in its order")
    against = f"{other} and Probes.csv" if other else "Probes.csv"
    return FormatError(name, f"probe id {got} differs from {against} ({want})",
                       line=r0 + k + 1, column=1,
                       expected=f"probe {want} in the Probes.csv row order")


class Cancelled(Exception):
    pass
