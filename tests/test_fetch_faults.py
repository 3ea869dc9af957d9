"""Fault injection for downloads (docs/reliability.md, "Downloads").

* ``fetch`` run as a subprocess against the loopback mirror and SIGKILLed at seeded random
  moments (one of the mirror's files replaced half-way), then run to the end: the files are
  byte-identical to the mirror's and no process of a killed run outlives it;
* a kill during the zip CRC check: no orphan, and the complete ``.part`` is verified on the next
  run without being downloaded again;
* hostile servers: a file replaced between two runs, a server that ignores ``If-Range``, no
  validators, no ``Content-Length`` with a cut body, ``Retry-After: 3600``, nothing listening;
* a full disk: a simulated ENOSPC on one file, and a real 2 MiB tmpfs where the machine allows
  mounting one (root), skipped otherwise.

Every subprocess and server here is bounded in time; the module runs in well under a minute.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from atlas_engine.fetch import RetryPolicy, fetch_ahba, parts, retries, transfer
from atlas_engine.fetch.http import DNS_ATTEMPTS, REFUSED_ATTEMPTS
from atlas_engine.fetch.manifest import Manifest
from atlas_engine.sources.donors import resolve_donors
from atlas_engine.testing.server import DOWNLOAD_PREFIX, Faults, MirrorServer
from atlas_engine.testing.synth import write_ahba

REPO = Path(__file__).resolve().parents[1]
FAST = RetryPolicy(max_attempts=4, backoff_base=0.01, backoff_max=0.05, sock_read_timeout=5)
DONORS = "9861,10021,12876"
ZIPS = [f"normalized_microarray_donor{d}.zip" for d in DONORS.split(",")]
LINUX = sys.platform.startswith("linux")


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("faults-raw")
    write_ahba(dest, probes=1500, samples_fraction=0.1, seed=7, donors=DONORS)
    return dest


@pytest.fixture
def mirror_dir(raw: Path, tmp_path: Path) -> Path:
    """A private copy of the mirror's files (tests replace some of them)."""
    dest = tmp_path / "mirror"
    shutil.copytree(raw, dest)
    return dest


def _fetch_cmd(dest: Path, url: str, *extra: str) -> list[str]:
    return [sys.executable, "-c",
            "import sys; sys.argv[0] = 'atlas-engine'; from atlas_engine.cli import main; main()",
            "fetch", "--dest", str(dest), "--base-url", url, "--donors", DONORS,
            "--what", "microarray,structure-graph", "--retries", "4", "--quiet", *extra]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


# -- process tree (Linux /proc) ---------------------------------------------------------------
def _state(pid: int) -> str | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()[0]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(text.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    return {p for p in pids if _state(p) not in (None, "Z")}


def _kill_and_check_tree(proc: subprocess.Popen) -> int:
    """SIGKILL ``proc``; every process it had started must be gone within 20 s (they are
    killed with it, not left to finish their work). Returns how many there were."""
    tree = _descendants(proc.pid)
    proc.kill()
    proc.wait(timeout=20)
    deadline = time.monotonic() + 20
    while _alive(tree) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = _alive(tree)
    for pid in left:  # do not leak them into the rest of the suite
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes outlived the killed fetch: {sorted(left)}"
    return len(tree)


def _same_as_mirror(dest: Path, mirror: Path) -> None:
    for name in [*ZIPS, "structure_graph_10.json"]:
        assert (dest / name).read_bytes() == (mirror / name).read_bytes(), name
    assert not list(dest.glob("*.part")) and not list(dest.glob("*.part.json"))


def _replace(path: Path, data: bytes) -> None:
    """A new version of a served file (new size or mtime: a new ETag)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


# -- random kills ------------------------------------------------------------------------------
#: Kills per run of the suite (ATLAS_FAULT_KILLS=200 for a longer soak).
KILLS = int(os.environ.get("ATLAS_FAULT_KILLS", "10"))


@pytest.mark.skipif(not LINUX, reason="process-tree checks read /proc")
def test_random_kills_then_byte_identical_files(mirror_dir: Path, raw: Path,
                                               tmp_path: Path) -> None:
    rng = random.Random(20261205)
    dest = tmp_path / "dest"
    other = tmp_path / "other"
    write_ahba(other, probes=1500, samples_fraction=0.1, seed=8, donors="9861")
    kills = finished = children = in_crc = 0
    old_version, was_complete, stale_part, kept_old = b"", False, False, False
    # ~1.5 MB/s per response: a run takes ~3 s (start-up, transfer, CRC check, publish)
    with MirrorServer(mirror_dir, faults=Faults(bandwidth=1_500_000)) as srv:
        # how long one whole run takes on this machine now: the kills land inside it
        t0 = time.monotonic()
        calib = subprocess.run(_fetch_cmd(tmp_path / "calib", srv.url), env=_env(),
                               capture_output=True, timeout=300)
        assert calib.returncode == 0, calib.stderr.decode()
        whole = time.monotonic() - t0
        for i in range(KILLS):
            if i == KILLS // 2:  # the server's file changes while a .part of it may exist
                old_version = (mirror_dir / ZIPS[0]).read_bytes()
                # a file already complete then - published, or a whole .part killed during
                # its CRC check - is not asked for again: it may stay the old version, whole
                part = dest / (ZIPS[0] + ".part")
                stale_part = part.exists()
                meta = parts.load_part_meta(part) if stale_part else None
                was_complete = (dest / ZIPS[0]).exists() or (
                    meta is not None and meta.size == part.stat().st_size)
                _replace(mirror_dir / ZIPS[0], (other / ZIPS[0]).read_bytes())
            proc = subprocess.Popen(_fetch_cmd(dest, srv.url), env=_env(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(rng.uniform(0.15, 0.95) * whole)
            if proc.poll() is None:
                tree = _descendants(proc.pid)
                in_crc += any(_descendants(c) for c in tree)  # pool workers at work
                children += _kill_and_check_tree(proc)
                kills += 1
            else:
                assert proc.returncode == 0, proc.stderr.read().decode()
                finished += 1
                shutil.rmtree(dest)  # start over: the next kill has work to interrupt
            proc.stderr.close()
        srv.set_faults(bandwidth=None)
        done = subprocess.run(_fetch_cmd(dest, srv.url), env=_env(), capture_output=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        got = (dest / ZIPS[0]).read_bytes()
        if got != (mirror_dir / ZIPS[0]).read_bytes():
            assert was_complete and got == old_version, "neither version of the changed file"
            _replace(mirror_dir / ZIPS[0], old_version)
        kept_old = got == old_version
        _same_as_mirror(dest, mirror_dir)
        again = subprocess.run(_fetch_cmd(dest, srv.url, "--verify-all"), env=_env(),
                               capture_output=True, timeout=120)
        assert again.returncode == 0, again.stderr.decode()
    # the kill times are drawn inside a whole run's duration; a run can still finish first on
    # a machine that sped up, but most are interrupted
    assert kills >= 1, (kills, finished)
    print(f"\nrandom kills: {kills} killed ({in_crc} with CRC workers running; {children} "
          f"child processes, all gone with their parent), {finished} runs finished before "
          f"their kill; when the mirror's file changed a .part of it "
          f"{'was' if stale_part else 'was not'} there ({'complete' if was_complete else 'partial'})"
          f" and the result is its {'old' if kept_old else 'new'} version; final files "
          "byte-identical to the mirror's")


@pytest.mark.skipif(not LINUX, reason="process-tree checks read /proc")
def test_kill_during_crc_check_no_orphans_and_part_is_verified_not_refetched(
        mirror_dir: Path, tmp_path: Path) -> None:
    with MirrorServer(mirror_dir) as srv:
        for attempt in range(3):
            dest = tmp_path / f"dest{attempt}"
            cmd = _fetch_cmd(dest, "", "--donors", "9861", "--what", "microarray")
            cmd[cmd.index("--base-url") + 1] = srv.url
            proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            # the CRC pass runs in pool workers forked by a forkserver: grandchildren of
            # fetch, started when the first zip is complete
            while time.monotonic() < deadline and proc.poll() is None:
                tree = _descendants(proc.pid)
                if any(_descendants(c) for c in tree):
                    break
                time.sleep(0.005)
            assert proc.poll() is None, "fetch finished before its CRC check could be seen"
            assert _kill_and_check_tree(proc) >= 2
            # nothing holds fetch's stdout any more: reading it ends at once
            assert proc.stdout.read() == b""
            proc.stdout.close()
            part = dest / (ZIPS[0] + ".part")
            if part.exists():
                break
            # on a loaded machine the check can finish between seeing its workers and the
            # kill (the zip is then in place, verified): try again
            assert (dest / ZIPS[0]).exists(), "neither the .part nor the verified zip is there"
        else:
            pytest.fail("the CRC check finished before every kill (3 attempts)")
        assert part.stat().st_size == (mirror_dir / ZIPS[0]).stat().st_size
        srv.reset_stats()
        done = subprocess.run(cmd, env=_env(), capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        assert srv.downloads() == []  # verified where it was, not downloaded again
    assert (dest / ZIPS[0]).read_bytes() == (mirror_dir / ZIPS[0]).read_bytes()


# -- hostile servers (in process) ---------------------------------------------------------------
def _partial(srv: MirrorServer, dest: Path, cut: int) -> Path:
    """Leave ``dest/<first zip>.part`` as an interrupted fetch leaves it: the first ``cut``
    bytes of the served file and the record of the version they belong to."""
    donor = resolve_donors("9861")[0]
    req = urllib.request.Request(f"{srv.url}{DOWNLOAD_PREFIX}{donor.microarray_wkf}",
                                 headers={"Range": f"bytes=0-{cut - 1}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body, headers = resp.read(), resp.headers
    dest.mkdir(parents=True, exist_ok=True)
    part = dest / (ZIPS[0] + ".part")
    part.write_bytes(body)
    total = int(headers["Content-Range"].rsplit("/", 1)[1])
    parts._save_part_meta(part, parts.PartMeta(headers.get("ETag"),
                                               headers.get("Last-Modified"), total))
    srv.reset_stats()
    return part


def _other_zip(tmp_path: Path) -> bytes:
    other = tmp_path / "other"
    write_ahba(other, probes=1500, samples_fraction=0.1, seed=9, donors="9861")
    return (other / ZIPS[0]).read_bytes()


def test_stale_part_restarts_when_the_server_file_changed(mirror_dir: Path,
                                                          tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with MirrorServer(mirror_dir) as srv:
        _partial(srv, dest, 300_000)
        _replace(mirror_dir / ZIPS[0], _other_zip(tmp_path))
        report = fetch_ahba(dest, donors="9861", what="microarray", base_url=srv.url,
                            policy=FAST)
        assert report.ok, report.cause()
        first = srv.downloads()[0]
        assert first.range == "bytes=300000-" and first.status == 200  # If-Range said no
    assert (dest / ZIPS[0]).read_bytes() == (mirror_dir / ZIPS[0]).read_bytes()


def test_server_ignoring_if_range_is_caught_by_the_etag(mirror_dir: Path,
                                                       tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with MirrorServer(mirror_dir) as srv:
        _partial(srv, dest, 300_000)
        _replace(mirror_dir / ZIPS[0], _other_zip(tmp_path))
        srv.set_faults(ignore_if_range=True)
        report = fetch_ahba(dest, donors="9861", what="microarray", base_url=srv.url,
                            policy=FAST)
        assert report.ok, report.cause()
        statuses = [r.status for r in srv.downloads()]
        assert statuses == [206, 200]  # the 206 of the new version was refused
    assert (dest / ZIPS[0]).read_bytes() == (mirror_dir / ZIPS[0]).read_bytes()
    assert Manifest.load(dest).entries[ZIPS[0]].size == (mirror_dir / ZIPS[0]).stat().st_size


def test_resume_without_validators_checks_the_size(mirror_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with MirrorServer(mirror_dir) as srv:
        srv.set_faults(no_validators=True, drop_after=300_000, drop_first=1)
        report = fetch_ahba(dest, donors="9861", what="microarray", base_url=srv.url,
                            policy=FAST)
        assert report.ok
        assert [r.status for r in srv.downloads()] == [200, 206]  # resumed
        # a different size of the same name is another file: never joined
        _partial(srv, dest / "b", 300_000)
        body = (mirror_dir / ZIPS[0]).read_bytes()
        _replace(mirror_dir / ZIPS[0], _other_zip(tmp_path))
        assert len(body) != (mirror_dir / ZIPS[0]).stat().st_size
        srv.set_faults(no_validators=True)
        report = fetch_ahba(dest / "b", donors="9861", what="microarray", base_url=srv.url,
                            policy=FAST)
        assert report.ok, report.cause()
    assert (dest / "b" / ZIPS[0]).read_bytes() == (mirror_dir / ZIPS[0]).read_bytes()


def test_cut_body_without_content_length_is_retried_in_the_same_run(
        mirror_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with MirrorServer(mirror_dir, faults=Faults(no_content_length=True, drop_after=250_000,
                                                drop_first=2)) as srv:
        report = fetch_ahba(tmp_path, donors="9861", what="microarray", base_url=srv.url,
                            policy=FAST)
        assert report.ok, report.cause()
        assert len(srv.downloads()) == 3
    assert "sent no Content-Length" in capsys.readouterr().err
    assert (tmp_path / ZIPS[0]).read_bytes() == (mirror_dir / ZIPS[0]).read_bytes()


def test_complete_part_with_record_is_verified_without_a_request(mirror_dir: Path,
                                                                tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with MirrorServer(mirror_dir) as srv:
        part = _partial(srv, dest, 300_000)
        full = (mirror_dir / ZIPS[0]).read_bytes()
        part.write_bytes(full)  # as left by a run killed during its CRC check
        meta = parts.load_part_meta(part)
        assert meta is not None and meta.size == len(full)
        report = fetch_ahba(dest, donors="9861", what="microarray", base_url=srv.url,
                            policy=FAST)
        assert report.ok and srv.downloads() == []
        # a complete but corrupt leftover is downloaded again, not published
        (dest / ZIPS[0]).unlink()
        (dest / "manifest.json").unlink()
        parts._save_part_meta(part, meta)
        part.write_bytes(full[:1000] + bytes(len(full) - 1000))
        report = fetch_ahba(dest, donors="9861", what="microarray", base_url=srv.url,
                            policy=FAST)
        assert report.ok, report.cause()
        assert len(srv.downloads()) == 1
    assert (dest / ZIPS[0]).read_bytes() == full


def test_part_without_record_starts_from_zero(mirror_dir: Path, tmp_path: Path) -> None:
    (tmp_path / (ZIPS[0] + ".part")).write_bytes(b"PK\x03\x04" + b"\x00" * 5000)
    with MirrorServer(mirror_dir) as srv:
        report = fetch_ahba(tmp_path, donors="9861", what="microarray", base_url=srv.url,
                            policy=FAST)
        assert report.ok, report.cause()
        assert [r.range for r in srv.downloads()] == [None]
    assert (tmp_path / ZIPS[0]).read_bytes() == (mirror_dir / ZIPS[0]).read_bytes()


def test_partial_data_reaches_disk_before_a_chunk_fills(mirror_dir: Path,
                                                        tmp_path: Path) -> None:
    """A slow link: after a drop, what arrived is on disk although it is far below the
    4 MiB write size (it is written every FLUSH_SECONDS)."""
    with MirrorServer(mirror_dir, faults=Faults(bandwidth=400_000, drop_after=500_000,
                                                drop_first=1)) as srv:
        report = fetch_ahba(tmp_path, donors="9861", what="microarray", base_url=srv.url,
                            policy=FAST)
        assert report.ok
        ranges = [r.range for r in srv.downloads()]
    assert ranges[0] is None and ranges[1] is not None
    assert int(ranges[1].split("=")[1].rstrip("-")) >= 400_000


def test_retry_after_beyond_the_limit_fails_at_once_saying_so(mirror_dir: Path,
                                                              tmp_path: Path) -> None:
    with MirrorServer(mirror_dir, faults=Faults(fail_first=100, fail_status=429,
                                                retry_after=3600, scope="download")) as srv:
        report = fetch_ahba(tmp_path, donors="9861", what="microarray", base_url=srv.url,
                            policy=FAST)
        assert len(srv.downloads()) == 1
    assert not report.ok
    error = report.failed[0].error
    assert "Retry-After 3,600 s" in error and "try again later" in error and "\n" not in error


def test_long_wait_is_announced(mirror_dir: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(retries, "ANNOUNCE_WAIT", 0.1)
    with MirrorServer(mirror_dir, faults=Faults(fail_first=1, fail_status=503, retry_after=0.2,
                                                scope="download")) as srv:
        report = fetch_ahba(tmp_path, donors="9861", what="microarray", base_url=srv.url,
                            policy=FAST)
    assert report.ok
    assert f"{ZIPS[0]}: HTTP 503 Service Unavailable; waiting 0 s" in capsys.readouterr().err


def test_unreachable_server_fails_fast_saying_why(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    report = fetch_ahba(tmp_path, donors=DONORS, what="microarray",
                        base_url=f"http://127.0.0.1:{port}", policy=RetryPolicy())
    assert not report.ok and len(report.failed) == 3
    # a few quick attempts (a server may be starting), not the policy's 8 with long waits
    assert all(r.requests == REFUSED_ATTEMPTS for r in report.failed)
    assert "connection refused by 127.0.0.1" in report.cause()
    # a host name that does not resolve: two attempts (the error is the same as offline)
    report = fetch_ahba(tmp_path, donors="9861", what="microarray",
                        base_url="http://no-such-host.invalid", policy=RetryPolicy())
    assert [r.requests for r in report.failed] == [DNS_ATTEMPTS]
    assert "cannot resolve the host name 'no-such-host.invalid'" in report.cause()


def test_fetch_waits_for_a_mirror_still_starting(mirror_dir: Path, tmp_path: Path) -> None:
    """``atlas-engine serve DIR &`` then ``fetch`` at once: refused connections are retried
    for a few seconds."""
    srv = MirrorServer(mirror_dir)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv.port = sock.getsockname()[1]
    sock.close()
    timer = threading.Timer(0.3, srv.start_in_thread)
    timer.start()
    try:
        report = fetch_ahba(tmp_path, donors="9861", what="microarray",
                            base_url=f"http://127.0.0.1:{srv.port}", policy=RetryPolicy())
    finally:
        timer.join()
        srv.stop_thread()
    assert report.ok, report.cause()
    assert report.results[0].requests >= 2


# -- full disk ----------------------------------------------------------------------------------
def test_enospc_on_one_file_fails_that_file_in_one_line(mirror_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    real = transfer._write_all

    def write_all(fd: int, chunks: list[bytes]) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(ZIPS[1] + ".part"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, chunks)

    if not LINUX:
        pytest.skip("names the written file through /proc/self/fd")
    monkeypatch.setattr(transfer, "_write_all", write_all)
    with MirrorServer(mirror_dir) as srv:
        report = fetch_ahba(tmp_path, donors=DONORS, what="microarray", base_url=srv.url,
                            policy=FAST)
    assert [r.status for r in report.results] == ["downloaded", "failed", "downloaded"]
    error = report.results[1].error
    assert error.startswith(f"{ZIPS[1]}: cannot write") and "[ENOSPC]" in error
    assert "\n" not in error


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 2 MiB tmpfs (needs root and a kernel that lets this container mount)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if not LINUX or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root on Linux")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                         capture_output=True, timeout=20)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=20)


def test_real_full_disk_fails_per_file_in_one_line_each(mirror_dir: Path, small_tmpfs: Path,
                                                        raw: Path) -> None:
    sizes = {n: (mirror_dir / n).stat().st_size for n in ZIPS}
    assert sum(sizes.values()) > 2 << 20 > max(sizes.values())  # not all of them fit
    with MirrorServer(mirror_dir) as srv:
        res = subprocess.run(_fetch_cmd(small_tmpfs, srv.url, "--concurrency", "1"),
                             env=_env(), capture_output=True, timeout=120)
    err = res.stderr.decode()
    assert res.returncode == 1
    assert "Traceback" not in err
    failed = [line for line in err.splitlines() if line.startswith("failed: ")]
    assert failed and all("No space left on device [ENOSPC]" in line for line in failed)
    for name in ZIPS:  # what was published is whole
        if (small_tmpfs / name).exists():
            assert (small_tmpfs / name).read_bytes() == (mirror_dir / name).read_bytes()
    manifest = json.loads((small_tmpfs / "manifest.json").read_text())
    assert set(manifest["files"]) == {n for n in [*ZIPS, "structure_graph_10.json"]
                                      if (small_tmpfs / n).exists()}
