"""RNA-seq in stores: conversion of the generated rnaseq_donor zips (round trip against pandas,
skip / reconvert on re-run, bad input) and probe_selection='rnaseq' against abagen 0.1.3.

The golden (tests/data/abagen_golden/rnaseq.npz, rnaseq_params.json) was written by
benchmarks/abagen_oracle/make_rnaseq_golden.py from the same generated data.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _golden import load_golden, store_copy

from atlas_engine import open_store
from atlas_engine.cli import main
from atlas_engine.convert.rnaseq import convert_rnaseq
from atlas_engine.errors import ConfigError, FormatError, StoreError
from atlas_engine.pipeline.expression import get_expression_data
from atlas_engine.pipeline.probe_scores import rnaseq_correlation
from atlas_engine.pipeline.rnaseq import correlate_with_rnaseq

GOLDEN = Path(__file__).parent / "data" / "abagen_golden"
PARAMS = json.loads((GOLDEN / "rnaseq_params.json").read_text())
ATLAS = str(GOLDEN / "e2e_atlas.nii.gz")
INFO = str(GOLDEN / "e2e_atlas_info.csv")
FIXED = dict(corrected_mni=False, reannotated=False)


@pytest.fixture(scope="module")
def rna(e2e_source, tmp_path_factory):
    p = PARAMS["dataset"]
    e2e = json.loads((GOLDEN / "e2e_params.json").read_text())
    assert p == {k: e2e[k] for k in p}  # the RNA-seq golden was made on the e2e dataset
    store = store_copy(e2e_source, tmp_path_factory.mktemp("rnaseq") / "store.zarr")
    res = convert_rnaseq(e2e_source["raw"], store, dtype="float64")
    return {"store": open_store(store), "path": store, "raw": e2e_source["raw"],
            "synth": e2e_source["synth"], "result": res}


@pytest.fixture(scope="module")
def golden():
    return load_golden("rnaseq")


def _member(zpath: Path, name: str) -> bytes:
    with zipfile.ZipFile(zpath) as zf:
        return zf.read(name)


# ------------------------------------------------------------------------------------------
# parity with abagen
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", list(PARAMS["cases"]))
def test_rnaseq_selection_matches_abagen(rna, golden, case):
    kw = dict(PARAMS["cases"][case])
    if "donors" in kw:
        kw["donors"] = [int(d) for d in kw["donors"]]
    res = get_expression_data(rna["store"], ATLAS, INFO, return_counts=True, **FIXED, **kw)
    frame = res.expression
    assert list(frame.index) == golden[f"{case}|labels"].tolist()
    assert list(frame.columns) == golden[f"{case}|genes"].tolist()
    np.testing.assert_allclose(frame.to_numpy(), golden[f"{case}|values"], rtol=0, atol=1e-6,
                               equal_nan=True)
    np.testing.assert_array_equal(res.counts.to_numpy(), golden[f"{case}|counts"])
    assert res.counts.columns.tolist() == golden[f"{case}|count_donors"].tolist()


def test_rnaseq_picks_other_probes_than_diff_stability(rna):
    a = get_expression_data(rna["store"], ATLAS, INFO, probe_selection="rnaseq", **FIXED)
    b = get_expression_data(rna["store"], ATLAS, INFO, **FIXED)
    sel_a = set(a.probes.loc[a.probes.selected, "probe_id"])
    sel_b = set(b.probes.loc[b.probes.selected, "probe_id"])
    assert sel_a != sel_b
    # genes absent from the RNA-seq data are dropped
    genes = set(pd.read_csv(io.BytesIO(_member(rna["synth"].rnaseq[9861], "Genes.csv")))
                ["gene_symbol"])
    missing = set(b.expression.columns) - genes
    assert missing and not missing & set(a.expression.columns)
    assert set(a.expression.columns) <= genes


def test_rnaseq_needs_a_donor_with_rnaseq(rna):
    with pytest.raises(ConfigError, match="RNA-seq"):
        get_expression_data(rna["store"], ATLAS, INFO, probe_selection="rnaseq",
                            donors=[12876, 14380], **FIXED)


def test_scores_agree_with_in_memory_function():
    """The store path's correlation step against probes.rnaseq_correlation (arrays in memory)."""
    rng = np.random.default_rng(0)
    n_s, genes = 40, np.array([f"G{i}" for i in range(12)])
    sids = rng.integers(0, 9, n_s)
    symbols = np.array(["G0", "G0", "G1", "G2", "G3", "G11", "X9", "G5", "G5", "G5"])
    expr = rng.normal(size=(len(symbols), n_s))
    expr[4] = 1.0                                         # constant probe (G3) → NaN
    tpm = pd.DataFrame(rng.gamma(2.0, 10.0, size=(len(genes), 25)), index=genes)
    tpm.iloc[2] = 5.0                                     # constant gene G2 → dropped
    rna_sids = rng.integers(2, 12, 25)
    want = rnaseq_correlation([expr], [sids], symbols, [(0, tpm, rna_sids)])
    from atlas_engine.pipeline._stats import group_mean_columns

    rid, rmeans = group_mean_columns(tpm.to_numpy(), rna_sids)
    got = correlate_with_rnaseq(symbols, group_mean_columns(expr, sids),
                                (genes, rid, rmeans))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)
    assert np.isnan(got[[3, 4, 6]]).all() and np.isfinite(got[[0, 1, 2, 5, 7]]).all()


# ------------------------------------------------------------------------------------------
# conversion
# ------------------------------------------------------------------------------------------

def test_round_trip_against_pandas(rna):
    st = rna["store"]
    assert st.rnaseq_donors == [9861, 10021]
    assert sorted(rna["result"].converted) == [9861, 10021]
    for donor, zpath in rna["synth"].rnaseq.items():
        ds = st.rnaseq(donor)
        for var, member in (("tpm", "RNAseqTPM.csv"), ("counts", "RNAseqCounts.csv")):
            want = pd.read_csv(io.BytesIO(_member(zpath, member)), header=None, index_col=0)
            assert ds[var].dims == ("gene", "sample")
            assert ds[var].dtype == np.float64
            np.testing.assert_array_equal(ds[var].values, want.to_numpy())
            assert list(ds["gene"].values) == want.index.tolist()
        genes = pd.read_csv(io.BytesIO(_member(zpath, "Genes.csv")))
        for c in ("gene_id", "entrez_id", "median_gene_end"):
            np.testing.assert_array_equal(ds[c].values, genes[c].fillna(-1).astype(np.int64))
        assert list(ds["chromosome"].values) == genes["chromosome"].astype(str).tolist()
        annot = pd.read_csv(io.BytesIO(_member(zpath, "SampleAnnot.csv")))
        assert ds.sizes["sample"] == len(annot)
        np.testing.assert_array_equal(ds["sample"].values, np.arange(1, len(annot) + 1))
        for c in ("well_id", "ontology_structure_id", "RIN_RNA_quality", "A.Pct"):
            np.testing.assert_array_equal(ds[c].values, annot[c].to_numpy())
        for c in ("RNAseq_sample_name", "ontology_structure_acronym", "brain"):
            assert list(ds[c].values) == annot[c].tolist()
    with pytest.raises(StoreError, match="no RNA-seq data for donor 12876"):
        st.rnaseq(12876)


def test_float32_values_are_rounded_once(rna, tmp_path):
    store = tmp_path / "f32.zarr"
    convert_rnaseq(rna["raw"], store, donors=["H0351.2002"], gene_chunk=16, sample_chunk=5)
    root = zarr_attrs(store)
    assert root["rnaseq"]["donors"] == [10021] and root["donors"] == []
    import xarray as xr

    ds = xr.open_zarr(store, group="rnaseq/10021")
    text = _member(rna["synth"].rnaseq[10021], "RNAseqTPM.csv").decode()
    want = np.array([[float(t) for t in line.split(",")[1:]] for line in text.splitlines()])
    got = ds["tpm"].values
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want.astype(np.float32))


def zarr_attrs(store: Path) -> dict:
    return json.loads((store / "zarr.json").read_text())["attributes"]["atlas_engine"]


def _snapshot(store: Path, sub: str) -> dict[str, bytes]:
    base = store / sub
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file()}


def test_rerun_skips_and_reconverts_changed_sources(rna, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(rna["raw"], raw)
    store = tmp_path / "s.zarr"
    first = convert_rnaseq(raw, store)
    assert first.converted == [9861, 10021]
    before = _snapshot(store, "rnaseq/9861")
    attrs = zarr_attrs(store)
    again = convert_rnaseq(raw, store)
    assert again.converted == [] and again.skipped == [9861, 10021]
    assert zarr_attrs(store) == attrs                      # nothing rewritten
    z = raw / "rnaseq_donor10021.zip"
    os.utime(z, ns=(z.stat().st_atime_ns, z.stat().st_mtime_ns + 10**9))
    third = convert_rnaseq(raw, store)
    assert third.converted == [10021] and third.skipped == [9861]
    assert _snapshot(store, "rnaseq/9861") == before
    other = convert_rnaseq(raw, store, dtype="float64")     # other options: reconverted
    assert other.converted == [9861, 10021]


def _rewrite_member(src: Path, dest: Path, member: str, data: bytes) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, data if info.filename == member else zin.read(info))


@pytest.mark.parametrize(("member", "edit", "line", "what"), [
    ("RNAseqTPM.csv", lambda t: t.replace(",", ",x", 1), 1, "bad value token"),
    ("RNAseqCounts.csv", lambda t: "\n".join(t.splitlines()[::-1]) + "\n", 1, "differs from"),
    ("RNAseqTPM.csv", lambda t: "\n".join(t.splitlines()[:-1]) + "\n", None, "file ends"),
    ("RNAseqTPM.csv", lambda t: t.replace("\n", ",1\n", 1), 1, "values on the first line"),
    ("RNAseqCounts.csv", lambda t: "\n".join(t.splitlines()[:2] + [t.splitlines()[2] + ",1"]
                                             + t.splitlines()[3:]) + "\n", 3, "too many"),
    ("Genes.csv", lambda t: t.replace(",", ";", 1), 1, "unexpected header"),
])
def test_bad_input_names_file_and_line_and_leaves_nothing(rna, tmp_path, member, edit, line,
                                                          what):
    raw = tmp_path / "raw"
    raw.mkdir()
    src = rna["synth"].rnaseq[9861]
    text = _member(src, member).decode()
    _rewrite_member(src, raw / src.name, member, edit(text).encode())
    store = tmp_path / "s.zarr"
    with pytest.raises(FormatError) as err:
        convert_rnaseq(raw, store)
    assert member in err.value.file and what in str(err.value)
    if line is not None:
        assert err.value.line == line
    assert not (store / "rnaseq" / "9861").exists()
    staging = store / ".staging"
    assert not staging.exists() or not any(staging.iterdir())


def test_abagen_folder_layout(rna, tmp_path):
    raw = tmp_path / "raw"
    dest = raw / "rnaseq_donor9861"
    dest.mkdir(parents=True)
    with zipfile.ZipFile(rna["synth"].rnaseq[9861]) as zf:
        zf.extractall(dest)
    store = tmp_path / "s.zarr"
    res = convert_rnaseq(raw, store, dtype="float64")
    assert res.converted == [9861]
    import xarray as xr

    a = xr.open_zarr(store, group="rnaseq/9861")["tpm"].values
    np.testing.assert_array_equal(a, rna["store"].rnaseq(9861)["tpm"].values)
    with pytest.raises(ConfigError, match="no AHBA RNA-seq donor"):
        convert_rnaseq(raw, store, donors=[10021])


def test_cli_convert_with_and_without_rnaseq(rna, tmp_path):
    store = tmp_path / "cli.zarr"
    main(["convert", str(rna["raw"]), str(store), "--donors", "9861,12876", "--quiet"])
    st = open_store(store)
    assert st.donors == [9861, 12876] and st.rnaseq_donors == [9861]
    bare = tmp_path / "bare.zarr"
    main(["convert", str(rna["raw"]), str(bare), "--donors", "10021", "--no-rnaseq", "--quiet"])
    assert open_store(bare).rnaseq_donors == []
    main(["convert", str(rna["raw"]), str(bare), "--dataset", "ahba-rnaseq", "--quiet"])
    assert open_store(bare).rnaseq_donors == [9861, 10021]
    assert open_store(bare).donors == [10021]


def test_cli_aggregate_probe_selection_rnaseq(rna, golden, tmp_path):
    out = tmp_path / "rna.csv"
    main(["aggregate", str(rna["path"]), "--by", f"atlas:{ATLAS}", "--atlas-info", INFO,
          "--probe-selection", "rnaseq", "--no-corrected-mni", "--no-reannotated",
          "--out", str(out), "--quiet"])
    frame = pd.read_csv(out, index_col="label")
    assert frame.index.tolist() == golden["rnaseq|labels"].tolist()
    assert frame.columns.tolist() == golden["rnaseq|genes"].tolist()
    np.testing.assert_allclose(frame.to_numpy(), golden["rnaseq|values"], rtol=0, atol=1e-6)


def test_verify_checks_the_rnaseq_groups(rna, tmp_path, capsys):
    import zarr

    from atlas_engine.store.verify import verify_store

    rep = verify_store(rna["path"])
    assert rep.ok, rep.problems
    st = rna["store"]
    assert sorted(rep.summary["rnaseq"]) == st.rnaseq_donors == [9861, 10021]
    assert rep.summary["rnaseq"][9861]["samples"] == st.rnaseq(9861).sizes["sample"]
    # one changed value in a TPM chunk: verify names the donor, the array and the chunk
    path = tmp_path / "s.zarr"
    shutil.copytree(rna["path"], path, ignore=shutil.ignore_patterns("cache"))
    arr = zarr.open_group(path / "rnaseq" / "10021", mode="a")["tpm"]
    arr[2, 1] = arr[2, 1] + 1
    with pytest.raises(SystemExit) as info:
        main(["verify", str(path)])
    assert info.value.code == 1
    out = capsys.readouterr().out
    assert "RNA-seq: 9861:" in out
    assert "RNA-seq donor 10021 tpm: chunk (0, 0) values differ from conversion" in out \
        and "FAILED" in out
