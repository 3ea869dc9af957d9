"""Async, resumable, verified downloads.

For every file: one shared :class:`asyncio.Semaphore` bounds the transfers in flight; the body
streams to ``DEST/NAME.part`` in large writes while its sha256 is computed; a dropped connection
resumes with ``Range: bytes=N-`` (the ``Content-Range`` must start ``bytes N-``, otherwise the
file restarts from zero, as it does when the server ignores Range and answers ``200``); 5xx,
timeouts and connection errors are retried with exponential backoff and jitter, 429/503 after
``Retry-After``; the byte count must equal ``Content-Length``; HTML bodies are refused; zips are
checked member by member (CRC-32); only then is ``.part`` renamed to ``NAME`` and the file
recorded in ``manifest.json``. A failed file never appears under its final name.

The zip CRC pass can be left to the converter (``verify_crc=False``): see :func:`download_files`.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from ..errors import AtlasEngineError, FetchError, VerificationError
from ..progress import bar, progress_enabled
from .http import (
    TRANSIENT_ERRORS,
    HttpStatusError,
    RetryPolicy,
    is_retryable_status,
    make_session,
    parse_retry_after,
)
from .manifest import Manifest, sha256_file
from .verify import sniff_head, verify_file

#: Bytes gathered from the socket before one write + hash job.
CHUNK_SIZE = 4 << 20
_SNIFF = 64
#: Most chunks handed to one ``os.writev`` (below every platform's IOV_MAX).
_MAX_IOV = 512


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


def kind_for(name: str) -> str:
    """Verification kind from a file name: ``zip``, ``json`` or ``raw``."""
    lower = name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith(".json"):
        return "json"
    return "raw"


@dataclass(frozen=True)
class DownloadSpec:
    """One file to fetch: where from, the name it is saved under, and how it is checked."""

    url: str
    name: str
    kind: str = ""
    wkf_id: int | None = None
    #: Published SHA-256 the file must have (checked before it gets its final name).
    sha256: str | None = None

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", kind_for(self.name))
        if "/" in self.name or "\\" in self.name or self.name in ("", ".", ".."):
            raise ValueError(f"download name must be a plain file name, not {self.name!r}")


@dataclass
class DownloadResult:
    """What happened to one file: ``downloaded``, ``skipped`` (already verified) or ``failed``."""

    spec: DownloadSpec
    status: str
    path: Path | None = None
    size: int = 0
    sha256: str | None = None
    error: str | None = None
    requests: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status != "failed"


class _Retry(Exception):
    """An attempt failed in a way another attempt may fix."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


class _Restart(Exception):
    """The server's answer cannot continue the ``.part``: start again from byte zero."""


@dataclass
class _Hash:
    """sha256 of the bytes currently in the ``.part`` file."""

    h: hashlib._Hash = field(default_factory=hashlib.sha256)
    n: int = 0


def _hash_prefix(path: Path, length: int) -> _Hash:
    state = _Hash()
    with open(path, "rb", buffering=0) as fh:
        remaining = length
        while remaining:
            block = fh.read(min(CHUNK_SIZE, remaining))
            if not block:
                break
            state.h.update(block)
            state.n += len(block)
            remaining -= len(block)
    return state


_POOL: ProcessPoolExecutor | None = None


def _verify_pool() -> ProcessPoolExecutor:
    """Worker processes for the zip CRC pass: ISA-L inflate holds the GIL, so threads would
    serialise it with each other and with the event loop."""
    global _POOL
    if _POOL is None:
        ctx = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
        _POOL = ProcessPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                    mp_context=ctx)
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


def _truncate(path: Path) -> None:
    with open(path, "wb"):
        pass


class Downloader:
    """Shared state of one batch: session, semaphore, policy, manifest and progress bars."""

    def __init__(self, dest: str | Path, *, session: aiohttp.ClientSession,
                 concurrency: int = 4, policy: RetryPolicy | None = None,
                 quiet: bool = True, verify_all: bool = False,
                 chunk_size: int = CHUNK_SIZE, verify_crc: bool = True) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.dest = Path(dest)
        self.session = session
        self.semaphore = asyncio.Semaphore(concurrency)
        self.policy = policy or RetryPolicy()
        self.quiet = quiet
        self.verify_all = verify_all
        self.verify_crc = verify_crc
        self.chunk_size = chunk_size
        self.manifest = Manifest.load(self.dest)
        self._manifest_lock = asyncio.Lock()
        self.total_bar = bar(total=0, desc="total", bytes_=True, quiet=quiet)
        self._bars = progress_enabled(quiet)

    # -- public -----------------------------------------------------------------------------
    async def fetch(self, spec: DownloadSpec) -> DownloadResult:
        """Fetch one file, never raising for a failure of that file (see ``result.error``)."""
        started = time.perf_counter()
        result = DownloadResult(spec, "failed")
        try:
            await self._fetch(spec, result)
        except AtlasEngineError as exc:
            result.status, result.error = "failed", str(exc)
        result.seconds = time.perf_counter() - started
        return result

    async def produce(self, spec: DownloadSpec,
                      make: Callable[[Path], Awaitable[None]]) -> DownloadResult:
        """Like :meth:`fetch` for a file built by ``make(part_path)`` (e.g. from RMA pages)
        instead of one GET: same skip rule, verification, atomic rename and manifest entry."""
        started = time.perf_counter()
        result = DownloadResult(spec, "failed")
        final = self.dest / spec.name
        part = self.dest / (spec.name + ".part")
        try:
            entry = self.manifest.entries.get(spec.name)
            if entry is not None and entry.url == spec.url and await asyncio.to_thread(
                    self.manifest.is_verified, spec.name, rehash=self.verify_all):
                result.status, result.path = "skipped", final
                result.size, result.sha256 = entry.size, entry.sha256
            else:
                self.dest.mkdir(parents=True, exist_ok=True)
                try:
                    await make(part)
                    await verify_in_worker(part, spec.kind, self.verify_crc)
                except BaseException:
                    part.unlink(missing_ok=True)
                    raise
                digest = await asyncio.to_thread(sha256_file, part)
                os.replace(part, final)
                async with self._manifest_lock:
                    rec = self.manifest.record(final, url=spec.url, sha256=digest,
                                               wkf_id=spec.wkf_id, kind=spec.kind)
                    await asyncio.to_thread(self.manifest.save)
                result.status, result.path = "downloaded", final
                result.size, result.sha256 = rec.size, digest
        except AtlasEngineError as exc:
            result.status, result.error = "failed", str(exc)
        result.seconds = time.perf_counter() - started
        return result

    async def save_manifest(self) -> None:
        async with self._manifest_lock:
            await asyncio.to_thread(self.manifest.save)

    # -- one file ---------------------------------------------------------------------------
    async def _fetch(self, spec: DownloadSpec, result: DownloadResult) -> None:
        final = self.dest / spec.name
        part = self.dest / (spec.name + ".part")
        entry = self.manifest.entries.get(spec.name)
        if entry is not None and entry.url == spec.url:
            intact = await asyncio.to_thread(self.manifest.is_verified, spec.name,
                                             rehash=self.verify_all)
            if intact:
                result.status, result.path = "skipped", final
                result.size, result.sha256 = entry.size, entry.sha256
                return
        elif entry is None and final.exists() and not self.verify_all:
            # a file put here by hand (or by an interrupted run): verify locally, no request
            if await self._adopt(spec, final, result):
                return
        self.dest.mkdir(parents=True, exist_ok=True)
        size, digest = await self._transfer(spec, part, result)
        try:
            await verify_in_worker(part, spec.kind, self.verify_crc)
            if spec.sha256 and digest != spec.sha256.lower():
                raise VerificationError(f"{spec.url}: SHA-256 {digest} differs from the "
                                        f"published {spec.sha256.lower()}")
        except VerificationError:
            part.unlink(missing_ok=True)  # complete but corrupt: resuming cannot repair it
            raise
        os.replace(part, final)
        async with self._manifest_lock:
            self.manifest.record(final, url=spec.url, sha256=digest, wkf_id=spec.wkf_id,
                                 kind=spec.kind)
            await asyncio.to_thread(self.manifest.save)
        result.status, result.path, result.size, result.sha256 = "downloaded", final, size, digest

    async def _adopt(self, spec: DownloadSpec, final: Path, result: DownloadResult) -> bool:
        try:
            await verify_in_worker(final, spec.kind, self.verify_crc)
        except VerificationError:
            return False
        digest = await asyncio.to_thread(sha256_file, final)
        async with self._manifest_lock:
            entry = self.manifest.record(final, url=spec.url, sha256=digest,
                                         wkf_id=spec.wkf_id, kind=spec.kind)
            await asyncio.to_thread(self.manifest.save)
        result.status, result.path, result.size, result.sha256 = "skipped", final, entry.size, digest
        return True

    async def _transfer(self, spec: DownloadSpec, part: Path,
                        result: DownloadResult) -> tuple[int, str]:
        """Bring ``part`` to the complete body; return (size, sha256)."""
        policy = self.policy
        failures = 0
        state: _Hash | None = None
        file_bar = bar(total=None, desc=spec.name[:40], bytes_=True, quiet=self.quiet)
        try:
            while True:
                offset = part.stat().st_size if part.exists() else 0
                if state is None or state.n != offset:
                    state = await asyncio.to_thread(_hash_prefix, part, offset) if offset \
                        else _Hash()
                file_bar.n = offset
                wait: float | None = None
                try:
                    async with self.semaphore:
                        result.requests += 1
                        await self._attempt(spec, part, offset, state, file_bar)
                    return state.n, state.h.hexdigest()
                except _Restart as exc:
                    _truncate(part)
                    state = _Hash()
                    error: BaseException = exc
                except _Retry as exc:
                    wait, error = exc.wait, exc
                except TRANSIENT_ERRORS as exc:
                    error = exc
                progressed = part.exists() and part.stat().st_size > offset
                failures = 0 if progressed else failures + 1
                if failures >= policy.max_attempts:
                    raise FetchError(f"{spec.url}: giving up after {result.requests} requests "
                                     f"({failures} in a row without progress): "
                                     f"{_describe(error)}")
                if wait is None:
                    wait = policy.backoff(max(1, failures))
                await asyncio.sleep(min(wait, policy.max_retry_after))
        finally:
            file_bar.close()

    def _grow_total(self, n: int) -> None:
        self.total_bar.total = (self.total_bar.total or 0) + n
        self.total_bar.refresh()

    async def _attempt(self, spec: DownloadSpec, part: Path, offset: int, state: _Hash,
                       file_bar) -> None:
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        async with self.session.get(spec.url, headers=headers) as resp:
            status = resp.status
            if is_retryable_status(status):
                wait = parse_retry_after(resp.headers.get("Retry-After")) \
                    if status in (429, 503) else None
                raise _Retry(f"HTTP {status} {resp.reason or ''}".rstrip(), wait)
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
            elif status == 200:
                if offset:  # Range ignored: the body starts at byte zero
                    _truncate(part)
                    offset = 0
                    state.h, state.n = hashlib.sha256(), 0
                    file_bar.n = 0
                length = resp.content_length
                total = length if length is not None else None
            else:
                raise HttpStatusError(spec.url, status, resp.reason)
            ctype = resp.headers.get("Content-Type")
            if ctype and ctype.split(";")[0].strip().lower() == "text/html":
                raise _Retry(str(_html_error(spec, ctype, b"")))
            if total is not None and file_bar.total != total:
                self._grow_total(total - (file_bar.total or 0))
                file_bar.total = total
                file_bar.refresh()
            await self._stream(spec, resp, part, offset, state, file_bar)
        if total is not None and state.n != total:
            if state.n > total:
                raise _Restart(f"received {state.n:,} bytes, more than the {total:,} announced")
            raise _Retry(f"body truncated: {state.n:,} of {total:,} bytes")

    async def _stream(self, spec: DownloadSpec, resp: aiohttp.ClientResponse, part: Path,
                      offset: int, state: _Hash, file_bar) -> None:
        """Copy the body to ``part``. The event loop only collects the socket's chunks (no
        copies); every ``chunk_size`` bytes one worker-thread job hashes them and hands them to
        the kernel with ``os.writev`` (both release the GIL), one job at a time and in order,
        overlapping the next socket reads."""
        sniffed = offset > 0
        pending: list[bytes] = []
        pending_n = 0
        writing: asyncio.Future[None] | None = None
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if offset else os.O_TRUNC)
        fd = os.open(part, flags | getattr(os, "O_BINARY", 0), 0o644)

        def write(chunks: list[bytes]) -> None:
            h = state.h
            for c in chunks:
                h.update(c)
            _write_all(fd, chunks)
            state.n += sum(map(len, chunks))

        async def flush() -> None:
            nonlocal pending, pending_n, writing
            chunks, pending, pending_n = pending, [], 0
            if writing is not None:
                await writing
            writing = asyncio.ensure_future(asyncio.to_thread(write, chunks))

        try:
            async for chunk in resp.content.iter_any():
                pending.append(chunk)
                pending_n += len(chunk)
                if not sniffed and pending_n >= _SNIFF:
                    self._sniff(spec, b"".join(pending), resp)
                    sniffed = True
                if pending_n >= self.chunk_size or len(pending) >= _MAX_IOV:
                    await flush()
                if self._bars:
                    file_bar.update(len(chunk))
                    self.total_bar.update(len(chunk))
            if not sniffed and pending:
                self._sniff(spec, b"".join(pending), resp)
        finally:
            try:
                if pending and sniffed:  # keep what arrived before a drop, for the resume
                    await flush()
                if writing is not None:
                    await writing
            finally:
                os.close(fd)

    @staticmethod
    def _sniff(spec: DownloadSpec, head: bytes, resp: aiohttp.ClientResponse) -> None:
        try:
            sniff_head(head, kind=spec.kind, url=spec.url,
                       content_type=resp.headers.get("Content-Type"))
        except VerificationError as exc:
            raise _Retry(str(exc)) from None


def _html_error(spec: DownloadSpec, ctype: str, head: bytes) -> VerificationError:
    try:
        sniff_head(head, kind=spec.kind, url=spec.url, content_type=ctype)
    except VerificationError as exc:
        return exc
    return VerificationError(f"{spec.url}: unexpected Content-Type {ctype}")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text and not isinstance(exc, (_Retry, _Restart)) \
        else (text or type(exc).__name__)


async def download_files(
    specs: Iterable[DownloadSpec],
    dest: str | Path,
    *,
    concurrency: int = 4,
    policy: RetryPolicy | None = None,
    session: aiohttp.ClientSession | None = None,
    quiet: bool = True,
    verify_all: bool = False,
    chunk_size: int = CHUNK_SIZE,
    verify_crc: bool = True,
) -> list[DownloadResult]:
    """Download every spec into ``dest`` with at most ``concurrency`` transfers at once.

    Returns one :class:`DownloadResult` per spec, in order; a failed file does not stop the
    others (check ``result.ok``). Files already recorded in ``dest/manifest.json`` with their
    size and mtime unchanged are skipped without any request (``verify_all`` re-hashes them).

    ``verify_crc`` (default True) inflates every zip member after its download and checks its
    CRC-32 and size against the central directory, so no corrupt archive gets its final name.
    ``verify_crc=False`` checks the zip structure only (:func:`.verify.verify_zip_structure`;
    truncation, splicing, unsafe names and sizes are still caught) and leaves the member CRCs to
    the converter, which inflates every member anyway, checks each CRC-32 and publishes nothing
    for an archive that fails. The CRC pass costs one core per ~50-170 MB/s of compressed
    data, far below the network rate on a fast link.
    """
    specs = list(specs)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("two downloads share a file name")
    policy = policy or RetryPolicy()
    own = session is None
    if own:
        session = make_session(policy, limit=0)
    try:
        dl = Downloader(dest, session=session, concurrency=concurrency, policy=policy,
                        quiet=quiet, verify_all=verify_all, chunk_size=chunk_size,
                        verify_crc=verify_crc)
        try:
            return list(await asyncio.gather(*(dl.fetch(s) for s in specs)))
        finally:
            dl.total_bar.close()
    finally:
        if own:
            await session.close()


def summarize(results: Sequence[DownloadResult]) -> str:
    """One line: how many files were downloaded, skipped and failed, and the bytes moved."""
    done = [r for r in results if r.status == "downloaded"]
    skipped = [r for r in results if r.status == "skipped"]
    failed = [r for r in results if r.status == "failed"]
    moved = sum(r.size for r in done)
    text = (f"{len(done)} downloaded ({moved / 1e6:,.1f} MB), {len(skipped)} already verified, "
            f"{len(failed)} failed")
    if failed:
        text += ": " + ", ".join(r.spec.name for r in failed)
    return text
