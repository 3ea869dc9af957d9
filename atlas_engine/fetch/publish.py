"""A download's manifest side: a file already there, and the last step of a new one.

:func:`_already_verified` skips a file ``manifest.json`` records intact, :func:`_adopt` records a
file put in place by hand once it verifies, and :func:`_publish` gives a verified ``.part`` its
final name and records it. Each takes the :class:`~.download.Downloader` of the batch (its
manifest, lock and options).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import VerificationError
from .manifest import sha256_file
from .parts import _meta_path
from .verify_worker import verify_in_worker

if TYPE_CHECKING:
    from .download import Downloader, DownloadResult, DownloadSpec


async def _already_verified(dl: Downloader, spec: DownloadSpec, result: DownloadResult) -> bool:
    """Whether the manifest already holds this file intact, keyed on its name, size and
    sha256 (not on the URL, so a mirror on another port or host counts as the same
    source): size and mtime as recorded → trusted without reading (``verify_all``:
    re-hashed); same size but another mtime (a copy, a restore) → re-hashed and, when the
    sha256 matches, the record is refreshed instead of downloading again."""
    entry = dl.manifest.entries.get(spec.name)
    if entry is None or (spec.sha256 and entry.sha256 != spec.sha256.lower()):
        return False
    final = dl.dest / spec.name
    intact = await asyncio.to_thread(dl.manifest.is_verified, spec.name,
                                     rehash=dl.verify_all)
    if not intact and not dl.verify_all:
        try:
            same_size = final.stat().st_size == entry.size
        except OSError:
            same_size = False
        if same_size and await asyncio.to_thread(sha256_file, final) == entry.sha256:
            async with dl._manifest_lock:
                dl.manifest.record(final, url=entry.url, sha256=entry.sha256,
                                   wkf_id=entry.wkf_id, kind=entry.kind)
                await asyncio.to_thread(dl.manifest.save)
            intact = True
    if intact:
        result.status, result.path = "skipped", final
        result.size, result.sha256 = entry.size, entry.sha256
    return intact


async def _publish(dl: Downloader, spec: DownloadSpec, part: Path, final: Path,
                   result: DownloadResult, digest: str) -> None:
    os.replace(part, final)
    _meta_path(part).unlink(missing_ok=True)
    async with dl._manifest_lock:
        rec = dl.manifest.record(final, url=spec.url, sha256=digest, wkf_id=spec.wkf_id,
                                 kind=spec.kind)
        await asyncio.to_thread(dl.manifest.save)
    result.status, result.path = "downloaded", final
    result.size, result.sha256 = rec.size, digest


async def _adopt(dl: Downloader, spec: DownloadSpec, final: Path, result: DownloadResult) -> bool:
    try:
        await verify_in_worker(final, spec.kind, dl.verify_crc)
    except VerificationError:
        return False
    digest = await asyncio.to_thread(sha256_file, final)
    if spec.sha256 and digest != spec.sha256.lower():
        return False
    async with dl._manifest_lock:
        entry = dl.manifest.record(final, url=spec.url, sha256=digest,
                                   wkf_id=spec.wkf_id, kind=spec.kind)
        await asyncio.to_thread(dl.manifest.save)
    result.status, result.path, result.size, result.sha256 = "skipped", final, entry.size, digest
    return True
