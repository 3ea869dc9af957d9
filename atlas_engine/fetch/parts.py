"""The ``.part`` file a download is written to, and its record ``NAME.part.json``.

Write sizes, the running sha256 of a ``.part`` (:class:`_Hash`), the record that ties it to one
version of the server's file (:class:`PartMeta`, with the piece table of a ranged download), and
the bookkeeping around both: where a ``.part`` left by an earlier run resumes
(:func:`_resume_point`), the layout of a ranged one (:func:`_start_pieces`), a complete one taken
as it is (:func:`_complete_part`), and its removal (:func:`_discard_part`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ..atomic import atomic_write_bytes
from .manifest import sha256_file

#: Bytes gathered from the socket before one write + hash job.
CHUNK_SIZE = 4 << 20
#: Seconds after which the bytes gathered so far are written even if fewer than ``chunk_size``
#: (a slow transfer killed at any moment keeps all but the last fraction of a second).
FLUSH_SECONDS = 0.25
#: Most chunks handed to one ``os.writev`` (below every platform's IOV_MAX).
_MAX_IOV = 512
#: Suffix of the record that ties a ``.part`` to one version of the server's file.
META_SUFFIX = ".part.json"


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


@dataclass
class _Body:
    """The outcome of :func:`.transfer._transfer`: the bytes now in ``.part``."""

    size: int
    sha256: str
    #: False when the server never said how long the body is (no Content-Length): the end of
    #: the connection is then the only end there is, and verification is the judge.
    length_known: bool


def _resume_point(part: Path, ranged: bool) -> tuple[int, PartMeta | None]:
    """Bytes of ``part`` that may be continued, and the version they belong to. A
    ``.part`` without its record (left by an older engine, or written by hand) cannot be
    tied to a version of the server's file and starts again from zero. A ranged ``.part``
    (its record lists pieces) is returned as it is when pieces are still wanted
    (``ranged``), else cut to the bytes it holds from the start without a gap and continued as
    one stream."""
    try:
        offset = part.stat().st_size
    except FileNotFoundError:
        return 0, None
    meta = load_part_meta(part)
    if meta is not None and meta.pieces is not None:
        if ranged and offset == meta.size:
            return offset, meta
        offset = min(offset, meta.contiguous())
        os.truncate(part, offset)
        meta.pieces = None
        _save_part_meta(part, meta)
    if offset and (meta is None or (meta.size is not None and offset > meta.size)):
        _discard_part(part)
        return 0, None
    return offset, meta


def _start_pieces(part: Path, meta: PartMeta, pieces: int) -> None:
    """Lay out a ranged ``.part``: the file's full size (sparse) and the piece table
    (at most ``pieces`` pieces)."""
    assert meta.size is not None
    n = max(1, min(pieces, meta.size))
    step = -(-meta.size // n)
    meta.pieces = [[a, min(meta.size, a + step), 0] for a in range(0, meta.size, step)]
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0),
                 0o644)
    try:
        os.ftruncate(fd, meta.size)
    finally:
        os.close(fd)
    _save_part_meta(part, meta)


async def _complete_part(part: Path) -> _Body | None:
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
