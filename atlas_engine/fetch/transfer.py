"""One file's body into ``NAME.part``: the retry loop and the single-stream request.

:func:`_transfer` brings a ``.part`` to the complete body of one version of the server's file:
it resumes where the ``.part`` got to (:mod:`.parts`), retries, restarts or gives up as each
failure calls for (:mod:`.retries`), and hands a large file to :mod:`.pieces`. :func:`_attempt`
is one request, whose body :func:`_stream` hashes and writes as it arrives. Each takes the
:class:`~.download.Downloader` of the batch (session, semaphore, policy, progress bars).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from ..errors import FetchError, HttpStatusError, VerificationError
from ..progress import bar
from . import retries  # its sleep and utcnow hooks are read at call time (tests replace them)
from .http import TRANSIENT_ERRORS, unreachable
from .parts import (
    _MAX_IOV,
    FLUSH_SECONDS,
    PartMeta,
    _Body,
    _discard_part,
    _Hash,
    _hash_prefix,
    _resume_point,
    _save_part_meta,
    _start_pieces,
    _truncate,
)
from .retries import _describe, _GoRanged, _html_error, _NoRanges, _Restart, _Retry, retry_wait
from .verify import sniff_head

if TYPE_CHECKING:
    from .download import Downloader, DownloadResult, DownloadSpec

_SNIFF = 64


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """Write ``chunks`` in order with as few system calls as the kernel allows."""
    if not hasattr(os, "writev"):
        for c in chunks:
            view = memoryview(c)
            while view:
                view = view[os.write(fd, view):]
        return
    todo = [memoryview(c) for c in chunks if c]
    while todo:
        n = os.writev(fd, todo)
        while todo and n >= len(todo[0]):
            n -= len(todo[0])
            todo.pop(0)
        if n:
            todo[0] = todo[0][n:]


async def _transfer(dl: Downloader, spec: DownloadSpec, part: Path,
                    result: DownloadResult) -> _Body:
    """Bring ``part`` to the complete body of one version of the server's file."""
    policy = dl.policy
    failures = unreached = 0
    state: _Hash | None = None
    file_bar = bar(total=None, desc=spec.name[:40], bytes_=True, quiet=dl.quiet)
    try:
        while True:
            offset, meta = _resume_point(part, dl._ranged(spec))
            if meta is not None and meta.pieces is not None:
                from .pieces import transfer_pieces

                try:
                    async with dl.semaphore:
                        return await transfer_pieces(dl, spec, part, meta, result,
                                                     file_bar)
                except _NoRanges as exc:
                    dl.say(f"{spec.name}: {exc}; downloading it as one stream")
                    dl._single.add(spec.name)
                    _discard_part(part)
                    state = None
                    continue
                except _Restart as exc:
                    dl.say(f"{spec.name}: {exc}; starting again from byte 0")
                    _discard_part(part)
                    state = None
                    failures += 1
                    if failures >= policy.max_attempts:
                        raise FetchError(f"{spec.url}: giving up after {failures} restarts: "
                                         f"{exc}") from None
                    continue
            if state is None or state.n != offset:
                state = await asyncio.to_thread(_hash_prefix, part, offset) if offset \
                    else _Hash()
            file_bar.n = offset
            wait: float | None = None
            try:
                async with dl.semaphore:
                    result.requests += 1
                    known = await _attempt(dl, spec, part, offset, meta, state, file_bar)
                return _Body(state.n, state.h.hexdigest(), known)
            except _GoRanged as exc:
                _start_pieces(part, exc.meta, dl.pieces)
                continue
            except _Restart as exc:
                _discard_part(part)
                state = _Hash()
                error: BaseException = exc
            except _Retry as exc:
                wait, error = exc.wait, exc
            except TRANSIENT_ERRORS as exc:
                error = exc
                cause = unreachable(exc)
                if cause:  # no network, no such host, nothing listening: a few quick tries
                    unreached += 1
                    if unreached >= min(cause[1], policy.max_attempts):
                        raise FetchError(f"{spec.url}: {cause[0]}") from None
                    wait = policy.backoff(unreached)
            progressed = part.exists() and part.stat().st_size > offset
            failures = 0 if progressed else failures + 1
            if failures >= policy.max_attempts:
                raise FetchError(f"{spec.url}: giving up after {result.requests} requests "
                                 f"({failures} in a row without progress): "
                                 f"{_describe(error)}")
            await retries.sleep(retry_wait(spec, error, wait, failures, policy, dl.say))
    finally:
        file_bar.close()


async def _attempt(dl: Downloader, spec: DownloadSpec, part: Path, offset: int,
                   meta: PartMeta | None, state: _Hash, file_bar) -> bool:
    """One request; returns whether the body's length was known."""
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if meta is not None and meta.validator:
            headers["If-Range"] = meta.validator
    async with dl.session.get(spec.url, headers=headers) as resp:
        status = resp.status
        retries.retry_on_status(resp)
        if status == 416 and offset:
            raise _Restart(f"HTTP 416 for Range bytes={offset}-")
        if status >= 400:
            raise HttpStatusError(spec.url, status, resp.reason)
        total: int | None
        if status == 206:
            crange = resp.headers.get("Content-Range", "")
            if not offset or not crange.startswith(f"bytes {offset}-"):
                raise _Restart(f"Content-Range {crange!r} does not continue at byte {offset}")
            tail = crange.rsplit("/", 1)[-1]
            total = int(tail) if tail.isdigit() else None
            why = meta.mismatch(resp, total) if meta is not None else None
            if why:  # a server that ignored If-Range: never join two versions
                raise _Restart(why)
        elif status == 200:
            if offset:  # Range ignored, or If-Range saw a new version: restart at zero
                _truncate(part)
                offset = 0
                state.h, state.n = hashlib.sha256(), 0
                file_bar.n = 0
            total = resp.content_length
        else:
            raise HttpStatusError(spec.url, status, resp.reason)
        ctype = resp.headers.get("Content-Type")
        if ctype and ctype.split(";")[0].strip().lower() == "text/html":
            raise _Retry(str(_html_error(spec, ctype, b"")))
        if offset == 0 and status == 200 and dl._wants_pieces(spec, resp, total):
            raise _GoRanged(PartMeta.from_response(resp, total))
        if offset == 0:
            _save_part_meta(part, PartMeta.from_response(resp, total))
        if total is not None and file_bar.total != total:
            dl._grow_total(total - (file_bar.total or 0))
            file_bar.total = total
            file_bar.refresh()
        await _stream(dl, spec, resp, part, offset, state, file_bar)
    if total is not None and state.n != total:
        if state.n > total:
            raise _Restart(f"received {state.n:,} bytes, more than the {total:,} announced")
        raise _Retry(f"body truncated: {state.n:,} of {total:,} bytes")
    return total is not None


async def _stream(dl: Downloader, spec: DownloadSpec, resp: aiohttp.ClientResponse, part: Path,
                  offset: int, state: _Hash, file_bar) -> None:
    """Copy the body to ``part``. The event loop only collects the socket's chunks (no
    copies); every ``chunk_size`` bytes - or every :data:`FLUSH_SECONDS` on a slow link,
    so an interrupted run keeps what it received - one worker-thread job hashes them and
    hands them to the kernel with ``os.writev`` (both release the GIL), one job at a time
    and in order, overlapping the next socket reads."""
    sniffed = offset > 0
    pending: list[bytes] = []
    pending_n = 0
    writing: asyncio.Future[None] | None = None
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if offset else os.O_TRUNC)
    fd = os.open(part, flags | getattr(os, "O_BINARY", 0), 0o644)
    loop = asyncio.get_running_loop()
    last_flush = loop.time()

    def write(chunks: list[bytes]) -> None:
        h = state.h
        for c in chunks:
            h.update(c)
        _write_all(fd, chunks)
        state.n += sum(map(len, chunks))

    async def flush() -> None:
        nonlocal pending, pending_n, writing, last_flush
        chunks, pending, pending_n = pending, [], 0
        last_flush = loop.time()
        if writing is not None:
            await writing
        writing = asyncio.ensure_future(asyncio.to_thread(write, chunks))

    try:
        async for chunk in resp.content.iter_any():
            pending.append(chunk)
            pending_n += len(chunk)
            if not sniffed and pending_n >= _SNIFF:
                _sniff(spec, b"".join(pending), resp)
                sniffed = True
            if sniffed and (pending_n >= dl.chunk_size or len(pending) >= _MAX_IOV
                            or loop.time() - last_flush >= FLUSH_SECONDS):
                await flush()
            if dl._bars:
                file_bar.update(len(chunk))
                dl.total_bar.update(len(chunk))
        if not sniffed and pending:  # a body shorter than the sniffed head
            _sniff(spec, b"".join(pending), resp)
            sniffed = True
    finally:
        try:
            if pending and sniffed:  # keep what arrived before a drop, for the resume
                await flush()
            if writing is not None:
                await writing
        finally:
            os.close(fd)


def _sniff(spec: DownloadSpec, head: bytes, resp: aiohttp.ClientResponse) -> None:
    try:
        sniff_head(head, kind=spec.kind, url=spec.url,
                   content_type=resp.headers.get("Content-Type"))
    except VerificationError as exc:
        raise _Retry(str(exc)) from None
