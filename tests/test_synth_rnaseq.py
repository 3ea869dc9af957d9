"""Generated AHBA RNA-seq zips: layout, agreement with the microarray zips, determinism, and
download from the loopback mirror under the real URL layout."""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atlas_engine.fetch import RetryPolicy, fetch_ahba
from atlas_engine.testing.server import MirrorServer
from atlas_engine.testing.synth import write_all
from atlas_engine.testing.synth_rnaseq import (
    GENES_HEADER,
    RNASEQ_MEMBERS,
    SAMPLE_HEADER,
    write_rnaseq,
)

KW = {"probes": 400, "samples_fraction": 0.2, "seed": 5}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    dest = tmp_path_factory.mktemp("rnaseq-raw")
    return write_all(dest, donors="9861,10021,12876", brainspan=False, **KW)


def _read(zpath: Path, member: str) -> bytes:
    with zipfile.ZipFile(zpath) as zf:
        return zf.read(member)


def test_zips_members_and_headers(raw):
    assert sorted(raw.rnaseq) == [9861, 10021]          # 12876 has no RNA-seq
    for donor, path in raw.rnaseq.items():
        assert path.name == f"rnaseq_donor{donor}.zip"
        with zipfile.ZipFile(path) as zf:
            assert zf.testzip() is None
            assert sorted(zf.namelist()) == sorted(RNASEQ_MEMBERS)
            assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())
        genes = _read(path, "Genes.csv").decode()
        assert genes.splitlines()[0] == GENES_HEADER
        annot = _read(path, "SampleAnnot.csv").decode()
        assert annot.splitlines()[0] == SAMPLE_HEADER
        # ontology identical to the microarray zip's
        assert _read(path, "Ontology.csv") == _read(raw.zips[donor], "Ontology.csv")


def test_matrices_layout_and_values(raw):
    for path in raw.rnaseq.values():
        tpm_text = _read(path, "RNAseqTPM.csv").decode()
        rows = list(csv.reader(io.StringIO(tpm_text)))
        first = tpm_text.splitlines()[0]
        assert first.startswith('"') and not first.split(",")[1].startswith('"')  # no header
        genes = pd.read_csv(io.BytesIO(_read(path, "Genes.csv")), index_col=0)
        annot = pd.read_csv(io.BytesIO(_read(path, "SampleAnnot.csv")))
        assert [r[0] for r in rows] == genes.index.tolist()
        assert {len(r) for r in rows} == {len(annot) + 1}
        assert len(annot) == max(4, round(121 * KW["samples_fraction"]))
        tpm = np.array([[float(t) for t in r[1:]] for r in rows])
        assert (tpm >= 0).all()
        np.testing.assert_allclose(tpm.sum(axis=0), 1e6, rtol=1e-9)
        assert (tpm == 0).all(axis=1).any()              # constant (silent) genes exist
        tokens = [t for r in rows for t in r[1:]]
        assert "0" in tokens and all("." not in t for t in tokens if float(t) == 0)
        assert all(len(t.replace(".", "").lstrip("0")) <= 16 for t in tokens if "e" not in t)
        counts = pd.read_csv(io.BytesIO(_read(path, "RNAseqCounts.csv")), header=None,
                             index_col=0)
        assert counts.index.tolist() == genes.index.tolist() and counts.shape == tpm.shape
        c = counts.to_numpy()
        assert (c == np.rint(c)).mean() > 0.5 and (c != np.rint(c)).any()
        assert ((c > 0) == (tpm > 0)).mean() > 0.9
        # NA ids of RNA-seq-only genes
        assert genes["entrez_id"].isna().any() and genes["entrez_id"].notna().any()


def test_samples_are_microarray_samples_and_genes_overlap(raw):
    probes = raw.probes
    for donor, path in raw.rnaseq.items():
        annot = pd.read_csv(io.BytesIO(_read(path, "SampleAnnot.csv")))
        micro = pd.read_csv(io.BytesIO(_read(raw.zips[donor], "SampleAnnot.csv")))
        joined = annot.merge(micro, on="well_id", how="left")
        assert joined["structure_id"].notna().all()
        assert (joined["structure_id"] == joined["ontology_structure_id"]).all()
        assert annot["well_id"].is_unique
        genes = pd.read_csv(io.BytesIO(_read(path, "Genes.csv")), index_col=0)
        refseq = set(probes.loc[probes["entrez_id"].notna(), "gene_symbol"])
        shared = refseq & set(genes.index)
        assert len(shared) > 0.8 * len(refseq)
        assert set(genes.index) - refseq                 # RNA-seq-only genes too


def test_rnaseq_follows_the_microarray_structure_pattern(raw):
    """Over the RNA-seq samples, a variable gene's TPM ranks agree with its probes' microarray
    ranks (the point of probe_selection='rnaseq')."""
    donor = 9861
    path = raw.rnaseq[donor]
    tpm = pd.read_csv(io.BytesIO(_read(path, "RNAseqTPM.csv")), header=None, index_col=0)
    annot = pd.read_csv(io.BytesIO(_read(path, "SampleAnnot.csv")))
    micro = pd.read_csv(io.BytesIO(_read(raw.zips[donor], "MicroarrayExpression.csv")),
                        header=None, index_col=0)
    msamp = pd.read_csv(io.BytesIO(_read(raw.zips[donor], "SampleAnnot.csv")))
    col = {w: i for i, w in enumerate(msamp["well_id"])}
    cols = [col[w] for w in annot["well_id"]]
    sym = raw.probes.set_index("probe_id")["gene_symbol"]
    corr = []
    for pid, row in micro.iterrows():
        g = sym[pid]
        x = row.to_numpy()[cols]
        if g in tpm.index and tpm.loc[g].std() > 0 and x.std() > 0.6:
            a = pd.Series(x).rank()
            b = pd.Series(np.log2(tpm.loc[g].to_numpy() + 1)).rank()
            corr.append(np.corrcoef(a, b)[0, 1])
    assert len(corr) > 20 and np.nanmedian(corr) > 0.6


def test_deterministic_and_microarray_unchanged(raw, tmp_path):
    again = write_rnaseq(tmp_path / "a", donors="10021", **KW)
    assert again[10021].read_bytes() == raw.rnaseq[10021].read_bytes()
    plain = write_all(tmp_path / "b", donors="10021", brainspan=False, rnaseq=False, **KW)
    assert plain.rnaseq == {}
    assert not (tmp_path / "b" / "rnaseq_donor10021.zip").exists()
    assert plain.zips[10021].read_bytes() == raw.zips[10021].read_bytes()
    other = write_rnaseq(tmp_path / "c", donors="10021", **{**KW, "seed": 6})
    assert other[10021].read_bytes() != raw.rnaseq[10021].read_bytes()
    assert write_rnaseq(tmp_path / "d", donors="12876", **KW) == {}
    assert not list(tmp_path.rglob(".*tmp"))


def test_mirror_serves_rnaseq_under_the_wkf_url(raw, tmp_path):
    fast = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.05)
    with MirrorServer(raw.dest) as srv:
        report = fetch_ahba(tmp_path, donors="9861,10021", what=("rnaseq",), base_url=srv.url,
                            policy=fast, quiet=True)
        assert report.ok, report.summary()
        paths = {Path(r.path).name for r in report.results}
        assert paths == {"rnaseq_donor9861.zip", "rnaseq_donor10021.zip"}
        served = {r.path.rsplit("/", 1)[-1] for r in srv.downloads()}
        assert served == {"278447594", "278448166"}
    for donor in (9861, 10021):
        got = tmp_path / f"rnaseq_donor{donor}.zip"
        assert hashlib.sha256(got.read_bytes()).digest() == \
            hashlib.sha256(raw.rnaseq[donor].read_bytes()).digest()
