"""Downloads against a loopback server that injects faults: resume, retry, verification,
concurrency bound, manifest skip, donor 404."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
import re
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _aiohttp_thread import ThreadedApp
from aiohttp import web

from atlas_engine.errors import AtlasEngineError as AtlasEngineErrorBase
from atlas_engine.errors import UnsafeArchiveError, VerificationError
from atlas_engine.fetch import DownloadSpec, RetryPolicy, download_files, fetch_ahba
from atlas_engine.fetch.manifest import Manifest
from atlas_engine.fetch.verify import verify_zip
from atlas_engine.sources.donors import DONORS

FAST = RetryPolicy(max_attempts=4, backoff_base=0.01, backoff_max=0.05, sock_read_timeout=5)


@dataclass
class Faults:
    drop_at: list[int] = field(default_factory=list)   # per response: close after N bytes
    status_first: int = 0                               # first K requests answer `status`
    status: int = 503
    retry_after: str | None = None
    html_first: int = 0
    ignore_range: bool = False
    truncate_always: int | None = None                  # close every body after N bytes
    delay: float = 0.0                                  # seconds per body (to overlap)


class FaultServer(ThreadedApp):
    """A tiny aiohttp server for ``/api/v2/well_known_file_download/{id}`` with faults."""

    def __init__(self, files: dict[str, bytes], faults: Faults | None = None) -> None:
        self.files = files
        self.faults = faults or Faults()
        self.log: list[tuple[str, str | None, int]] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        rng = request.headers.get("Range")
        f = self.faults
        with self._lock:
            n = len(self.log)
            if key not in self.files:
                self.log.append((key, rng, 404))
                return web.Response(status=404, text="not found")
            if n < f.status_first:
                self.log.append((key, rng, f.status))
                headers = {"Retry-After": f.retry_after} if f.retry_after else {}
                return web.Response(status=f.status, headers=headers)
            html = sum(1 for e in self.log if e[2] == 299) < f.html_first
            self.log.append((key, rng, 299 if html else 200))
            drop = f.drop_at.pop(0) if f.drop_at else None
        if html:
            return web.Response(status=200, text="<!DOCTYPE html><html>site unavailable</html>",
                                content_type="text/html")
        data = self.files[key]
        start = 0
        resp = web.StreamResponse(status=200)
        if rng and not f.ignore_range:
            start = int(re.match(r"bytes=(\d+)-", rng).group(1))
            resp.set_status(206)
            resp.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        resp.content_length = len(body)
        resp.content_type = "application/zip"
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            await resp.prepare(request)
            if f.delay:
                await asyncio.sleep(f.delay)
            cut = drop if drop is not None else f.truncate_always
            if cut is not None and cut < len(body):
                await resp.write(body[:cut])
                await asyncio.sleep(0.01)
                request.transport.close()
                return resp
            for i in range(0, len(body), 1 << 16):
                await resp.write(body[i:i + 1 << 16])
            await resp.write_eof()
            return resp
        finally:
            with self._lock:
                self.active -= 1

    def __enter__(self) -> FaultServer:
        app = web.Application()
        app.router.add_get("/api/v2/well_known_file_download/{key}", self.handle)
        app.router.add_get("/api/v2/structure_graph_download/{key}", self.handle)
        self.start(app)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def spec(self, key: str, name: str | None = None) -> DownloadSpec:
        return DownloadSpec(f"{self.url}/api/v2/well_known_file_download/{key}",
                            name or f"{key}.zip")


def make_zip(seed: int, rows: int = 2000) -> bytes:
    rng = random.Random(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("MicroarrayExpression.csv", "\n".join(
            f"{1000 + i}," + ",".join(repr(rng.uniform(1.4, 12)) for _ in range(20))
            for i in range(rows)) + "\n")
        zf.writestr("PACall.csv", "\n".join(f"{1000 + i},0,1,1" for i in range(rows)) + "\n")
    return buf.getvalue()


def run(coro):
    return asyncio.run(coro)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_random_drops_resume_to_identical_bytes(tmp_path: Path) -> None:
    data = make_zip(1, rows=4000)
    offsets = sorted(random.Random(7).sample(range(1, len(data) - 1), 20))
    # each response is cut after a further slice, so the 20 drops land at these byte offsets
    cuts = [b - a for a, b in zip([0] + offsets[:-1], offsets, strict=True)]
    with FaultServer({"1": data}, Faults(drop_at=cuts)) as srv:
        (res,) = run(download_files([srv.spec("1")], tmp_path, policy=FAST))
    assert res.status == "downloaded", res.error
    out = (tmp_path / "1.zip").read_bytes()
    assert sha(out) == sha(data) == res.sha256
    assert len(srv.log) == 21
    ranges = [r for _, r, _ in srv.log]
    assert ranges[0] is None
    assert ranges[1:] == [f"bytes={o}-" for o in offsets]
    assert not (tmp_path / "1.zip.part").exists()
    assert Manifest.load(tmp_path).entries["1.zip"].sha256 == sha(data)


def test_server_ignoring_range_restarts_from_zero(tmp_path: Path) -> None:
    data = make_zip(2)
    with FaultServer({"2": data}, Faults(drop_at=[len(data) // 2], ignore_range=True)) as srv:
        (res,) = run(download_files([srv.spec("2")], tmp_path, policy=FAST))
    assert res.status == "downloaded", res.error
    assert (tmp_path / "2.zip").read_bytes() == data
    assert res.sha256 == sha(data)  # the hash restarted with the body


def test_truncated_body_is_rejected(tmp_path: Path) -> None:
    data = make_zip(3)
    with FaultServer({"3": data}, Faults(truncate_always=len(data) // 3, ignore_range=True)) as srv:
        (res,) = run(download_files([srv.spec("3")], tmp_path, policy=FAST))
    assert res.status == "failed"
    assert "giving up" in res.error
    assert not (tmp_path / "3.zip").exists()


def test_html_200_is_rejected(tmp_path: Path) -> None:
    with FaultServer({"4": make_zip(4)}, Faults(html_first=100)) as srv:
        (res,) = run(download_files([srv.spec("4")], tmp_path, policy=FAST))
    assert res.status == "failed"
    assert "HTML page" in res.error
    assert not (tmp_path / "4.zip").exists()


def test_html_200_then_recovery(tmp_path: Path) -> None:
    data = make_zip(5)
    with FaultServer({"5": data}, Faults(html_first=2)) as srv:
        (res,) = run(download_files([srv.spec("5")], tmp_path, policy=FAST))
    assert res.status == "downloaded", res.error
    assert (tmp_path / "5.zip").read_bytes() == data


def test_crc_broken_zip_is_rejected(tmp_path: Path) -> None:
    data = bytearray(make_zip(6))
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).infolist()[0]
    data[info.header_offset + 30 + len(info.filename) + 100] ^= 0x55  # inside member 1's data
    with FaultServer({"6": bytes(data)}) as srv:
        (res,) = run(download_files([srv.spec("6")], tmp_path, policy=FAST))
    assert res.status == "failed"
    assert "MicroarrayExpression.csv" in res.error
    assert not (tmp_path / "6.zip").exists()
    assert not (tmp_path / "6.zip.part").exists()


def test_non_zip_body_is_rejected(tmp_path: Path) -> None:
    with FaultServer({"7": b"just some text that is not a zip archive\n" * 10}) as srv:
        (res,) = run(download_files([srv.spec("7")], tmp_path, policy=FAST))
    assert res.status == "failed" and "not a zip" in res.error
    assert not (tmp_path / "7.zip").exists()


def _record_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Replace the downloader's sleep hook: the waits asked for are recorded, not slept."""
    from atlas_engine.fetch import retries

    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    monkeypatch.setattr(retries, "sleep", fake_sleep)
    return waits


@pytest.mark.parametrize("status", [503, 429])
def test_retry_after_is_honoured(tmp_path: Path, status: int,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    waits = _record_waits(monkeypatch)
    data = make_zip(8)
    faults = Faults(status_first=2, status=status, retry_after="1")
    with FaultServer({"8": data}, faults) as srv:
        (res,) = run(download_files([srv.spec("8")], tmp_path, policy=FAST))
    assert res.status == "downloaded", res.error
    assert [s for _, _, s in srv.log] == [status, status, 200]
    assert waits == [1.0, 1.0]  # Retry-After: 1 twice (the backoff alone would be ~0.01 s)


def test_retry_after_http_date(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime, timezone
    from email.utils import format_datetime

    from atlas_engine.fetch import retries

    waits = _record_waits(monkeypatch)
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    monkeypatch.setattr(retries, "utcnow", lambda: now)
    data = make_zip(9)
    later = now.replace(second=now.second + 3)
    faults = Faults(status_first=1, status=429, retry_after=format_datetime(later, usegmt=True))
    with FaultServer({"9": data}, faults) as srv:
        (res,) = run(download_files([srv.spec("9")], tmp_path, policy=FAST))
    assert res.status == "downloaded"
    assert waits == [3.0]  # the date is 3 s after the (injected) clock


def test_5xx_without_retry_after_uses_backoff_then_gives_up(tmp_path: Path) -> None:
    with FaultServer({"a": make_zip(10)}, Faults(status_first=100, status=502)) as srv:
        (res,) = run(download_files([srv.spec("a")], tmp_path, policy=FAST))
    assert res.status == "failed" and "HTTP 502" in res.error
    assert len(srv.log) == FAST.max_attempts


def test_concurrency_limit_holds(tmp_path: Path) -> None:
    files = {str(i): make_zip(20 + i, rows=300) for i in range(6)}
    with FaultServer(files, Faults(delay=0.15)) as srv:
        results = run(download_files([srv.spec(k) for k in files], tmp_path, concurrency=2,
                                     policy=FAST))
    assert all(r.status == "downloaded" for r in results)
    assert srv.max_active == 2
    for k, data in files.items():
        assert (tmp_path / f"{k}.zip").read_bytes() == data


def _evil_zip(name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, "x")
    return buf.getvalue()


def _bomb_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("MicroarrayExpression.csv", b"\0" * (64 << 20))
    return buf.getvalue()


@pytest.mark.parametrize("body,needle", [
    (_evil_zip("../escape.csv"), "escapes"),
    (_evil_zip("/etc/passwd"), "absolute"),
    (_bomb_zip(), "zip bomb"),
])
def test_unsafe_archives_are_refused(tmp_path: Path, body: bytes, needle: str) -> None:
    with FaultServer({"z": body}) as srv:
        (res,) = run(download_files([srv.spec("z")], tmp_path, policy=FAST))
    assert res.status == "failed" and needle in res.error
    assert not (tmp_path / "z.zip").exists()
    (tmp_path / "z2.zip").write_bytes(body)
    with pytest.raises(UnsafeArchiveError):
        verify_zip(tmp_path / "z2.zip")


def test_member_inflating_past_declared_size_is_refused(tmp_path: Path) -> None:
    data = bytearray(make_zip(11))
    zf = zipfile.ZipFile(io.BytesIO(bytes(data)))
    info = zf.infolist()[0]
    # lower the declared size in the central directory: inflation must stop at the excess
    cd = bytes(data).find(b"PK\x01\x02")  # first central-directory record
    data[cd + 24:cd + 28] = (info.file_size // 2).to_bytes(4, "little")
    path = tmp_path / "small.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="inflates past"):
        verify_zip(path)


def test_manifest_rerun_makes_no_requests(tmp_path: Path) -> None:
    files = {str(i): make_zip(30 + i, rows=200) for i in range(3)}
    with FaultServer(files) as srv:
        first = run(download_files([srv.spec(k) for k in files], tmp_path, policy=FAST))
        assert [r.status for r in first] == ["downloaded"] * 3
        n = len(srv.log)
        second = run(download_files([srv.spec(k) for k in files], tmp_path, policy=FAST))
        assert [r.status for r in second] == ["skipped"] * 3
        assert len(srv.log) == n  # no HTTP request at all
        # a file changed behind the manifest's back is fetched again
        (tmp_path / "1.zip").write_bytes(b"PK\x03\x04 damaged")
        third = run(download_files([srv.spec(k) for k in files], tmp_path, policy=FAST))
        assert [r.status for r in third] == ["skipped", "downloaded", "skipped"]
        assert len(srv.log) == n + 1
        assert (tmp_path / "1.zip").read_bytes() == files["1"]


def test_verify_all_rehashes(tmp_path: Path) -> None:
    files = {"0": make_zip(40, rows=200)}
    with FaultServer(files) as srv:
        run(download_files([srv.spec("0")], tmp_path, policy=FAST))
        path = tmp_path / "0.zip"
        st = path.stat()
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 1  # same size, same mtime, different content
        path.write_bytes(bytes(raw))
        import os

        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        n = len(srv.log)
        (res,) = run(download_files([srv.spec("0")], tmp_path, policy=FAST))
        assert res.status == "skipped" and len(srv.log) == n  # the cheap check cannot see it
        (res,) = run(download_files([srv.spec("0")], tmp_path, policy=FAST, verify_all=True))
        assert res.status == "downloaded"
        assert path.read_bytes() == files["0"]


def test_fetch_ahba_reports_missing_donor_and_finishes_others(tmp_path: Path) -> None:
    chosen = DONORS[:3]
    files = {str(d.microarray_wkf): make_zip(d.id, rows=150) for d in chosen[:2]}
    graph = {"success": True, "id": 0, "start_row": 0, "num_rows": 1, "total_rows": 1,
             "msg": [{"id": 4005, "acronym": "Br", "children": []}]}
    files["10.json"] = json.dumps(graph).encode()
    with FaultServer(files) as srv:
        report = fetch_ahba(tmp_path, donors=",".join(d.name for d in chosen),
                            what="microarray,structure-graph", base_url=srv.url, policy=FAST)
    assert not report.ok
    status = {r.spec.name: r.status for r in report.results}
    assert status == {chosen[0].zip_name: "downloaded", chosen[1].zip_name: "downloaded",
                      chosen[2].zip_name: "failed", "structure_graph_10.json": "downloaded"}
    (bad,) = report.failed
    assert "404" in bad.error
    assert "1 failed" in report.summary() and chosen[2].zip_name in report.summary()
    for d in chosen[:2]:
        assert (tmp_path / d.zip_name).read_bytes() == files[str(d.microarray_wkf)]
    assert json.loads((tmp_path / "structure_graph_10.json").read_text()) == graph


def _crc_broken_zip(seed: int) -> bytes:
    data = bytearray(make_zip(seed))
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).infolist()[0]
    data[info.header_offset + 30 + len(info.filename) + 100] ^= 0x55  # inside member 1's data
    return bytes(data)


def test_structure_only_mode_leaves_crc_to_the_converter(tmp_path: Path) -> None:
    """verify_crc=False: a CRC-broken body passes fetch (structure intact), keeps its sha256,
    and the converter's member stream refuses it; the default mode refuses it at fetch."""
    from atlas_engine.convert.zipstream import MemberSource
    from atlas_engine.errors import AtlasEngineError

    body = _crc_broken_zip(40)
    good = make_zip(41)
    with FaultServer({"b": body, "g": good}) as srv:
        res = run(download_files([srv.spec("b"), srv.spec("g")], tmp_path / "fast",
                                 policy=FAST, verify_crc=False))
        strict = run(download_files([srv.spec("b")], tmp_path / "strict", policy=FAST))
    assert [r.status for r in res] == ["downloaded", "downloaded"]
    assert (tmp_path / "fast" / "b.zip").read_bytes() == body
    assert res[0].sha256 == hashlib.sha256(body).hexdigest()
    assert strict[0].status == "failed" and "MicroarrayExpression.csv" in strict[0].error
    with pytest.raises(AtlasEngineError, match="MicroarrayExpression.csv"):
        for _ in MemberSource(tmp_path / "fast" / "b.zip", "MicroarrayExpression.csv") \
                .iter_chunks():
            pass
    src = MemberSource(tmp_path / "fast" / "g.zip", "PACall.csv")
    assert src.read_bytes() == zipfile.ZipFile(io.BytesIO(good)).read("PACall.csv")


def _patch_central(data: bytes, index: int, offset: int, value: bytes) -> bytes:
    out = bytearray(data)
    cd = -1
    for _ in range(index + 1):
        cd = out.find(b"PK\x01\x02", cd + 1)
    out[cd + offset:cd + offset + len(value)] = value
    return bytes(out)


def test_verify_zip_structure_catches_what_needs_no_inflating(tmp_path: Path) -> None:
    from atlas_engine.fetch.verify import verify_zip_structure

    data = make_zip(42)
    infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    path = tmp_path / "a.zip"
    path.write_bytes(data)
    assert verify_zip_structure(path) == ["MicroarrayExpression.csv", "PACall.csv"]
    # member 1 claims more compressed bytes than lie before member 2
    grown = (infos[0].compress_size + 500).to_bytes(4, "little")
    path.write_bytes(_patch_central(data, 0, 20, grown))
    with pytest.raises(VerificationError, match="overlaps|central directory"):
        verify_zip_structure(path)
    # member 2's local header renamed (a spliced body)
    bad = bytearray(data)
    bad[infos[1].header_offset + 30] ^= 0x20
    path.write_bytes(bytes(bad))
    with pytest.raises(VerificationError, match="local header names"):
        verify_zip_structure(path)
    # member 2's local header offset pointing into member 1's data
    moved = (infos[1].header_offset - 64).to_bytes(4, "little")
    path.write_bytes(_patch_central(data, 1, 42, moved))
    with pytest.raises(VerificationError, match="local header|overlaps"):
        verify_zip_structure(path)
    # truncated body: the central directory is gone
    path.write_bytes(data[:-40])
    with pytest.raises(AtlasEngineErrorBase):
        verify_zip_structure(path)
