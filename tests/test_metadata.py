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

from atlas_engine.convert.metadata import read_ontology, read_probes, read_samples
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


@pytest.mark.parametrize(("token", "shown"), [("12.5", "12.5"), ("inf", "inf"),
                                               ("1e300", "1e+300"), ("-9007199254740993",
                                                                     "-9.0072e+15")])
def test_a_cell_that_is_not_an_integer_names_its_line_and_column(tmp_path, token, shown):
    rows = ["1058685,A_1,729,C8G,gene,733,9", f"1058684,A_2,731,C9,gene,{token},5",
            "1058683,A_3,732,C10,gene,,X"]
    path = tmp_path / "Probes.csv"
    path.write_text(",".join(PROBE_COLUMNS) + "\n" + "\n".join(rows) + "\n")
    with pytest.raises(FormatError, match=re.escape(f"entrez_id value {shown} is not an integer")) as err:
        read_probes(MemberSource(path))
    assert (err.value.line, err.value.column) == (3, 6)


def test_text_in_an_integer_column_is_refused(tmp_path):
    path = tmp_path / "Probes.csv"
    path.write_text(",".join(PROBE_COLUMNS) + "\n1058685,A_1,x729,C8G,gene,733,9\n")
    with pytest.raises(FormatError, match="cannot parse table"):
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
