"""What the local mirror injects and records: :class:`Faults` (the misbehaviour to inject),
:class:`RequestRecord` (one entry of :attr:`~.server.MirrorServer.log`), the context variable
that carries the record of the request being handled, and the counters of the ``*_first``
faults.
"""

from __future__ import annotations

import contextvars
import random
from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError


@dataclass
class Faults:
    """Misbehaviour to inject; everything is off by default.

    Counters of the ``*_first`` modes restart whenever a new :class:`Faults` is assigned to
    :attr:`MirrorServer.faults` (or :meth:`MirrorServer.reset_counters` is called).
    """

    #: Answer ``fail_status`` (503 or 429) to the first K requests in ``scope``.
    fail_first: int = 0
    fail_status: int = 503
    #: ``Retry-After`` seconds sent with the failures (``None`` = no header).
    retry_after: float | None = None
    #: Answer 200 with an HTML "site unavailable" page to the first K requests in ``scope``
    #: (after any ``fail_first`` ones).
    html_first: int = 0
    #: Which requests ``fail_first``/``html_first`` apply to.
    scope: Literal["all", "download", "api"] = "all"
    #: Close the connection after this many bytes of a download body.
    drop_after: int | None = None
    #: Drop only the first K download bodies (``None`` = every one).
    drop_first: int | None = None
    #: With a seed, each dropped body is cut at a random offset in ``[0, min(drop_after, body))``
    #: drawn from ``random.Random(drop_seed)`` (``drop_after`` may then be ``None``).
    drop_seed: int | None = None
    #: Send every download body short by this many bytes (Content-Length still the full size),
    #: then close the connection.
    truncate_by: int | None = None
    #: Truncate only the first K download bodies (``None`` = every one).
    truncate_first: int | None = None
    #: Throttle each download response to this many bytes per second.
    bandwidth: int | None = None
    #: Ignore ``Range`` headers (always 200 with the full body).
    ignore_range: bool = False
    #: Ignore ``If-Range`` (answer a Range with 206 even when the file has changed since the
    #: validator the client sent - a broken cache or server).
    ignore_if_range: bool = False
    #: Send neither ``ETag`` nor ``Last-Modified``.
    no_validators: bool = False
    #: Send download bodies without ``Content-Length`` (and without chunked encoding): the
    #: end of the body is the end of the connection, so a cut body looks complete.
    no_content_length: bool = False
    #: Seconds to wait before answering each download (makes concurrency observable).
    delay: float = 0.0
    #: Add this to ``total_rows`` of model queries (the real server sometimes overstates it).
    overstate_total_rows: int = 0

    def __post_init__(self) -> None:
        if self.fail_status not in (429, 500, 502, 503, 504):
            raise ConfigError(f"fail_status must be 429 or a 5xx status, got {self.fail_status}")
        if self.scope not in ("all", "download", "api"):
            raise ConfigError(f"scope must be all, download or api, got {self.scope!r}")
        for name in ("drop_after", "truncate_by", "bandwidth"):
            value = getattr(self, name)
            if value is not None and value < (1 if name == "bandwidth" else 0):
                raise ConfigError(f"{name} must be positive, got {value}")


@dataclass
class RequestRecord:
    """One served request."""

    method: str
    path: str
    query: str
    range: str | None
    started: float
    status: int = 0
    bytes_sent: int = 0
    duration: float = 0.0
    #: The fault applied (``"fail"``, ``"html"``, ``"drop"``, ``"truncate"``) or ``None``.
    fault: str | None = None
    #: Set when the client went away mid-body.
    client_disconnected: bool = False


#: The log record of the request being handled (the middleware and handler share a task).
_RECORD: contextvars.ContextVar[RequestRecord] = contextvars.ContextVar("mirror_record")


@dataclass
class _Counters:
    fail: int = 0
    html: int = 0
    drop: int = 0
    truncate: int = 0
    rng: random.Random = field(default_factory=random.Random)
