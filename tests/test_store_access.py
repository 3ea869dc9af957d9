"""A store location that cannot be reached (credentials, permission, network) is reported as
such — one :class:`StoreAccessError` line naming the store and what to check — never as a
missing store or a damaged chunk with a "re-convert" hint (the S3 server cases are in
``test_cluster_s3.py``)."""

from __future__ import annotations

import pytest

from atlas_engine.errors import DamagedStoreError, StoreAccessError
from atlas_engine.store import chunkio
from atlas_engine.store.access import access_error, access_problem, remote_access


class _FailingFS:
    """An fsspec-like file system whose ``cat_file`` raises ``exc``."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def cat_file(self, path: str) -> bytes:
        raise self.exc


def _plan(exc: BaseException) -> dict:
    return {"fs": _FailingFS(exc), "dir": "bucket/s.zarr/donors/9861/expression/c",
            "url": "s3://bucket/s.zarr", "path": "donors/9861/expression", "crc": True}


@pytest.mark.parametrize("exc", [PermissionError("Access Denied"),
                                 ConnectionRefusedError("connect failed"),
                                 TimeoutError("timed out")])
def test_chunk_that_cannot_be_fetched_is_an_access_error(exc):
    with pytest.raises(StoreAccessError) as e:
        chunkio._fetch_chunk(0, 0, _plan(exc))
    text = str(e.value)
    assert text.startswith("s3://bucket/s.zarr: cannot be read (")
    assert "AWS_ACCESS_KEY_ID" in text and "re-convert" not in text


def test_chunk_that_fails_otherwise_is_still_damage():
    with pytest.raises(DamagedStoreError, match="re-convert it"):
        chunkio._fetch_chunk(0, 0, _plan(OSError("checksum mismatch in transfer")))
    with pytest.raises(DamagedStoreError, match="missing"):
        chunkio._fetch_chunk(0, 0, _plan(FileNotFoundError("no such key")))


def test_what_counts_as_an_access_problem():
    class NoCredentialsError(Exception):
        pass

    NoCredentialsError.__module__ = "botocore.exceptions"
    assert access_problem(NoCredentialsError("Unable to locate credentials"))
    assert access_problem(PermissionError())
    assert not access_problem(FileNotFoundError())
    assert not access_problem(ValueError("bad metadata"))
    assert not access_problem(DamagedStoreError("x"))
    err = access_error("gs://b/s.zarr", NoCredentialsError("no\ncredentials"))
    assert str(err) == ("gs://b/s.zarr: cannot be read (NoCredentialsError: no credentials); "
                        "check the Google Cloud credentials (GOOGLE_APPLICATION_CREDENTIALS)")
    with pytest.raises(StoreAccessError), remote_access("s3://b/s.zarr"):
        raise NoCredentialsError("x")
    with pytest.raises(ValueError), remote_access("s3://b/s.zarr"):
        raise ValueError("x")
