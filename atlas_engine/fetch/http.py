"""HTTP session settings and the retry policy shared by downloads and RMA queries."""

from __future__ import annotations

import asyncio
import errno
import random
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import aiohttp

from .. import __version__
from ..errors import HttpStatusError as HttpStatusError  # its former home: still importable

USER_AGENT = f"atlas-engine/{__version__}"

#: Errors after which a request is tried again (the connection, not the server, failed).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientPayloadError,
    aiohttp.ClientConnectionError,
    aiohttp.ServerTimeoutError,
    asyncio.TimeoutError,
    ConnectionError,
)


def is_retryable_status(status: int) -> bool:
    """5xx, 429 (Too Many Requests) and 408 (Request Timeout) are worth another try."""
    return status >= 500 or status in (408, 429)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter.

    ``max_attempts`` counts consecutive failed attempts that made no progress; a download that
    received bytes before the connection dropped starts counting again (it resumes where it was).
    """

    max_attempts: int = 8
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    jitter: float = 0.5
    max_retry_after: float = 600.0
    connect_timeout: float = 30.0
    sock_read_timeout: float = 60.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number ``attempt`` (1-based): base·2^(attempt-1) ± jitter, capped."""
        r = (rng or random).random()
        delay = min(self.backoff_max, self.backoff_base * 2 ** max(0, attempt - 1))
        return max(0.0, delay * (1.0 - self.jitter + 2 * self.jitter * r))

    def timeout(self) -> aiohttp.ClientTimeout:
        """No total limit (files are large); bounded connect and per-read stalls."""
        return aiohttp.ClientTimeout(total=None, connect=self.connect_timeout,
                                     sock_connect=self.connect_timeout,
                                     sock_read=self.sock_read_timeout)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def make_session(policy: RetryPolicy, *, limit: int = 0,
                 headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
    """A client session with the policy's timeouts; ``limit=0`` leaves pooling unbounded (the
    caller's semaphore bounds concurrency)."""
    connector = aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300)
    base_headers = {"User-Agent": USER_AGENT}
    base_headers.update(headers or {})
    return aiohttp.ClientSession(connector=connector, timeout=policy.timeout(),
                                 headers=base_headers, raise_for_status=False,
                                 read_bufsize=4 << 20)


#: Attempts given to a host whose name does not resolve (no network, no DNS, a typo).
DNS_ATTEMPTS = 2
#: Attempts given to a host that refuses connections or has no route: a server may be starting
#: (``atlas-engine serve ... &`` just before a fetch), so a few seconds of short waits.
REFUSED_ATTEMPTS = 5


def unreachable(exc: BaseException) -> tuple[str, int] | None:
    """For a failure to reach the server at all - the name does not resolve, nothing listens
    there, no route - the reason in words and the attempts worth making (:data:`DNS_ATTEMPTS`,
    :data:`REFUSED_ATTEMPTS`, with the policy's shortest backoffs between them); None for
    other failures. Retrying these for minutes does not help."""
    if not isinstance(exc, aiohttp.ClientConnectorError):
        return None
    inner, where = exc.os_error, f"{exc.host}:{exc.port}"
    if isinstance(inner, socket.gaierror) or isinstance(
            exc, getattr(aiohttp, "ClientConnectorDNSError", ())):
        return (f"cannot resolve the host name {exc.host!r} ({inner.strerror or inner}) - "
                "no network or DNS, or a wrong --base-url", DNS_ATTEMPTS)
    if isinstance(inner, ConnectionRefusedError) or inner.errno == errno.ECONNREFUSED:
        return (f"connection refused by {where} - nothing is listening there",
                REFUSED_ATTEMPTS)
    if inner.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"{where} is unreachable ({inner.strerror}) - no network route", REFUSED_ATTEMPTS
    return None

