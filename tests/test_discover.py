"""Archives recognised by their members and donors by their content, whatever the file names.

Fixtures: the session's small generated dataset (``synth_small``), with some donor zips
rewritten to carry real well_ids of their donor (from the shipped corrected-MNI table through
:mod:`atlas_engine.sources.wells`), the way real downloads do.
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from atlas_engine.cli import cli as cli_main
from atlas_engine.convert.api import detect_dataset
from atlas_engine.convert.brainspan import convert_brainspan
from atlas_engine.convert.discover import scan
from atlas_engine.convert.donor import convert_microarray, find_sources
from atlas_engine.convert.rnaseq import convert_rnaseq, find_rnaseq
from atlas_engine.errors import ConfigError, FormatError, UnsafeArchiveError
from atlas_engine.sources import wells as W
from atlas_engine.sources.donors import DONORS
from atlas_engine.store.open import open_store
from atlas_engine.store.verify import verify_store

FULL = {d.id: d.n_samples for d in DONORS}


def _with_wells(data: bytes, wells: np.ndarray) -> bytes:
    """SampleAnnot.csv bytes with the well_id column replaced (other fields untouched)."""
    rows = list(csv.reader(io.StringIO(data.decode())))
    k = rows[0].index("well_id")
    assert len(rows) - 1 <= len(wells)
    for row, w in zip(rows[1:], wells, strict=False):
        row[k] = str(int(w))
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


def _rezip(src: Path, dest: Path, *, wells: np.ndarray | None = None, prefix: str = "",
           drop: tuple[str, ...] = ()) -> Path:
    """Copy the zip ``src`` to ``dest``: members under ``prefix``, SampleAnnot.csv with
    ``wells``, members in ``drop`` left out."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = zin.read(info)
            if wells is not None and info.filename == "SampleAnnot.csv":
                data = _with_wells(data, wells)
            zout.writestr(prefix + info.filename, data)
    return dest


def _real(synth_small, donor: int, dest: Path, offset: int = 0) -> Path:
    """The generated zip of ``donor`` with real well_ids of that donor, saved as ``dest``."""
    n = synth_small.samples[donor]
    wells = W.donor_wells(donor)[offset:offset + n]
    return _rezip(synth_small.zips[donor], dest, wells=wells)


def _origin(store: Path, donor: int) -> dict:
    return open_store(store).sources()[donor]


# -------------------------------------------------------------------------------------------
# the well_id -> donor table
# -------------------------------------------------------------------------------------------

def test_well_table_blocks():
    t = W.well_table()
    assert {d: len(v) for d, v in t.by_donor.items()} == FULL
    assert len(t.well_ids) == 3702 == len(np.unique(t.well_ids))
    # the intermine fixture (H0351.1009's SampleAnnot.csv) starts with wells 11281 and 11326
    assert list(W.donor_of([11281, 11326, 5, 10**12])) == [12876, 12876, 0, 0]
    for d in FULL:
        assert (W.donor_of(W.donor_wells(d)) == d).all()


def test_well_id_ranges_for_unknown_ids():
    # well_ids outside the table (generated data) are placed by range: 9861 and 10021 share
    # the small ids, the others have a range each
    assert W.range_candidates([12_000, 13_000]) == [12876]
    assert W.range_candidates([100, 9_000]) == [9861, 10021]
    assert W.range_candidates([126_400_000, 127_000_000]) == [14380]
    assert W.range_candidates([157_800_000, 165_400_000]) == [15697]
    assert W.range_candidates([99_999_999]) == []
    for d in FULL:                     # every real well is inside its donor's range
        assert d in W.range_candidates(W.donor_wells(d))


# -------------------------------------------------------------------------------------------
# any name: the content decides
# -------------------------------------------------------------------------------------------

def test_renamed_zips_converted_by_content(synth_small, tmp_path):
    raw = tmp_path / "raw"
    curl = _real(synth_small, 12876, raw / "human_microarray_expression.zip")
    wkf = _real(synth_small, 9861, raw / "178238387.zip")          # its own WKF id
    other = _real(synth_small, 10021, raw / "download")             # no extension
    lines: list[str] = []
    store = tmp_path / "s.zarr"
    res = convert_microarray(raw, store, log=lines.append)
    assert sorted(res.converted) == [9861, 10021, 12876]
    text = "\n".join(lines)
    n = synth_small.samples[12876]
    assert (f"human_microarray_expression.zip: AHBA microarray donor 12876 (H0351.1009), "
            f"{n} of 363 samples (a cut-down file); identified by its {n} well_ids, all donor "
            f"12876's") in text
    assert "178238387.zip: AHBA microarray donor 9861" in text
    assert "download: AHBA microarray donor 10021" in text
    st = open_store(store)
    for donor, path in ((12876, curl), (9861, wkf), (10021, other)):
        np.testing.assert_array_equal(st.donor(donor)["well_id"].values,
                                      W.donor_wells(donor)[:synth_small.samples[donor]])
        o = _origin(store, donor)
        assert o["file"] == path.name and o["size"] == path.stat().st_size
        assert o["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert o["container"] == "zip" and o["donor"] == donor
        assert o["n_samples"] == synth_small.samples[donor] and o["donor_samples"] == FULL[donor]
        assert "well_ids" in o["identified_by"]
    rep = verify_store(store, checksums=False)
    assert rep.summary["sources"][9861]["file"] == "178238387.zip"
    out = CliRunner().invoke(cli_main, ["verify", str(store), "--no-checksums"])
    assert "source of donor 9861: 178238387.zip" in out.output


def test_swapped_names_refused_naming_both(synth_small, tmp_path):
    raw = tmp_path / "raw"
    _real(synth_small, 9861, raw / "normalized_microarray_donor10021.zip")
    _real(synth_small, 10021, raw / "normalized_microarray_donor9861.zip")
    with pytest.raises(FormatError) as err:
        convert_microarray(raw, tmp_path / "s.zarr")
    msg = str(err.value)
    assert "names swapped" in msg and "\n" not in msg
    assert "normalized_microarray_donor10021.zip holds donor 9861 (H0351.2001)" in msg
    assert "normalized_microarray_donor9861.zip holds donor 10021 (H0351.2002)" in msg
    assert not (tmp_path / "s.zarr").exists()


def test_name_contradicting_content_refused(synth_small, tmp_path):
    raw = tmp_path / "raw"
    _real(synth_small, 12876, raw / "178238387.zip")   # 9861's WKF id, 12876's samples
    with pytest.raises(FormatError, match=r'178238387.zip: the name "178238387.zip" \(well-known '
                       r"file 178238387 is donor 9861's microarray zip\) says donor 9861 "
                       r"\(H0351.2001\) but the content is donor 12876 \(H0351.1009\)"):
        find_sources(raw)


def test_generated_zips_recognised_and_swaps_caught(synth_small, tmp_path):
    # the generator's own names and well_ids (not real ones) are still recognised ...
    found = {ds.donor_id: ds for ds in find_sources(synth_small.dest)}
    assert sorted(found) == sorted(FULL)
    assert all("well_ids" in ds.found.evidence for ds in found.values())
    # ... and, renamed, identified by their well_ids (real ones, or the donor's range)
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(synth_small.zips[12876], raw / "a.zip")
    shutil.copy(synth_small.zips[15697], raw / "b.zip")
    assert [ds.donor_id for ds in find_sources(raw)] == [12876, 15697]
    (raw / "a.zip").rename(raw / "normalized_microarray_donor15697.zip")
    (raw / "b.zip").rename(raw / "normalized_microarray_donor12876.zip")
    with pytest.raises(FormatError, match="names swapped"):
        find_sources(raw)


def _unknown_small_wells(n: int) -> np.ndarray:
    """``n`` well_ids below 10,000 that are no known sample: 9861's or 10021's by range."""
    ids = np.arange(100, 9_000, 7)
    return ids[W.donor_of(ids) == 0][:n]


def test_unattributable_content_says_so(synth_small, tmp_path):
    raw = tmp_path / "raw"
    n = synth_small.samples[9861]
    _rezip(synth_small.zips[9861], raw / "x.zip", wells=_unknown_small_wells(n))
    _real(synth_small, 12876, raw / "y.zip")
    with pytest.raises(ConfigError, match=r"x.zip: cannot tell which donor this is: .* well_id "
                       r"range of donors 9861 and 10021; name it "
                       r"normalized_microarray_donor<id>.zip"):
        find_sources(raw)
    assert [ds.donor_id for ds in find_sources(raw, ["12876"])] == [12876]
    with pytest.raises(ConfigError, match="cannot tell"):
        find_sources(raw, ["9861"])
    # the name picks among the donors the content leaves open, and may not leave them
    (raw / "x.zip").rename(raw / "normalized_microarray_donor10021.zip")
    [ds] = find_sources(raw, ["10021"])
    assert "the name picks donor 10021" in ds.found.evidence
    (raw / "normalized_microarray_donor10021.zip").rename(raw / "donor12876.zip")
    with pytest.raises(FormatError, match=r'the name "donor12876.zip" says donor 12876 '
                       r"\(H0351.1009\) but its \d+ well_ids, .* range of donors 9861 and 10021"):
        find_sources(raw)


def test_mixed_donors_in_one_file_refused(synth_small, tmp_path):
    n = synth_small.samples[9861]
    wells = np.concatenate([W.donor_wells(9861)[:n - 2], W.donor_wells(12876)[:2]])
    _rezip(synth_small.zips[9861], tmp_path / "raw" / "m.zip", wells=wells)
    with pytest.raises(FormatError, match=r"m.zip:SampleAnnot.csv: samples of several donors "
                       r"\(9861 \(H0351.2001\): \d+, 12876 \(H0351.1009\): 2\)"):
        find_sources(tmp_path / "raw")


def test_same_donor_twice(synth_small, tmp_path):
    raw = tmp_path / "raw"
    _real(synth_small, 9861, raw / "one.zip")
    _real(synth_small, 9861, raw / "two.zip")
    with pytest.raises(ConfigError, match=r"one.zip and .*two.zip both hold AHBA microarray "
                       r"donor 9861"):
        find_sources(raw)
    (raw / "two.zip").unlink()
    folder = raw / "extracted"
    with zipfile.ZipFile(raw / "one.zip") as zf:
        zf.extractall(folder)
    [ds] = find_sources(raw)          # zip and extracted folder: the zip is kept
    assert ds.path.name == "one.zip"


# -------------------------------------------------------------------------------------------
# folders, nested folders, one archive as SRC
# -------------------------------------------------------------------------------------------

def test_folders_and_nesting(synth_small, tmp_path):
    raw = tmp_path / "raw"
    z = _real(synth_small, 12876, tmp_path / "tmp12876.zip")
    with zipfile.ZipFile(z) as zf:
        zf.extractall(raw / "my download")                       # a folder, any name
    with zipfile.ZipFile(_real(synth_small, 9861, tmp_path / "t.zip")) as zf:
        zf.extractall(raw / "outer" / "normalized_microarray_donor9861")   # one level down
    _rezip(synth_small.zips[10021], raw / "zipped_folder.zip", prefix="donor_files/",
           wells=W.donor_wells(10021)[:synth_small.samples[10021]])
    (raw / "notes.txt").write_text("not data")
    found = {ds.donor_id: ds for ds in find_sources(raw)}
    assert sorted(found) == [9861, 10021, 12876]
    assert found[9861].path == raw / "outer" / "normalized_microarray_donor9861"
    assert found[10021].found.prefix == "donor_files/"
    store = tmp_path / "s.zarr"
    res = convert_microarray(raw, store)
    assert sorted(res.converted) == [9861, 10021, 12876]
    o = _origin(store, 10021)
    assert o["file"] == "zipped_folder.zip" and o["member_prefix"] == "donor_files/"
    o = _origin(store, 12876)
    assert o["container"] == "folder" and o["file"] == "my download" and o["sha256"] is None
    # SRC may be the donor's folder itself, or a single zip
    assert [ds.donor_id for ds in find_sources(raw / "my download")] == [12876]
    assert [ds.donor_id for ds in find_sources(raw / "zipped_folder.zip")] == [10021]


def test_abagen_data_folder(synth_small, tmp_path):
    # abagen keeps microarray/normalized_microarray_donor{id}/ and rnaseq/rnaseq_donor{id}/
    data = tmp_path / "abagen-data"
    for d in (9861, 12876):
        with zipfile.ZipFile(_real(synth_small, d, tmp_path / f"{d}.zip")) as zf:
            zf.extractall(data / "microarray" / f"normalized_microarray_donor{d}")
    with zipfile.ZipFile(synth_small.dest / "rnaseq_donor9861.zip") as zf:
        zf.extractall(data / "rnaseq" / "rnaseq_donor9861")
    assert [ds.donor_id for ds in find_sources(data)] == [9861, 12876]
    assert [s.donor_id for s in find_rnaseq(data)] == [9861]
    # a folder with archives of its own is not searched further down
    shutil.copy(tmp_path / "12876.zip", data / "a.zip")
    assert [ds.donor_id for ds in find_sources(data)] == [12876]


def test_nothing_recognised_lists_what_was_looked_for(synth_small, tmp_path):
    raw = tmp_path / "raw"
    (raw / "sub").mkdir(parents=True)
    (raw / "notes.txt").write_text("x")
    with zipfile.ZipFile(raw / "pictures.zip", "w") as zf:
        zf.writestr("a.png", b"png")
    with pytest.raises(ConfigError) as err:
        detect_dataset(raw)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{raw}: nothing to convert: looked for")
    for member in ("MicroarrayExpression.csv", "PACall.csv", "Probes.csv", "SampleAnnot.csv",
                   "Ontology.csv", "RNAseqTPM.csv", "Genes.csv", "expression_matrix.csv",
                   "rows_metadata.csv", "columns_metadata.csv"):
        assert member in msg
    assert "notes.txt (not a zip)" in msg and "pictures.zip (a zip of other files)" in msg
    assert "sub/ (no archive's files)" in msg
    out = CliRunner().invoke(cli_main, ["convert", str(raw), str(tmp_path / "s.zarr")])
    assert out.exit_code != 0 and "nothing to convert" in str(out.exception)
    # asked for microarray donors where there are only RNA-seq ones
    shutil.copy(synth_small.dest / "rnaseq_donor9861.zip", raw / "r.zip")
    with pytest.raises(ConfigError, match=r"looked for a zip or folder \(any name\) holding an "
                       r"AHBA microarray donor \(.*\); it holds AHBA RNA-seq donor r.zip"):
        find_sources(raw)


def test_incomplete_and_damaged_archives(synth_small, tmp_path):
    raw = tmp_path / "raw"
    _rezip(synth_small.zips[9861], raw / "part.zip", drop=("Probes.csv",))
    with pytest.raises(FormatError, match=r"part.zip: looks like an AHBA microarray donor but "
                       r"has no Probes.csv"):
        find_sources(raw)
    (raw / "part.zip").unlink()
    data = synth_small.zips[9861].read_bytes()
    (raw / "cut.zip").write_bytes(data[:len(data) // 2])            # truncated download
    with pytest.raises(UnsafeArchiveError, match="cut.zip: not a valid zip"):
        find_sources(raw)
    (raw / "cut.zip").rename(raw / "cut.zip.part")                  # still downloading
    with pytest.raises(ConfigError, match=r"cut.zip.part \(a download in progress\)"):
        find_sources(raw)


# -------------------------------------------------------------------------------------------
# RNA-seq and BrainSpan
# -------------------------------------------------------------------------------------------

def test_rnaseq_by_content(synth_small, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(synth_small.dest / "rnaseq_donor10021.zip", raw / "278448166.zip")
    # well_ids that are no known sample: the brain column names the donor
    with zipfile.ZipFile(synth_small.dest / "rnaseq_donor9861.zip") as zf:
        n = len(zf.read("SampleAnnot.csv").decode().strip().splitlines()) - 1
    _rezip(synth_small.dest / "rnaseq_donor9861.zip", raw / "rna.zip",
           wells=_unknown_small_wells(n))
    got = {s.donor_id: s for s in find_rnaseq(raw)}
    assert sorted(got) == [9861, 10021]
    assert "brain column" in got[9861].found.evidence
    assert detect_dataset(raw) == "ahba-rnaseq"
    res = convert_rnaseq(raw, tmp_path / "r.zarr")
    assert sorted(res.converted) == [9861, 10021]
    import xarray as xr

    g = xr.open_zarr(tmp_path / "r.zarr", group="rnaseq/10021")
    o = g.attrs["provenance"]["origin"]
    assert o["file"] == "278448166.zip" and o["kind"] == "rnaseq" and o["donor"] == 10021
    assert o["sha256"] == hashlib.sha256((raw / "278448166.zip").read_bytes()).hexdigest()
    # an RNA-seq zip saved under a microarray donor's name
    shutil.copy(synth_small.dest / "rnaseq_donor9861.zip",
                raw / "normalized_microarray_donor9861.zip")
    with pytest.raises(FormatError, match=r'the name "normalized_microarray_donor9861.zip" says '
                       r"AHBA microarray donor 9861 \(H0351.2001\) but it holds an AHBA RNA-seq "
                       r"donor"):
        scan(raw)
    (raw / "normalized_microarray_donor9861.zip").unlink()
    # the RNA-seq brain column names the donor: a swapped name is refused
    (raw / "rna.zip").rename(raw / "rnaseq_donor10021.zip")
    (raw / "278448166.zip").rename(raw / "rnaseq_donor9861.zip")
    with pytest.raises(FormatError, match="names swapped"):
        find_rnaseq(raw)


def test_brainspan_by_content(synth_small, tmp_path):
    bs = synth_small.dest / "genes_matrix_csv.zip"
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(bs, raw / "267666525.zip")
    assert detect_dataset(raw) == "brainspan"
    a = convert_brainspan(raw, tmp_path / "a.zarr")
    with zipfile.ZipFile(bs) as zf:
        zf.extractall(tmp_path / "brainspan files")
    b = convert_brainspan(tmp_path / "brainspan files", tmp_path / "b.zarr")
    assert (a["genes"], a["samples"]) == (b["genes"], b["samples"])
    import xarray as xr

    ea = xr.open_zarr(tmp_path / "a.zarr", group="brainspan")
    eb = xr.open_zarr(tmp_path / "b.zarr", group="brainspan")
    np.testing.assert_array_equal(ea["expression"].values, eb["expression"].values)
    assert ea.attrs["provenance"]["origin"]["file"] == "267666525.zip"
    assert eb.attrs["provenance"]["origin"]["container"] == "folder"
    shutil.copy(bs, raw / "normalized_microarray_donor9861.zip")
    with pytest.raises(FormatError, match="says AHBA microarray donor 9861 .* but it holds a "
                       "BrainSpan genes matrix"):
        detect_dataset(raw)


def test_cli_converts_a_curl_named_zip(synth_small, tmp_path):
    # the seed's users save the donor zip with `curl ... -o human_microarray_expression.zip`
    raw = tmp_path / "raw"
    _real(synth_small, 15496, raw / "human_microarray_expression.zip")
    store = tmp_path / "s.zarr"
    out = CliRunner().invoke(cli_main, ["convert", str(raw), str(store)])
    assert out.exit_code == 0, out.output
    n = synth_small.samples[15496]
    assert (f"human_microarray_expression.zip: AHBA microarray donor 15496 (H0351.1015), {n} of "
            f"470 samples (a cut-down file); identified by its {n} well_ids, all donor "
            "15496's") in out.output
    assert open_store(store).donors == [15496]
