"""Ranged downloads: one large file as concurrent ``Range`` pieces, each resumable on its own.

:class:`~.download.Downloader` switches a file to pieces when the first answer (a ``200``) shows
a length of at least ``piece_threshold`` bytes and a validator (a strong ``ETag`` or a
``Last-Modified`` date): that request is dropped, ``NAME.part`` is laid out at the full size
(sparse) and ``NAME.part.json`` records the version and the piece table ``[start, end, done]``.
Each piece then asks ``Range: bytes=start+done-(end-1)`` with ``If-Range``, writes what arrives
at its own offset (``os.pwrite``) and records its progress in the table after the bytes are
written (at most every :data:`~.parts.FLUSH_SECONDS`, and when it stops), so a killed run
resumes every piece from its own offset. A piece's answer must be a ``206`` whose
``Content-Range`` starts at that offset, with the recorded size and version; otherwise:

* a ``200`` of the same version (the server ignores ``Range``): the pieces are dropped and the file
  is fetched as one stream (:class:`~.retries._NoRanges`);
* another version (``ETag``/``Last-Modified``/size changed; ``If-Range`` makes the server send
  the whole new file), a ``416`` or a ``Content-Range`` elsewhere: everything restarts from
  byte 0 (:class:`~.retries._Restart`), so bytes of two versions are never joined.

Transient failures (5xx, 429/503 with ``Retry-After``, timeouts, dropped connections) retry the
piece with backoff, and a piece gives up after ``max_attempts`` attempts in a row without
progress. The sha256 follows the bytes on disk without a gap from the start of the file (read
back from the page cache while later pieces still arrive); when every piece is complete the
rest is hashed and the file goes to the same verification as a single-stream download (size,
kind, published sha256, zip CRCs).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FetchError, HttpStatusError
from . import retries
from .http import TRANSIENT_ERRORS
from .parts import _MAX_IOV, FLUSH_SECONDS, PartMeta, _Body, _save_part_meta
from .retries import _describe, _html_error, _NoRanges, _Restart, _Retry

if TYPE_CHECKING:
    from .download import DownloadResult, DownloadSpec

_CRANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
#: Bytes read back per hashing step.
_READ = 8 << 20


class _Table:
    """The piece table of one file and when it was last saved."""

    def __init__(self, part: Path, meta: PartMeta) -> None:
        self.part = part
        self.meta = meta
        self.saved = 0.0

    def save(self, now: float, force: bool = False) -> None:
        if force or now - self.saved >= FLUSH_SECONDS:
            _save_part_meta(self.part, self.meta)
            self.saved = now


async def transfer_pieces(dl: Any, spec: DownloadSpec, part: Path, meta: PartMeta,
                          result: DownloadResult, file_bar: Any) -> _Body:
    """Bring a ranged ``part`` to the complete file; returns its size and sha256.

    Parameters
    ----------
    dl : Downloader
        Session, retry policy, chunk size and progress bars.
    spec : DownloadSpec
    part : Path
        ``NAME.part``, laid out at ``meta.size`` bytes.
    meta : PartMeta
        The version and the piece table (updated in place and saved beside ``part``).
    result : DownloadResult
        Its request count grows by one per piece request.
    file_bar
        The file's progress bar.
    """
    assert meta.size is not None and meta.pieces is not None
    size = meta.size
    table = _Table(part, meta)
    if file_bar.total != size:
        dl._grow_total(size - (file_bar.total or 0))
        file_bar.total = size
    file_bar.n = sum(d for _, _, d in meta.pieces)
    file_bar.refresh()
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
    hasher = _Hasher(part)
    try:
        if os.fstat(fd).st_size != size:
            os.ftruncate(fd, size)
        pieces_done = asyncio.Event()
        follow = asyncio.ensure_future(_follow(hasher, meta, pieces_done))
        tasks = [asyncio.ensure_future(_piece(dl, spec, fd, table, i, result, file_bar))
                 for i, (a, b, d) in enumerate(meta.pieces) if a + d < b]
        try:
            await asyncio.gather(*tasks)
            pieces_done.set()
            await follow
        except BaseException:
            for t in (*tasks, follow):
                t.cancel()
            # their writes (and reads) have landed before the files are closed
            await asyncio.gather(*tasks, follow, return_exceptions=True)
            raise
        finally:
            table.save(0.0, force=True)
        await asyncio.to_thread(hasher.advance, size)
        digest = hasher.h.hexdigest()
    finally:
        hasher.close()
        os.close(fd)
    return _Body(size, digest, True)


class _Hasher:
    """sha256 of the file's first ``n`` bytes, advanced by reading back what has been written
    (from the page cache, while later pieces are still arriving)."""

    def __init__(self, part: Path) -> None:
        self.h = hashlib.sha256()
        self.n = 0
        self.fd = os.open(part, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def advance(self, upto: int) -> None:
        while self.n < upto:
            block = os.pread(self.fd, min(_READ, upto - self.n), self.n)
            if not block:
                raise OSError(f"{self.n:,} bytes into the .part, expected {upto:,}")
            self.h.update(block)
            self.n += len(block)

    def close(self) -> None:
        os.close(self.fd)


async def _follow(hasher: _Hasher, meta: PartMeta, pieces_done: asyncio.Event) -> None:
    """Hash the bytes on disk without a gap from the start as they grow (the table counts only
    written bytes), until every piece is in."""
    while True:
        frontier = meta.contiguous()
        if frontier > hasher.n:
            await asyncio.to_thread(hasher.advance, frontier)
        elif pieces_done.is_set():
            return
        else:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(pieces_done.wait(), FLUSH_SECONDS)


async def _piece(dl: Any, spec: DownloadSpec, fd: int, table: _Table, i: int,
                 result: DownloadResult, file_bar: Any) -> None:
    """Fetch piece ``i`` to its end, retrying transient failures from where it got to."""
    policy = dl.policy
    failures = 0
    while True:
        start, end, done = table.meta.pieces[i]  # type: ignore[index]
        if start + done >= end:
            return
        wait: float | None = None
        try:
            result.requests += 1
            await _piece_attempt(dl, spec, fd, table, i, file_bar)
            continue
        except _Retry as exc:
            wait, error = exc.wait, exc
        except TRANSIENT_ERRORS as exc:
            error = exc
        progressed = table.meta.pieces[i][2] > done  # type: ignore[index]
        failures = 0 if progressed else failures + 1
        if failures >= policy.max_attempts:
            raise FetchError(f"{spec.url}: giving up on bytes {start + done:,}-{end - 1:,} after "
                             f"{failures} attempts in a row without progress: "
                             f"{_describe(error)}")
        await retries.sleep(retries.retry_wait(spec, error, wait, failures, policy, dl.say))


async def _piece_attempt(dl: Any, spec: DownloadSpec, fd: int, table: _Table, i: int,
                         file_bar: Any) -> None:
    """One request for what piece ``i`` still lacks."""
    meta = table.meta
    start, end, done = meta.pieces[i]  # type: ignore[index]
    pos = start + done
    headers = {"Accept-Encoding": "identity", "Range": f"bytes={pos}-{end - 1}"}
    if meta.validator:
        headers["If-Range"] = meta.validator
    async with dl.session.get(spec.url, headers=headers) as resp:
        status = resp.status
        retries.retry_on_status(resp)
        if status == 416:
            raise _Restart(f"HTTP 416 for Range bytes={pos}-{end - 1}")
        if status >= 400:
            raise HttpStatusError(spec.url, status, resp.reason)
        if status == 200:
            why = meta.mismatch(resp, resp.content_length)
            if why:  # If-Range saw another version: the whole new file came instead
                raise _Restart(why)
            raise _NoRanges(f"the server ignored Range (HTTP 200 for bytes={pos}-{end - 1})")
        if status != 206:
            raise HttpStatusError(spec.url, status, resp.reason)
        crange = resp.headers.get("Content-Range", "").strip()
        m = _CRANGE.fullmatch(crange)
        if m is None or int(m[1]) != pos or int(m[2]) > end - 1:
            raise _Restart(f"Content-Range {crange!r} does not answer bytes={pos}-{end - 1}")
        total = int(m[3]) if m[3] != "*" else None
        why = meta.mismatch(resp, total)
        if why:  # a server that ignored If-Range: never join two versions
            raise _Restart(why)
        ctype = resp.headers.get("Content-Type")
        if ctype and ctype.split(";")[0].strip().lower() == "text/html":
            raise _Retry(str(_html_error(spec, ctype, b"")))
        await _stream_piece(dl, resp, fd, table, i, int(m[2]) + 1, file_bar)
    start, end, done = meta.pieces[i]  # type: ignore[index]
    if start + done < end and start + done < int(m[2]) + 1:
        raise _Retry(f"piece body truncated at byte {start + done:,} of {int(m[2]) + 1:,}")


async def _stream_piece(dl: Any, resp: Any, fd: int, table: _Table, i: int, stop: int,
                        file_bar: Any) -> None:
    """Write the body at the piece's offset; the table advances after each write lands."""
    loop = asyncio.get_running_loop()
    row = table.meta.pieces[i]  # type: ignore[index]
    pending: list[bytes] = []
    pending_n = 0
    writing: asyncio.Future[None] | None = None
    last_flush = loop.time()
    received = row[0] + row[2]

    def write(chunks: list[bytes], at: int) -> None:
        data = b"".join(chunks)
        view = memoryview(data)
        while view:
            view = view[os.pwrite(fd, view, at):]
            at = row[0] + row[2] + (len(data) - len(view))
        row[2] += len(data)

    async def flush() -> None:
        nonlocal pending, pending_n, writing, last_flush
        chunks, pending, pending_n = pending, [], 0
        last_flush = loop.time()
        if writing is not None:
            await writing
            table.save(loop.time())
        writing = asyncio.ensure_future(asyncio.to_thread(write, chunks, row[0] + row[2]))

    try:
        async for chunk in resp.content.iter_any():
            if received + len(chunk) > stop:
                raise _Restart(f"the server sent more than bytes {row[0]:,}-{stop - 1:,}")
            received += len(chunk)
            pending.append(chunk)
            pending_n += len(chunk)
            if (pending_n >= dl.chunk_size or len(pending) >= _MAX_IOV
                    or loop.time() - last_flush >= FLUSH_SECONDS):
                await flush()
            if dl._bars:
                file_bar.update(len(chunk))
                dl.total_bar.update(len(chunk))
    finally:
        if pending:  # keep what arrived before a drop, for the resume
            chunks, pending = pending, []
            if writing is not None:
                await asyncio.shield(writing)
            writing = asyncio.ensure_future(asyncio.to_thread(write, chunks, row[0] + row[2]))
        if writing is not None:
            await asyncio.shield(writing)
        table.save(loop.time(), force=True)
