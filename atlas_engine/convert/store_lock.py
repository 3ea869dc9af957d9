"""One writer per store: the writer lock of a local store, and disk errors as one line.

:func:`store_lock` holds an advisory ``flock`` on ``STORE/.lock`` for the whole conversion
(released by the kernel if the process dies); a second writer waits or is told who holds it
(:func:`lock_holder`). :func:`disk_errors` turns an operating-system error while writing (a full
disk above all) into one :class:`StoreError` line naming the store.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import StoreBusyError, StoreError
from ..store.access import access_error, access_problem
from ..store.layout import LOCK_FILE
from ..store.location import local_path

_HELD: dict[str, list[Any]] = {}     # lock path -> [file object, depth, owning thread lock]
_HELD_GUARD = threading.Lock()


def lock_holder(store_url: str | os.PathLike) -> dict[str, Any] | None:
    """Who holds the writer lock of a local store (pid, host, since, command), or None when
    nobody does (or the store is not local)."""
    path = local_path(store_url)
    if path is None or not (path / LOCK_FILE).exists():
        return None
    import fcntl

    try:
        with open(path / LOCK_FILE, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                try:
                    return dict(json.loads(fh.read() or "{}"))
                except ValueError:
                    return {}
            fcntl.flock(fh, fcntl.LOCK_UN)
    except OSError:
        return None
    return None


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process"
    text = f"process {holder.get('pid')} on {holder.get('host')}"
    if holder.get("since"):
        text += f" since {holder['since']}"
    if holder.get("command"):
        text += f" ({holder['command']})"
    return text


@contextlib.contextmanager
def store_lock(store_url: str | os.PathLike, *, wait: bool = False,
               log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the writer lock of a local store for the duration of the block (no-op for other
    stores). Re-entrant within a thread; another thread or process waits (``wait``) or gets
    :class:`StoreBusyError` naming the holder."""
    path = local_path(store_url)
    if path is None:
        yield
        return
    import fcntl

    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{path}: cannot create the store ({exc.strerror or exc})") from None
    key = str((path / LOCK_FILE).resolve())
    with _HELD_GUARD:
        entry = _HELD.get(key)
        if entry is None:
            entry = _HELD[key] = [None, 0, threading.RLock()]
    tlock: threading.RLock = entry[2]
    if not tlock.acquire(blocking=wait):
        raise StoreBusyError(f"{path} is being written by another thread of this process; "
                             "wait for it to finish")
    try:
        if entry[1] == 0:
            fh = open(path / LOCK_FILE, "a+")   # noqa: SIM115 - held until released below
            try:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    fh.seek(0)
                    try:
                        holder = dict(json.loads(fh.read() or "{}"))
                    except ValueError:
                        holder = {}
                    if not wait:
                        raise StoreBusyError(
                            f"{path} is being converted by {_describe(holder)}; wait for it to "
                            "finish (or pass --wait to queue behind it)") from None
                    if log:
                        log(f"waiting for {_describe(holder)} to finish writing {path}")
                    fcntl.flock(fh, fcntl.LOCK_EX)
                fh.seek(0)
                fh.truncate()
                fh.write(json.dumps({
                    "pid": os.getpid(), "host": socket.gethostname(),
                    "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "command": " ".join(os.path.basename(a) if i == 0 else a
                                        for i, a in enumerate(sys.argv))[:300]}))
                fh.flush()
            except BaseException:
                fh.close()
                raise
            entry[0] = fh
        entry[1] += 1
        try:
            yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                fh = entry[0]
                entry[0] = None
                with contextlib.suppress(OSError):
                    fh.seek(0)
                    fh.truncate()
                fcntl.flock(fh, fcntl.LOCK_UN)
                fh.close()
    finally:
        tlock.release()


@contextlib.contextmanager
def disk_errors(store_url: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn an operating-system error while writing ``what`` into one clear
    :class:`StoreError` line (a full disk above all), naming the store; a store on object
    storage that cannot be reached (credentials, access, network) into a
    :class:`~atlas_engine.errors.StoreAccessError` line."""
    try:
        yield
    except Exception as exc:
        code = exc.errno if isinstance(exc, OSError) else None
        if code in (errno.ENOSPC, errno.EDQUOT):
            raise StoreError(f"{os.fspath(store_url)}: no space left on the device while "
                             f"writing {what}; the store is as it was before that started — "
                             "free some space and re-run convert") from None
        if code in (errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO):
            raise StoreError(f"{os.fspath(store_url)}: cannot write {what} "
                             f"({exc.strerror or exc}"
                             + (f": {exc.filename}" if exc.filename else "") + ")") from None
        if access_problem(exc):     # an object store's client errors (no credentials …)
            raise access_error(os.fspath(store_url), exc, "written") from None
        raise
