"""Checks a downloaded body must pass before it gets its final name.

* :func:`sniff_head` - the first bytes: an HTML page (Allen answers ``200`` with a "site
  unavailable" page) is refused, and a zip must start with the local-header magic ``PK\\x03\\x04``.
* :func:`verify_zip` - the archive's structure and member names/sizes
  (:func:`atlas_engine.ziputil.open_checked_zip`), then every member inflated in full and its
  CRC-32 and size compared with the central directory. Deflate members are inflated with ISA-L
  (``isal_zlib``), several times faster than :mod:`zlib`; other methods fall back to
  :mod:`zipfile`.
* :func:`verify_zip_structure` - the same structure checks without inflating: every member's
  local header (magic, name) and data lie inside the file, in order, without overlaps and before
  the central directory. Used when the member CRCs are left to the converter, which inflates
  every member anyway and checks each CRC-32 before it publishes anything.
* :func:`verify_json` - JSON that parses and, for an Allen envelope, says ``success``.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from isal import isal_zlib

from ..errors import VerificationError
from ..ziputil import open_checked_zip, why_not_a_zip

ZIP_MAGIC = b"PK\x03\x04"
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_READ = 1 << 20
_OUT = 16 << 20


def looks_like_html(head: bytes) -> bool:
    """True for a body that starts (after whitespace / BOM) with ``<`` - HTML or XML."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:15].lower()
    return text.startswith((b"<!doctype", b"<html", b"<")) if text else False


def sniff_head(head: bytes, *, kind: str, url: str, content_type: str | None = None) -> None:
    """Refuse an HTML body or, for ``kind == "zip"``, a body without the zip magic."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype == "text/html" or looks_like_html(head):
        preview = head[:80].decode("utf-8", "replace").replace("\n", " ")
        raise VerificationError(
            f"{url}: server sent an HTML page instead of the file (Content-Type {ctype or '?'};"
            f" starts {preview!r}) - the Allen site may be down, try again later")
    if kind == "zip" and len(head) >= 4 and head[:4] != ZIP_MAGIC:
        raise VerificationError(
            f"{url}: body is not a zip archive (starts {head[:8]!r}, expected {ZIP_MAGIC!r})")


def _check_member_isal(fh, info: zipfile.ZipInfo, path: Path, file_size: int) -> None:
    fh.seek(info.header_offset)
    raw = fh.read(_LOCAL_HEADER.size)
    if len(raw) != _LOCAL_HEADER.size:
        raise VerificationError(f"{path}: member {info.filename!r}: local header truncated")
    fields = _LOCAL_HEADER.unpack(raw)
    if fields[0] != ZIP_MAGIC:
        raise VerificationError(f"{path}: member {info.filename!r}: bad local header magic")
    start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
    if start + info.compress_size > file_size:
        raise VerificationError(f"{path}: member {info.filename!r} runs past the end of the file")
    fh.seek(start)
    remaining = info.compress_size
    crc = 0
    produced = 0
    limit = info.file_size
    inflater = isal_zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
    while remaining > 0:
        data = fh.read(min(_READ * 4, remaining))
        if not data:
            raise VerificationError(f"{path}: member {info.filename!r} is truncated")
        remaining -= len(data)
        while data:
            if inflater is None:
                out, data = data, b""
            else:
                try:
                    # bounded output per call: a zip bomb is caught after at most _OUT extra bytes
                    out = inflater.decompress(data, _OUT)
                except isal_zlib.error as exc:
                    raise VerificationError(
                        f"{path}: member {info.filename!r}: corrupt deflate data ({exc})"
                    ) from None
                data = inflater.unconsumed_tail
            produced += len(out)
            if produced > limit:
                raise VerificationError(
                    f"{path}: member {info.filename!r} inflates past its declared "
                    f"{limit:,} bytes")
            crc = isal_zlib.crc32(out, crc)
    if inflater is not None:
        tail = inflater.flush()
        produced += len(tail)
        crc = isal_zlib.crc32(tail, crc)
    if produced != info.file_size:
        raise VerificationError(
            f"{path}: member {info.filename!r} inflates to {produced:,} bytes, central directory says {info.file_size:,}")
    if (crc & 0xFFFFFFFF) != info.CRC:
        raise VerificationError(
            f"{path}: member {info.filename!r} fails its CRC check "
            f"(computed {crc & 0xFFFFFFFF:08x}, stored {info.CRC:08x})")


def _check_member_zipfile(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> None:
    produced = 0
    try:
        with zf.open(info) as member:
            while block := member.read(_READ):
                produced += len(block)
                if produced > info.file_size:
                    raise VerificationError(
                        f"{path}: member {info.filename!r} inflates past its declared size")
    except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
        raise VerificationError(f"{path}: member {info.filename!r}: {exc}") from None


def _open_zip(path: Path) -> zipfile.ZipFile:
    """Check the zip magic, then open with the zip-slip / zip-bomb checks."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head != ZIP_MAGIC:
        raise VerificationError(f"{path}: {why_not_a_zip(path)}")
    return open_checked_zip(path)


def verify_zip(path: str | Path, *, use_isal: bool = True) -> list[str]:
    """Check a zip's structure and every member's CRC-32; return the member names.

    Raises :class:`~atlas_engine.errors.UnsafeArchiveError` for zip-slip / zip-bomb archives
    and :class:`~atlas_engine.errors.VerificationError` for anything corrupt.
    """
    path = Path(path)
    zf = _open_zip(path)
    with zf:
        infos = zf.infolist()
        size = path.stat().st_size
        with open(path, "rb", buffering=0) as fh:
            for info in infos:
                if info.is_dir():
                    continue
                plain = info.compress_type in (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED)
                if use_isal and plain and not info.flag_bits & 0x1:
                    _check_member_isal(fh, info, path, size)
                else:
                    _check_member_zipfile(zf, info, path)
    return [i.filename for i in infos]


def verify_zip_structure(path: str | Path) -> list[str]:
    """Check a zip's structure without inflating it; return the member names.

    Everything :func:`verify_zip` checks except the CRC-32 and the inflated size of each
    member (those need the member inflated): the zip magic, the central directory
    (:func:`~atlas_engine.ziputil.open_checked_zip`: names, declared sizes, compression ratio),
    and for every member its local header (magic, same name as the central directory) and
    compressed data inside the file, in order, not overlapping the next member or the central
    directory. A truncated or spliced body fails here.
    """
    path = Path(path)
    zf = _open_zip(path)
    with zf:
        infos = sorted(zf.infolist(), key=lambda i: i.header_offset)
        cd_start = zf.start_dir
    end_prev = 0
    with open(path, "rb", buffering=0) as fh:
        for info in infos:
            name = info.filename
            if info.header_offset < end_prev:
                raise VerificationError(f"{path}: member {name!r} overlaps the member before it")
            fh.seek(info.header_offset)
            raw = fh.read(_LOCAL_HEADER.size)
            if len(raw) != _LOCAL_HEADER.size or raw[:4] != ZIP_MAGIC:
                raise VerificationError(f"{path}: member {name!r}: bad or truncated local header")
            fields = _LOCAL_HEADER.unpack(raw)
            local_name = fh.read(fields[9])
            if local_name != info.orig_filename.encode("utf-8" if info.flag_bits & 0x800
                                                       else "cp437"):
                raise VerificationError(f"{path}: member {name!r}: local header names "
                                        f"{local_name[:60]!r}")
            start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
            end_prev = start + info.compress_size
            if end_prev > cd_start:
                raise VerificationError(f"{path}: member {name!r} runs into the central "
                                        "directory (truncated or spliced archive)")
    return [i.filename for i in zf.infolist()]


def verify_json(path: str | Path, *, envelope: bool = True) -> None:
    """The file parses as JSON; an Allen envelope must have ``success`` true."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            doc = json.load(fh)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VerificationError(f"{path}: not valid JSON ({exc})") from None
    if envelope and isinstance(doc, dict) and "success" in doc and not doc["success"]:
        raise VerificationError(f"{path}: Allen API answered success=false: {doc.get('msg')}")


def verify_file(path: str | Path, kind: str, *, crc: bool = True) -> None:
    """Dispatch on ``kind``: ``zip`` → :func:`verify_zip` (``crc=False``:
    :func:`verify_zip_structure`), ``json`` → :func:`verify_json`, anything else → only the HTML
    check on its first bytes."""
    if kind == "zip":
        if crc:
            verify_zip(path)
        else:
            verify_zip_structure(path)
    elif kind == "json":
        verify_json(path)
    else:
        with open(path, "rb") as fh:
            head = fh.read(512)
        sniff_head(head, kind=kind, url=str(path))
