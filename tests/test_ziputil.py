import zipfile

import pytest

from atlas_engine.errors import UnsafeArchiveError
from atlas_engine.ziputil import (
    check_zip_members,
    open_checked_zip,
    safe_extract,
    unsafe_member_reason,
)


@pytest.mark.parametrize("name", ["../evil.csv", "/etc/passwd", "a/../../b", "C:\\x.csv", "..\\x"])
def test_unsafe_names(name):
    assert unsafe_member_reason(name)


@pytest.mark.parametrize("name", ["Probes.csv", "sub/dir/file.csv", "a..b.csv"])
def test_safe_names(name):
    assert unsafe_member_reason(name) is None


def test_zip_slip_refused(tmp_path):
    p = tmp_path / "slip.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("ok.csv", "1,2\n")
        zf.writestr("../../escape.csv", "1,2\n")
    with pytest.raises(UnsafeArchiveError, match="escape"):
        open_checked_zip(p)


def test_zip_bomb_ratio_refused(tmp_path):
    p = tmp_path / "bomb.zip"
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.csv", b"0" * (8 << 20))
    with zipfile.ZipFile(p) as zf, pytest.raises(UnsafeArchiveError, match="zip bomb"):
        check_zip_members(zf, p)


def test_absurd_declared_size_refused(tmp_path):
    p = tmp_path / "big.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("a.csv", b"1,2,3\n" * 100)
    with zipfile.ZipFile(p) as zf, pytest.raises(UnsafeArchiveError, match="declares"):
        check_zip_members(zf, p, max_member_size=100)


def test_not_a_zip(tmp_path):
    p = tmp_path / "page.zip"
    p.write_text("<!DOCTYPE html><html>site unavailable</html>")
    with pytest.raises(UnsafeArchiveError, match="not a valid zip archive: this is an HTML page"):
        open_checked_zip(p)


def test_truncated_zip_says_so(tmp_path):
    p = tmp_path / "cut.zip"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.csv", b"1,2,3\n" * 10000)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(UnsafeArchiveError, match=r"the zip is truncated \(200 bytes and no "
                                                 r"end-of-central-directory record\)"):
        open_checked_zip(p)
    p.write_bytes(b"")
    with pytest.raises(UnsafeArchiveError, match="the file is empty"):
        open_checked_zip(p)
    p.write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(UnsafeArchiveError, match=r"not a zip archive \(starts b'GIF89a"):
        open_checked_zip(p)


def test_safe_extract_stays_inside(tmp_path):
    p = tmp_path / "ok.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("d/Probes.csv", "x\n")
    with zipfile.ZipFile(p) as zf:
        out = safe_extract(zf, "d/Probes.csv", tmp_path / "dest")
    assert out.read_text() == "x\n"
    with zipfile.ZipFile(p) as zf, pytest.raises(UnsafeArchiveError):
        safe_extract(zf, "../x", tmp_path / "dest")
