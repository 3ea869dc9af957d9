"""What a failed download attempt means, and how long to wait before the next one.

The signals an attempt raises to the retry loop (:class:`_Retry`, :class:`_Restart`,
:class:`_GoRanged`, :class:`_NoRanges`), the one-line descriptions of failures, and the waits
between attempts: :func:`retry_wait` and the :data:`sleep` and :func:`utcnow` hooks (read at call
time, so tests can replace them here).
"""

from __future__ import annotations

import asyncio
import errno
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..errors import FetchError, VerificationError
from .verify import sniff_head

if TYPE_CHECKING:
    from .download import DownloadSpec
    from .parts import PartMeta

#: Waits at least this long are announced (``Retry-After``, backoff).
ANNOUNCE_WAIT = 10.0

#: The waits between attempts go through this hook (``Retry-After``, backoff); tests replace it
#: to record the waits asked for instead of sleeping.
sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep


def utcnow() -> datetime:
    """The clock an HTTP-date ``Retry-After`` is measured against (a hook, like :data:`sleep`)."""
    return datetime.now(timezone.utc)


class _Retry(Exception):
    """An attempt failed in a way another attempt may fix."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


def retry_on_status(resp: Any) -> None:
    """Raise :class:`_Retry` when the HTTP answer ``resp`` is one another attempt may fix
    (429, 5xx …), with the wait its ``Retry-After`` asks for (429 and 503 only)."""
    from .http import is_retryable_status, parse_retry_after

    status = resp.status
    if is_retryable_status(status):
        wait = parse_retry_after(resp.headers.get("Retry-After"), now=utcnow()) \
            if status in (429, 503) else None
        raise _Retry(f"HTTP {status} {resp.reason or ''}".rstrip(), wait)


class _Restart(Exception):
    """The server's answer cannot continue the ``.part``: start again from byte zero."""


class _GoRanged(Exception):
    """The first answer shows a file to fetch in pieces (its version in ``meta``)."""

    def __init__(self, meta: PartMeta) -> None:
        super().__init__("ranged")
        self.meta = meta


class _NoRanges(Exception):
    """The server answered a piece's ``Range`` with the whole file: fetch it as one stream."""


def _say(text: str) -> None:
    """Announce something the user would otherwise wonder about (a long wait)."""
    print(text, file=sys.stderr, flush=True)


def _os_error_line(spec: DownloadSpec, exc: OSError) -> str:
    """One line for a local I/O failure (a full disk, a read-only directory)."""
    code = errno.errorcode.get(exc.errno or 0, "")
    where = f" {exc.filename}" if exc.filename else ""
    why = exc.strerror or str(exc) or type(exc).__name__
    text = f"{spec.name}: cannot write{where}: {why}" + (f" [{code}]" if code else "")
    if exc.errno == errno.ENOSPC:
        text += " - free some space and run again (the partial file resumes)"
    return text


def _html_error(spec: DownloadSpec, ctype: str, head: bytes) -> VerificationError:
    try:
        sniff_head(head, kind=spec.kind, url=spec.url, content_type=ctype)
    except VerificationError as exc:
        return exc
    return VerificationError(f"{spec.url}: unexpected Content-Type {ctype}")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text and not isinstance(exc, (_Retry, _Restart)) \
        else (text or type(exc).__name__)


def retry_wait(spec: Any, error: BaseException, wait: float | None, failures: int,
               policy: Any, say: Any) -> float:
    """Seconds to wait before the next attempt at ``spec`` after ``error``: the server's
    Retry-After (``wait``; one longer than ``policy.max_retry_after`` fails the file) or the
    policy's backoff; a wait of :data:`ANNOUNCE_WAIT` s or more is announced through ``say``."""
    if wait is not None and wait > policy.max_retry_after:
        raise FetchError(f"{spec.url}: {_describe(error)} with Retry-After {wait:,.0f} s, "
                         f"longer than the {policy.max_retry_after:,.0f} s this fetch waits "
                         f"- try again later")
    if wait is None:
        wait = policy.backoff(max(1, failures))
    if wait >= ANNOUNCE_WAIT:
        say(f"{spec.name}: {_describe(error)}; waiting {wait:,.0f} s before trying again")
    return wait
