"""Brain maps: every voxel of a written map equals its region's value; plots; CLI; fetch."""

from __future__ import annotations

import json

import nibabel as nib
import nrrd
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from atlas_engine.cli import cli
from atlas_engine.errors import ConfigError, FormatError
from atlas_engine.fetch.ahba import fetch_ahba, parse_what, plan_downloads
from atlas_engine.maps import plot_map, read_region_table, write_maps
from atlas_engine.sources.donors import resolve_donors
from atlas_engine.store.graph import ontology_from_structure_graph
from atlas_engine.testing.server import serving
from atlas_engine.testing.synth_volumes import write_human_volumes, write_mouse_volumes
from atlas_engine.volumes import open_volume
from atlas_engine.volumes.nifti import write_nifti


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("volumes")
    files = {**write_mouse_volumes(root, scale=12, resolutions=(25, 100)),
             **write_human_volumes(root, scale=10, donors=[9861])}
    return root, files


def _expected(labels: np.ndarray, onto, table: pd.DataFrame, gene: str,
              background: float) -> np.ndarray:
    """Plain numpy oracle: each voxel takes the value of its deepest ancestor in the table."""
    out = np.full(labels.shape, background, dtype=np.float64)
    for lab in np.unique(labels):
        if lab == 0:
            continue
        for a in reversed(onto.path(int(lab))):
            if a in table.index:
                out[labels == lab] = table.loc[a, gene]
                break
    return out


def test_mouse_map_every_voxel(mirror, tmp_path):
    root, files = mirror
    onto = ontology_from_structure_graph(files["structure_graph_1"])
    vol = open_volume(files["annotation_25"])
    labels = vol.read().astype(np.int64)
    ids = onto.at_depth(3)
    rng = np.random.default_rng(1)
    table = pd.DataFrame({"structure_id": ids, "acronym": "x",
                          "A": rng.normal(size=len(ids)), "B": rng.normal(size=len(ids))})
    values = read_region_table(table)
    for bg in (0.0, np.nan):
        out = write_maps(table, vol, tmp_path / f"m{bg}", ontology=onto, background=bg)
        assert [p.name for p in out] == ["A.nrrd", "B.nrrd"]
        for gene, p in zip("AB", out, strict=True):
            got, header = nrrd.read(str(p))
            assert got.dtype == np.float32 and got.shape == labels.shape
            want = _expected(labels, onto, values, gene, bg).astype(np.float32)
            np.testing.assert_array_equal(got, want)
    # every in-brain voxel got a value (depth 3 covers the tree below it here)
    assert np.isnan(got[labels > 0]).sum() == np.isnan(want[labels > 0]).sum()


def test_human_stack_and_single(mirror, tmp_path):
    root, files = mirror
    onto = ontology_from_structure_graph(files["structure_graph_10"])
    vol = open_volume(files["annotation_full"])
    labels = vol.read().astype(np.int64)
    ids = [4008, 4275, 4391, 9001, 4696, 9131, 9512, 9218, 9352]
    table = pd.DataFrame({"G1": np.arange(len(ids)) + 1.0, "G2": -np.arange(len(ids)) * 0.5},
                         index=pd.Index(ids, name="structure_id"))
    out = write_maps(table, vol, tmp_path / "stack.nii.gz", ontology=onto,
                     background=np.nan)[0]
    img = nib.load(out)
    data = np.asanyarray(img.dataobj)
    assert data.shape == (*labels.shape, 2)
    assert np.allclose(img.affine, vol.affine)
    values = read_region_table(table.reset_index())
    for k, gene in enumerate(("G1", "G2")):
        np.testing.assert_array_equal(data[..., k],
                                      _expected(labels, onto, values, gene, np.nan))
    one = write_maps(table, vol, tmp_path / "g1.nii", genes=["G1"], ontology=onto)[0]
    assert np.asanyarray(nib.load(one).dataobj).shape == labels.shape


def test_atlas_label_map(tmp_path):
    """A Desikan–Killiany-style atlas: integer labels, regions = labels (no ontology)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 9, size=(11, 13, 7)).astype(np.int16)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    atlas = write_nifti(tmp_path / "dk.nii.gz", [labels], labels.shape, np.int16, aff)
    table = pd.DataFrame({"X": np.arange(1, 8) * 1.5},
                         index=pd.Index(np.arange(1, 8), name="label"))   # label 8 absent
    table.to_csv(tmp_path / "dk.csv")
    out = write_maps(tmp_path / "dk.csv", atlas, tmp_path / "x.nii.gz", background=np.nan)[0]
    got = np.asanyarray(nib.load(out).dataobj)
    want = np.where((labels >= 1) & (labels <= 7), labels * 1.5, np.nan)
    np.testing.assert_array_equal(got, want.astype(np.float32))
    png = plot_map(tmp_path / "dk.csv", atlas, "X", tmp_path / "x.png", kind="ortho")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_map_inputs(mirror, tmp_path):
    root, files = mirror
    onto = ontology_from_structure_graph(files["structure_graph_1"])
    vol = open_volume(files["annotation_25"])
    table = pd.DataFrame({"A": [1.0]}, index=pd.Index([4008], name="structure_id"))
    with pytest.raises(ConfigError, match="none of the table's regions"):
        write_maps(table, vol, tmp_path / "a", ontology=onto)
    t2 = pd.DataFrame({"A": [1.0]}, index=pd.Index([8], name="structure_id"))
    with pytest.raises(ConfigError, match="genes not in the table: B"):
        write_maps(t2, vol, tmp_path / "a", ontology=onto, genes=["B"])
    # labels of another ontology (human atlas read against the mouse tree)
    with pytest.raises(FormatError, match="annotation_full.nii.gz: labels not in the ontology"):
        write_maps(t2, files["annotation_full"], tmp_path / "a", ontology=onto)
    with pytest.raises(ConfigError, match="an NRRD holds one map"):
        write_maps(pd.DataFrame({"A": [1.0], "B": [2.0]}, index=pd.Index([8], name="id")),
                   vol, tmp_path / "x.nrrd", ontology=onto)


def test_cli_maps_and_voxels(mirror, tmp_path):
    root, files = mirror
    onto = ontology_from_structure_graph(files["structure_graph_1"])
    ids = onto.at_depth(2)
    pd.DataFrame({"structure_id": ids, "name": "n", "GENE": np.arange(len(ids), dtype=float)}
                 ).to_csv(tmp_path / "r.csv", index=False)
    runner = CliRunner()
    res = runner.invoke(cli, ["maps", str(files["structure_graph_1"]), str(tmp_path / "r.csv"),
                              "--atlas", str(files["annotation_25"]), "--out",
                              str(tmp_path / "maps"), "--background", "nan"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "maps" / "GENE.nrrd").is_file()
    assert (tmp_path / "maps" / "GENE.png").is_file()
    res = runner.invoke(cli, ["voxels", str(files["p56"]), str(files["structure_graph_1"]),
                              "--depth", "1", "--out", str(tmp_path / "v.csv")])
    assert res.exit_code == 0, res.output
    v = pd.read_csv(tmp_path / "v.csv", index_col=0)
    labels = open_volume(files["p56"]).read()
    assert v["voxels"].sum() == int((labels > 0).sum())      # depth 1 partitions the brain


def test_fetch_volumes_from_mirror(mirror, tmp_path):
    root, files = mirror
    what = "structure-graph:1,10,mouse-ccf,mouse-p56,human-atlas,mri"
    assert parse_what(what)[-2:] == ["structure-graph:1", "structure-graph:10"]
    with serving(root) as srv:
        # the mirror has 25 and 100 µm only: 10 and 50 µm fail, the rest is fetched
        report = fetch_ahba(tmp_path / "raw", donors="9861", what=what, base_url=srv.url)
    status = {r.spec.name: r.status for r in report.results}
    assert status["annotation_10.nrrd"] == "failed"
    for name in ("structure_graph_1.json", "structure_graph_10.json", "annotation_25.nrrd",
                 "annotation_100.nrrd", "annotation_full.nii.gz", "P56_Mouse_annotation.zip",
                 "mri_donor9861_T1.nii.gz", "mri_donor9861_T2.nii.gz"):
        assert status[name] == "downloaded", name
    raw = tmp_path / "raw"
    assert (open_volume(raw / "annotation_25.nrrd").read()
            == open_volume(files["annotation_25"]).read()).all()
    assert open_volume(raw / "mri_donor9861_T1.nii.gz", labels=False).shape == \
        open_volume(files["annotation_full"]).shape
    manifest = json.loads((raw / "manifest.json").read_text())
    assert "annotation_25.nrrd" in json.dumps(manifest)


def test_published_checksum_enforced(mirror, tmp_path):
    root, files = mirror
    # planned against the real archive, the published SHA-256 is attached ...
    specs = plan_downloads(["mouse-ccf", "human-atlas"], resolve_donors("9861"),
                           "https://human.brain-map.org", "https://www.brainspan.org")
    by_name = {s.name: s for s in specs}
    assert by_name["annotation_25.nrrd"].sha256.startswith("c620cbcc")
    assert by_name["annotation_full.nii.gz"].sha256.startswith("2b05581e")
    assert by_name["annotation_25.nrrd"].url == (
        "http://download.alleninstitute.org/informatics-archive/current-release/mouse_ccf/"
        "annotation/ccf_2017/annotation_25.nrrd")
    # ... and a file that does not match it is refused (the generated one never does)
    from atlas_engine.fetch.download import DownloadSpec, download_files
    from atlas_engine.fetch.sync import run_sync

    with serving(root) as srv:
        url = (f"{srv.url}/informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/"
               "annotation_25.nrrd")
        spec = DownloadSpec(url, "annotation_25.nrrd", "raw",
                            sha256=by_name["annotation_25.nrrd"].sha256)
        results = run_sync(download_files([spec], tmp_path / "d", quiet=True))
    assert results[0].status == "failed" and "differs from the published" in results[0].error
    assert not (tmp_path / "d" / "annotation_25.nrrd").exists()


def test_pipeline_zarr_output_as_source(tmp_path):
    """The pipeline's streamed output (label × gene_symbol Zarr) maps like its CSV."""
    import xarray as xr

    labels = np.arange(1, 6)
    expr = np.arange(10, dtype=np.float64).reshape(5, 2)
    xr.Dataset({"expression": (("label", "gene_symbol"), expr)},
               coords={"label": labels, "gene_symbol": np.array(["A", "B"], dtype=object)}
               ).to_zarr(tmp_path / "out.zarr", zarr_format=3, consolidated=False)
    table = read_region_table(tmp_path / "out.zarr")
    assert list(table.columns) == ["A", "B"] and list(table.index) == list(labels)
    vol = np.tile(np.arange(0, 7, dtype=np.int16)[:, None, None], (1, 2, 3))
    atlas = write_nifti(tmp_path / "a.nii", [vol], vol.shape, np.int16, np.eye(4))
    out = write_maps(table, atlas, tmp_path / "b.nii", genes=["B"])[0]
    got = np.asanyarray(nib.load(out).dataobj)
    want = np.where((vol >= 1) & (vol <= 5), expr[np.clip(vol - 1, 0, 4), 1], 0.0)
    np.testing.assert_array_equal(got, want.astype(np.float32))


def test_cli_mask(mirror, tmp_path):
    root, files = mirror
    onto = ontology_from_structure_graph(files["structure_graph_1"])
    res = CliRunner().invoke(cli, ["voxels", str(files["annotation_25"]),
                                   str(files["structure_graph_1"]), "--mask", "CTX",
                                   "--mask-out", str(tmp_path / "ctx.nrrd")])
    assert res.exit_code == 0, res.output
    got, _ = nrrd.read(str(tmp_path / "ctx.nrrd"))
    labels = open_volume(files["annotation_25"]).read()
    np.testing.assert_array_equal(got, np.isin(labels, onto.descendants(688, True)))
    assert got.dtype == np.uint8 and got.sum() > 0


def test_region_ids_that_are_not_whole_are_refused(tmp_path):
    """A region column read as floats (one id left empty, or 1.5): whole numbers are the ids,
    anything else is refused with its line, never truncated onto another region."""
    path = tmp_path / "t.csv"
    path.write_text("label,BDNF\n1,0.5\n2.0,0.25\n")
    assert list(read_region_table(path).index) == [1, 2]
    for bad, shown in (("1.5", "1.5"), ("", "nan"), ("inf", "inf")):
        path.write_text(f"label,BDNF\n1,0.5\n{bad},0.25\n")
        with pytest.raises(FormatError, match=f"region id {shown} is not an integer") as err:
            read_region_table(path)
        assert err.value.line == 3
    frame = pd.DataFrame({"BDNF": [0.5, 0.25]}, index=pd.Index([3.0, 4.5], name="label"))
    with pytest.raises(FormatError, match="region id 4.5 is not an integer"):
        read_region_table(frame)
