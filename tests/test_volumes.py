"""Reference volumes: NRRD / MetaImage / NIfTI readers, voxel counts, masks, bad inputs."""

from __future__ import annotations

import gzip
import zipfile

import nibabel as nib
import nrrd
import numpy as np
import pytest

from atlas_engine.errors import FormatError
from atlas_engine.store.graph import graph_table
from atlas_engine.store.ontology import Ontology
from atlas_engine.testing.synth_mouse import build_mouse_ontology, mouse_structure_graph
from atlas_engine.volumes import open_volume
from atlas_engine.volumes.counts import structure_mask, voxel_counts
from atlas_engine.volumes.labels import label_index
from atlas_engine.volumes.metaimage import write_metaimage_zip
from atlas_engine.volumes.nifti import write_nifti
from atlas_engine.volumes.nrrd import nrrd_header_text, write_nrrd


@pytest.fixture(scope="module")
def mouse() -> Ontology:
    return Ontology(graph_table(mouse_structure_graph(build_mouse_ontology())))


@pytest.fixture(scope="module")
def labels(mouse) -> np.ndarray:
    rng = np.random.default_rng(3)
    ids = np.r_[0, 0, 0, mouse.ids]
    return rng.choice(ids, size=(23, 17, 29)).astype(np.uint32)


def _slabs(a: np.ndarray, k: int = 5):
    return [a[:, :, i:i + k] for i in range(0, a.shape[2], k)]


@pytest.mark.parametrize("encoding", ["gzip", "raw"])
def test_nrrd_write_read(tmp_path, labels, encoding):
    p = write_nrrd(tmp_path / "a.nrrd", _slabs(labels), labels.shape, np.uint32, (25, 25, 25),
                   encoding=encoding)
    ref, header = nrrd.read(str(p))             # the reference reader agrees
    assert ref.dtype == np.uint32 and (ref == labels).all()
    assert list(header["sizes"]) == list(labels.shape)
    vol = open_volume(p)
    assert vol.shape == labels.shape and vol.spacing == (25.0, 25.0, 25.0)
    assert (vol.read() == labels).all()
    assert (vol.to_dask(depth=4).compute() == labels).all()
    assert (vol.raw_at is not None) == (encoding == "raw")


def test_big_endian_nrrd(tmp_path, labels):
    p = tmp_path / "be.nrrd"
    text = nrrd_header_text(labels.shape, np.uint32, (10, 10, 10), encoding="raw")
    p.write_bytes(text.replace(b"endian: little", b"endian: big")
                  + labels.astype(">u4").tobytes(order="F"))
    assert (open_volume(p).read() == labels).all()


def test_metaimage_zip(tmp_path, labels):
    for compress in (True, False):
        p = write_metaimage_zip(tmp_path / f"m{compress}.zip", _slabs(labels), labels.shape,
                                np.uint32, (25, 25, 25), compress=compress)
        with zipfile.ZipFile(p) as zf:
            assert sorted(zf.namelist()) == ["annotation.mhd", "annotation.raw"]
        vol = open_volume(p)
        assert (vol.raw_at is None) == compress
        assert (vol.read() == labels).all()
        assert (vol.to_dask(depth=3).compute() == labels).all()


def _numpy_counts(a: np.ndarray, onto: Ontology) -> tuple[dict, dict]:
    u, c = np.unique(a[a > 0], return_counts=True)
    own = dict(zip(u.tolist(), c.tolist(), strict=True))
    total = {int(s): sum(own.get(d, 0) for d in onto.descendants(s, include_self=True))
             for s in onto.ids}
    return own, total


@pytest.mark.parametrize("kind", ["gzip", "raw", "metaimage"])
def test_voxel_counts_against_numpy(tmp_path, labels, mouse, kind):
    if kind == "metaimage":
        p = write_metaimage_zip(tmp_path / "m.zip", _slabs(labels), labels.shape, np.uint32,
                                (25, 25, 25))
    else:
        p = write_nrrd(tmp_path / "a.nrrd", _slabs(labels), labels.shape, np.uint32,
                       (25, 25, 25), encoding=kind)
    vol = open_volume(p)
    table = voxel_counts(vol, mouse, slab_bytes=4 * 23 * 17 * 3)   # 3 planes per slab
    own, total = _numpy_counts(labels, mouse)
    for sid in mouse.ids:
        assert table.loc[sid, "voxels_self"] == own.get(int(sid), 0)
        assert table.loc[sid, "voxels"] == total[int(sid)]
    assert table.loc[997, "voxels"] == int((labels > 0).sum())
    assert np.allclose(table["volume_mm3"], table["voxels"] * 25.0 ** 3 * 1e-9)
    lazy = voxel_counts(vol, mouse, lazy=True, slab_bytes=4 * 23 * 17 * 4)
    assert (lazy["voxels"] == table["voxels"]).all()
    d3 = voxel_counts(vol, mouse, depth=3)
    assert set(d3.index) == set(mouse.at_depth(3))


def test_structure_mask(tmp_path, labels, mouse):
    vol = open_volume(write_nrrd(tmp_path / "a.nrrd", [labels], labels.shape, np.uint32,
                                 (25, 25, 25), encoding="raw"))
    m = structure_mask(vol, mouse, "CTX").compute()
    assert (m == np.isin(labels, mouse.descendants(688, include_self=True))).all()


def test_labels_not_in_ontology(tmp_path, labels, mouse):
    bad = labels.copy()
    bad[0, 0, 0] = 123456789
    vol = open_volume(write_nrrd(tmp_path / "a.nrrd", [bad], bad.shape, np.uint32, (25,) * 3))
    with pytest.raises(FormatError, match=r"a.nrrd: labels not in the ontology: 123456789 "
                                          r"\(1 voxels\)"):
        voxel_counts(vol, mouse)


def test_nrrd_wrong_sizes(tmp_path, labels):
    # gzip data shorter than the header's sizes
    p = tmp_path / "short.nrrd"
    header = nrrd_header_text((23, 17, 30), np.uint32, (25,) * 3)
    p.write_bytes(header + gzip.compress(labels.tobytes(order="F")))
    vol = open_volume(p)
    with pytest.raises(FormatError, match=r"short.nrrd: voxel data ends after 45,356 bytes"):
        vol.read()
    # gzip data longer
    p2 = tmp_path / "long.nrrd"
    p2.write_bytes(nrrd_header_text((23, 17, 28), np.uint32, (25,) * 3)
                   + gzip.compress(labels.tobytes(order="F")))
    with pytest.raises(FormatError, match="longer than the header's sizes"):
        open_volume(p2).read()
    # raw: checked at open
    p3 = tmp_path / "raw.nrrd"
    p3.write_bytes(nrrd_header_text((23, 17, 30), np.uint32, (25,) * 3, encoding="raw")
                   + labels.tobytes(order="F"))
    with pytest.raises(FormatError, match=r"raw.nrrd: raw NRRD data holds 45,356 bytes "
                                          r"\(expected 46,920 bytes"):
        open_volume(p3)


def test_nrrd_bad_encoding_and_dimension(tmp_path, labels):
    p = tmp_path / "bz.nrrd"
    p.write_bytes(nrrd_header_text(labels.shape, np.uint32, (25,) * 3, encoding="bzip2"))
    with pytest.raises(FormatError, match="bz.nrrd: NRRD encoding 'bzip2' is not supported "
                                          r"\(expected raw or gzip\)"):
        open_volume(p)
    p2 = tmp_path / "2d.nrrd"
    p2.write_bytes(b"NRRD0004\ntype: uint32\ndimension: 2\nsizes: 3 4\nendian: little\n"
                   b"encoding: raw\n\n" + bytes(48))
    with pytest.raises(FormatError, match="NRRD dimension 2"):
        open_volume(p2)
    p3 = tmp_path / "junk.nrrd"
    p3.write_bytes(b"hello\n")
    with pytest.raises(FormatError, match="junk.nrrd: not a readable NRRD header"):
        open_volume(p3)


def test_float_labels_cast_safely():
    ids = np.array([10307, 16777217, 266441657, 266441658 + 100], dtype=np.int64)
    stored = np.array([0, 10307, 16777217, 266441657], dtype=np.float64).astype(np.float32)
    # 16777217 and 266441657 are not representable in float32: matched by their rounding
    idx = label_index(stored.reshape(2, 2, 1, order="F"), ids, "a.nii")
    assert list(ids[idx[1:]]) == [10307, 16777217, 266441657] and idx[0] == -1
    clash = np.array([16777216, 16777217], dtype=np.int64)       # same float32
    with pytest.raises(FormatError, match="stands for several ids"):
        label_index(np.array([16777216.0], np.float32).reshape(1, 1, 1), clash, "a.nii")
    with pytest.raises(FormatError, match="label value 1.5 is not an integer"):
        label_index(np.array([1.5], np.float32).reshape(1, 1, 1), ids, "a.nii")
    with pytest.raises(FormatError, match="not finite"):
        label_index(np.array([np.nan], np.float32).reshape(1, 1, 1), ids, "a.nii")


def test_nifti_labels(tmp_path, mouse, labels):
    # float32 holds the ids below 2**24 exactly; the layer ids (~6e8, 64 apart in float32)
    # would be ambiguous (test_float_labels_cast_safely)
    labels = np.where(labels < 2**24, labels, 0).astype(np.uint32)
    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    p = write_nifti(tmp_path / "a.nii.gz", _slabs(labels.astype(np.float32)), labels.shape,
                    np.float32, aff)
    ref = np.asanyarray(nib.load(p).dataobj)
    assert (ref == labels).all()
    vol = open_volume(p)
    assert vol.unit == "mm" and np.allclose(vol.affine, aff)
    table = voxel_counts(vol, mouse)
    own, total = _numpy_counts(labels, mouse)
    assert all(table.loc[s, "voxels"] == total[int(s)] for s in mouse.ids)
    assert np.isclose(table.loc[997, "volume_mm3"], (labels > 0).sum() * 0.125)
    nib.save(nib.Nifti1Image(labels.astype(np.int32), aff), tmp_path / "scaled.nii")
    raw = bytearray((tmp_path / "scaled.nii").read_bytes())
    raw[112:116] = np.float32(2.0).tobytes()           # scl_slope (NIfTI-1 byte 112)
    (tmp_path / "scaled.nii").write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="scaled.nii: label volume with scl_slope 2.0"):
        open_volume(tmp_path / "scaled.nii")


def test_metaimage_bad_inputs(tmp_path):
    p = tmp_path / "nodata.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("annotation.mhd", "NDims = 3\nDimSize = 2 2 2\nElementType = MET_UINT\n"
                    "ElementDataFile = annotation.raw\n")
    with pytest.raises(FormatError, match="data member 'annotation.raw' named by "
                                          "annotation.mhd is missing"):
        open_volume(p)
    p2 = tmp_path / "short.zip"
    with zipfile.ZipFile(p2, "w") as zf:
        zf.writestr("annotation.mhd", "NDims = 3\nDimSize = 2 2 2\nElementType = MET_UINT\n"
                    "ElementDataFile = annotation.raw\n")
        zf.writestr("annotation.raw", bytes(31))
    with pytest.raises(FormatError, match=r"short.zip:annotation.raw: holds 31 bytes "
                                          r"\(expected 32 bytes"):
        open_volume(p2)


def test_lookup_kernel_against_numpy():
    from atlas_engine.kernels.lookup import index_in_sorted

    rng = np.random.default_rng(5)
    ids = np.unique(rng.integers(1, 700_000_000, size=300)).astype(np.int64)
    pool = np.r_[0, ids, 5, 7]                       # 5 and 7: not ids (unless drawn)
    values = np.repeat(rng.choice(pool, size=2000), rng.integers(1, 5, size=2000)).astype(np.uint32)
    got = index_in_sorted(values, ids)
    pos = np.searchsorted(ids, values.astype(np.int64))
    found = (pos < len(ids)) & (ids[np.minimum(pos, len(ids) - 1)] == values)
    want = np.where(values == 0, -1, np.where(found, pos, -2))
    np.testing.assert_array_equal(got, want)
