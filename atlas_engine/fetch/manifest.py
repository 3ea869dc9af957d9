"""``manifest.json``: the record of every verified file in a download directory.

Each entry holds the source URL, size, sha256, download time, Allen well-known-file id and the
file's ``mtime_ns`` at verification. A re-run trusts an entry whose file still has the recorded
size and mtime (a ``stat`` call, no hashing); ``verify_all`` re-hashes instead.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import atomic_write_bytes
from ..errors import FormatError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


@dataclass
class ManifestEntry:
    """What is known about one verified file."""

    name: str
    url: str
    size: int
    sha256: str
    mtime_ns: int
    time: str
    wkf_id: int | None = None
    kind: str | None = None

    def matches_stat(self, path: Path) -> bool:
        """Cheap check: the file exists with the recorded size and modification time."""
        try:
            st = path.stat()
        except OSError:
            return False
        return st.st_size == self.size and st.st_mtime_ns == self.mtime_ns


def sha256_file(path: str | Path, *, chunk: int = 4 << 20) -> str:
    """Hex sha256 of a whole file."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Manifest:
    """The manifest of one directory; :meth:`save` writes it atomically."""

    def __init__(self, directory: str | Path, entries: dict[str, ManifestEntry] | None = None):
        self.directory = Path(directory)
        self.entries: dict[str, ManifestEntry] = dict(entries or {})

    @property
    def path(self) -> Path:
        return self.directory / MANIFEST_NAME

    @classmethod
    def load(cls, directory: str | Path) -> Manifest:
        """Read ``DIR/manifest.json`` (an empty manifest if there is none)."""
        directory = Path(directory)
        path = directory / MANIFEST_NAME
        if not path.exists():
            return cls(directory)
        try:
            doc = json.loads(path.read_text("utf-8"))
            files = doc["files"]
            entries = {name: ManifestEntry(name=name, **{k: v for k, v in rec.items()
                                                         if k != "name"})
                       for name, rec in files.items()}
        except (ValueError, KeyError, TypeError) as exc:
            raise FormatError(path, f"unreadable manifest ({exc})",
                              expected='{"version": 1, "files": {name: {url, size, sha256, ...}}}'
                              ) from None
        return cls(directory, entries)

    def save(self) -> None:
        doc = {"version": MANIFEST_VERSION,
               "files": {name: {k: v for k, v in asdict(e).items() if k != "name"}
                         for name, e in sorted(self.entries.items())}}
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, (json.dumps(doc, indent=2) + "\n").encode())

    def record(self, path: Path, *, url: str, sha256: str, wkf_id: int | None = None,
               kind: str | None = None) -> ManifestEntry:
        st = path.stat()
        entry = ManifestEntry(name=path.name, url=url, size=st.st_size, sha256=sha256,
                              mtime_ns=st.st_mtime_ns, time=utc_now(), wkf_id=wkf_id, kind=kind)
        self.entries[path.name] = entry
        return entry

    def is_verified(self, name: str, *, rehash: bool = False) -> bool:
        """Whether ``name`` is recorded and still intact (stat match; sha256 too if ``rehash``)."""
        entry = self.entries.get(name)
        if entry is None:
            return False
        path = self.directory / name
        if not entry.matches_stat(path):
            return False
        return not rehash or sha256_file(path) == entry.sha256
