"""Where a store is: the filesystem path of a local store, and the URL of a group inside one."""

from __future__ import annotations

import os
from pathlib import Path


def without_file_scheme(url: str | os.PathLike) -> str:
    """``url`` as a string, a ``file://`` URL as its path (other URLs unchanged)."""
    text = os.fspath(url)
    return text[len("file://"):] if text.startswith("file://") else text


def local_path(url: str | os.PathLike) -> Path | None:
    """The filesystem path of a local store (plain path or ``file://`` URL), else ``None``."""
    text = without_file_scheme(url)
    return None if "://" in text else Path(text)


def join(url: str | os.PathLike, sub: str) -> str:
    return os.fspath(url).rstrip("/") + "/" + sub
