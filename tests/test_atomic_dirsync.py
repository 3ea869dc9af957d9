"""``atomic_write_bytes(..., fsync=True)`` flushes the new file and then its folder, so the
rename itself reaches the disk; with ``fsync=False`` it flushes neither."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from atlas_engine import atomic


def _record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Patch ``os.fsync`` to record what each call flushes: ``("dir"|"file", inode)``."""
    calls: list[tuple[str, int]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        calls.append(("dir" if stat.S_ISDIR(st.st_mode) else "file", st.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    return calls


def test_fsync_true_flushes_the_file_and_its_folder(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _record_fsyncs(monkeypatch)
    target = tmp_path / "sub" / "zarr.json"
    assert atomic.atomic_write_bytes(target, b'{"a": 1}', fsync=True) == target
    assert target.read_bytes() == b'{"a": 1}'
    # the file's bytes before the rename, then the folder holding the rename
    assert calls == [("file", target.stat().st_ino), ("dir", target.parent.stat().st_ino)]


def test_fsync_true_replacing_a_file_flushes_both(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "zarr.json"
    target.write_bytes(b"old")
    calls = _record_fsyncs(monkeypatch)
    atomic.atomic_write_bytes(target, b"new", fsync=True)
    assert target.read_bytes() == b"new"
    assert calls == [("file", target.stat().st_ino), ("dir", tmp_path.stat().st_ino)]


def test_fsync_false_flushes_neither(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _record_fsyncs(monkeypatch)
    target = tmp_path / "sub" / "progress.json"
    atomic.atomic_write_bytes(target, b"{}", fsync=False)
    atomic.atomic_write_bytes(target, b"[]", fsync=False)
    assert target.read_bytes() == b"[]"
    assert calls == []


def test_a_folder_that_cannot_be_flushed_is_not_an_error(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(22, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    target = tmp_path / "zarr.json"
    atomic.atomic_write_bytes(target, b"{}", fsync=True)
    assert target.read_bytes() == b"{}"


def test_the_store_root_is_written_by_the_one_atomic_writer() -> None:
    from atlas_engine.celltypes import convert_zip
    from atlas_engine.convert import writer

    assert writer.atomic_write_bytes is atomic.atomic_write_bytes
    assert convert_zip.atomic_write_bytes is atomic.atomic_write_bytes
    assert not hasattr(writer, "atomic_write")
