"""Async, resumable, verified downloads.

For every file: one shared :class:`asyncio.Semaphore` bounds the transfers in flight; the body
streams to ``DEST/NAME.part`` in large writes (every 4 MiB or 0.25 s) while its sha256 is
computed; ``NAME.part.json`` (:class:`~.parts.PartMeta`) records the ETag, Last-Modified and size of
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

The steps live in sibling modules: :mod:`.transfer` (the retry loop and one streamed request),
:mod:`.pieces` (ranged downloads), :mod:`.parts` (the ``.part`` file and its record),
:mod:`.retries` (what a failure means, the waits), :mod:`.verify_worker` (the zip CRC pass in
worker processes) and :mod:`.publish` (the manifest: skip, adopt, publish).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from ..errors import AtlasEngineError, ConfigError, VerificationError
from ..progress import bar, progress_enabled
from .http import RetryPolicy, make_session
from .manifest import Manifest, sha256_file
from .parts import CHUNK_SIZE, PartMeta, _complete_part, _discard_part
from .publish import _adopt, _already_verified, _publish
from .retries import _os_error_line, _say
from .transfer import _transfer
from .verify_worker import verify_in_worker

#: Files at least this large are fetched as concurrent ``Range`` pieces (:mod:`.pieces`).
PIECE_THRESHOLD = 512 << 20
#: Pieces per ranged file (at most this many requests in flight for it).
DEFAULT_PIECES = 4


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
            if await _already_verified(self, spec, result):
                pass
            else:
                self.dest.mkdir(parents=True, exist_ok=True)
                try:
                    await make(part)
                    await verify_in_worker(part, spec.kind, self.verify_crc)
                except BaseException:
                    part.unlink(missing_ok=True)
                    raise
                await _publish(self, spec, part, final, result,
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
    async def _fetch(self, spec: DownloadSpec, result: DownloadResult) -> None:
        final = self.dest / spec.name
        part = self.dest / (spec.name + ".part")
        if await _already_verified(self, spec, result):
            return
        if spec.name not in self.manifest.entries and final.exists() and not self.verify_all:
            # a file put here by hand (or by an interrupted run): verify locally, no request
            if await _adopt(self, spec, final, result):
                return
        self.dest.mkdir(parents=True, exist_ok=True)
        retries = 0
        while True:
            body = await _complete_part(part)
            leftover = body is not None
            if body is None:
                body = await _transfer(self, spec, part, result)
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
        await _publish(self, spec, part, final, result, body.sha256)

    def _ranged(self, spec: DownloadSpec) -> bool:
        return self.pieces > 1 and spec.name not in self._single

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
