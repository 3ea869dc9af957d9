"""A store on object storage, read by a cluster: moto's S3 server on loopback holds a converted
store; `aggregate s3://…` on a 2-worker `dask scheduler` gives the local store's numbers, the
workers fetch the chunks themselves, and every chunk's CRC-32C is still checked."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _cluster import count_tasks, free_port, start_cluster, stop_cluster
from click.testing import CliRunner

from atlas_engine.cli import cli
from atlas_engine.convert.donor import convert_microarray
from atlas_engine.errors import DamagedStoreError

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "atlas"


def _close_s3_clients() -> None:
    """Close the S3 clients of every cached s3fs instance (their aiohttp sessions), then
    forget the instances: a client dropped open is reported at interpreter exit."""
    import s3fs

    for fs in list(s3fs.S3FileSystem._cache.values()):
        if getattr(fs, "_s3", None) is not None:
            s3fs.S3FileSystem.close_session(fs.loop, fs._s3)
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def s3(synth_small, tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with the store uploaded as s3://atlas/ahba.zarr; the
    environment points every S3 client (this process and the workers started after) at it."""
    import s3fs

    from atlas_engine.store import chunkplan

    root = tmp_path_factory.mktemp("s3")
    local = root / "ahba.zarr"
    convert_microarray(synth_small.dest, local, donors=["9861", "10021"], probe_chunk=64,
                       sample_chunk=8)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)   # a line per request else
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    mp = pytest.MonkeyPatch()
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                 "AWS_CONFIG_FILE": str(root / "none"),
                 "AWS_SHARED_CREDENTIALS_FILE": str(root / "none")}.items():
        mp.setenv(k, v)
    mp.delenv("AWS_PROFILE", raising=False)
    try:
        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        fs.mkdir(BUCKET)
        fs.put(str(local), f"{BUCKET}/ahba.zarr", recursive=True)
        yield {"local": local, "url": f"s3://{BUCKET}/ahba.zarr", "fs": fs, "root": root}
    finally:
        chunkplan._filesystem.cache_clear()
        chunkplan._plan_cached.cache_clear()
        _close_s3_clients()
        mp.undo()
        server.stop()


@pytest.fixture(scope="module")
def s3_cluster(s3):
    """A 2-worker subprocess cluster whose workers see the S3 endpoint and credentials."""
    address, procs = start_cluster(s3["root"] / "cluster")
    try:
        yield address
    finally:
        stop_cluster(procs)


def test_aggregate_s3_store_on_cluster_matches_local(s3, s3_cluster, tmp_path):
    args = ["--by", "depth:3", "--combine", "combined", "--collapse", "gene:mean"]
    r = CliRunner().invoke(cli, ["aggregate", str(s3["local"]), *args,
                                 "--out", str(tmp_path / "local.csv")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    with count_tasks(s3_cluster) as ran:
        r = CliRunner().invoke(cli, ["aggregate", s3["url"], *args, "--scheduler", s3_cluster,
                                     "--out", str(tmp_path / "s3.csv")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert sum(ran.values()) > 0, ran
    a, b = pd.read_csv(tmp_path / "local.csv"), pd.read_csv(tmp_path / "s3.csv")
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b, rtol=1e-6)


def test_remote_reader_matches_local_and_checks_crc(s3):
    from atlas_engine.store import blockread, chunkplan

    path = "donors/9861/expression"
    (n_rows, n_cols), _, _ = blockread.array_shape(str(s3["local"]), path)
    remote = chunkplan._plan(s3["url"], path)
    assert remote is not None and remote["fs"] is not None and remote["crc"]  # direct reader
    np.testing.assert_array_equal(blockread.read_rows(s3["url"], path, 5, n_rows - 3),
                                  blockread.read_rows(str(s3["local"]), path, 5, n_rows - 3))
    fs = s3["fs"]
    key = f"{BUCKET}/ahba.zarr/{path}/c/1/0"
    good = fs.cat_file(key)
    try:
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0xFF
        fs.pipe_file(key, bytes(bad))
        with pytest.raises(DamagedStoreError, match=r"chunk \(1, 0\).*checksum mismatch"):
            blockread.read_rows(s3["url"], path, 0, n_rows)
        fs.rm_file(key)
        with pytest.raises(DamagedStoreError, match=r"chunk \(1, 0\).*missing"):
            blockread.read_rows(s3["url"], path, 0, n_rows)
    finally:
        fs.pipe_file(key, good)
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")



def test_convert_straight_to_s3_then_aggregate_on_cluster(s3, s3_cluster, synth_small, tmp_path):
    """convert writes a store on object storage itself (no local copy uploaded); the cluster
    aggregates it to the same table as the locally converted store."""
    from atlas_engine.store import chunkplan

    url = f"s3://{BUCKET}/converted.zarr"
    r = CliRunner().invoke(cli, ["convert", str(synth_small.dest), url, "--donors", "9861,10021",
                                 "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert s3["fs"].exists(f"{BUCKET}/converted.zarr/zarr.json")
    assert not Path("s3:").exists()                # not taken for a local path
    r = CliRunner().invoke(cli, ["verify", url], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    args = ["--by", "depth:3", "--combine", "pooled"]
    r = CliRunner().invoke(cli, ["aggregate", str(s3["local"]), *args,
                                 "--out", str(tmp_path / "local.csv")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    with count_tasks(s3_cluster) as ran:
        r = CliRunner().invoke(cli, ["aggregate", url, *args, "--scheduler", s3_cluster,
                                     "--out", str(tmp_path / "s3.csv")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert sum(ran.values()) > 0, ran
    a, b = pd.read_csv(tmp_path / "local.csv"), pd.read_csv(tmp_path / "s3.csv")
    pd.testing.assert_frame_equal(a, b, rtol=1e-6)
    chunkplan._plan_cached.cache_clear()


@pytest.fixture
def no_credentials(s3, monkeypatch):
    """The S3 server of ``s3`` with no credentials anywhere (environment, files, instance
    metadata); S3 clients and read plans made before are forgotten, before and after."""

    from atlas_engine.store import chunkplan

    def forget() -> None:
        chunkplan._filesystem.cache_clear()
        chunkplan._plan_cached.cache_clear()
        _close_s3_clients()

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    forget()
    yield s3
    forget()


def test_store_without_credentials_is_an_access_error_not_a_missing_store(no_credentials):
    from atlas_engine.celltypes.store import open_cell_store
    from atlas_engine.errors import StoreAccessError, StoreNotFoundError
    from atlas_engine.store.brainspan import open_brainspan
    from atlas_engine.store.open import open_store

    for url in (no_credentials["url"], f"s3://{BUCKET}", f"s3://{BUCKET}/absent.zarr"):
        for opener in (open_store, open_brainspan, open_cell_store):
            with pytest.raises(StoreAccessError) as e:
                opener(url)
            assert isinstance(e.value, OSError)
            assert not isinstance(e.value, StoreNotFoundError)
            text = str(e.value)
            assert text.startswith(f"{url}: cannot be read (NoCredentialsError")
            assert "AWS_ACCESS_KEY_ID" in text and "\n" not in text


def test_cli_without_credentials_says_so_in_one_line(no_credentials, tmp_path, capsys):
    from atlas_engine.cli import main

    out = tmp_path / "m.csv"
    with pytest.raises(SystemExit) as e:
        main(["aggregate", no_credentials["url"], "--by", "structure", "--out", str(out)])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {no_credentials['url']}: cannot be read")
    assert "credentials" in err and "\n" not in err
    assert not out.exists()


def test_missing_store_with_credentials_is_still_not_found(s3):
    from atlas_engine.errors import StoreNotFoundError
    from atlas_engine.store.open import open_store

    with pytest.raises(StoreNotFoundError):
        open_store(f"s3://{BUCKET}/absent.zarr")


def test_convert_to_s3_without_credentials_says_so_in_one_line(no_credentials, synth_small,
                                                               capsys):
    from atlas_engine.cli import main

    url = f"s3://{BUCKET}/new.zarr"
    with pytest.raises(SystemExit) as e:
        main(["convert", str(synth_small.dest), url, "--donors", "9861"])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert errors == [err[-1]] and "Traceback" not in "\n".join(err)
    assert errors[0].startswith(f"error: {url}: cannot be written (NoCredentialsError")
    assert "AWS_ACCESS_KEY_ID" in errors[0]
