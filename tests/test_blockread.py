"""Direct chunk reads agree with zarr's own reads, for every layout the reader meets."""

import numpy as np
import pytest
import zarr

from atlas_engine.store.blockread import array_shape, read_chunk_row, read_rows
from atlas_engine.store.chunkplan import _plan


@pytest.mark.parametrize("dtype", ["float32", "float64", "bool"])
@pytest.mark.parametrize("codec", ["blosc", "none", "zstd"])
def test_read_rows_matches_zarr(tmp_path, dtype, codec):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(103, 29))
    data[rng.random(data.shape) < 0.05] = np.nan
    data = (data > 0) if dtype == "bool" else data.astype(dtype)
    compressors = {"blosc": zarr.codecs.BloscCodec(cname="lz4", shuffle="shuffle"),
                   "none": None, "zstd": zarr.codecs.ZstdCodec(level=1)}[codec]
    root = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3)
    arr = root.create_array("g/x", shape=data.shape, chunks=(16, 7), dtype=dtype,
                            compressors=compressors,
                            fill_value=False if dtype == "bool" else np.nan)
    arr[:] = data
    arr[32:48, 7:14] = False if dtype == "bool" else np.nan  # may leave a chunk unwritten
    want_all = arr[:]
    url = str(tmp_path / "s.zarr")
    assert array_shape(url, "g/x")[:2] == ((103, 29), (16, 7))
    # blosc and uncompressed arrays are decoded directly; anything else goes through zarr
    assert (_plan(url, "g/x") is not None) == (codec in ("blosc", "none"))
    for r0, r1 in [(0, 103), (0, 1), (15, 17), (30, 50), (96, 103), (100, 200)]:
        np.testing.assert_array_equal(read_rows(url, "g/x", r0, r1), want_all[r0:r1])
    out = np.zeros((20, 40), dtype=dtype)
    read_rows(url, "g/x", 10, 30, out=out[:, 5:34])
    np.testing.assert_array_equal(out[:, 5:34], want_all[10:30])
    assert not out[:, :5].any() and not out[:, 34:].any()


@pytest.mark.parametrize("codec", ["blosc", "none", "zstd"])
def test_read_chunk_row_matches_zarr(tmp_path, codec):
    """The chunked layout ([column chunk, row, column in chunk]) of every chunk row, whole or
    one column chunk at a time, holds the array's values (direct reads and the zarr path)."""
    rng = np.random.default_rng(1)
    data = rng.normal(size=(45, 23))
    compressors = {"blosc": zarr.codecs.BloscCodec(cname="lz4", shuffle="shuffle"),
                   "none": None, "zstd": zarr.codecs.ZstdCodec(level=1)}[codec]
    root = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3)
    arr = root.create_array("x", shape=data.shape, chunks=(16, 10), dtype="float64",
                            compressors=compressors, fill_value=np.nan)
    arr[:] = data
    url = str(tmp_path / "s.zarr")
    for i in range(3):
        rows = data[i * 16:(i + 1) * 16]
        block = read_chunk_row(url, "x", i)
        assert block.shape == (3, 16, 10)
        for j in range(3):
            part = rows[:, j * 10:(j + 1) * 10]
            np.testing.assert_array_equal(block[j, :len(part), :part.shape[1]], part)
            one = np.empty((1, 16, 10))
            assert read_chunk_row(url, "x", i, out=one, column_chunk=j) is one
            np.testing.assert_array_equal(one[0, :len(part), :part.shape[1]], part)
    with pytest.raises(ValueError, match="C-contiguous"):
        read_chunk_row(url, "x", 0, out=np.empty((3, 16, 9)))


@pytest.mark.parametrize("codec", ["blosc", "none", "zstd"])
def test_read_range_matches_zarr(tmp_path, codec):
    """1-D arrays (a Cell Types store's CSR arrays): any range, whole chunks decoded in place,
    pooled output, and unwritten chunks read as the fill value, as zarr reads them."""
    from atlas_engine.store.blockread import read_range

    rng = np.random.default_rng(1)
    data = rng.integers(0, 50, 1000).astype(np.int32)
    data[300:400] = 0
    compressors = {"blosc": zarr.codecs.BloscCodec(cname="lz4", shuffle="shuffle"),
                   "none": None, "zstd": zarr.codecs.ZstdCodec(level=1)}[codec]
    root = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3)
    arr = root.create_array("X/indices", shape=data.shape, chunks=(100,), dtype="int32",
                            compressors=compressors, fill_value=0)
    arr[:] = data  # chunk 3 (all zeros) is not written
    url = str(tmp_path / "s.zarr")
    assert (_plan(url, "X/indices", ndim=1) is not None) == (codec in ("blosc", "none"))
    assert _plan(url, "X/indices") is None  # not a 2-D array
    for a, b in [(0, 1000), (0, 1), (99, 101), (100, 200), (250, 450), (950, 2000), (5, 5)]:
        np.testing.assert_array_equal(read_range(url, "X/indices", a, b), data[a:b])
        np.testing.assert_array_equal(read_range(url, "X/indices", a, b, pooled=True),
                                      data[a:b])
    out = np.full(300, -1, np.int32)
    read_range(url, "X/indices", 100, 400, out=out)
    np.testing.assert_array_equal(out, data[100:400])


def test_read_range_refuses_a_damaged_chunk(tmp_path):
    from atlas_engine.errors import DamagedStoreError
    from atlas_engine.store.blockread import read_range

    root = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3)
    arr = root.create_array("X/data", shape=(400,), chunks=(100,), dtype="int32",
                            compressors=zarr.codecs.BloscCodec(cname="lz4"), fill_value=0)
    arr[:] = np.arange(400, dtype=np.int32) + 1
    chunk = tmp_path / "s.zarr" / "X" / "data" / "c" / "2"
    chunk.write_bytes(chunk.read_bytes()[:20])  # truncated
    with pytest.raises(DamagedStoreError, match=r"array X/data, chunk \(2\)"):
        read_range(str(tmp_path / "s.zarr"), "X/data", 150, 260)


def _checksummed_matrix(path, seed: int) -> np.ndarray:
    """A store at ``path`` with one 300 × 40 float64 array ``M`` in 100 × 40 chunks, Blosc
    then CRC-32C; its values returned."""
    root = zarr.open_group(path, mode="w", zarr_format=3)
    x = np.random.default_rng(seed).normal(size=(300, 40))
    arr = root.create_array("M", shape=x.shape, chunks=(100, 40), dtype="float64",
                            compressors=[zarr.codecs.BloscCodec(cname="lz4"),
                                         zarr.codecs.Crc32cCodec()])
    arr[:] = x
    return x


def test_a_damaged_checksummed_chunk_is_refused_and_reads_go_on(tmp_path):
    """A bit flipped in a Blosc chunk with a CRC-32C: the read names the chunk, and the next
    reads of the array's other chunks work."""
    from atlas_engine.errors import DamagedStoreError
    from atlas_engine.store.blockread import read_rows

    x = _checksummed_matrix(tmp_path / "s.zarr", seed=2)
    chunk = tmp_path / "s.zarr" / "M" / "c" / "1" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x08
    chunk.write_bytes(bytes(data))
    url = str(tmp_path / "s.zarr")
    for _ in range(2):
        with pytest.raises(DamagedStoreError, match=r"array M, chunk \(1, 0\).*checksum"):
            read_rows(url, "M", 90, 120)
        np.testing.assert_array_equal(read_rows(url, "M", 200, 300), x[200:])


def test_node_attributes_and_store_format_read_zarr_json_directly(tmp_path):
    import json

    from atlas_engine.store.brainspan import store_format
    from atlas_engine.store.chunkplan import node_attributes

    root = tmp_path / "s.zarr"
    (root / "donors").mkdir(parents=True)
    meta = {"zarr_format": 3, "node_type": "group",
            "attributes": {"atlas_engine": {"format": "ahba-microarray"}}}
    (root / "zarr.json").write_text(json.dumps(meta))
    (root / "donors" / "zarr.json").write_text(json.dumps(
        {"zarr_format": 3, "node_type": "group", "attributes": {"n": 6}}))
    assert node_attributes(str(root)) == meta["attributes"]
    assert node_attributes(f"file://{root}", "donors") == {"n": 6}
    assert store_format(str(root)) == "ahba-microarray"
    assert node_attributes(str(tmp_path / "absent.zarr")) is None
    assert store_format(str(tmp_path / "absent.zarr")) is None
    (root / "zarr.json").write_text('{"zarr_format": 3, "attrib')      # cut short
    assert node_attributes(str(root)) is None and store_format(str(root)) is None
    (root / "zarr.json").write_text(json.dumps({"zarr_format": 2, "attributes": {}}))
    assert node_attributes(str(root)) is None


@pytest.mark.parametrize("mapped", [True, False, "unsupported"])
def test_chunks_read_mapped_or_buffered_alike_and_an_empty_file_is_refused(tmp_path,
                                                                          monkeypatch, mapped):
    """Local chunk files are mapped where the platform allows it, read into a buffer
    elsewhere or where the file system refuses the mapping: the same values either way, and
    a chunk file emptied by damage is refused with its coordinates (a zero-length file
    cannot be mapped)."""
    from atlas_engine.errors import DamagedStoreError
    from atlas_engine.store import chunkio
    from atlas_engine.store.blockread import read_rows

    if not mapped:
        monkeypatch.setattr(chunkio, "_MAP_FLAGS", None)
    calls = []

    def no_mapping(*args, **kwargs):  # a file system that cannot map files
        calls.append(args)
        raise OSError(19, "No such device")

    if mapped == "unsupported":
        monkeypatch.setattr(chunkio.mmap, "mmap", no_mapping)
    x = _checksummed_matrix(tmp_path / "s.zarr", seed=3)
    url = str(tmp_path / "s.zarr")
    np.testing.assert_array_equal(read_rows(url, "M", 0, 300), x)
    (tmp_path / "s.zarr" / "M" / "c" / "2" / "0").write_bytes(b"")
    with pytest.raises(DamagedStoreError, match=r"array M, chunk \(2, 0\)"):
        read_rows(url, "M", 250, 300)
    np.testing.assert_array_equal(read_rows(url, "M", 0, 200), x[:200])
    assert bool(calls) == (mapped == "unsupported")
