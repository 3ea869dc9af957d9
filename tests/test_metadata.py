"""The small per-donor tables (convert/metadata.py): the frames a plain pandas reading gives,
and one clear error with line and column for a cell that is not an integer."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atlas_engine.convert.metadata import (
    read_ontology,
    read_probes,
    read_samples,
    read_typed_table,
)
from atlas_engine.convert.zipstream import MemberSource
from atlas_engine.errors import FormatError
from atlas_engine.store.layout import MISSING_INT, PROBE_COLUMNS


def _member(synth_small, name: str, tmp_path: Path) -> tuple[MemberSource, bytes]:
    """``name`` of the first generated donor, as an extracted file."""
    zpath = sorted(Path(synth_small.dest).glob("normalized_microarray_donor*.zip"))[0]
    with zipfile.ZipFile(zpath) as zf:
        data = zf.read(name)
    path = tmp_path / name
    path.write_bytes(data)
    return MemberSource(path), data


def _oracle(data: bytes, ints: tuple[str, ...]) -> pd.DataFrame:
    """Plain pandas: text columns as text ("" kept), integer columns with -1 for a gap."""
    frame = pd.read_csv(io.BytesIO(data), keep_default_na=False, dtype=str)
    for c in frame.columns:
        if c in ints:
            frame[c] = np.array([int(v) if v else MISSING_INT for v in frame[c]], np.int64)
    return frame


@pytest.mark.parametrize(("name", "reader", "ints", "floats"), [
    ("Probes.csv", read_probes, ("probe_id", "gene_id", "entrez_id"), ()),
    ("SampleAnnot.csv", read_samples, ("structure_id", "slab_num", "well_id", "polygon_id",
                                       "mri_voxel_x", "mri_voxel_y", "mri_voxel_z"),
     ("mni_x", "mni_y", "mni_z")),
    ("Ontology.csv", read_ontology, ("id", "parent_structure_id", "graph_order"), ()),
])
def test_frames_as_plain_pandas_reads_them(synth_small, tmp_path, name, reader, ints, floats):
    src, data = _member(synth_small, name, tmp_path)
    got = reader(src).frame
    want = _oracle(data, ints)
    for c in floats:   # the MNI coordinates: pandas' own float parse, as abagen reads them
        want[c] = pd.read_csv(io.BytesIO(data))[c].to_numpy(np.float64)
    assert list(got.columns) == list(want.columns)
    for c in want.columns:
        g, w = got[c].to_numpy(), want[c].to_numpy()
        if c in ints:
            assert g.dtype == np.int64, c
        if c in floats:
            assert g.dtype == np.float64 and np.array_equal(g, w), c
        else:
            assert list(g) == list(w), c


@pytest.mark.parametrize("token", ["12.5", "inf", "1e300", "-9007199254740993", "x7"])
def test_a_cell_that_is_not_an_integer_names_its_line_and_column(tmp_path, token):
    rows = ["1058685,A_1,729,C8G,gene,733,9", f"1058684,A_2,731,C9,gene,{token},5",
            "1058683,A_3,732,C10,gene,,X"]
    path = tmp_path / "Probes.csv"
    path.write_text(",".join(PROBE_COLUMNS) + "\n" + "\n".join(rows) + "\n")
    with pytest.raises(FormatError, match=re.escape(f"bad integer '{token}' in entrez_id")) \
            as err:
        read_probes(MemberSource(path))
    assert (err.value.line, err.value.column) == (3, 6)


def test_a_table_that_is_not_csv_is_refused(tmp_path):
    path = tmp_path / "Probes.csv"
    path.write_text(",".join(PROBE_COLUMNS) + '\n1058685,"A_1,729,C8G,gene,733,9\n')
    with pytest.raises(FormatError, match="not a CSV table"):
        read_probes(MemberSource(path))


def test_gaps_are_missing_ids_or_refused(tmp_path):
    path = tmp_path / "Probes.csv"
    path.write_text(",".join(PROBE_COLUMNS) + "\n1,A_1,729,C8G,gene,,9\n2,A_2,,C9,gene,735,5\n")
    with pytest.raises(FormatError, match="missing gene_id") as err:
        read_probes(MemberSource(path))
    assert (err.value.line, err.value.column) == (3, 3)
    path.write_text(",".join(PROBE_COLUMNS) + "\n1,A_1,729,C8G,gene,,9\n")
    frame = read_probes(MemberSource(path)).frame
    assert frame["entrez_id"].tolist() == [MISSING_INT] and frame["chromosome"].tolist() == ["9"]


# -- the typed reader of the BrainSpan and RNA-seq tables ----------------------------------------
def _typed(tmp_path: Path, text: str, **kw) -> pd.DataFrame:
    path = tmp_path / "t.csv"
    path.write_text(text)
    return read_typed_table(MemberSource(path), ("n", "id", "x", "name"), ("n", "id"), ("x",),
                            **kw)


@pytest.mark.parametrize(("cell", "col", "message"), [
    ("12.5", 2, "bad integer '12.5' in id"), ("inf", 2, "bad integer 'inf' in id"),
    ("x7", 2, "bad integer 'x7' in id"), ("1e300", 2, "bad integer '1e300' in id"),
])
def test_typed_table_refuses_an_id_that_is_not_whole(tmp_path, cell, col, message):
    with pytest.raises(FormatError, match=re.escape(message)) as err:
        _typed(tmp_path, f"n,id,x,name\n1,5,0.5,a\n2,{cell},1.5,b\n")
    assert (err.value.line, err.value.column) == (3, col)


def test_typed_table_types_and_gaps(tmp_path):
    frame = _typed(tmp_path, 'n,id,x,name\n1,,0.25,"a, b"\n2,7,,NA\n')
    assert frame["n"].dtype == np.int64 and frame["id"].tolist() == [MISSING_INT, 7]
    assert frame["x"].tolist()[0] == 0.25 and np.isnan(frame["x"].tolist()[1])
    assert frame["name"].tolist() == ["a, b", "NA"]        # "NA" is text unless na says so
    frame = _typed(tmp_path, "n,id,x,name\n1,NA,NA,NA\n", na=("NA", ""))
    assert frame["id"].tolist() == [MISSING_INT] and frame["name"].tolist() == [""]
    with pytest.raises(FormatError, match="bad number 'abc' in x") as err:
        _typed(tmp_path, "n,id,x,name\n1,2,abc,a\n")
    assert (err.value.line, err.value.column) == (2, 3)
    with pytest.raises(FormatError, match="unexpected header"):
        _typed(tmp_path, "n,ident,x,name\n1,2,3,a\n")
    assert _typed(tmp_path, "n,ident,x,name\n1,2,3,a\n", rename={"ident": "id"})["id"][0] == 2


def test_brainspan_id_cells_are_refused_not_rounded(tmp_path):
    """A gene_id of 12.5 used to be stored as 12 (and inf as a huge negative number)."""
    from atlas_engine.convert.brainspan import convert_brainspan
    from atlas_engine.testing.synth_brainspan import write_brainspan

    src = write_brainspan(tmp_path / "raw", genes=8, samples=6, seed=1)
    for cell in ("12.5", "inf"):
        bad = tmp_path / f"bad_{cell}.zip"
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
            for item in zin.infolist():
                data = zin.read(item)
                if item.filename == "rows_metadata.csv":
                    head, first, *rest = data.split(b"\n")
                    cells = first.split(b",")
                    cells[1] = cell.encode()
                    data = b"\n".join([head, b",".join(cells), *rest])
                zout.writestr(item, data)
        with pytest.raises(FormatError, match=re.escape(f"bad integer '{cell}' in gene_id")) \
                as err:
            convert_brainspan(bad, tmp_path / f"bs_{cell}.zarr")
        assert (err.value.line, err.value.column) == (2, 2)
        assert "rows_metadata.csv" in str(err.value)
