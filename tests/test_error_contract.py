"""The error contract of the public API: one atomic writer, project error classes for what a
user's argument can get wrong, ``StoreNotFoundError`` for every missing store, and a cheap
``atlas_engine.fetch``."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import pickle
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

import atlas_engine as ae
from atlas_engine import atomic
from atlas_engine.errors import (
    AtlasEngineError,
    ConfigError,
    FetchError,
    FormatError,
    StoreError,
    StoreNotFoundError,
)
from atlas_engine.sources.rma import in_filter, model_query, options_clause, service_query
from atlas_engine.sources.urls import rma_query_url

# ------------------------------------------------------------------------------------------
# one atomic writer
# ------------------------------------------------------------------------------------------


def test_every_module_uses_the_shared_atomic_writer() -> None:
    from atlas_engine.celltypes import convert as cell_convert
    from atlas_engine.cli import query
    from atlas_engine.fetch import ahba, manifest, rma

    for module in (manifest, ahba, rma, cell_convert):
        assert module.atomic_write_bytes is atomic.atomic_write_bytes, module.__name__
    assert "fetch.manifest import atomic_write_bytes" not in inspect.getsource(query)
    assert "def atomic_write_bytes" not in inspect.getsource(manifest)


def test_atomic_write_bytes_flushes_by_default_and_keeps_directories(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    target = tmp_path / "new" / "file.json"
    assert atomic.atomic_write_bytes(target, b"{}") == target
    assert target.read_bytes() == b"{}" and len(synced) == 2  # the file, then its folder
    atomic.atomic_write_bytes(target, b"[]", fsync=False)
    assert target.read_bytes() == b"[]" and len(synced) == 2
    folder = tmp_path / "folder"
    (folder / "inner").mkdir(parents=True)
    with pytest.raises(OSError):
        atomic.atomic_write_bytes(folder, b"x")
    assert (folder / "inner").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "new"]


def test_part_record_uses_a_unique_temporary_name(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from atlas_engine.fetch.parts import PartMeta, _save_part_meta, load_part_meta

    part = tmp_path / "big.zip.part"
    # another writer's temporary file under the old fixed name is left alone
    (tmp_path / "big.zip.part.json.tmp").mkdir()
    # the record is not flushed to disk (a killed process is what it guards against)
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: pytest.fail("record was fsynced"))
    _save_part_meta(part, PartMeta('"abc"', None, 10))
    assert load_part_meta(part) == PartMeta('"abc"', None, 10)

    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(50):
                _save_part_meta(part, PartMeta(f'"{n}-{i}"', None, 10))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads((tmp_path / "big.zip.part.json").read_text())["size"] == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "big.zip.part.json", "big.zip.part.json.tmp"]


# ------------------------------------------------------------------------------------------
# user arguments -> ConfigError (still a ValueError)
# ------------------------------------------------------------------------------------------


def _config_error(excinfo: pytest.ExceptionInfo[ConfigError]) -> str:
    assert isinstance(excinfo.value, ValueError)
    text = str(excinfo.value)
    assert "\n" not in text and "expected" in text, text
    return text


def test_fetch_with_zero_concurrency(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        ae.fetch(tmp_path / "raw", concurrency=0, what="structure-graph",
                 base_url="http://127.0.0.1:9")
    assert "concurrency 0" in _config_error(exc)


def test_download_arguments(tmp_path: Path) -> None:
    from atlas_engine.fetch import DownloadSpec, download_files

    with pytest.raises(ConfigError) as exc:
        DownloadSpec("http://127.0.0.1:9/x", "../escape.zip")
    assert "../escape.zip" in _config_error(exc)
    spec = DownloadSpec("http://127.0.0.1:9/x", "same.zip")
    with pytest.raises(ConfigError) as exc:
        asyncio.run(download_files([spec, spec], tmp_path / "dl"))
    assert "same.zip" in _config_error(exc)
    with pytest.raises(ConfigError) as exc:
        asyncio.run(download_files([spec], tmp_path / "dl", pieces=0))
    assert "pieces 0" in _config_error(exc)
    assert not (tmp_path / "dl").exists()


def test_rma_client_arguments() -> None:
    from atlas_engine.fetch import RmaClient

    for kwargs, what in (({"page_size": 0}, "page_size 0"),
                         ({"concurrency": 0}, "concurrency 0")):
        with pytest.raises(ConfigError) as exc:
            RmaClient("http://127.0.0.1:9", **kwargs)
        assert what in _config_error(exc)

    async def no_probes() -> None:
        async with RmaClient("http://127.0.0.1:9") as client:
            await client.human_microarray_expression([])

    with pytest.raises(ConfigError) as exc:
        asyncio.run(no_probes())
    assert "probe" in _config_error(exc)


@pytest.mark.parametrize("call, what", [
    (lambda: options_clause(num_rows="many"), "'many'"),
    (lambda: in_filter("id", []), "id"),
    (lambda: model_query(""), "''"),
    (lambda: model_query("Gene", nrows=3), "nrows"),
    (lambda: service_query("a::b"), "a::b"),
    (lambda: rma_query_url("http://h", "model::Gene", "yaml"), "'yaml'"),
], ids=["num_rows", "empty_in", "model", "unknown_option", "service", "format"])
def test_query_builder_arguments(call, what: str) -> None:
    with pytest.raises(ConfigError) as exc:
        call()
    assert what in _config_error(exc)


# ------------------------------------------------------------------------------------------
# missing stores
# ------------------------------------------------------------------------------------------


def _openers():
    from atlas_engine.celltypes.store import open_cell_store
    from atlas_engine.store.brainspan import open_brainspan

    return {"microarray": ae.open_store, "brainspan": open_brainspan,
            "celltypes": open_cell_store}


@pytest.mark.parametrize("kind", ["microarray", "brainspan", "celltypes"])
@pytest.mark.parametrize("where", ["local", "file", "memory"])
def test_missing_store_is_store_not_found(kind: str, where: str, tmp_path: Path) -> None:
    local = tmp_path / "nothing.zarr"
    url = {"local": str(local), "file": f"file://{local}",
           "memory": f"memory://missing-{uuid.uuid4().hex}.zarr"}[where]
    with pytest.raises(StoreNotFoundError) as exc:
        _openers()[kind](url)
    assert isinstance(exc.value, FileNotFoundError) and isinstance(exc.value, StoreError)
    assert str(local if where != "memory" else url) in str(exc.value)
    assert "no such store" in str(exc.value)


@pytest.mark.parametrize("kind", ["microarray", "brainspan", "celltypes"])
def test_something_that_is_not_a_store_is_not_reported_missing(kind: str) -> None:
    import fsspec

    name = f"not-a-store-{uuid.uuid4().hex}.zarr"
    fsspec.filesystem("memory").pipe(f"/{name}/readme.txt", b"hello")
    with pytest.raises((StoreError, FormatError)) as exc:
        _openers()[kind](f"memory://{name}")
    assert not isinstance(exc.value, StoreNotFoundError)


# ------------------------------------------------------------------------------------------
# HttpStatusError
# ------------------------------------------------------------------------------------------


def test_http_status_error_lives_with_the_other_errors() -> None:
    from atlas_engine.errors import HttpStatusError
    from atlas_engine.fetch import http

    assert http.HttpStatusError is HttpStatusError
    assert issubclass(HttpStatusError, FetchError) and issubclass(HttpStatusError, AtlasEngineError)
    err = HttpStatusError("http://h/x", 404, "Not Found")
    assert str(err) == "http://h/x: HTTP 404 Not Found"
    copy = pickle.loads(pickle.dumps(err))
    assert (type(copy), str(copy), copy.url, copy.status) == (
        HttpStatusError, str(err), "http://h/x", 404)


# ------------------------------------------------------------------------------------------
# a cheap atlas_engine.fetch
# ------------------------------------------------------------------------------------------

LAZY = """
import sys
import atlas_engine as ae
fetch = ae.fetch
assert callable(fetch)
print("LOADED:" + ",".join(m for m in ("pandas", "aiohttp") if m in sys.modules))
"""


def test_fetch_package_imports_no_heavy_library() -> None:
    proc = subprocess.run([sys.executable, "-c", LAZY], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip().splitlines()[-1] == "LOADED:"


def test_fetch_package_names_still_resolve() -> None:
    import atlas_engine.fetch as fetch
    from atlas_engine.fetch.ahba import fetch_ahba
    from atlas_engine.fetch.download import DownloadSpec

    assert fetch.DownloadSpec is DownloadSpec and fetch.fetch_ahba is fetch_ahba
    assert set(fetch.__all__) <= set(dir(fetch))
    for name in fetch.__all__:
        assert getattr(fetch, name) is not None
    with pytest.raises(AttributeError):
        fetch.no_such_name  # noqa: B018
    assert inspect.signature(fetch).parameters.keys() == {"dest", "kwargs"}
