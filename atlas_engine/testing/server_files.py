"""How the local mirror serves a file (well-known files, ``/informatics-archive/``, bucket
objects, GTEx): single HTTP ranges (:func:`parse_range`), ``ETag``/``Last-Modified`` and
``If-Range``, 1 MiB streaming paced by the bandwidth throttle, and the drop/truncate/no-length
body faults. :class:`FileServing` is the part of :class:`~.server.MirrorServer` that does this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from pathlib import Path
from typing import Literal

from aiohttp import web

from .server_faults import _RECORD, Faults, RequestRecord, _Counters

#: Bytes read from disk and written to the socket per step.
CHUNK_SIZE = 1 << 20


def parse_range(header: str, size: int) -> tuple[int, int] | None | Literal["unsatisfiable"]:
    """Parse a single ``bytes=`` range against ``size``.

    Returns ``(first, last)`` inclusive, ``None`` when the header is to be ignored (malformed,
    another unit, or several ranges) or ``"unsatisfiable"`` (→ 416).
    """
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    first_text, last_text = first_text.strip(), last_text.strip()
    if not dash or not (first_text.isdigit() or last_text.isdigit()):
        return None
    if first_text and not first_text.isdigit() or last_text and not last_text.isdigit():
        return None
    if not first_text:                       # suffix: the last K bytes
        k = int(last_text)
        if k == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - k), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None
    if first >= size:
        return "unsatisfiable"
    return first, min(last, size - 1)


class _CloseDelimitedResponse(web.StreamResponse):
    """A body with neither Content-Length nor chunked encoding: it ends when the connection
    closes (HTTP/1.0 style, still legal in HTTP/1.1)."""

    _length_check = False


class FileServing:
    """File responses of :class:`~.server.MirrorServer` (a base class of it: the server's
    faults, counters, download statistics, ``clock`` and ``sleep`` are its attributes)."""

    _faults: Faults
    _counters: _Counters
    concurrent_downloads: int
    max_concurrent_downloads: int
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]

    async def _serve_file(self, request: web.Request, path: Path) -> web.StreamResponse:
        record = _RECORD.get()
        stat = path.stat()
        size = stat.st_size
        f = self._faults
        first, last, status = 0, size - 1, 200
        etag = f'"{stat.st_size:x}-{int(stat.st_mtime_ns):x}"'
        modified = formatdate(stat.st_mtime, usegmt=True)
        headers = {
            "Content-Disposition": f'attachment; filename="{path.name}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/zip" if path.suffix == ".zip"
            else "application/octet-stream",
        }
        if not f.no_validators:
            headers["Last-Modified"] = modified
            headers["ETag"] = etag
        if_range = request.headers.get("If-Range")
        # RFC 9110 13.1.5: a Range applies only when If-Range names the current version
        # (a strong ETag, or the exact Last-Modified date); otherwise the whole file, 200.
        range_applies = if_range is None or f.ignore_if_range or (
            not f.no_validators and if_range.strip() in (etag, modified))
        if record.range and not f.ignore_range and range_applies:
            parsed = parse_range(record.range, size)
            if parsed == "unsatisfiable":
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}",
                                                         "Accept-Ranges": "bytes"})
            if parsed is not None:
                first, last = parsed
                status = 206
                headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        length = max(0, last - first + 1)
        send = length
        if request.method != "HEAD":
            send = self._planned_cut(length, record)
        if f.no_content_length and request.method != "HEAD":
            response: web.StreamResponse = _CloseDelimitedResponse(status=status,
                                                                   headers=headers)
            response.force_close()
        else:
            response = web.StreamResponse(status=status, headers=headers)
            response.content_length = length
        record.status = status
        active = [True]

        def done() -> None:
            # Called before the last bytes go out, so a client never sees the end of a body
            # while the response still counts as active.
            if active[0]:
                active[0] = False
                self.concurrent_downloads -= 1

        self.concurrent_downloads += 1
        self.max_concurrent_downloads = max(self.max_concurrent_downloads,
                                            self.concurrent_downloads)
        try:
            if f.delay > 0:
                await asyncio.sleep(f.delay)
            if request.method == "HEAD" or send == 0:
                done()
            await response.prepare(request)
            if request.method == "HEAD":
                return response
            try:
                await self._stream(path, first, send, response, record, f.bandwidth, done)
            except ConnectionError:
                record.client_disconnected = True
                return response
            if send < length or f.no_content_length:
                # Content-Length promised more: closing now leaves the client short (without
                # one, closing is the only end of the body there is).
                transport = request.transport
                if transport is not None:
                    transport.close()
                return response
            await response.write_eof()
            return response
        finally:
            done()

    def _planned_cut(self, length: int, record: RequestRecord) -> int:
        """How many body bytes to send before a drop/truncate fault (``length`` = none)."""
        f, c = self._faults, self._counters
        send = length
        if (f.drop_after is not None or f.drop_seed is not None) and (
                f.drop_first is None or c.drop < f.drop_first):
            c.drop += 1
            cap = length if f.drop_after is None else min(f.drop_after, length)
            cut = c.rng.randrange(cap) if f.drop_seed is not None and cap > 0 else cap
            if cut < send:
                send = cut
                record.fault = "drop"
        if f.truncate_by and (f.truncate_first is None or c.truncate < f.truncate_first):
            c.truncate += 1
            cut = max(0, length - f.truncate_by)
            if cut < send:
                send = cut
                record.fault = "truncate"
        return send

    async def _stream(self, path: Path, first: int, count: int, response: web.StreamResponse,
                      record: RequestRecord, bandwidth: int | None,
                      before_last: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        chunk = CHUNK_SIZE if not bandwidth else max(1, min(CHUNK_SIZE, bandwidth // 20))
        t0 = self.clock()
        with open(path, "rb") as fh:
            fh.seek(first)
            remaining = count
            while remaining > 0:
                data = await loop.run_in_executor(None, fh.read, min(chunk, remaining))
                if not data:
                    break
                remaining -= len(data)
                if remaining <= 0:
                    before_last()
                record.bytes_sent += len(data)
                await response.write(data)
                if bandwidth:
                    wait = t0 + record.bytes_sent / bandwidth - self.clock()
                    if wait > 0:
                        await self.sleep(wait)
