"""Stream the bytes of a CSV straight out of a zip member (or a plain file), with fast inflate.

A zip member's compressed bytes are read from the archive at the offset its local file header
gives and inflated with ISA-L (``isal.isal_zlib``, ~3× Python's zlib) on a raw deflate stream.
The CRC-32 and the uncompressed size recorded in the central directory are checked at the end
of the member, so a corrupt archive never yields silently wrong data; a member that inflates
beyond its declared size is stopped as soon as it does (whatever it claims, the inflated bytes
never exceed what the central directory declares, itself bounded by the zip-bomb checks of
:func:`~atlas_engine.ziputil.open_checked_zip`).
"""

from __future__ import annotations

import mmap
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from isal import isal_zlib

from ..errors import FormatError, VerificationError
from ..ziputil import open_checked_zip

#: compressed bytes read per step
READ_SIZE = 1 << 20
#: largest inflated piece yielded (PACall inflates ~20× and would otherwise make huge pieces)
PIECE_SIZE = 2 << 20
#: pieces of a mapped file kept in this process's pages behind the one last handed out: the
#: parser's queue ahead of it (``memplan.StreamPlan.depth``, 4), the piece it parses and one
#: more (see :meth:`MemberSource.iter_pieces`; a piece dropped early is read back, not lost)
MAPPED_LAG = 6
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
#: the UTF-8 byte-order mark some editors put at the start of a file (accepted and dropped)
BOM = b"\xef\xbb\xbf"
#: largest table read whole into memory (Probes.csv is ~10 MB at full size; the matrices are
#: streamed, never read whole)
MAX_TABLE_BYTES = 512 * 2**20


@dataclass(frozen=True)
class MemberSource:
    """A CSV to stream: ``member`` inside the zip ``archive``, or the plain file ``archive``
    when ``member`` is ``None`` (abagen's extracted folders)."""

    archive: Path
    member: str | None = None

    @property
    def display(self) -> str:
        """The name used in error messages: ``path/to.zip:Member.csv`` or the file path."""
        return f"{self.archive}:{self.member}" if self.member else str(self.archive)

    def size(self) -> int:
        """Uncompressed size in bytes."""
        if self.member is None:
            return self.archive.stat().st_size
        with open_checked_zip(self.archive) as zf:
            return _info(zf, self).file_size

    def read_bytes(self, max_bytes: int = MAX_TABLE_BYTES) -> bytes:
        """The whole (small) file, CRC-checked; refused when it is (or inflates to) more than
        ``max_bytes``."""
        size = self.size()
        if size > max_bytes:
            raise FormatError(self.display, f"{size:,} bytes, too large for a table",
                              expected=f"at most {max_bytes:,} bytes")
        parts = []
        got = 0
        for piece in self.iter_chunks():
            got += len(piece)
            if got > max_bytes:
                raise FormatError(self.display, f"more than {max_bytes:,} bytes, too large "
                                  "for a table", expected=f"at most {max_bytes:,} bytes")
            parts.append(piece)
        return b"".join(parts)

    def iter_chunks(self, read_size: int = READ_SIZE, piece_size: int = PIECE_SIZE
                    ) -> Iterator[bytes]:
        """Yield the uncompressed bytes in pieces of at most ``piece_size`` bytes."""
        if self.member is None:
            with open(self.archive, "rb") as fh:
                while piece := fh.read(min(read_size, piece_size)):
                    yield piece
            return
        yield from _iter_member(self, read_size, piece_size)

    def iter_pieces(self, piece_size: int = PIECE_SIZE) -> Iterator[bytes | MappedPiece]:
        """The bytes in pieces of at most ``piece_size``, for the block parsers
        (:func:`~.blockparse.line_regions`): a plain file's as :class:`MappedPiece` views of
        the file mapped into memory (parsed where the page cache holds them: no copy into
        the process: 0.35 s of copying for a 940 MB file here), a zip member's as
        :meth:`iter_chunks` inflates them. A file that cannot be mapped (a pipe, a file
        system without ``mmap``) is read as :meth:`iter_chunks` reads it.

        A mapped file must keep its size while it is parsed: truncated under the parser by
        another process, the operating system stops this one (``SIGBUS``) as it would
        polars or pyarrow reading a mapped file; the store is left as it was (conversion
        publishes nothing half-written)."""
        if self.member is not None:
            yield from self.iter_chunks(piece_size=piece_size)
            return
        try:
            with open(self.archive, "rb") as fh:
                size = fh.seek(0, 2)
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        except (OSError, ValueError):
            yield from self.iter_chunks(piece_size=piece_size)
            return
        if mm is None:
            return
        advise = getattr(mm, "madvise", None)
        if advise is not None:
            advise(mmap.MADV_SEQUENTIAL)
        # pieces parsed long ago are dropped from this process's pages (the page cache keeps
        # them; a piece still in use is read back from it), so the mapped file does not add
        # its size to the resident memory: at most MAPPED_LAG pieces stay mapped
        drop = advise is not None and hasattr(mmap, "MADV_DONTNEED")
        for a in range(0, size, piece_size):
            yield MappedPiece(mm, a, min(size, a + piece_size))
            old = a - MAPPED_LAG * piece_size
            if drop and old >= 0:
                start = old - old % mmap.PAGESIZE
                advise(mmap.MADV_DONTNEED, start, min(size, old + piece_size) - start)


class MappedPiece:
    """Bytes ``a:b`` of a memory-mapped file, searched and viewed in place: what
    :func:`~.blockparse.line_regions` needs of a piece (``len``, ``find``, ``rfind``,
    ``startswith``, slices as ``bytes`` for the few bytes it carries over, and
    :meth:`view`). The map is unmapped when the last piece and view of it are gone."""

    __slots__ = ("_mm", "a", "b")

    def __init__(self, mm: mmap.mmap, a: int, b: int) -> None:
        self._mm, self.a, self.b = mm, a, b

    def __len__(self) -> int:
        return self.b - self.a

    def find(self, sub: bytes, start: int = 0) -> int:
        i = self._mm.find(sub, self.a + start, self.b)
        return i - self.a if i >= 0 else -1

    def rfind(self, sub: bytes, start: int = 0) -> int:
        i = self._mm.rfind(sub, self.a + start, self.b)
        return i - self.a if i >= 0 else -1

    def startswith(self, prefix: bytes) -> bool:
        return self[:len(prefix)] == prefix

    def after(self, n: int) -> MappedPiece:
        """The piece without its first ``n`` bytes."""
        return MappedPiece(self._mm, min(self.a + n, self.b), self.b)

    def __getitem__(self, key: slice) -> bytes:
        start, stop, _ = key.indices(len(self))
        return self._mm[self.a + start:self.a + max(start, stop)]

    def view(self) -> np.ndarray:
        """The bytes as a read-only uint8 array over the map (no copy)."""
        return np.frombuffer(self._mm, np.uint8, count=len(self), offset=self.a)


def _info(zf: zipfile.ZipFile, src: MemberSource) -> zipfile.ZipInfo:
    try:
        return zf.getinfo(src.member or "")
    except KeyError:
        names = ", ".join(n for n in zf.namelist())
        raise FormatError(src.archive, f"missing member {src.member!r}",
                          expected=f"{src.member} in the archive (it holds: {names})") from None


def _iter_member(src: MemberSource, read_size: int, piece_size: int) -> Iterator[bytes]:
    zf = open_checked_zip(src.archive)
    try:
        info = _info(zf, src)
    finally:
        zf.close()
    if info.flag_bits & 0x1:
        raise FormatError(src.display, "member is encrypted", expected="an unencrypted member")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise FormatError(src.display, f"unsupported compression method {info.compress_type}",
                          expected="stored or deflated")
    with open(src.archive, "rb") as fh:
        fh.seek(info.header_offset)
        head = fh.read(_LOCAL_HEADER.size)
        if len(head) != _LOCAL_HEADER.size:
            raise VerificationError(f"{src.display}: truncated local file header")
        fields = _LOCAL_HEADER.unpack(head)
        if fields[0] != b"PK\x03\x04":
            raise VerificationError(f"{src.display}: bad local file header signature")
        name_len, extra_len = fields[9], fields[10]
        fh.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
        remaining = info.compress_size
        crc = 0
        produced = 0
        limit = info.file_size

        def too_long() -> VerificationError:
            return VerificationError(f"{src.display}: inflates beyond the {limit:,} bytes the "
                                     "archive declares for it (damaged or forged archive)")

        inflater = (isal_zlib.decompressobj(-15)
                    if info.compress_type == zipfile.ZIP_DEFLATED else None)
        while remaining > 0:
            raw = fh.read(min(read_size, remaining))
            if not raw:
                raise VerificationError(
                    f"{src.display}: archive ends {remaining:,} bytes before the member does")
            remaining -= len(raw)
            if inflater is None:
                for k in range(0, len(raw), piece_size):
                    out = raw[k:k + piece_size]
                    crc = isal_zlib.crc32(out, crc)
                    produced += len(out)
                    if produced > limit:
                        raise too_long()
                    yield out
                continue
            while raw:
                try:
                    out = inflater.decompress(raw, piece_size)
                except isal_zlib.error as exc:
                    raise VerificationError(f"{src.display}: corrupt deflate data ({exc})") from None
                raw = inflater.unconsumed_tail
                if out:
                    crc = isal_zlib.crc32(out, crc)
                    produced += len(out)
                    if produced > limit:
                        raise too_long()
                    yield out
                elif raw:
                    break  # nothing more comes out of this input (end of the deflate stream)
        if inflater is not None:
            tail = inflater.flush()
            if tail:
                crc = isal_zlib.crc32(tail, crc)
                produced += len(tail)
                if produced > limit:
                    raise too_long()
                yield tail
    if produced != info.file_size:
        raise VerificationError(
            f"{src.display}: inflated to {produced:,} bytes, the archive says {info.file_size:,}")
    if (crc & 0xFFFFFFFF) != info.CRC:
        raise VerificationError(
            f"{src.display}: CRC-32 mismatch ({crc & 0xFFFFFFFF:08x} != {info.CRC:08x})")
