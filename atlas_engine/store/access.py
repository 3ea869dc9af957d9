"""Telling a store that cannot be reached from one that is missing or damaged.

A store on object storage fails in ways a local one does not: no credentials, access denied,
an endpoint that does not answer. fsspec passes those up as the backend's own exceptions
(``botocore.exceptions.NoCredentialsError``, ``PermissionError`` for an HTTP 403, aiohttp's
connection errors…). Reported as they are, they are a traceback; caught as "cannot open", they
would say "no such store", "not a zarr store" or "damaged chunk, re-convert it" — each wrong.
:func:`remote_access` turns them into one :class:`~atlas_engine.errors.StoreAccessError` line
naming the store and what to check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..errors import AtlasEngineError, StoreAccessError

__all__ = ["access_error", "access_problem", "remote_access"]

#: top-level packages whose exceptions mean "cannot reach or authenticate", whatever their
#: class (fsspec backends raise their client library's errors unchanged)
_CLIENT_PACKAGES = ("botocore", "aiobotocore", "boto3", "google", "gcsfs", "azure", "adlfs",
                    "aiohttp")

_HINTS = {
    "s3": "check the S3 credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
          "AWS_PROFILE) and, for a server other than AWS, AWS_ENDPOINT_URL",
    "gs": "check the Google Cloud credentials (GOOGLE_APPLICATION_CREDENTIALS)",
    "gcs": "check the Google Cloud credentials (GOOGLE_APPLICATION_CREDENTIALS)",
    "az": "check the Azure credentials (AZURE_STORAGE_ACCOUNT_NAME and a key or token)",
    "abfs": "check the Azure credentials (AZURE_STORAGE_ACCOUNT_NAME and a key or token)",
}


def access_problem(exc: BaseException) -> bool:
    """Whether ``exc`` says the location could not be reached or read (credentials,
    permission, network) rather than that something is absent or malformed."""
    if isinstance(exc, AtlasEngineError | FileNotFoundError):
        return False
    if isinstance(exc, PermissionError | ConnectionError | TimeoutError):
        return True
    return (type(exc).__module__ or "").split(".")[0] in _CLIENT_PACKAGES


def access_error(url: str, exc: BaseException, doing: str = "read") -> StoreAccessError:
    """The one-line error for store ``url`` that could not be ``doing`` (``"read"``,
    ``"written"``) because of ``exc``."""
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    hint = _HINTS.get(protocol, "check the credentials, the permissions and the endpoint")
    detail = " ".join(str(exc).split())[:200] or type(exc).__name__
    return StoreAccessError(f"{url}: cannot be {doing} ({type(exc).__name__}: {detail}); "
                            f"{hint}")


@contextlib.contextmanager
def remote_access(url: str) -> Iterator[None]:
    """Inside the block, an error reaching or reading ``url`` (see :func:`access_problem`)
    is raised as :class:`~atlas_engine.errors.StoreAccessError`; other errors pass
    unchanged."""
    try:
        yield
    except Exception as exc:
        if access_problem(exc):
            raise access_error(url, exc) from None
        raise
