"""Zip safety shared by everything that opens an archive (fetch verification, conversion).

An archive is refused when a member could escape its destination on extraction (absolute path,
drive letter, ``..`` component) or when its declared sizes mark a zip bomb (an absurd
uncompressed size, or a compression ratio far beyond what CSV text reaches).
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from .errors import UnsafeArchiveError

#: Largest uncompressed member accepted. The largest real AHBA member is about 1 GB.
MAX_MEMBER_SIZE = 32 * 2**30
#: Largest total uncompressed size of one archive.
MAX_TOTAL_SIZE = 64 * 2**30
#: Largest compression ratio accepted for members above :data:`RATIO_MIN_SIZE`. CSV of floats
#: compresses ~2.5:1 and 0/1 PACall matrices ~10-50:1; deflate's ceiling is ~1032:1.
MAX_RATIO = 400.0
RATIO_MIN_SIZE = 1 << 20


def unsafe_member_reason(name: str) -> str | None:
    """Why extracting a member named ``name`` would be unsafe, or ``None`` if it is fine."""
    if not name or "\x00" in name:
        return "empty or NUL-containing name"
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or PureWindowsPath(name).drive or PureWindowsPath(name).is_absolute():
        return "absolute path"
    if any(part == ".." for part in posix.parts):
        return "'..' component escapes the destination"
    return None


def check_zip_members(
    zf: zipfile.ZipFile,
    source: str | Path,
    *,
    max_member_size: int = MAX_MEMBER_SIZE,
    max_total_size: int = MAX_TOTAL_SIZE,
    max_ratio: float = MAX_RATIO,
) -> list[zipfile.ZipInfo]:
    """Check every member's name and declared sizes; return the infos or raise
    :class:`UnsafeArchiveError` naming the archive and member."""
    infos = zf.infolist()
    total = 0
    for info in infos:
        reason = unsafe_member_reason(info.filename)
        if reason:
            raise UnsafeArchiveError(f"{source}: member {info.filename!r} refused: {reason}")
        if info.file_size > max_member_size:
            raise UnsafeArchiveError(
                f"{source}: member {info.filename!r} declares {info.file_size:,} bytes "
                f"uncompressed (limit {max_member_size:,}): refusing a possible zip bomb"
            )
        if info.file_size > RATIO_MIN_SIZE and info.compress_size > 0:
            ratio = info.file_size / info.compress_size
            if ratio > max_ratio:
                raise UnsafeArchiveError(
                    f"{source}: member {info.filename!r} has compression ratio {ratio:.0f}:1 "
                    f"(limit {max_ratio:.0f}:1): refusing a possible zip bomb"
                )
        total += info.file_size
    if total > max_total_size:
        raise UnsafeArchiveError(
            f"{source}: members declare {total:,} bytes in all (limit {max_total_size:,})"
        )
    return infos


def why_not_a_zip(path: str | Path, detail: str | None = None) -> str:
    """What a file that does not open as a zip actually is, in words a user can act on:
    empty, an HTML page (a web server's error or maintenance page saved in place of the
    file), a zip cut short (no end-of-central-directory record: an interrupted download), or
    something else (its first bytes). ``detail`` is :mod:`zipfile`'s own complaint, if any."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
            size = fh.seek(0, 2)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if not head:
        return "the file is empty"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")) or \
            b"<html" in text:
        preview = head[:60].decode("utf-8", "replace").replace("\n", " ")
        return (f"this is an HTML page, not a zip (starts {preview!r}): the server sent an "
                "error page in place of the file - download it again")
    if head.startswith(b"PK\x03\x04"):
        if detail and "not a zip file" not in detail.lower():
            return f"the zip is damaged ({detail})"
        return (f"the zip is truncated ({size:,} bytes and no end-of-central-directory "
                "record): an interrupted download - download it again")
    return f"not a zip archive (starts {head[:8]!r}, expected b'PK\\x03\\x04')"


def open_checked_zip(path: str | Path) -> zipfile.ZipFile:
    """Open ``path`` as a zip and run :func:`check_zip_members`; the caller closes it."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise UnsafeArchiveError(
            f"{path}: not a valid zip archive: {why_not_a_zip(path, str(exc))}") from None
    try:
        check_zip_members(zf, path)
    except BaseException:
        zf.close()
        raise
    return zf


def safe_extract(zf: zipfile.ZipFile, member: str, dest: str | Path) -> Path:
    """Extract one checked member under ``dest`` (re-checking that it stays inside)."""
    reason = unsafe_member_reason(member)
    if reason:
        raise UnsafeArchiveError(f"member {member!r} refused: {reason}")
    dest = Path(dest).resolve()
    target = (dest / member.replace("\\", "/")).resolve()
    if dest not in target.parents and target != dest:
        raise UnsafeArchiveError(f"member {member!r} would be written outside {dest}")
    return Path(zf.extract(member, dest))
