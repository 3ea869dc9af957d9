"""Streaming pieces of a zip member, and how memory limits size the convert pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import zarr

from atlas_engine.convert.memplan import (
    BASE_MEMORY,
    StreamPlan,
    donor_memory,
    plan_jobs,
)
from atlas_engine.convert.params import ConvertOptions as Options
from atlas_engine.convert.zipstream import MemberSource
from atlas_engine.errors import VerificationError


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_member_pieces_are_capped_and_exact(tmp_path, method):
    # highly compressible (like PACall: ~20×): one compressed read inflates far past the cap
    rng = np.random.default_rng(0)
    data = b"".join(b"%d," % v for v in rng.integers(0, 2, 600_000)) + b"\n"
    z = tmp_path / "m.zip"
    with zipfile.ZipFile(z, "w", method) as zf:
        zf.writestr("PACall.csv", data)
    pieces = list(MemberSource(z, "PACall.csv").iter_chunks(read_size=1 << 16,
                                                            piece_size=50_000))
    assert b"".join(pieces) == data
    assert max(len(p) for p in pieces) <= 50_000
    assert len(pieces) >= len(data) // 50_000


def test_member_crc_mismatch_detected(tmp_path):
    z = tmp_path / "m.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("E.csv", b"1,2.5\n" * 1000)
    raw = bytearray(z.read_bytes())
    k = raw.find(b"1,2.5\n" * 3) + 2
    raw[k] = ord("7")                   # same size, different bytes
    z.write_bytes(bytes(raw))
    with pytest.raises(VerificationError, match="CRC-32"):
        list(MemberSource(z, "E.csv").iter_chunks(piece_size=777))


@pytest.mark.parametrize("limit", [None, "2GB", "1GB", "600MB", "512MB", "400MB", "300MB"])
@pytest.mark.parametrize("jobs", [None, 2, 4])
def test_plan_fits_memory_limit(limit, jobs):
    from atlas_engine.config import parse_size

    opts = Options(memory_limit=parse_size(limit), jobs=jobs)
    got, (pe, pp) = plan_jobs(opts, 946, 6)
    budget = parse_size(limit) or 1 << 30
    need = BASE_MEMORY + got * donor_memory(pe, opts, 946)
    if got > 1 or pe != StreamPlan(1 << 20, 1, 1):
        assert need <= budget            # fits, unless even the leanest single donor does not
    if limit == "2GB":
        assert got == (jobs or min(2, os.cpu_count() or 1))
    if limit in ("512MB", "400MB", "300MB"):
        assert got == 1


def test_plan_respects_jobs_and_donor_count():
    assert plan_jobs(Options(jobs=1), 946, 6)[0] == 1
    assert plan_jobs(Options(jobs=4, memory_limit=64 << 30), 946, 3)[0] == 3
    # more memory never means fewer donors at once or smaller buffers
    small = plan_jobs(Options(jobs=2, memory_limit=500 << 20), 3702, 6)
    large = plan_jobs(Options(jobs=2, memory_limit=4 << 30), 3702, 6)
    assert large[0] >= small[0]
    assert large[1][0].bytes(2048, 3702, 4) >= small[1][0].bytes(2048, 3702, 4)


def test_limit_arenas_applies_on_glibc():
    import platform

    from atlas_engine.malloc import limit_arenas

    applied = limit_arenas(8)   # 8 per core is glibc's own default scale: harmless here
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied is True
    else:
        assert applied is False


def test_trim_runs_on_glibc_and_is_a_no_op_elsewhere(monkeypatch):
    import platform

    from atlas_engine import malloc

    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert malloc.trim() is glibc
    monkeypatch.setattr(malloc, "_glibc", lambda: None)     # macOS, musl
    assert malloc.trim() is False
    assert malloc.limit_arenas(2) is False
    assert malloc.tune_allocator() is False


@pytest.mark.parametrize("dtype", ["float32", "float64", "bool"])
def test_block_writer_local_chunks_read_back_exactly(tmp_path, dtype):
    from atlas_engine.convert import writer

    rng = np.random.default_rng(2)
    shape, chunks = (23, 17), (5, 4)            # edge chunks in both dimensions
    want = (rng.integers(0, 2, shape).astype(bool) if dtype == "bool"
            else rng.normal(size=shape).astype(dtype))
    arrs = {}
    for kind, url in (("local", str(tmp_path / "g")), ("memory", "memory://bw")):
        arr = writer.create_matrix(url, "m", shape, chunks, dtype, ("probe", "sample"))
        bw = writer.BlockWriter(arr)
        assert (bw.root is not None) == (kind == "local")
        crcs = [bw.write(r0, want[r0:r0 + 5]) for r0 in range(0, 23, 5)]
        assert crcs == [writer.chunk_crcs(want[r0:r0 + 5], 4) for r0 in range(0, 23, 5)]
        arrs[kind] = arr
    back = zarr.open_array(str(tmp_path / "g" / "m"), mode="r")[:]
    assert back.dtype == want.dtype and (back.view(np.uint8) == want.view(np.uint8)).all()
    assert (arrs["memory"][:] == want).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_parser_warm_up_loads_the_kernels_the_streams_use(dtype):
    """``blockparse.warm_up`` swallows its errors (the real parse reports them): check in a
    fresh process that it did load the value parser for the store's dtype and the PA-call
    parser, the specialisations the streams then call."""
    code = ("import sys; from atlas_engine.convert.blockparse import warm_up;"
            "from atlas_engine.kernels import csvparse as c; warm_up(sys.argv[1]);"
            "print(*[str(s[5].dtype) for s in c.parse_float_lines.signatures]);"
            "print(*[str(s[5].dtype) for s in c.parse_bool_lines.signatures])")
    out = subprocess.run([sys.executable, "-c", code, dtype], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == [dtype, "uint8"]
