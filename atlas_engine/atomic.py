"""Atomic outputs: write under a temporary name beside the target, then rename into place.

One implementation for every output the engine writes (tables, cubes, text, manifests), so a
failure or a kill leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_output", "atomic_write_bytes", "atomic_write_text"]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def atomic_output(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write ``path`` (a file, or a directory such as a ``.zarr`` store) atomically.

    Parameters
    ----------
    path
        The final location; its parent folder is created.
    write
        Called with a temporary path beside ``path`` (same folder, so the rename is atomic);
        it must create that file or directory.

    Returns
    -------
    Path
        ``path``.
    """
    return _publish(Path(path), write, replace_dir=True)


def _publish(path: Path, write: Callable[[Path], None], *, replace_dir: bool) -> Path:
    """:func:`atomic_output`; with ``replace_dir=False`` an existing directory at ``path`` is
    left alone and the rename fails (an ``OSError``) instead of removing it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.rmdir()  # a unique name; ``write`` creates a file or a directory there
    try:
        write(tmp)
        if replace_dir and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically.

    The bytes go to a new file with a unique name beside ``path`` (created exclusively, so two
    writers never share it), which is then renamed over ``path``: a reader, or a concurrent
    writer, sees the old file or one whole new one. The parent folder is created. An existing
    directory at ``path`` is never removed: the rename fails with an ``OSError``
    (``IsADirectoryError`` on POSIX).

    Parameters
    ----------
    path
        The file to write.
    data
        Its new content.
    fsync
        Flush the bytes to disk before the rename and the folder after it (default), so a power
        cut leaves the old file or the complete new one and the rename itself reaches the disk;
        without it a killed process still cannot leave half a file.

    Returns
    -------
    Path
        ``path``.
    """

    def write(tmp: Path) -> None:
        with open(tmp, "xb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())

    out = _publish(Path(path), write, replace_dir=False)
    if fsync:
        _fsync_dir(out.parent)
    return out


def _fsync_dir(folder: Path) -> None:
    """Flush ``folder`` to disk, so a rename in it survives a power cut (errors are ignored:
    not every file system can open or flush a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)
