"""Atomic outputs: write under a temporary name beside the target, then rename into place.

One implementation for every output the engine writes (tables, cubes, text, manifests), so a
failure or a kill leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.rmdir()  # a unique name; ``write`` creates a file or a directory there
    try:
        write(tmp)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename by default)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())

    return atomic_output(path, write)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)
