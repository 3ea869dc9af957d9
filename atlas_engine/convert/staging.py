"""Staged groups: each group is written under ``STORE/.staging/`` and published with a
directory rename, so readers never see half a group (local stores; other fsspec stores write in
place).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import zarr

from ..store.layout import STAGING_DIR
from ..store.location import join, local_path

_PARENT_LOCK = threading.Lock()


@dataclass
class Staged:
    """A group being written: ``url`` to write to, published at ``final`` by :meth:`publish`."""

    store_url: str
    final: str            # group path inside the store, e.g. "donors/9861"
    url: str              # where it is written now

    @classmethod
    def begin(cls, store_url: str | os.PathLike, final: str) -> Staged:
        store_url = os.fspath(store_url)
        path = local_path(store_url)
        if path is None:
            url = join(store_url, final)
            return cls(store_url, final, url)
        tmp = path / STAGING_DIR / f"{final.replace('/', '-')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        return cls(store_url, final, str(tmp))

    @property
    def is_local(self) -> bool:
        return local_path(self.store_url) is not None

    def replaces(self) -> bool:
        """True when publishing replaces a group already in place (local stores)."""
        root = local_path(self.store_url)
        return root is not None and (root / self.final).exists()

    def publish(self) -> None:
        """Move the finished group into place (replacing an older version, if any).

        The caller takes the group out of the root listing first when it replaces one
        (:meth:`replaces`), so that no reader finds a listed group in the middle of the swap."""
        if not self.is_local:
            return
        root = local_path(self.store_url)
        assert root is not None
        dest = root / self.final
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _PARENT_LOCK:
            if not (dest.parent / "zarr.json").exists():
                try:
                    zarr.open_group(str(dest.parent), mode="a", zarr_format=3)
                except zarr.errors.ContainsGroupError:
                    pass
        old = None
        if dest.exists():
            old = Path(self.url + ".old")
            os.replace(dest, old)
        os.replace(self.url, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Remove the staged group. zarr may still be finishing writes it had started when one
        of them failed (they run on its event loop), so removal is retried briefly; anything
        left is cleared by the next run."""
        if not self.is_local:
            return
        shutil.rmtree(self.url, ignore_errors=True)
        time.sleep(0.05)
        shutil.rmtree(self.url, ignore_errors=True)


def clean_staging(store_url: str | os.PathLike) -> None:
    """Remove what an interrupted run left under ``.staging`` (call it holding
    :func:`store_lock`: no other writer can be using it then)."""
    path = local_path(store_url)
    if path is not None and (path / STAGING_DIR).exists():
        shutil.rmtree(path / STAGING_DIR, ignore_errors=True)
