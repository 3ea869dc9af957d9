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

import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from isal import isal_zlib

from ..errors import FormatError, VerificationError
from ..ziputil import open_checked_zip

#: compressed bytes read per step
READ_SIZE = 1 << 20
#: largest inflated piece yielded (PACall inflates ~20× and would otherwise make huge pieces)
PIECE_SIZE = 2 << 20
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
