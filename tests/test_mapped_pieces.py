"""Plain files parsed from a memory map (MemberSource.iter_pieces): the same bytes, lines,
values and errors as the bytes read from the file."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas_engine.convert import zipstream
from atlas_engine.convert.blockparse import ParseStats, iter_blocks, line_regions
from atlas_engine.convert.zipstream import MappedPiece, MemberSource
from atlas_engine.errors import FormatError


def _joined(pieces) -> bytes:
    return b"".join(p[:] if isinstance(p, MappedPiece) else p for p in pieces)


def _regions(pieces) -> bytes:
    return b"".join(buf[a:b].tobytes() for buf, a, b in line_regions(pieces, ParseStats()))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"")), st.booleans(),
       st.integers(1, 64))
def test_pieces_and_lines_equal_the_files_bytes(data, bom, piece):
    data = (b"\xef\xbb\xbf" if bom else b"") + data
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "M.csv"
        path.write_bytes(data)
        src = MemberSource(path)
        mapped = list(src.iter_pieces(piece))
        assert all(isinstance(p, MappedPiece) for p in mapped)
        assert all(0 < len(p) <= piece for p in mapped)
        assert _joined(mapped) == data
        read = list(src.iter_chunks(piece_size=piece))
        assert _regions(src.iter_pieces(piece)) == _regions(read)
        assert _regions(read) == (data[3:] if bom else data)


@pytest.mark.parametrize("text,kind,line,column", [
    ("1,1.0,2.0\n2,1.0,\n", "float", 2, 3),
    ("1,1.0,2.0\nx,1.0,2.0\n", "float", 2, 1),
    ("\ufeff7,1.5,2\n8,0.25,oops\n", "float", 2, 3),      # a byte-order mark first
    ("1,0,1\n2,1,0.0\n", "bool", 2, 3),
])
@pytest.mark.parametrize("piece", [1, 4, 4096])
def test_errors_name_the_same_line_and_column(tmp_path, text, kind, line, column, piece):
    path = tmp_path / "M.csv"
    path.write_bytes(text.encode())
    with pytest.raises(FormatError) as err:
        list(iter_blocks(MemberSource(path).iter_pieces(piece), 2, 1, kind=kind,
                         name=str(path)))
    assert (err.value.file, err.value.line, err.value.column) == (str(path), line, column)


def test_long_file_values_exact_when_pieces_are_dropped_behind(tmp_path):
    # pieces of one page: every piece MAPPED_LAG behind is dropped from the process's pages
    # while the parser still holds queued ones; a dropped piece is read back from the file
    rng = np.random.default_rng(5)
    vals = rng.normal(5, 3, (4000, 7))
    text = "".join(f"{i}," + ",".join(repr(float(v)) for v in row) + "\r\n"
                   for i, row in enumerate(vals))
    path = tmp_path / "M.csv"
    path.write_text(text)
    held = list(MemberSource(path).iter_pieces(4096))   # all handed out before parsing
    assert len(held) > 10 * zipstream.MAPPED_LAG
    blocks = list(iter_blocks(held, 7, 512))
    np.testing.assert_array_equal(np.concatenate([b.values for b in blocks]), vals)
    assert np.concatenate([b.ids for b in blocks]).tolist() == list(range(4000))


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "E.csv"
    path.write_bytes(b"")
    assert list(MemberSource(path).iter_pieces()) == []
    with pytest.raises(FormatError, match="empty file"):
        list(iter_blocks(MemberSource(path).iter_pieces(), 3, 4, name=str(path)))


def test_a_file_that_cannot_be_mapped_is_read(tmp_path, monkeypatch):
    path = tmp_path / "M.csv"
    path.write_bytes(b"1,0.5\n2,1.5\n")

    def refuse(*args, **kwargs):
        raise OSError("no mmap here")

    monkeypatch.setattr(zipstream.mmap, "mmap", refuse)
    pieces = list(MemberSource(path).iter_pieces(5))
    assert all(isinstance(p, bytes) for p in pieces) and b"".join(pieces) == path.read_bytes()


def test_zip_members_are_inflated_pieces(tmp_path):
    path = tmp_path / "d.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("M.csv", b"1,0.5\n" * 1000)
    pieces = list(MemberSource(path, "M.csv").iter_pieces(1000))
    assert all(isinstance(p, bytes) for p in pieces) and b"".join(pieces) == b"1,0.5\n" * 1000
