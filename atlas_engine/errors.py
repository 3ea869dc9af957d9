"""One error hierarchy for the whole engine.

Every error a user can cause (bad input file, unreachable server, corrupt download) derives from
:class:`AtlasEngineError`, so the CLI can print it as one clear line and exit non-zero.
"""

from __future__ import annotations

from pathlib import Path


class AtlasEngineError(Exception):
    """Base class of every error raised on purpose by atlas-engine."""


class ConfigError(AtlasEngineError, ValueError):
    """An option or argument has a value the engine cannot use."""


class FormatError(AtlasEngineError, ValueError):
    """An input file does not have the expected Allen layout.

    The message always names the file, and the line / column where they are known (1-based),
    and says what was expected.
    """

    def __init__(
        self,
        file: str | Path,
        message: str,
        *,
        line: int | None = None,
        column: int | None = None,
        expected: str | None = None,
    ) -> None:
        self.file = str(file)
        self.line = line
        self.column = column
        self.expected = expected
        where = self.file
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column}"
        text = f"{where}: {message}"
        if expected:
            text += f" (expected {expected})"
        super().__init__(text)


class FetchError(AtlasEngineError, OSError):
    """A download or API request failed after all retries (an ``OSError``, as network
    failures are in Python)."""


class HttpStatusError(FetchError):
    """The server answered with an HTTP error status that retrying will not fix (e.g. 404).

    ``url`` and ``status`` say which request and which status; the message is one line,
    ``URL: HTTP STATUS REASON``.
    """

    def __init__(self, url: str, status: int, reason: str | None = None) -> None:
        self.url = url
        self.status = status
        self.reason = reason
        super().__init__(f"{url}: HTTP {status} {reason or ''}".rstrip())

    def __reduce__(self) -> tuple[type[HttpStatusError], tuple[str, int, str | None]]:
        return type(self), (self.url, self.status, self.reason)


class VerificationError(FetchError):
    """A downloaded body is not what it claims to be (truncated, HTML, bad zip, CRC mismatch)."""


class UnsafeArchiveError(VerificationError):
    """A zip archive has a member that escapes its destination or looks like a zip bomb."""


class ApiError(FetchError):
    """The Allen RMA API answered ``success: false`` or a malformed envelope."""


class StoreError(AtlasEngineError):
    """The Zarr store is missing, incomplete or inconsistent."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """There is no store at the given location (also a ``FileNotFoundError``)."""


class StoreAccessError(StoreError, OSError):
    """A store on object storage (or another fsspec location) cannot be reached or read:
    no credentials, access denied, or the network (also an ``OSError``). The message names the
    store and what to check; nothing is said about whether the store exists."""


class DamagedStoreError(StoreError):
    """A chunk of the store is missing or fails its checksum; the message names the store, the
    array, the chunk and the donor, and how to repair it."""


class DamagedCacheError(StoreError):
    """A file of a cache entry inside the store (``cache/…``) fails its size or checksum.
    ``entry`` is the entry's directory; the pipeline removes it and recomputes the product
    from the store."""

    def __init__(self, entry: str, detail: str) -> None:
        super().__init__(entry, detail)
        self.entry = entry

    def __str__(self) -> str:
        return f"cache entry {self.args[0]}: {self.args[1]}"


class StoreBusyError(StoreError):
    """Another process is writing the store (it holds the store's lock)."""
