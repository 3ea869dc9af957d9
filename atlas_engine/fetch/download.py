"""Async, resumable, verified downloads.

For every file: one shared :class:`asyncio.Semaphore` bounds the transfers in flight; the body
streams to ``DEST/NAME.part`` in large writes (every 4 MiB or 0.25 s) while its sha256 is
computed; ``NAME.part.json`` (:class:`PartMeta`) records the ETag, Last-Modified and size of
the version being fetched. A dropped connection or a killed run resumes with
``Range: bytes=N-`` and ``If-Range`` (the ``Content-Range`` must start ``bytes N-`` and the
``206`` must carry the recorded version, otherwise the file restarts from zero, as it does when
the server answers ``200``); a complete ``.part`` left by a killed run is verified where it
lies. 5xx, timeouts and connection errors are retried with exponential backoff and jitter,
429/503 after ``Retry-After`` (long waits announced, ones beyond the policy's limit refused);
an unreachable host fails within seconds with its cause; the byte count must equal
``Content-Length`` (a body without one that fails verification is fetched again); HTML bodies
are refused; zips are checked member by member (CRC-32); only then is ``.part`` renamed to
``NAME`` and the file recorded in ``manifest.json`` (re-runs skip it by name, size and
sha256). A failed file - a full disk included - never appears under its final name and is
reported in one line; the others carry on.

Files of at least ``piece_threshold`` bytes come as concurrent ``Range`` pieces, each resumed from
its own offset (:mod:`.pieces`), with one stream when the server ignores ``Range``.

The zip CRC pass can be left to the converter (``verify_crc=False``): see :func:`download_files`.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp

from ..atomic import atomic_write_bytes
from ..errors import (
    AtlasEngineError,
    ConfigError,
    FetchError,
    HttpStatusError,
    VerificationError,
)
from ..progress import bar, progress_enabled
from .http import (
    TRANSIENT_ERRORS,
    RetryPolicy,
    is_retryable_status,
    make_session,
    parse_retry_after,
    unreachable,
)
from .manifest import Manifest, sha256_file
from .verify import sniff_head, verify_file

#: Bytes gathered from the socket before one write + hash job.
CHUNK_SIZE = 4 << 20
#: Seconds after which the bytes gathered so far are written even if fewer than ``chunk_size``
#: (a slow transfer killed at any moment keeps all but the last fraction of a second).
FLUSH_SECONDS = 0.25
#: Waits at least this long are announced (``Retry-After``, backoff).
ANNOUNCE_WAIT = 10.0
#: Suffix of the record that ties a ``.part`` to one version of the server's file.
META_SUFFIX = ".part.json"
_SNIFF = 64
#: Files at least this large are fetched as concurrent ``Range`` pieces (:mod:`.pieces`).
PIECE_THRESHOLD = 512 << 20
#: Pieces per ranged file (at most this many requests in flight for it).
DEFAULT_PIECES = 4

#: The waits between attempts go through this hook (``Retry-After``, backoff); tests replace it
#: to record the waits asked for instead of sleeping.
sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep


def utcnow() -> datetime:
    """The clock an HTTP-date ``Retry-After`` is measured against (a hook, like :data:`sleep`)."""
    return datetime.now(timezone.utc)
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
            raise ConfigError(f"download name {self.name!r}: expected a plain file name "
                              "(no folder separators, not '.' or '..')")


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


class _GoRanged(Exception):
    """The first answer shows a file to fetch in pieces (its version in ``meta``)."""

    def __init__(self, meta: PartMeta) -> None:
        super().__init__("ranged")
        self.meta = meta


class _NoRanges(Exception):
    """The server answered a piece's ``Range`` with the whole file: fetch it as one stream."""


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


def _truncate(path: Path) -> None:
    with open(path, "wb"):
        pass


@dataclass
class PartMeta:
    """Which version of the server's file a ``.part`` holds the beginning of.

    Written (atomically, before the first body byte) beside ``NAME.part`` as
    ``NAME.part.json`` from the response that started the file: its ``ETag``, ``Last-Modified``
    and full size. A resume sends the strong ETag (else the date) as ``If-Range`` and checks the
    ``206`` it gets against the record, so bytes of two versions are never joined.
    """

    etag: str | None = None
    last_modified: str | None = None
    size: int | None = None
    #: Ranged downloads (:mod:`.pieces`): ``[start, end, done]`` per piece (bytes
    #: ``start:end`` of the file, the first ``done`` of them on disk at ``start``).
    pieces: list[list[int]] | None = None

    @property
    def pieces_complete(self) -> bool:
        return self.pieces is not None and all(d >= e - s for s, e, d in self.pieces)

    def contiguous(self) -> int:
        """Bytes from the start of the file that are on disk without a gap."""
        if self.pieces is None:
            return 0
        end = 0
        for start, stop, done in sorted(self.pieces):
            if start != end:
                break
            end = start + done
            if start + done < stop:
                break
        return end

    @property
    def validator(self) -> str | None:
        """The ``If-Range`` value: a strong ETag, else the Last-Modified date, else None."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    @classmethod
    def from_response(cls, resp: aiohttp.ClientResponse, size: int | None) -> PartMeta:
        return cls(resp.headers.get("ETag"), resp.headers.get("Last-Modified"), size)

    def mismatch(self, resp: aiohttp.ClientResponse, size: int | None) -> str | None:
        """Why ``resp`` (a 206) does not continue this version, or None when it does."""
        etag, modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
        if self.etag and etag and etag != self.etag:
            return f"the server's file changed (ETag {self.etag} -> {etag})"
        if not (self.etag and etag) and self.last_modified and modified \
                and modified != self.last_modified:
            return (f"the server's file changed (Last-Modified {self.last_modified} -> "
                    f"{modified})")
        if self.size is not None and size is not None and size != self.size:
            return f"the server's file changed (size {self.size:,} -> {size:,} bytes)"
        return None


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name[: -len(".part")] + META_SUFFIX)


def load_part_meta(part: Path) -> PartMeta | None:
    """The record beside ``part`` (None when missing or unreadable)."""
    try:
        doc = json.loads(_meta_path(part).read_text("utf-8"))
        size = doc.get("size")
        meta = PartMeta(doc.get("etag"), doc.get("last_modified"),
                        int(size) if size is not None else None)
        pieces = doc.get("pieces")
        if pieces is not None:
            meta.pieces = [[int(a), int(b), int(c)] for a, b, c in pieces]
            if not _pieces_cover(meta.pieces, meta.size):
                return None
        return meta
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _pieces_cover(pieces: list[list[int]], size: int | None) -> bool:
    """Whether ``pieces`` tile ``[0, size)`` in order, each with ``0 <= done <= length``."""
    end = 0
    for start, stop, done in pieces:
        if start != end or stop <= start or not 0 <= done <= stop - start:
            return False
        end = stop
    return size is not None and end == size


def _save_part_meta(part: Path, meta: PartMeta) -> None:
    """Write the record (a few bytes, on the event loop: a thread hop here lets a dropped
    connection's buffered body be discarded before it is read). Written under a unique
    temporary name and renamed into place, not fsynced: it guards against killed processes,
    and a ``.part`` that outlives a power cut with a bad record fails verification and is
    downloaded again."""
    doc: dict[str, Any] = {"etag": meta.etag, "last_modified": meta.last_modified,
                           "size": meta.size}
    if meta.pieces is not None:
        doc["pieces"] = meta.pieces
    atomic_write_bytes(_meta_path(part), json.dumps(doc).encode(), fsync=False)


def _discard_part(part: Path) -> None:
    part.unlink(missing_ok=True)
    _meta_path(part).unlink(missing_ok=True)


def _say(text: str) -> None:
    """Announce something the user would otherwise wonder about (a long wait)."""
    print(text, file=sys.stderr, flush=True)


def _os_error_line(spec: DownloadSpec, exc: OSError) -> str:
    """One line for a local I/O failure (a full disk, a read-only directory)."""
    code = errno.errorcode.get(exc.errno or 0, "")
    where = f" {exc.filename}" if exc.filename else ""
    why = exc.strerror or str(exc) or type(exc).__name__
    text = f"{spec.name}: cannot write{where}: {why}" + (f" [{code}]" if code else "")
    if exc.errno == errno.ENOSPC:
        text += " - free some space and run again (the partial file resumes)"
    return text


@dataclass
class _Body:
    """The outcome of :meth:`Downloader._transfer`: the bytes now in ``.part``."""

    size: int
    sha256: str
    #: False when the server never said how long the body is (no Content-Length): the end of
    #: the connection is then the only end there is, and verification is the judge.
    length_known: bool


class Downloader:
    """Shared state of one batch: session, semaphore, policy, manifest and progress bars."""

    def __init__(self, dest: str | Path, *, session: aiohttp.ClientSession,
                 concurrency: int = 4, policy: RetryPolicy | None = None,
                 quiet: bool = True, verify_all: bool = False,
                 chunk_size: int = CHUNK_SIZE, verify_crc: bool = True,
                 say: Callable[[str], None] | None = None, pieces: int = DEFAULT_PIECES,
                 piece_threshold: int = PIECE_THRESHOLD) -> None:
        if concurrency < 1:
            raise ConfigError(f"concurrency {concurrency!r}: expected at least 1 transfer "
                              "at a time")
        if pieces < 1 or piece_threshold < 1:
            raise ConfigError(f"pieces {pieces!r}, piece_threshold {piece_threshold!r}: "
                              "expected both at least 1")
        #: Pieces per file of at least ``piece_threshold`` bytes (1: always one stream).
        self.pieces = pieces
        self.piece_threshold = piece_threshold
        #: Files whose server ignored ``Range``: fetched as one stream from then on.
        self._single: set[str] = set()
        self.dest = Path(dest)
        self.session = session
        self.semaphore = asyncio.Semaphore(concurrency)
        self.policy = policy or RetryPolicy()
        self.quiet = quiet
        self.verify_all = verify_all
        self.verify_crc = verify_crc
        self.chunk_size = chunk_size
        self.say = say or _say
        self.manifest = Manifest.load(self.dest)
        self._manifest_lock = asyncio.Lock()
        self.total_bar = bar(total=0, desc="total", bytes_=True, quiet=quiet)
        self._bars = progress_enabled(quiet)

    # -- public -----------------------------------------------------------------------------
    async def fetch(self, spec: DownloadSpec) -> DownloadResult:
        """Fetch one file, never raising for a failure of that file (see ``result.error``):
        every failure, a full disk included, becomes one line in ``result.error``."""
        started = time.perf_counter()
        result = DownloadResult(spec, "failed")
        try:
            await self._fetch(spec, result)
        except AtlasEngineError as exc:
            result.status, result.error = "failed", str(exc)
        except OSError as exc:  # local I/O (ENOSPC, EACCES, ...): network errors are retried
            result.status, result.error = "failed", _os_error_line(spec, exc)
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
            if await self._already_verified(spec, result):
                pass
            else:
                self.dest.mkdir(parents=True, exist_ok=True)
                try:
                    await make(part)
                    await verify_in_worker(part, spec.kind, self.verify_crc)
                except BaseException:
                    part.unlink(missing_ok=True)
                    raise
                await self._publish(spec, part, final, result,
                                    await asyncio.to_thread(sha256_file, part))
        except AtlasEngineError as exc:
            result.status, result.error = "failed", str(exc)
        except OSError as exc:
            result.status, result.error = "failed", _os_error_line(spec, exc)
        result.seconds = time.perf_counter() - started
        return result

    async def save_manifest(self) -> None:
        async with self._manifest_lock:
            await asyncio.to_thread(self.manifest.save)

    # -- one file ---------------------------------------------------------------------------
    async def _already_verified(self, spec: DownloadSpec, result: DownloadResult) -> bool:
        """Whether the manifest already holds this file intact, keyed on its name, size and
        sha256 (not on the URL, so a mirror on another port or host counts as the same
        source): size and mtime as recorded → trusted without reading (``verify_all``:
        re-hashed); same size but another mtime (a copy, a restore) → re-hashed and, when the
        sha256 matches, the record is refreshed instead of downloading again."""
        entry = self.manifest.entries.get(spec.name)
        if entry is None or (spec.sha256 and entry.sha256 != spec.sha256.lower()):
            return False
        final = self.dest / spec.name
        intact = await asyncio.to_thread(self.manifest.is_verified, spec.name,
                                         rehash=self.verify_all)
        if not intact and not self.verify_all:
            try:
                same_size = final.stat().st_size == entry.size
            except OSError:
                same_size = False
            if same_size and await asyncio.to_thread(sha256_file, final) == entry.sha256:
                async with self._manifest_lock:
                    self.manifest.record(final, url=entry.url, sha256=entry.sha256,
                                         wkf_id=entry.wkf_id, kind=entry.kind)
                    await asyncio.to_thread(self.manifest.save)
                intact = True
        if intact:
            result.status, result.path = "skipped", final
            result.size, result.sha256 = entry.size, entry.sha256
        return intact

    async def _publish(self, spec: DownloadSpec, part: Path, final: Path,
                       result: DownloadResult, digest: str) -> None:
        os.replace(part, final)
        _meta_path(part).unlink(missing_ok=True)
        async with self._manifest_lock:
            rec = self.manifest.record(final, url=spec.url, sha256=digest, wkf_id=spec.wkf_id,
                                       kind=spec.kind)
            await asyncio.to_thread(self.manifest.save)
        result.status, result.path = "downloaded", final
        result.size, result.sha256 = rec.size, digest

    async def _fetch(self, spec: DownloadSpec, result: DownloadResult) -> None:
        final = self.dest / spec.name
        part = self.dest / (spec.name + ".part")
        if await self._already_verified(spec, result):
            return
        if spec.name not in self.manifest.entries and final.exists() and not self.verify_all:
            # a file put here by hand (or by an interrupted run): verify locally, no request
            if await self._adopt(spec, final, result):
                return
        self.dest.mkdir(parents=True, exist_ok=True)
        retries = 0
        while True:
            body = await self._complete_part(spec, part)
            leftover = body is not None
            if body is None:
                body = await self._transfer(spec, part, result)
            try:
                await verify_in_worker(part, spec.kind, self.verify_crc)
                if spec.sha256 and body.sha256 != spec.sha256.lower():
                    raise VerificationError(f"{spec.url}: SHA-256 {body.sha256} differs from "
                                            f"the published {spec.sha256.lower()}")
            except VerificationError as exc:
                _discard_part(part)  # complete but corrupt: resuming cannot repair it
                if leftover:  # what an earlier run left: download afresh
                    continue
                retries += 1
                if body.length_known or retries >= self.policy.max_attempts:
                    raise
                # no Content-Length: a connection that closed early looked like the end
                self.say(f"{spec.name}: {exc} - the server sent no Content-Length, so the "
                         f"body may have been cut short; downloading it again")
                continue
            break
        await self._publish(spec, part, final, result, body.sha256)

    async def _complete_part(self, spec: DownloadSpec, part: Path) -> _Body | None:
        """A ``.part`` left complete by an interrupted run (killed while it was being
        verified): verified as it is instead of downloaded again."""
        meta = load_part_meta(part)
        if meta is None or meta.size is None or (meta.pieces is not None
                                                 and not meta.pieces_complete):
            return None
        try:
            size = part.stat().st_size
        except OSError:
            return None
        if size != meta.size:
            return None
        digest = await asyncio.to_thread(sha256_file, part)
        return _Body(size, digest, True)

    async def _adopt(self, spec: DownloadSpec, final: Path, result: DownloadResult) -> bool:
        try:
            await verify_in_worker(final, spec.kind, self.verify_crc)
        except VerificationError:
            return False
        digest = await asyncio.to_thread(sha256_file, final)
        if spec.sha256 and digest != spec.sha256.lower():
            return False
        async with self._manifest_lock:
            entry = self.manifest.record(final, url=spec.url, sha256=digest,
                                         wkf_id=spec.wkf_id, kind=spec.kind)
            await asyncio.to_thread(self.manifest.save)
        result.status, result.path, result.size, result.sha256 = "skipped", final, entry.size, digest
        return True

    def _ranged(self, spec: DownloadSpec) -> bool:
        return self.pieces > 1 and spec.name not in self._single

    def _resume_point(self, part: Path, spec: DownloadSpec) -> tuple[int, PartMeta | None]:
        """Bytes of ``part`` that may be continued, and the version they belong to. A
        ``.part`` without its record (left by an older engine, or written by hand) cannot be
        tied to a version of the server's file and starts again from zero. A ranged ``.part``
        (its record lists pieces) is returned as it is when pieces are still wanted, else cut
        to the bytes it holds from the start without a gap and continued as one stream."""
        try:
            offset = part.stat().st_size
        except FileNotFoundError:
            return 0, None
        meta = load_part_meta(part)
        if meta is not None and meta.pieces is not None:
            if self._ranged(spec) and offset == meta.size:
                return offset, meta
            offset = min(offset, meta.contiguous())
            os.truncate(part, offset)
            meta.pieces = None
            _save_part_meta(part, meta)
        if offset and (meta is None or (meta.size is not None and offset > meta.size)):
            _discard_part(part)
            return 0, None
        return offset, meta

    async def _transfer(self, spec: DownloadSpec, part: Path, result: DownloadResult) -> _Body:
        """Bring ``part`` to the complete body of one version of the server's file."""
        policy = self.policy
        failures = unreached = 0
        state: _Hash | None = None
        file_bar = bar(total=None, desc=spec.name[:40], bytes_=True, quiet=self.quiet)
        try:
            while True:
                offset, meta = self._resume_point(part, spec)
                if meta is not None and meta.pieces is not None:
                    from .pieces import transfer_pieces

                    try:
                        async with self.semaphore:
                            return await transfer_pieces(self, spec, part, meta, result,
                                                         file_bar)
                    except _NoRanges as exc:
                        self.say(f"{spec.name}: {exc}; downloading it as one stream")
                        self._single.add(spec.name)
                        _discard_part(part)
                        state = None
                        continue
                    except _Restart as exc:
                        self.say(f"{spec.name}: {exc}; starting again from byte 0")
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
                    async with self.semaphore:
                        result.requests += 1
                        known = await self._attempt(spec, part, offset, meta, state, file_bar)
                    return _Body(state.n, state.h.hexdigest(), known)
                except _GoRanged as exc:
                    self._start_pieces(part, exc.meta)
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
                await sleep(retry_wait(spec, error, wait, failures, policy, self.say))
        finally:
            file_bar.close()

    def _start_pieces(self, part: Path, meta: PartMeta) -> None:
        """Lay out a ranged ``.part``: the file's full size (sparse) and the piece table."""
        assert meta.size is not None
        n = max(1, min(self.pieces, meta.size))
        step = -(-meta.size // n)
        meta.pieces = [[a, min(meta.size, a + step), 0] for a in range(0, meta.size, step)]
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0),
                     0o644)
        try:
            os.ftruncate(fd, meta.size)
        finally:
            os.close(fd)
        _save_part_meta(part, meta)

    def _wants_pieces(self, spec: DownloadSpec, resp: aiohttp.ClientResponse,
                      total: int | None) -> bool:
        """Whether a first ``200`` announces a file to fetch in pieces: pieces wanted, a known
        length at least the threshold, a validator to tie the pieces to one version, and no
        ``Accept-Ranges: none``."""
        if not self._ranged(spec) or total is None or total < self.piece_threshold:
            return False
        if resp.headers.get("Accept-Ranges", "").strip().lower() == "none":
            return False
        return PartMeta.from_response(resp, total).validator is not None

    def _grow_total(self, n: int) -> None:
        self.total_bar.total = (self.total_bar.total or 0) + n
        self.total_bar.refresh()

    async def _attempt(self, spec: DownloadSpec, part: Path, offset: int,
                       meta: PartMeta | None, state: _Hash, file_bar) -> bool:
        """One request; returns whether the body's length was known."""
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if meta is not None and meta.validator:
                headers["If-Range"] = meta.validator
        async with self.session.get(spec.url, headers=headers) as resp:
            status = resp.status
            if is_retryable_status(status):
                wait = parse_retry_after(resp.headers.get("Retry-After"), now=utcnow()) \
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
            if offset == 0 and status == 200 and self._wants_pieces(spec, resp, total):
                raise _GoRanged(PartMeta.from_response(resp, total))
            if offset == 0:
                _save_part_meta(part, PartMeta.from_response(resp, total))
            if total is not None and file_bar.total != total:
                self._grow_total(total - (file_bar.total or 0))
                file_bar.total = total
                file_bar.refresh()
            await self._stream(spec, resp, part, offset, state, file_bar)
        if total is not None and state.n != total:
            if state.n > total:
                raise _Restart(f"received {state.n:,} bytes, more than the {total:,} announced")
            raise _Retry(f"body truncated: {state.n:,} of {total:,} bytes")
        return total is not None

    async def _stream(self, spec: DownloadSpec, resp: aiohttp.ClientResponse, part: Path,
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
                    self._sniff(spec, b"".join(pending), resp)
                    sniffed = True
                if sniffed and (pending_n >= self.chunk_size or len(pending) >= _MAX_IOV
                                or loop.time() - last_flush >= FLUSH_SECONDS):
                    await flush()
                if self._bars:
                    file_bar.update(len(chunk))
                    self.total_bar.update(len(chunk))
            if not sniffed and pending:  # a body shorter than the sniffed head
                self._sniff(spec, b"".join(pending), resp)
                sniffed = True
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
    pieces: int = DEFAULT_PIECES,
    piece_threshold: int = PIECE_THRESHOLD,
) -> list[DownloadResult]:
    """Download every spec into ``dest`` with at most ``concurrency`` transfers at once.

    A failed file does not stop the others and does not raise (check ``result.ok``). Files
    already recorded in ``dest/manifest.json`` with their size and mtime unchanged are skipped
    without any request (``verify_all`` re-hashes them). Every file is resumable (a ``.part``
    tied to one version of the server's file) and verified before it gets its final name.

    Parameters
    ----------
    specs : iterable of DownloadSpec
        The files to fetch: URL, the name each is saved under (unique), how it is checked
        (``"zip"``, ``"json"`` or ``"raw"``; by default from the name) and, where
        known, its well-known file id and published SHA-256.
    dest : str or Path
        The folder the files are saved in (created when missing).
    concurrency : int, default 4
        Files transferred at once (at least 1).
    policy : RetryPolicy, optional
        Retries, backoff and timeouts (default :class:`~atlas_engine.fetch.http.RetryPolicy`).
    session : aiohttp.ClientSession, optional
        The session to send the requests through (left open); by default one is made for the
        call and closed at its end.
    quiet : bool, default True
        Show no progress bars.
    verify_all : bool, default False
        Re-hash the files already recorded in the manifest instead of trusting their size and
        modification time.
    chunk_size : int, default 4 MiB
        Bytes gathered from the socket before one write and hash step.
    verify_crc : bool, default True
        Inflate every zip member after its download and check its CRC-32 and size against the
        central directory, so no corrupt archive gets its final name. False checks the zip
        structure only (:func:`.verify.verify_zip_structure`; truncation, splicing, unsafe
        names and sizes are still caught) and leaves the member CRCs to the converter, which
        inflates every member anyway, checks each CRC-32 and publishes nothing for an archive
        that fails. The CRC pass costs one core per ~50-170 MB/s of compressed data, far below
        the network rate on a fast link.
    pieces : int, default 4
        Concurrent ``Range`` requests per file of at least ``piece_threshold`` bytes, each
        resumable on its own (:mod:`.pieces`); 1 fetches every file as one stream.
    piece_threshold : int, default 512 MiB
        Size in bytes from which a file is fetched in ``pieces``.

    Returns
    -------
    list of DownloadResult
        One per spec, in order: ``status`` (``"downloaded"``, ``"skipped"`` or ``"failed"``),
        ``path``, ``size``, ``sha256`` and, for a failure, ``error`` (one line).

    Raises
    ------
    ConfigError
        Two specs share a file name, or ``concurrency``, ``pieces`` or ``piece_threshold`` is
        below 1.
    """
    specs = list(specs)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"two downloads share the file name {dup[0]!r}: expected one "
                          "download per file name")
    policy = policy or RetryPolicy()
    own = session is None
    if own:
        session = make_session(policy, limit=0)
    try:
        dl = Downloader(dest, session=session, concurrency=concurrency, policy=policy,
                        quiet=quiet, verify_all=verify_all, chunk_size=chunk_size,
                        verify_crc=verify_crc, pieces=pieces, piece_threshold=piece_threshold)
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


def retry_wait(spec: Any, error: BaseException, wait: float | None, failures: int,
               policy: Any, say: Any) -> float:
    """Seconds to wait before the next attempt at ``spec`` after ``error``: the server's
    Retry-After (``wait``; one longer than ``policy.max_retry_after`` fails the file) or the
    policy's backoff; a wait of :data:`ANNOUNCE_WAIT` s or more is announced through ``say``."""
    if wait is not None and wait > policy.max_retry_after:
        raise FetchError(f"{spec.url}: {_describe(error)} with Retry-After {wait:,.0f} s, "
                         f"longer than the {policy.max_retry_after:,.0f} s this fetch waits "
                         f"- try again later")
    if wait is None:
        wait = policy.backoff(max(1, failures))
    if wait >= ANNOUNCE_WAIT:
        say(f"{spec.name}: {_describe(error)}; waiting {wait:,.0f} s before trying again")
    return wait
