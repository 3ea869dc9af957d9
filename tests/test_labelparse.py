"""Label-column parser (AHBA RNA-seq matrices): exact against Python float(), labels against
Python's csv module, and error positions."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas_engine.convert.labelparse import count_fields, iter_label_blocks, read_label_matrix
from atlas_engine.errors import FormatError


def _pieces(data: bytes, piece: int) -> list[bytes]:
    return [data[i:i + piece] for i in range(0, len(data), piece)]


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(
        (a.view(np.uint8) == b.view(np.uint8)).all())


def _csv_label(text: str) -> str:
    """A double-quoted CSV field (quotes doubled)."""
    return '"' + text.replace('"', '""') + '"'


float_token = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(min_value=0, max_value=5e4).map(repr),
    st.builds(lambda m, k: f"{m}.{k}", st.integers(0, 10**9), st.integers(0, 10**12)),
    st.builds(lambda m, e: f"{m}e{e}", st.integers(-10**18, 10**18), st.integers(-330, 310)),
    st.builds(lambda m, e: f"{m}E{e:+03d}", st.integers(0, 10**6), st.integers(-20, 20)),
    st.text("0123456789", min_size=1, max_size=25).map(lambda s: s.lstrip("0") or "0"),
    st.sampled_from(["nan", "NaN", "-inf", "Infinity", "+0.0", "-0.0", "0", "1.", ".5",
                     "9007199254740993", "1.7976931348623157e308", "4.9e-324",
                     "2.2250738585072011e-308", "1e23", "3.45e-05", "1e-400", "1e400"]),
)
# gene-symbol-like labels plus odd ones: quotes, commas, spaces, non-ASCII
label_text = st.one_of(
    st.from_regex(r"[A-Z][A-Z0-9]{0,6}(-[A-Z0-9]{1,4})?(\.[0-9])?", fullmatch=True),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(label_text, st.booleans(),
                          st.lists(float_token, min_size=4, max_size=4)), min_size=1, max_size=9),
       st.integers(1, 4), st.integers(1, 50), st.booleans())
def test_values_and_labels_exact(rows, block_rows, piece, crlf):
    lines, labels, tokens = [], [], []
    for text, quoted, toks in rows:
        needs = any(c in text for c in ',"\r\n') or text.startswith('"')
        if any(c in text for c in "\r\n"):
            quoted = False
            text = text.replace("\r", "x").replace("\n", "x")
            needs = any(c in text for c in ',"') or text.startswith('"')
        if needs:
            quoted = True
        lines.append(",".join([_csv_label(text) if quoted else text, *toks]))
        labels.append(text)
        tokens.append(toks)
    eol = "\r\n" if crlf else "\n"
    data = (eol.join(lines) + eol).encode()
    blocks = list(iter_label_blocks(_pieces(data, piece), 4, block_rows, name="T.csv",
                                    nonfinite="nan"))
    got_labels = np.concatenate([b.labels for b in blocks]).tolist()
    got = np.concatenate([b.values for b in blocks])
    want = np.array([[float(t) for t in r] for r in tokens], dtype=np.float64)
    want[~np.isfinite(want)] = np.nan      # non-finite values are stored as NaN when accepted
    assert got_labels == labels
    # the csv module reads the same labels back
    assert [r[0] for r in csv.reader(io.StringIO(data.decode()))] == labels
    assert _same_bits(got, want)
    assert [b.start for b in blocks] == list(range(0, len(lines), block_rows))
    lab32, got32 = read_label_matrix(_pieces(data, piece), dtype=np.float32, nonfinite="nan")
    with np.errstate(over="ignore"):
        want32 = want.astype(np.float32)
    want32[~np.isfinite(want32)] = np.nan   # beyond float32's range: non-finite as stored
    assert _same_bits(got32, want32)
    assert lab32.tolist() == labels


def test_nonfinite_refused_with_line_and_column():
    data = b"A,1,2\nB,3,inf\n"
    with pytest.raises(FormatError) as info:
        list(iter_label_blocks([data], 2, 4, name="T.csv"))
    assert (info.value.line, info.value.column) == (2, 3)
    assert "non-finite" in str(info.value)


def test_bom_stripped_from_the_first_label():
    data = b"\xef\xbb\xbfA,1,2\nB,3,4\n"
    (block,) = list(iter_label_blocks([data[:2], data[2:]], 2, 4))
    assert block.labels.tolist() == ["A", "B"]


def test_long_tokens_and_no_final_newline_vs_pandas():
    rng = np.random.default_rng(3)
    vals = np.concatenate([rng.uniform(0, 5e4, 3000), rng.uniform(0, 1e-4, 600),
                           np.zeros(400)]).reshape(400, 10)
    text = "\n".join(f'"G{i}",' + ",".join(repr(float(v)) if i % 3 else f"{v:.15g}"
                                          for v in row) for i, row in enumerate(vals))
    data = text.encode()
    labels, got = read_label_matrix(_pieces(data, 1000), block_rows=64)
    # pandas' correctly rounded parser (pandas 2's default can be one ulp off)
    frame = pd.read_csv(io.BytesIO(data), header=None, index_col=0, float_precision="round_trip")
    assert labels.tolist() == frame.index.tolist()
    np.testing.assert_array_equal(got, frame.to_numpy())
    want = np.array([[float(t) for t in line.split(",")[1:]] for line in text.split("\n")])
    assert _same_bits(got, want)


def test_labels_array_is_numpy_strings():
    labels, _ = read_label_matrix([b"A,1\nB,2\n"])
    assert labels.dtype == np.dtypes.StringDType()


def test_count_fields():
    assert count_fields(b'"a,b",1,2\r\n') == 3
    assert count_fields(b'"a""b,",1') == 2
    assert count_fields(b"a,1,2,3") == 4
    assert count_fields(b'"abc,1') == -1


@pytest.mark.parametrize(("data", "line", "column", "what"), [
    (b"A,1,2\nB,1\n", 2, 3, "ragged row: only 2 fields"),
    (b"A,1,2\nB,1,2,3\n", 2, 4, "too many fields"),
    (b"A,1,2\nB,1,2x\n", 2, 3, "bad value token '2x'"),
    (b"A,1,2\nB,,2\n", 2, 2, "bad value token ''"),
    (b"A,1,2\nB,1, 2\n", 2, 3, "bad value token ' 2'"),
    (b"A,1,2\n\nB,1,2\n", 2, 1, "empty line"),
    (b"A,1,2\n,1,2\n", 2, 1, "bad label ''"),
    (b'A,1,2\n"",1,2\n', 2, 1, "bad label"),
    (b'A,1,2\n"B,1,2\n', 2, 1, "bad label"),
    (b'A,1,2\n"B"x,1,2\n', 2, 1, "bad label"),
    (b"A,1,2\nB,1,2\rC,1,2\n", 2, 3, "bad value token"),
])
def test_errors_name_file_line_column(data, line, column, what):
    with pytest.raises(FormatError) as err:
        list(iter_label_blocks(_pieces(data, 4), 2, 2, name="RNAseqTPM.csv"))
    e = err.value
    assert e.file == "RNAseqTPM.csv" and e.line == line and e.column == column
    assert what in str(e)


@pytest.mark.parametrize("data", [b"", b"\n", b'"A,1,2\n', b"A\n"])
def test_whole_file_errors(data):
    with pytest.raises(FormatError) as err:
        read_label_matrix([data], name="RNAseqCounts.csv")
    assert err.value.file == "RNAseqCounts.csv" and err.value.line == 1
