"""The Allen-format generator writes files that read like the real ones (allen_formats.md §3, §6)."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from atlas_engine.errors import ConfigError
from atlas_engine.sources.donors import DONORS
from atlas_engine.testing.synth import write_ahba
from atlas_engine.testing.synth_format import render_decimal_rows, render_flag_rows
from atlas_engine.testing.synth_model import FLOOR, scaled_count
from atlas_engine.testing.synth_real import SEED_GENES, donor_wells, reannotated_genes

MEMBERS = ["MicroarrayExpression.csv", "Ontology.csv", "PACall.csv", "Probes.csv",
           "SampleAnnot.csv"]
TOP_LEVEL = [4008, 4249, 4275, 4391, 4696, 9001, 9131, 9218, 9352, 9512]


def read_member(path, name) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return zf.read(name)


def frame(path, name, **kwargs) -> pd.DataFrame:
    with zipfile.ZipFile(path) as zf, zf.open(name) as fh:
        return pd.read_csv(fh, **kwargs)


def sig_digits(token: str) -> int:
    return len(token.replace(".", "").lstrip("0"))


# -- zip layout ----------------------------------------------------------------------------------

def test_every_donor_zip_has_the_five_csvs_deflated_at_the_root(synth_small):
    assert sorted(synth_small.zips) == sorted(d.id for d in DONORS)
    for donor in DONORS:
        path = synth_small.zips[donor.id]
        assert path.name == f"normalized_microarray_donor{donor.id}.zip"
        with zipfile.ZipFile(path) as zf:
            assert zf.testzip() is None
            infos = zf.infolist()
            assert sorted(i.filename for i in infos) == MEMBERS
            assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in infos)
    assert not list(synth_small.dest.glob(".*tmp"))


def test_text_is_lf_terminated_without_bom(synth_small):
    for name in MEMBERS:
        data = read_member(synth_small.zips[9861], name)
        assert data.endswith(b"\n") and not data.endswith(b"\n\n")
        assert b"\r" not in data
        assert not data.startswith(b"\xef\xbb\xbf")


def test_probes_and_ontology_are_identical_across_donors(synth_small):
    for name in ("Probes.csv", "Ontology.csv"):
        first = read_member(synth_small.zips[9861], name)
        for path in synth_small.zips.values():
            assert read_member(path, name) == first


# -- matrices ------------------------------------------------------------------------------------

def test_matrices_parse_as_abagen_reads_them(synth_small):
    probes = frame(synth_small.zips[9861], "Probes.csv", index_col=0)
    for donor_id, path in synth_small.zips.items():
        n = synth_small.samples[donor_id]
        for name in ("MicroarrayExpression.csv", "PACall.csv"):
            m = frame(path, name, header=None, index_col=0)
            assert m.shape == (synth_small.n_probes, n)
            assert m.index.tolist() == probes.index.tolist()
        annot = frame(path, "SampleAnnot.csv")
        assert len(annot) == n
        pa = frame(path, "PACall.csv", header=None, index_col=0).to_numpy()
        assert set(np.unique(pa)) <= {0, 1}
        ex = frame(path, "MicroarrayExpression.csv", header=None, index_col=0).to_numpy()
        assert ex.dtype == np.float64
        assert ex.min() >= FLOOR and ex.max() < 15


def test_probe_ids_are_unique_and_unsorted(synth_small):
    ids = synth_small.probes["probe_id"].to_numpy()
    assert len(set(ids)) == len(ids)
    assert ids[0] == 1058685 and ids[1] == 1058684 and ids[2] == 1058683
    assert not (np.all(np.diff(ids) > 0) or np.all(np.diff(ids) < 0))


def test_every_value_token_is_its_own_shortest_repr(synth_small):
    counts: dict[int, int] = {}
    for path in synth_small.zips.values():
        text = read_member(path, "MicroarrayExpression.csv").decode("ascii")
        for line in text.splitlines():
            for token in line.split(",")[1:]:
                assert token == repr(float(token)), token
                assert "e" not in token and "." in token and not token.startswith("-")
                k = sig_digits(token)
                counts[k] = counts.get(k, 0) + 1
    total = sum(counts.values())
    assert min(counts) <= 12 and max(counts) == 17
    assert counts[15] / total > 0.8
    assert counts.get(16, 0) + counts[17] > 0.01 * total


def test_floor_value_repeats(synth_small):
    text = read_member(synth_small.zips[9861], "MicroarrayExpression.csv").decode()
    assert text.count(",1.40776497031674,") + text.count(",1.40776497031674\n") > 5


def test_pacall_rises_with_intensity(synth_small):
    values, flags = [], []
    for path in synth_small.zips.values():
        values.append(frame(path, "MicroarrayExpression.csv", header=None, index_col=0)
                      .to_numpy().ravel())
        flags.append(frame(path, "PACall.csv", header=None, index_col=0).to_numpy().ravel())
    v, pa = np.concatenate(values), np.concatenate(flags)
    assert 0.2 < pa.mean() < 0.9
    assert np.corrcoef(v, pa)[0, 1] > 0.5
    low, high = np.quantile(v, [0.2, 0.8])
    assert pa[v <= low].mean() < 0.2 < 0.9 < pa[v >= high].mean()


def test_values_vary_by_structure_for_some_genes(synth_small):
    path = synth_small.zips[9861]
    ex = frame(path, "MicroarrayExpression.csv", header=None, index_col=0).to_numpy()
    var = ex.var(axis=1)
    assert np.quantile(var, 0.95) > 4 * np.median(var)
    # samples of the same structure agree more than samples of different structures
    sid = frame(path, "SampleAnnot.csv")["structure_id"].to_numpy()
    corr = np.corrcoef(ex[var > np.quantile(var, 0.8)].T)
    same = sid[:, None] == sid[None, :]
    off = ~np.eye(len(sid), dtype=bool)
    if (same & off).any():
        assert corr[same & off].mean() > corr[~same].mean()


def test_refseq_probes_are_real_with_the_seed_genes(synth_small):
    p = synth_small.probes
    refseq = p[p["entrez_id"].notna()].iloc[2:]  # after the two fixture probes
    real = reannotated_genes().set_index("probe_name")
    assert refseq["probe_name"].isin(real.index).all()
    assert (refseq["gene_symbol"].to_numpy()
            == real.loc[refseq["probe_name"], "gene_symbol"].to_numpy()).all()
    assert p["probe_name"].is_unique
    # every probe of the seed's genes, each gene under one gene id
    for g in SEED_GENES:
        names = set(real.index[real["gene_symbol"] == g])
        assert names and set(p.loc[p["gene_symbol"] == g, "probe_name"]) == names
        assert p.loc[p["gene_symbol"] == g, "gene_id"].nunique() == 1
    # non-RefSeq probes are names the reannotation does not know
    assert not p.loc[p["entrez_id"].isna(), "probe_name"].isin(real.index).any()


# -- Probes.csv ----------------------------------------------------------------------------------

def test_probes_read_like_abagen_with_na_for_non_refseq(synth_small):
    with zipfile.ZipFile(synth_small.zips[12876]) as zf, zf.open("Probes.csv") as fh:
        p = pd.read_csv(fh, index_col=0, dtype={"entrez_id": pd.Int64Dtype()})
    assert list(p.columns) == ["probe_name", "gene_id", "gene_symbol", "gene_name",
                               "entrez_id", "chromosome"]
    assert len(p) == synth_small.n_probes
    nonref = p["gene_name"].str.endswith("(non-RefSeq)")
    assert 0 < nonref.sum() < len(p) / 2
    assert p.loc[nonref, "entrez_id"].isna().all()
    assert p.loc[nonref, "chromosome"].isna().all()
    assert (p.loc[nonref, "gene_symbol"] == p.loc[nonref, "probe_name"]).all()
    assert (p.loc[nonref, "gene_name"] == "AGILENT probe " + p.loc[nonref, "probe_name"]
            + " (non-RefSeq)").all()
    assert p.loc[~nonref, "entrez_id"].notna().all()


def test_probes_quoting_matches_the_real_file(synth_small):
    lines = read_member(synth_small.zips[9861], "Probes.csv").decode().splitlines()
    assert lines[0] == "probe_id,probe_name,gene_id,gene_symbol,gene_name,entrez_id,chromosome"
    assert lines[1] == ('1058685,"A_23_P20713",729,"C8G",'
                        '"complement component 8, gamma polypeptide",733,9')
    assert lines[2] == '1058684,"CUST_15185_PI416261804",731,"C9","complement component 9",735,5'
    nonref = re.compile(r'^\d+,"(A_32_P\d+)",\d+,"\1","AGILENT probe \1 \(non-RefSeq\)",,$')
    assert any(nonref.match(line) for line in lines[1:])
    for line in lines[1:]:
        fields = next(csv.reader([line]))
        expected = ",".join(f'"{f}"' if k in (1, 3, 4) else f for k, f in enumerate(fields))
        assert line == expected
    assert any("," in next(csv.reader([line]))[4] for line in lines[3:])


# -- SampleAnnot.csv and Ontology.csv --------------------------------------------------------------

ANNOT_LINE = re.compile(r'^\d+,\d+,\d+,[A-Z]{2},"[^"]+","[^"]+",\d+,\d+,\d+,\d+,'
                        r"-?\d+\.\d,-?\d+\.\d,-?\d+\.\d$")


def test_sample_annot_layout_and_quoting(synth_small):
    for path in synth_small.zips.values():
        lines = read_member(path, "SampleAnnot.csv").decode().splitlines()
        assert lines[0] == ("structure_id,slab_num,well_id,slab_type,structure_acronym,"
                            "structure_name,polygon_id,mri_voxel_x,mri_voxel_y,mri_voxel_z,"
                            "mni_x,mni_y,mni_z")
        for line in lines[1:]:
            assert ANNOT_LINE.match(line), line
            assert ",-0.0," not in line


def test_sample_structures_are_ontology_leaves(synth_small):
    onto = synth_small.ontology
    parents = set(onto["parent_structure_id"].dropna().astype(int))
    ids = set(onto["id"])
    names = dict(zip(onto["id"], onto["name"], strict=True))
    for path in synth_small.zips.values():
        annot = frame(path, "SampleAnnot.csv")
        assert set(annot["structure_id"]) <= ids
        assert not set(annot["structure_id"]) & parents
        assert (annot["structure_name"] == annot["structure_id"].map(names)).all()


def test_mni_x_agrees_with_hemisphere_except_reported_samples(synth_small):
    onto = synth_small.ontology.set_index("id")
    for donor_id, path in synth_small.zips.items():
        annot = frame(path, "SampleAnnot.csv")
        hemi = annot["structure_id"].map(onto["hemisphere"]).fillna("")
        x = annot["mni_x"]
        ok = ((hemi == "L") & (x < 0)) | ((hemi == "R") & (x > 0)) | ((hemi == "") & (x == 0))
        bad = tuple(np.flatnonzero(~ok.to_numpy()))
        assert bad == synth_small.mismatches[donor_id]
        # the 3 deliberate ones, real samples near the midline and samples of structures
        # without hemisphere off x = 0 (all of which abagen's hemisphere check drops)
        assert len(bad) >= 3


def test_ontology_file_and_tree(synth_small):
    text = read_member(synth_small.zips[9861], "Ontology.csv").decode()
    lines = text.splitlines()
    assert lines[0] == ("id,acronym,name,parent_structure_id,hemisphere,graph_order,"
                        "structure_id_path,color_hex_triplet")
    assert lines[1] == "4005,Br,brain,,,0,/4005/,A0A0A0"
    assert "4054,AOrG,\"anterior orbital gyrus, left\",4053,L,6," \
           "/4005/4006/4007/4008/4009/4053/4054/,E8BF59" in lines
    for line in lines[1:]:      # minimal quoting: quoted exactly when a field holds a comma
        fields = next(csv.reader([line]))
        assert len(fields) == 8
        assert line == ",".join(f'"{f}"' if "," in f else f for f in fields)
    onto = pd.read_csv(io.StringIO(text), keep_default_na=False)
    assert 200 <= len(onto) <= 2000
    assert onto["graph_order"].tolist() == list(range(len(onto)))
    assert onto["color_hex_triplet"].str.fullmatch(r"[0-9A-F]{6}").all()
    path = dict(zip(onto["id"], onto["structure_id_path"], strict=True))
    # pre-order: every structure's descendants follow it in one contiguous block
    paths = onto["structure_id_path"].tolist()
    for k, p in enumerate(paths):
        inside = [q.startswith(p) for q in paths]
        block = np.flatnonzero(inside)
        assert block[0] == k and np.all(np.diff(block) == 1)
    for sid in TOP_LEVEL:
        assert sid in path
    assert path[4008] == "/4005/4006/4007/4008/"
    assert path[4251] == "/4005/4006/4007/4008/4219/4249/12896/4251/"
    assert path[4322] == "/4005/4006/4007/4275/4321/4322/"
    assert path[9352] == "/4005/9352/"
    assert path[9422] == "/4005/9352/9418/9422/"
    hemi = dict(zip(onto["id"], onto["hemisphere"], strict=True))
    assert hemi[9422] == "" and hemi[4054] == "L" and hemi[4055] == "R"
    for row in onto.itertuples():
        if row.hemisphere == "L":
            assert ", left" in row.name
        if row.hemisphere == "R":
            assert ", right" in row.name
            twin = onto[(onto["acronym"] == row.acronym) & (onto["hemisphere"] == "L")
                        & (onto["name"] == row.name.replace(", right", ", left"))]
            assert len(twin) == 1


def test_structure_graph_json_matches_ontology(synth_small):
    doc = json.loads(synth_small.structure_graph.read_text())
    assert synth_small.structure_graph.name == "structure_graph_10.json"
    assert list(doc) == ["success", "id", "start_row", "num_rows", "total_rows", "msg"]
    assert doc["success"] is True and len(doc["msg"]) == 1
    root = doc["msg"][0]
    assert root["id"] == 4005 and root["parent_structure_id"] is None
    keys = {"id", "atlas_id", "ontology_id", "acronym", "name", "color_hex_triplet",
            "graph_order", "st_level", "hemisphere_id", "parent_structure_id", "children"}
    seen = []
    stack = [(root, None, 0)]
    while stack:
        node, parent, level = stack.pop()
        assert set(node) == keys
        assert node["parent_structure_id"] == parent and node["st_level"] == level
        seen.append(node["graph_order"])
        stack.extend((c, node["id"], level + 1) for c in node["children"])
    assert sorted(seen) == list(range(len(synth_small.ontology)))


# -- sample counts, well ids, determinism ----------------------------------------------------------

def test_real_sample_counts_and_well_ids_at_full_fraction(tmp_path):
    result = write_ahba(tmp_path, probes=5, samples_fraction=1.0)
    assert result.samples == {9861: 946, 10021: 893, 12876: 363, 14380: 529, 15496: 470,
                              15697: 501}
    wells = []
    for donor_id, path in result.zips.items():
        annot = frame(path, "SampleAnnot.csv")
        assert len(annot) == result.samples[donor_id]
        m = frame(path, "MicroarrayExpression.csv", header=None, index_col=0)
        assert m.shape == (5, result.samples[donor_id])
        real = donor_wells(donor_id, result.samples[donor_id]).set_index("well_id")
        assert set(annot["well_id"]) == set(real.index)
        wells.extend(annot["well_id"])
        if donor_id not in (9861, 10021):
            hemi = annot["structure_name"].str.contains(", right")
            assert not hemi.any()
    assert len(wells) == len(set(wells)) == 3702


def test_scaled_counts_and_argument_checks(tmp_path):
    assert scaled_count(946, 0.03, 4) == 28
    assert scaled_count(363, 0.001, 4) == 4
    with pytest.raises(ConfigError):
        write_ahba(tmp_path, probes=0)
    with pytest.raises(ConfigError):
        write_ahba(tmp_path, probes=5, samples_fraction=1.5)
    with pytest.raises(ConfigError):
        write_ahba(tmp_path, probes=5, donors="12345")


def test_same_seed_same_bytes_and_workers_do_not_matter(tmp_path):
    kwargs = {"probes": 700, "samples_fraction": 0.02, "donors": "9861,15496"}
    a = write_ahba(tmp_path / "a", seed=3, workers=1, **kwargs)
    b = write_ahba(tmp_path / "b", seed=3, workers=2, **kwargs)
    c = write_ahba(tmp_path / "c", seed=4, workers=1, **kwargs)
    for donor_id in (9861, 15496):
        assert a.zips[donor_id].read_bytes() == b.zips[donor_id].read_bytes()
        assert a.zips[donor_id].read_bytes() != c.zips[donor_id].read_bytes()
    assert a.structure_graph.read_bytes() == c.structure_graph.read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "normalized_microarray_donor15496.zip", "normalized_microarray_donor9861.zip",
        "structure_graph_10.json"]


# -- renderers against Python's own formatting -------------------------------------------------------

def test_decimal_renderer_matches_python_repr_and_percent_f():
    rng = np.random.default_rng(1)
    mant = rng.integers(10**14, 10**15, size=(40, 30))
    mant[0, :6] = [10**14, 2 * 10**14, 123450000000000, 999999999999999, 10**15, 140776497031674]
    frac = np.where(rng.random((40, 30)) < 0.5, 13, 14)
    labels = np.arange(40) * 7919
    text = render_decimal_rows(labels, mant, frac, override_pos=[3, 31],
                               override_text=["1.2345678901234567", "9.87"])
    for i, line in enumerate(text.decode().splitlines()):
        tokens = line.split(",")
        assert tokens[0] == str(labels[i])
        for j, token in enumerate(tokens[1:]):
            flat = i * 30 + j
            if flat == 3:
                assert token == "1.2345678901234567"
            elif flat == 31:
                assert token == "9.87"
            else:
                exact = Decimal(int(mant[i, j])).scaleb(-int(frac[i, j]))
                assert token == repr(float(exact))
    fixed = render_decimal_rows(np.array([1, 2]), np.array([[36447128, 0], [44081, 12345678901]]),
                                np.full((2, 2), 6), strip=False)
    assert fixed == b"1,36.447128,0.000000\n2,0.044081,12345.678901\n"
    assert render_flag_rows(np.array([10, 0]), np.array([[1, 0, 1], [0, 0, 1]])) == \
        b"10,1,0,1\n0,0,0,1\n"


# -- BrainSpan -----------------------------------------------------------------------------------

def test_brainspan_zip_layout(synth_small):
    path = synth_small.brainspan
    assert path.name == "genes_matrix_csv.zip"
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["columns_metadata.csv", "expression_matrix.csv",
                                         "rows_metadata.csv"]
    m = frame(path, "expression_matrix.csv", header=None)
    assert m.shape == (200, 41)
    assert m[0].tolist() == list(range(1, 201))
    assert (m.iloc[:, 1:].to_numpy() >= 0).all()
    first = read_member(path, "expression_matrix.csv").decode().splitlines()[0].split(",")
    assert all(re.fullmatch(r"\d+\.\d{6}", t) for t in first[1:])
    rows = frame(path, "rows_metadata.csv")
    assert list(rows.columns) == ["row_num", "gene_id", "ensembl_gene_id", "gene_symbol",
                                  "entrez_id"]
    assert rows.iloc[0].tolist() == [1, 7062, "ENSG00000000003", "TSPAN6", 7105]
    cols = frame(path, "columns_metadata.csv")
    assert list(cols.columns) == ["column_num", "donor_id", "donor_name", "age", "gender",
                                  "structure_id", "structure_acronym", "structure_name"]
    assert cols["column_num"].tolist() == list(range(1, 41))
    assert cols["age"].str.fullmatch(r"\d+ (pcw|mos|yrs)").all()
    assert set(cols["gender"]) <= {"M", "F"}
    assert cols.iloc[0, :5].tolist() == [1, 13058, cols.iloc[0, 2], "8 pcw", "M"]


# -- command line ------------------------------------------------------------------------------

def test_synth_command(tmp_path):
    from atlas_engine.cli import cli

    runner = CliRunner()
    out = runner.invoke(cli, ["synth", "--help"])
    assert out.exit_code == 0 and "Examples" in out.output
    res = runner.invoke(cli, ["synth", str(tmp_path), "--probes", "20", "--samples-fraction",
                              "0.01", "--donors", "9861,12876", "--brainspan-genes", "10",
                              "--brainspan-samples", "5", "--no-rnaseq", "--no-gtex"])
    assert res.exit_code == 0, res.output
    assert "wrote 4 files" in res.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["genes_matrix_csv.zip", "normalized_microarray_donor12876.zip",
                     "normalized_microarray_donor9861.zip", "structure_graph_10.json"]
    m = frame(tmp_path / "normalized_microarray_donor12876.zip", "PACall.csv", header=None,
              index_col=0)
    assert m.shape == (20, 4)
    bad = runner.invoke(cli, ["synth", str(tmp_path / "x"), "--donors", "42", "--quiet"])
    assert isinstance(bad.exception, ConfigError)


def test_full_size_probe_table_builds_with_unique_names():
    """At the real probe count generated names collide with reannotated ones; the generator
    renames them (it once crashed on an A_23_P name) and every name and id stays unique."""
    from atlas_engine.testing.synth_model import build_probes

    table = build_probes(58692, 0).table
    assert len(table) == 58692
    assert table["probe_name"].is_unique and table["probe_id"].is_unique
