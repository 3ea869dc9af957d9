"""Where a store is: the filesystem path of a local store, and the URL of a group inside one."""

from __future__ import annotations

import os
from pathlib import Path


def local_path(url: str | os.PathLike) -> Path | None:
    """The filesystem path of a local store (plain path or ``file://`` URL), else ``None``."""
    text = os.fspath(url)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    if "://" in text:
        return None
    return Path(text)


def join(url: str | os.PathLike, sub: str) -> str:
    return os.fspath(url).rstrip("/") + "/" + sub
