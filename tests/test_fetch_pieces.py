"""Ranged downloads (atlas_engine/fetch/pieces.py) against the loopback mirror: pieces assembled
byte-identical, a dropped piece resumed from its own offset, a killed run resumed piece by
piece, a server that ignores Range, a file replaced between runs (restart from byte 0)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from atlas_engine.fetch import DownloadSpec, RetryPolicy, download_files
from atlas_engine.fetch.sync import run_sync
from atlas_engine.testing.server import Faults, serving

REPO = Path(__file__).resolve().parents[1]
FAST = RetryPolicy(max_attempts=4, backoff_base=0.01, backoff_max=0.05, sock_read_timeout=5)
SIZE = 3_000_017  # not a multiple of the piece count
PREFIX = "aibs_test_10x"


def _data(seed: int, size: int = SIZE) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    root = tmp_path / "mirror"
    (root / PREFIX).mkdir(parents=True)
    (root / PREFIX / "matrix.csv").write_bytes(_data(1))
    return root


def _spec(url: str) -> DownloadSpec:
    return DownloadSpec(f"{url}/{PREFIX}/matrix.csv", "matrix.csv", "raw")


def _get(url: str, dest: Path, **kw) -> object:
    kw.setdefault("policy", FAST)
    (res,) = run_sync(download_files([_spec(url)], dest, pieces=4, piece_threshold=1,
                                     chunk_size=64 << 10, **kw))
    return res


def _ranges(server) -> list[str | None]:
    return [r.range for r in server.log if r.path.endswith("/matrix.csv")]


def test_pieces_assemble_byte_identical(mirror: Path, tmp_path: Path) -> None:
    with serving(mirror, faults=Faults(delay=0.2)) as server:
        res = _get(server.url, tmp_path / "dest")
        ranges = _ranges(server)
        overlap = server.max_concurrent_downloads
    assert res.status == "downloaded", res.error
    assert (tmp_path / "dest" / "matrix.csv").read_bytes() == (mirror / PREFIX /
                                                               "matrix.csv").read_bytes()
    step = -(-SIZE // 4)
    want = [f"bytes={a}-{min(SIZE, a + step) - 1}" for a in range(0, SIZE, step)]
    assert ranges[0] is None and sorted(ranges[1:]) == sorted(want)
    assert overlap >= 2  # the pieces were in flight together
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["manifest.json",
                                                                     "matrix.csv"]
    # below the threshold (or pieces=1): one stream, as before
    with serving(mirror) as server:
        (res,) = run_sync(download_files([_spec(server.url)], tmp_path / "one", policy=FAST,
                                         piece_threshold=SIZE + 1))
        assert res.status == "downloaded" and _ranges(server) == [None]


def test_dropped_piece_resumes_from_its_own_offset(mirror: Path, tmp_path: Path) -> None:
    # the first three bodies are cut at seeded random offsets: the opening GET and two pieces
    with serving(mirror, faults=Faults(drop_seed=3, drop_first=3)) as server:
        res = _get(server.url, tmp_path / "dest")
        log = [(r.range, r.fault, r.bytes_sent) for r in server.log
               if r.path.endswith("/matrix.csv")]
    assert res.status == "downloaded", res.error
    assert (tmp_path / "dest" / "matrix.csv").read_bytes() == _data(1)
    starts = {int(r[6:].split("-")[0]) for r, _, _ in log if r}
    step = -(-SIZE // 4)
    resumed = starts - set(range(0, SIZE, step))
    assert sum(f == "drop" for _, f, _ in log[1:]) == 2 and len(resumed) == 2
    assert all(s % step > 0 for s in resumed)  # mid-piece: not from the piece's start


def test_server_ignoring_range_falls_back_to_one_stream(mirror: Path, tmp_path: Path) -> None:
    with serving(mirror, faults=Faults(ignore_range=True)) as server:
        res = _get(server.url, tmp_path / "dest")
        log = [(r.range, r.status) for r in server.log if r.path.endswith("/matrix.csv")]
    assert res.status == "downloaded", res.error
    assert (tmp_path / "dest" / "matrix.csv").read_bytes() == _data(1)
    assert all(status == 200 for _, status in log)
    assert log[-1] == (None, 200)  # the whole file in one stream after the pieces got 200s
    assert not list((tmp_path / "dest").glob("*.part*"))


def test_no_content_length_stays_one_stream(mirror: Path, tmp_path: Path) -> None:
    with serving(mirror, faults=Faults(no_content_length=True)) as server:
        res = _get(server.url, tmp_path / "dest")
        assert _ranges(server) == [None]
    assert res.status == "downloaded", res.error
    assert (tmp_path / "dest" / "matrix.csv").read_bytes() == _data(1)


def _partial_run(url: str, dest: Path) -> dict:
    """A run stopped part-way (cancelled, as Ctrl-C does): a ranged .part is left."""
    import asyncio

    async def go() -> None:
        await asyncio.wait_for(download_files([_spec(url)], dest, policy=FAST, pieces=4,
                                              piece_threshold=1, chunk_size=64 << 10), 1.5)

    with pytest.raises(asyncio.TimeoutError):
        run_sync(go())
    meta = json.loads((dest / "matrix.csv.part.json").read_text())
    assert (dest / "matrix.csv.part").stat().st_size == SIZE
    return meta


def test_file_replaced_between_runs_restarts_from_zero(mirror: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with serving(mirror, faults=Faults(bandwidth=400_000)) as server:
        meta = _partial_run(server.url, dest)
        assert all(0 < d < b - a for a, b, d in meta["pieces"]), meta
        new = _data(2, SIZE + 5)
        (mirror / PREFIX / "matrix.csv").write_bytes(new)  # a new version: new ETag and size
        server.set_faults(bandwidth=None)
        server.reset_stats()
        res = _get(server.url, dest)
        log = [(r.range, r.status) for r in server.log if r.path.endswith("/matrix.csv")]
    assert res.status == "downloaded", res.error
    assert (dest / "matrix.csv").read_bytes() == new
    # the old pieces asked with If-Range got the new file whole (200): start again at byte 0,
    # then the new version in pieces
    assert any(r is not None and s == 200 for r, s in log)
    assert (None, 200) in log and sum(s == 206 for _, s in log) == 4


def test_killed_ranged_run_resumes_each_piece(mirror: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    # slow bodies so the kill lands with every piece part-way
    with serving(mirror, faults=Faults(bandwidth=400_000)) as server:
        code = ("import sys\nfrom atlas_engine.fetch import DownloadSpec, download_files\n"
                "from atlas_engine.fetch.sync import run_sync\n"
                f"run_sync(download_files([DownloadSpec({_spec(server.url).url!r}, "
                f"'matrix.csv', 'raw')], {str(dest)!r}, pieces=4, piece_threshold=1, "
                "chunk_size=65536))\n")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-c", code], env=env)
        meta_path = dest / "matrix.csv.part.json"
        deadline = time.monotonic() + 60
        meta = None
        try:
            while time.monotonic() < deadline:
                try:
                    meta = json.loads(meta_path.read_text())
                except (OSError, ValueError):
                    meta = None
                if meta and meta.get("pieces") and all(d > 0 for _, _, d in meta["pieces"]):
                    break
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert meta is not None and all(0 < d < b - a for a, b, d in meta["pieces"]), meta
        recorded = json.loads(meta_path.read_text())["pieces"]
        server.set_faults(bandwidth=None)
        server.reset_stats()
        res = _get(server.url, dest)
        ranges = _ranges(server)
    assert res.status == "downloaded", res.error
    assert (dest / "matrix.csv").read_bytes() == _data(1)
    # each piece asked only for what it lacked, from its own recorded offset
    assert sorted(ranges) == sorted(f"bytes={a + d}-{b - 1}" for a, b, d in recorded)


def test_a_body_shorter_than_the_sniffed_head_is_written(mirror: Path, tmp_path: Path) -> None:
    (mirror / PREFIX / "metadata.csv").write_bytes(b"sample_name,cluster_label\nc1,A\n")
    with serving(mirror) as server:
        (res,) = run_sync(download_files([DownloadSpec(
            f"{server.url}/{PREFIX}/metadata.csv", "metadata.csv", "raw")], tmp_path,
            policy=FAST))
    assert res.status == "downloaded", res.error
    assert (tmp_path / "metadata.csv").read_bytes() == b"sample_name,cluster_label\nc1,A\n"


def test_ranged_part_resumed_with_pieces_1_continues_its_prefix(mirror: Path,
                                                                tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with serving(mirror, faults=Faults(bandwidth=400_000)) as server:
        meta = _partial_run(server.url, dest)
        a, b, d = meta["pieces"][0]
        server.set_faults(bandwidth=None)
        server.reset_stats()
        (res,) = run_sync(download_files([_spec(server.url)], dest, policy=FAST, pieces=1))
        ranges = _ranges(server)
    assert res.status == "downloaded", res.error
    assert (dest / "matrix.csv").read_bytes() == _data(1)
    # one stream from the bytes the first piece had on disk without a gap
    assert len(ranges) == 1 and int(ranges[0][6:].split("-")[0]) >= d > 0


def test_fetch_command_pieces_options(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from atlas_engine.cli.fetch import fetch_cmd
    from atlas_engine.testing.synth_celltypes import CellTypeWorldSpec, write_dataset

    _, files = write_dataset(tmp_path / "mirror", "human-m1",
                             CellTypeWorldSpec(n_cells=2500, n_genes=400, seed=2))
    matrix = files[0]
    assert matrix.stat().st_size > 1 << 20
    with serving(tmp_path / "mirror") as server:
        res = CliRunner().invoke(fetch_cmd, [
            "--dest", str(tmp_path / "raw"), "--base-url", server.url, "-q",
            "--what", "celltypes:human-m1", "--pieces", "3", "--pieces-above", "1"])
        log = [(r.path.rsplit("/", 1)[-1], r.range) for r in server.log]
    assert res.exit_code == 0, res.output
    got = tmp_path / "raw" / "aibs_human_m1_10x"
    assert (got / "matrix.csv").read_bytes() == matrix.read_bytes()
    assert (got / "metadata.csv").read_bytes() == matrix.with_name("metadata.csv").read_bytes()
    assert sum(1 for name, r in log if name == "matrix.csv" and r) == 3
    assert all(r is None for name, r in log if name != "matrix.csv")  # small files: one stream
