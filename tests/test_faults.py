"""Fault injection on conversion and reading (docs/reliability.md, "Store and conversion").

Random kills of ``convert`` (results byte-identical to a clean run after a re-run), two
concurrent converts, crashes at each step of publishing a donor, damaged and missing chunks,
lying zips, a full disk (a small tmpfs, when the machine lets us mount one), non-finite tokens,
byte-order marks. Kept small: the whole module runs in well under a minute.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from atlas_engine.aggregate.api import aggregate
from atlas_engine.cli import main
from atlas_engine.convert import store_lock, writer
from atlas_engine.convert.donor import convert_microarray
from atlas_engine.convert.zipstream import MemberSource
from atlas_engine.errors import (
    DamagedStoreError,
    FormatError,
    StoreError,
    VerificationError,
)
from atlas_engine.store.open import open_store
from atlas_engine.store.verify import verify_store

DONORS = [12876, 14380, 15496]
ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _src(synth_small, tmp_path: Path, donors=DONORS) -> Path:
    """A raw folder holding only ``donors`` (hard links to the session's zips)."""
    src = tmp_path / "raw"
    src.mkdir(exist_ok=True)
    for d in donors:
        z = synth_small.dest / f"normalized_microarray_donor{d}.zip"
        os.link(z, src / z.name)
    return src


def _chunk_files(store: Path) -> dict[str, bytes]:
    """Every chunk file of the store's arrays (relative path → bytes)."""
    out = {}
    for f in sorted(store.rglob("*")):
        rel = f.relative_to(store).as_posix()
        if f.is_file() and "/c/" in f"/{rel}" and not rel.startswith((".staging", "cache")):
            out[rel] = f.read_bytes()
    return out


@pytest.fixture(scope="module")
def clean(synth_small, tmp_path_factory) -> dict:
    """A clean conversion of ``DONORS`` to compare against."""
    tmp = tmp_path_factory.mktemp("clean")
    src = _src(synth_small, tmp)
    store = tmp / "clean.zarr"
    convert_microarray(src, store)
    return {"src": src, "store": store, "chunks": _chunk_files(store)}


def _same_as_clean(store: Path, clean: dict) -> None:
    assert verify_store(store).ok
    st = open_store(store)
    assert st.donors == open_store(clean["store"]).donors
    got = _chunk_files(store)
    assert got.keys() == clean["chunks"].keys()
    bad = [k for k in got if got[k] != clean["chunks"][k]]
    assert not bad, f"chunks differ from a clean run: {bad[:5]}"


_CLI = [sys.executable, "-c", "import sys; from atlas_engine.cli import main; main(sys.argv[1:])"]


def _run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*_CLI, *args], env=_env(), capture_output=True, text=True,
                          timeout=timeout)


# -------------------------------------------------------------------------------------------
# kills and crashes


def test_random_kills_then_rerun_is_byte_identical(clean, tmp_path):
    store = tmp_path / "s.zarr"
    rng = random.Random(20261204)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen([*_CLI, "convert", str(clean["src"]), str(store), "--jobs", "1",
                                 "--quiet"],
                                env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # wait until it holds the lock (imports done), then kill at a seeded random point
        deadline = time.time() + 60
        while proc.poll() is None and store_lock.lock_holder(store) is None \
                and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if store.exists() and (store / "zarr.json").exists():
            try:
                listed = open_store(store).donors
            except StoreError:
                listed = []
            for d in listed:       # whatever a reader sees listed is readable
                assert open_store(store).donor(d)["expression"].values.size
    assert kills >= 1
    convert_microarray(clean["src"], store)
    _same_as_clean(store, clean)


_CRASH = r"""
import os, sys
from atlas_engine.convert import staging, writer
point, src, store = sys.argv[1:4]
force = "--force" in sys.argv

def die():
    os._exit(9)

if point == "after-rename":          # group in place, root not yet rewritten
    orig = staging.Staged.publish
    def publish(self):
        orig(self)
        if self.final == "donors/14380":
            die()
    staging.Staged.publish = publish
elif point == "root-write":          # the new root half written to its temporary file
    import json
    orig = writer.atomic_write_bytes
    def atomic_write_bytes(target, data, **kw):
        if 14380 in json.loads(data)["attributes"]["atlas_engine"].get("donors", []):
            tmp = target.with_name(f".{target.name}.crash")
            tmp.write_bytes(data[: len(data) // 2])
            die()
        return orig(target, data, **kw)
    writer.atomic_write_bytes = atomic_write_bytes
elif point in ("mid-swap", "after-unlist"):   # replacing donor 14380 (--force)
    real_replace = os.replace
    state = {"unlisted": False}
    orig_write_root = writer.write_root
    def write_root(url, update):
        changed = orig_write_root(url, update)
        listed = writer.root_info(writer.open_root(url)).get("donors", [])
        if point == "after-unlist" and 14380 not in listed:
            die()
        return changed
    writer.write_root = write_root
    def replace(a, b, *args, **kw):
        real_replace(a, b, *args, **kw)
        if point == "mid-swap" and str(a).endswith("donors/14380") and str(b).endswith(".old"):
            die()
    os.replace = replace
from atlas_engine.convert.donor import convert_microarray
convert_microarray(src, store, jobs=1, force=force)
print("no crash")
"""


@pytest.mark.parametrize("point", ["after-rename", "root-write", "mid-swap", "after-unlist"])
def test_crash_inside_publishing_is_repaired(clean, tmp_path, point):
    store = tmp_path / "s.zarr"
    replacing = point in ("mid-swap", "after-unlist")
    if replacing:
        shutil.copytree(clean["store"], store)
    args = [sys.executable, "-c", _CRASH, point, str(clean["src"]), str(store)]
    proc = subprocess.run(args + (["--force"] if replacing else []), env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stdout + proc.stderr
    # readers never see a listed donor they cannot read
    try:
        st = open_store(store)
        for d in st.donors:
            assert st.donor(d)["expression"].shape[0] > 0
            assert st.donor(d)["pacall"].values.size
    except StoreError as exc:
        assert "no finished donor" in str(exc)
    convert_microarray(clean["src"], store)
    _same_as_clean(store, clean)


def test_rerun_repairs_consolidated_metadata_missing_a_listed_donor(clean, tmp_path):
    # the state of an older engine killed between the root attributes and consolidation
    store = tmp_path / "s.zarr"
    shutil.copytree(clean["store"], store)
    meta = json.loads((store / "zarr.json").read_text())
    cm = meta["consolidated_metadata"]["metadata"]
    for k in [k for k in cm if k.startswith("donors/15496")]:
        del cm[k]
    (store / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError):
        open_store(store).donor(15496)
    res = convert_microarray(clean["src"], store)
    assert res.converted == []
    _same_as_clean(store, clean)


_HELD = r"""
import os, sys, time
from atlas_engine.convert import staging
release = sys.argv[3]
orig = staging.Staged.publish
def publish(self):
    deadline = time.time() + 120
    while not os.path.exists(release) and time.time() < deadline:
        time.sleep(0.02)
    orig(self)
staging.Staged.publish = publish
from atlas_engine.convert.donor import convert_microarray
convert_microarray(sys.argv[1], sys.argv[2], jobs=1)
"""


def test_two_concurrent_converts(clean, tmp_path):
    # the finding: `convert L S --jobs 1 &` then `convert L S --donors 12876` corrupted a donor
    store = tmp_path / "s.zarr"
    release = tmp_path / "release"
    first = subprocess.Popen([sys.executable, "-c", _HELD, str(clean["src"]), str(store),
                              str(release)], env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while store_lock.lock_holder(store) is None and first.poll() is None \
                and time.time() < deadline:
            time.sleep(0.01)
        assert first.poll() is None, first.stderr.read()
        # a second convert is refused, naming the first
        second = _run_cli("convert", str(clean["src"]), str(store), "--donors", "12876",
                          "--quiet")
        assert second.returncode == 1
        assert f"being converted by process {first.pid}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        # with --wait it queues behind the first
        third = subprocess.Popen([*_CLI, "convert", str(clean["src"]), str(store), "--donors",
                                  "12876", "--wait"], env=_env(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        # (after one line per recognised archive) it says whom it waits for
        lines = []
        while len(lines) < 20 and not any("waiting for process" in x for x in lines):
            lines.append(third.stderr.readline())
        assert any(f"waiting for process {first.pid}" in line for line in lines), lines
    finally:
        release.touch()
    assert first.wait(timeout=120) == 0
    assert third.wait(timeout=120) == 0, third.stderr.read()
    _same_as_clean(store, clean)


def test_lock_is_reentrant_in_a_thread_and_refuses_a_second_holder(tmp_path):
    store = tmp_path / "s.zarr"
    with store_lock.store_lock(store), store_lock.store_lock(store):
        holder = store_lock.lock_holder(store)
        assert holder is not None and holder["pid"] == os.getpid()
        code = ("import sys; from atlas_engine.convert import store_lock\n"
                "with store_lock.store_lock(sys.argv[1]): pass")
        proc = subprocess.run([sys.executable, "-c", code, str(store)], env=_env(),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "StoreBusyError" in proc.stderr
    assert store_lock.lock_holder(store) is None


# -------------------------------------------------------------------------------------------
# damaged stores


def _flip(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip-expression", "missing-expression", "flip-structure",
                                    "missing-structure", "flip-pacall", "flip-probe-table",
                                    "truncate-expression"])
def test_damaged_chunk_stops_reads_and_verify_says_how_to_repair(clean, tmp_path, damage,
                                                                 capsys):
    store = tmp_path / "s.zarr"
    shutil.copytree(clean["store"], store)
    what, name = damage.split("-", 1)
    target = {"expression": store / "donors/14380/expression/c/0/0",
              "structure": store / "donors/14380/structure_id/c/0",
              "pacall": store / "donors/14380/pacall/c/0/0",
              "probe-table": store / "probes/gene_id/c/0"}[name]
    if what == "flip":
        _flip(target)
    elif what == "missing":
        target.unlink()
    else:
        target.write_bytes(target.read_bytes()[:3])
    array = target.parent.parent.relative_to(store).as_posix()
    if name in ("expression", "pacall"):
        array = target.parent.parent.parent.relative_to(store).as_posix()
    # reading stops with the store, array, chunk and donor named
    with pytest.raises(DamagedStoreError) as info:
        st = open_store(store)
        if name == "pacall":
            np.asarray(st.pacall.values)
        else:
            aggregate(st, by="structure")
    msg = str(info.value)
    assert str(store) in msg and f"array {array}" in msg and "chunk (0" in msg
    if name != "probe-table":
        assert "donor 14380" in msg and "--donors 14380 --force" in msg
    # verify reports it (never crashes) and says how to repair
    with pytest.raises(SystemExit) as code:
        main(["verify", str(store)])
    assert code.value.code == 1
    out = capsys.readouterr().out
    assert f"array {array}" in out and "FAILED" in out and "--force" in out
    # the repair it names works
    donors = ["--donors", "14380"] if name != "probe-table" else []
    assert main(["convert", str(clean["src"]), str(store), "--force", "--quiet", *donors]) \
        in (None, 0)
    _same_as_clean(store, clean)


@pytest.mark.parametrize("target", ["donors/14380/expression/zarr.json",
                                    "donors/14380/zarr.json", "probes/gene_id/zarr.json"])
def test_damaged_array_metadata_is_one_line(clean, tmp_path, capsys, target):
    store = tmp_path / "s.zarr"
    shutil.copytree(clean["store"], store)
    meta = store / target
    meta.write_bytes(meta.read_bytes()[:40])
    for argv in (["aggregate", str(store), "--by", "structure", "--out",
                  str(tmp_path / "o.csv"), "--quiet"], ["verify", str(store)]):
        with pytest.raises(SystemExit) as code:
            main(argv)
        assert code.value.code == 1
        out = capsys.readouterr()
        text = out.out + out.err
        assert "Traceback" not in text and ("error: " in out.err or "FAILED" in out.out)
        assert ("donor 14380" if target.startswith("donors") else "probe") in text
        assert "--force" in text
    donors = ["--donors", "14380"] if target.startswith("donors") else []
    main(["convert", str(clean["src"]), str(store), "--force", "--quiet", *donors])
    _same_as_clean(store, clean)


def test_damaged_root_metadata_is_rebuilt(clean, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(clean["store"], store)
    root = store / "zarr.json"
    root.write_bytes(root.read_bytes()[:1000])
    with pytest.raises(StoreError, match="root metadata .* is damaged.*re-run convert"):
        open_store(store)
    res = convert_microarray(clean["src"], store)
    assert res.converted == []
    _same_as_clean(store, clean)


def test_old_layout_store_says_reconvert(clean, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(clean["store"], store)
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["atlas_engine"]["layout_version"] = 1
    (store / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="re-convert it into a new store"):
        open_store(store)
    with pytest.raises(Exception, match="store layout 1"):
        convert_microarray(clean["src"], store)


def test_store_without_finished_donor(tmp_path):
    store = tmp_path / "s.zarr"
    writer.open_root(store)
    with pytest.raises(StoreError, match="holds no finished donor yet"):
        open_store(store)


# -------------------------------------------------------------------------------------------
# bad archives and inputs


def _rewrite_zip(src: Path, dest: Path, edit) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = edit(info.filename, zin.read(info.filename))
            zout.writestr(info.filename, data)


def _lie_about_size(path: Path, member: str, size: int) -> None:
    """Set ``member``'s declared uncompressed size (local header and central directory)."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    pos = 0
    while (pos := data.find(b"PK\x03\x04", pos)) >= 0:
        n = struct.unpack_from("<H", data, pos + 26)[0]
        if data[pos + 30:pos + 30 + n] == name:
            struct.pack_into("<I", data, pos + 22, size)
        pos += 4
    pos = 0
    while (pos := data.find(b"PK\x01\x02", pos)) >= 0:
        n = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46:pos + 46 + n] == name:
            struct.pack_into("<I", data, pos + 24, size)
        pos += 4
    path.write_bytes(bytes(data))


def test_lying_zip_stops_at_the_declared_size(tmp_path):
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("MicroarrayExpression.csv", b"1," + b"0" * (64 << 20))
    _lie_about_size(z, "MicroarrayExpression.csv", 300_000)
    seen = 0
    with pytest.raises(VerificationError, match="beyond the 300,000 bytes"):
        for piece in MemberSource(z, "MicroarrayExpression.csv").iter_chunks(
                piece_size=64 << 10):
            seen += len(piece)
    assert seen <= 300_000


def test_lying_zip_in_a_donor_leaves_the_store_as_it_was(clean, tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    store = tmp_path / "s.zarr"
    shutil.copytree(clean["store"], store)
    before = _chunk_files(store)
    z = src / "normalized_microarray_donor14380.zip"
    _rewrite_zip(clean["src"] / z.name, z,
                 lambda n, d: d * 40 if n == "MicroarrayExpression.csv" else d)
    _lie_about_size(z, "MicroarrayExpression.csv", 83645)
    with pytest.raises(VerificationError, match="inflates beyond"):
        convert_microarray(src, store, force=True)
    assert _chunk_files(store) == before and verify_store(store).ok


def _with_member(clean, tmp_path, donor: int, edit) -> Path:
    src = tmp_path / "raw"
    src.mkdir(exist_ok=True)
    for d in DONORS:
        name = f"normalized_microarray_donor{d}.zip"
        if d == donor:
            _rewrite_zip(clean["src"] / name, src / name, edit)
        else:
            os.link(clean["src"] / name, src / name)
    return src


def _replace_value(text: bytes, line: int, col: int, token: bytes) -> bytes:
    lines = text.split(b"\n")
    fields = lines[line - 1].split(b",")
    fields[col - 1] = token
    lines[line - 1] = b",".join(fields)
    return b"\n".join(lines)


@pytest.mark.parametrize("token", [b"inf", b"NaN", b"-Infinity", b"1e999"])
def test_nonfinite_refused_then_accepted_on_request(clean, tmp_path, token, capsys):
    src = _with_member(clean, tmp_path, 14380, lambda n, d: _replace_value(d, 7, 4, token)
                       if n == "MicroarrayExpression.csv" else d)
    store = tmp_path / "s.zarr"
    with pytest.raises(FormatError) as info:
        convert_microarray(src, store)
    err = info.value
    assert err.file.endswith("MicroarrayExpression.csv") and (err.line, err.column) == (7, 4)
    assert "--allow-nonfinite" in str(err)
    res = convert_microarray(src, store, allow_nonfinite=True)
    assert res.nonfinite == {14380: 1}
    x = open_store(store).donor(14380)["expression"].values
    assert np.isnan(x[6, 2]) and np.isnan(x).sum() == 1
    rep = verify_store(store)
    assert rep.ok and rep.summary["nonfinite_accepted"] == {14380: 1}
    prov = open_store(store).donor(14380).attrs["provenance"]
    assert prov["nonfinite_values"] == 1 and prov["options"]["nonfinite"] == "nan"


def test_bom_accepted_everywhere(clean, tmp_path):
    bom = b"\xef\xbb\xbf"
    src = _with_member(clean, tmp_path, 14380, lambda n, d: bom + d)
    store = tmp_path / "s.zarr"
    convert_microarray(src, store)
    a = open_store(store).donor(14380)
    b = open_store(clean["store"]).donor(14380)
    assert a.identical(b.drop_attrs()) or (a["expression"].values == b["expression"].values
                                           ).all()
    assert (a["structure_id"].values == b["structure_id"].values).all()
    assert open_store(store).attrs["probes_source"]["sha256"] == \
        open_store(clean["store"]).attrs["probes_source"]["sha256"]


def test_repeated_probe_row_is_named(clean, tmp_path):
    def dup(n: str, d: bytes) -> bytes:
        if n != "MicroarrayExpression.csv":
            return d
        lines = d.split(b"\n")
        lines[5] = lines[4]
        return b"\n".join(lines)

    src = _with_member(clean, tmp_path, 14380, dup)
    with pytest.raises(FormatError, match=r"appears twice \(already on line 5\)") as info:
        convert_microarray(src, tmp_path / "s.zarr")
    assert info.value.line == 6


# -------------------------------------------------------------------------------------------
# full disk


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if not sys.platform.startswith("linux") or shutil.which("mount") is None:
        pytest.skip("needs Linux mount")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_is_one_line_and_leaves_a_readable_store(clean, small_tmpfs):
    store = small_tmpfs / "s.zarr"
    proc = _run_cli("convert", str(clean["src"]), str(store), "--jobs", "1", "--quiet")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left on the device" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    # what is listed is readable; a re-run with room finishes it
    try:
        st = open_store(store)
        for d in st.donors:
            assert st.donor(d)["expression"].values.size
    except StoreError as exc:
        assert "no finished donor" in str(exc)
    # once there is room, a re-run finishes it (the store moved to a roomier disk)
    roomy = clean["store"].parent.parent / f"roomy-{os.getpid()}.zarr"
    shutil.copytree(store, roomy)
    try:
        convert_microarray(clean["src"], roomy)
        _same_as_clean(roomy, clean)
    finally:
        shutil.rmtree(roomy, ignore_errors=True)


def test_rnaseq_nonfinite_refused_then_counted(synth_small, tmp_path):
    from atlas_engine.convert.rnaseq import convert_rnaseq

    src = tmp_path / "raw"
    src.mkdir()
    _rewrite_zip(synth_small.dest / "rnaseq_donor9861.zip", src / "rnaseq_donor9861.zip",
                 lambda n, d: _replace_value(d, 3, 2, b"-inf") if n == "RNAseqTPM.csv" else d)
    store = tmp_path / "s.zarr"
    with pytest.raises(FormatError) as info:
        convert_rnaseq(src, store)
    assert info.value.file.endswith("RNAseqTPM.csv")
    assert (info.value.line, info.value.column) == (3, 2)
    convert_rnaseq(src, store, allow_nonfinite=True)
    import zarr

    g = zarr.open_group(store / "rnaseq" / "9861", mode="r")
    assert g.attrs["provenance"]["nonfinite_values"] == {"tpm": 1, "counts": 0}
    assert np.isnan(g["tpm"][2, 0]) and int(np.isnan(g["tpm"][:]).sum()) == 1
