"""Block parser: exact against Python float(), block boundaries, and error positions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas_engine.convert.blockparse import BlockPool, iter_blocks
from atlas_engine.errors import FormatError


def _parse(text: str, ncols: int, block_rows: int = 3, piece: int = 7, kind: str = "float",
           nonfinite: str = "refuse"):
    data = text.encode()
    chunks = [data[i:i + piece] for i in range(0, len(data), piece)]
    blocks = list(iter_blocks(chunks, ncols, block_rows, kind=kind, name="M.csv",
                              nonfinite=nonfinite))
    ids = np.concatenate([b.ids for b in blocks])
    vals = np.concatenate([b.values for b in blocks])
    return blocks, ids, vals


def _oracle(lines: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array([int(r[0]) for r in lines], dtype=np.int64)
    vals = np.array([[float(t) for t in r[1:]] for r in lines], dtype=np.float64)
    vals[~np.isfinite(vals)] = np.nan      # as stored with nonfinite="nan"
    return ids, vals


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool((a.view(np.uint64) == b.view(np.uint64)).all())


decimal_token = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(min_value=1.0, max_value=16.0).map(repr),
    st.builds(lambda m, k: f"{m}.{k}", st.integers(0, 10**9), st.integers(0, 10**12)),
    st.builds(lambda d, n: d[:n] if n else "0", st.text("0123456789", min_size=1, max_size=25),
              st.integers(0, 25)).map(lambda s: s.lstrip("0") or "0"),
    st.builds(lambda m, e: f"{m}e{e}", st.integers(-10**18, 10**18), st.integers(-330, 310)),
    st.builds(lambda s, f: f"{s}{f}", st.sampled_from(["", "-", "+"]),
              st.text("0123456789", min_size=1, max_size=21).map(lambda t: "0." + t)),
    st.sampled_from(["nan", "NaN", "-inf", "Infinity", "+0.0", "-0.0", "0", "1.", ".5",
                     "9007199254740993", "9007199254740993.0", "1.7976931348623157e308",
                     "4.9e-324", "2.2250738585072011e-308", "1e23", "8.98846567431158e307"]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(decimal_token, min_size=3, max_size=3), min_size=1, max_size=9),
       st.integers(1, 4), st.integers(1, 40))
def test_values_bit_identical_to_python_float(rows, block_rows, piece):
    lines = [[str(1000 + i), *r] for i, r in enumerate(rows)]
    text = "\n".join(",".join(r) for r in lines) + "\n"
    blocks, ids, vals = _parse(text, 3, block_rows, piece, nonfinite="nan")
    want_ids, want = _oracle(lines)
    assert (ids == want_ids).all()
    assert _same_bits(vals, want)
    assert [b.start for b in blocks] == list(range(0, len(lines), block_rows))
    with np.errstate(over="ignore"):
        assert _same_bits(vals.astype(np.float32).astype(np.float64),
                          want.astype(np.float32).astype(np.float64))


def test_many_long_repr_values_exact():
    rng = np.random.default_rng(1)
    vals = np.concatenate([rng.uniform(1.4, 12, 4000), rng.uniform(0, 1e-3, 1000),
                           rng.uniform(1e5, 1e9, 1000)]).reshape(600, 10)
    lines = [[str(i), *(repr(float(v)) for v in row)] for i, row in enumerate(vals)]
    text = "\n".join(",".join(r) for r in lines)          # no final newline
    _, ids, got = _parse(text, 10, block_rows=64, piece=4096)
    assert _same_bits(got, vals)
    assert (ids == np.arange(600)).all()


@pytest.mark.parametrize("block_rows", [1, 2, 5, 7, 100])
def test_block_heights_and_crlf(block_rows):
    lines = [[str(5 + i), f"{i}.25", f"-{i}.5"] for i in range(7)]
    text = "\r\n".join(",".join(r) for r in lines) + "\r\n"
    blocks, ids, vals = _parse(text, 2, block_rows, piece=3)
    assert [len(b.ids) for b in blocks] == [min(block_rows, 7 - s)
                                           for s in range(0, 7, block_rows)]
    assert _same_bits(vals, _oracle(lines)[1])


def test_bool_matrix():
    text = "1,0,1,1\n2,1,0,0\n3,0,0,0\n"
    _, ids, vals = _parse(text, 3, block_rows=2, kind="bool")
    assert vals.dtype == bool
    assert (vals == np.array([[0, 1, 1], [1, 0, 0], [0, 0, 0]], bool)).all()
    assert (ids == [1, 2, 3]).all()


@pytest.mark.parametrize("text,kind,line,column,needle", [
    ("1,1.0,2.0\n2,1.0\n", "float", 2, 3, "ragged"),
    ("1,1.0,2.0\n2,1.0,2.0,3.0\n", "float", 2, 4, "too many"),
    ("1,1.0,2.0\n2,1.0,abc\n", "float", 2, 3, "'abc'"),
    ("1,1.0,2.0\n2,1.0,\n", "float", 2, 3, "''"),
    ("1,1.0,2.0\nx,1.0,2.0\n", "float", 2, 1, "id"),
    ("1,1.0,1 .5\n", "float", 1, 3, "'1 .5'"),
    ("1,0,1\n2,1,2\n", "bool", 2, 3, "'2'"),
    ("1,0,1\n2,1,0.0\n", "bool", 2, 3, "'0.0'"),
    ("1,0,1\n\n2,1,0\n", "bool", 2, 1, "empty line"),
])
def test_errors_name_line_and_column(text, kind, line, column, needle):
    with pytest.raises(FormatError) as info:
        _parse(text, 2, block_rows=1, piece=5, kind=kind)
    err = info.value
    assert (err.file, err.line, err.column) == ("M.csv", line, column)
    assert needle in str(err)


def test_error_line_counts_previous_blocks():
    lines = [f"{i},1.5,2.5" for i in range(10)]
    lines[8] = "8,1.5,oops"
    with pytest.raises(FormatError) as info:
        _parse("\n".join(lines) + "\n", 2, block_rows=3, piece=11)
    assert info.value.line == 9 and info.value.column == 3


def test_empty_stream():
    with pytest.raises(FormatError, match="empty file"):
        list(iter_blocks([b""], 3, 4, name="E.csv"))


# -- long rows: the unchecked fast path (needs 48 bytes after a token) and the bool stride path


@settings(max_examples=60, deadline=None)
@given(st.lists(decimal_token, min_size=40, max_size=40), st.integers(1, 5000))
def test_fast_path_long_rows_bit_identical(tokens, piece):
    lines = [[str(i), *tokens[i:] + tokens[:i]] for i in range(6)]
    text = "\n".join(",".join(r) for r in lines) + "\n"
    _, ids, vals = _parse(text, 40, block_rows=4, piece=piece, nonfinite="nan")
    assert _same_bits(vals, _oracle(lines)[1])


def test_fast_path_float32_rounds_the_exact_double_once():
    rng = np.random.default_rng(7)
    vals = rng.uniform(-20, 20, (50, 60))
    toks = [[repr(float(v)) for v in row] for row in vals]
    # 15 significant digits (Allen's writing), 17-digit repr, and exact float32 ties
    toks[0][:3] = ["3.86651371425578", "-0.000123456789012345", "1.00000005960464477539"]
    lines = [[str(i), *r] for i, r in enumerate(toks)]
    data = ("\n".join(",".join(r) for r in lines) + "\n").encode()
    blocks = list(iter_blocks([data[:1000], data[1000:]], 60, 16, dtype=np.float32))
    got = np.concatenate([b.values for b in blocks])
    want = np.array([[np.float32(float(t)) for t in r[1:]] for r in lines], np.float32)
    assert got.dtype == np.float32
    assert (got.view(np.uint32) == want.view(np.uint32)).all()


@pytest.mark.parametrize("bad,col", [("10", 7), ("2", 7), ("", 7), ("0.", 7), ("1 ", 7)])
def test_bool_long_rows_errors(bad, col):
    row = ["1"] * 80
    row[col - 2] = bad
    text = "5," + ",".join(["0"] * 80) + "\n6," + ",".join(row) + "\n"
    with pytest.raises(FormatError) as info:
        _parse(text, 80, block_rows=1, piece=10_000, kind="bool")
    assert (info.value.line, info.value.column) == (2, col)


def test_bool_long_rows_values():
    rng = np.random.default_rng(3)
    want = rng.integers(0, 2, (9, 70)).astype(bool)
    text = "".join(f"{i}," + ",".join(str(int(v)) for v in row) + "\r\n"
                   for i, row in enumerate(want))
    _, ids, vals = _parse(text, 70, block_rows=4, piece=333, kind="bool")
    assert (vals == want).all() and (ids == np.arange(9)).all()


def test_pool_blocks_reuse_buffers_and_match_copies():
    rng = np.random.default_rng(5)
    vals = rng.uniform(0, 16, (23, 30))
    text = "".join(f"{i}," + ",".join(repr(float(v)) for v in row) + "\n"
                   for i, row in enumerate(vals)).encode()
    pool = BlockPool(2, 5, 30, np.float64)
    seen = set()
    got = []
    for b in iter_blocks([text[:777], text[777:]], 30, 5, pool=pool):
        seen.add(b.values.__array_interface__["data"][0])
        got.append(b.values.copy())
        pool.release(b)
    assert len(seen) <= 2                     # only the two pool buffers were ever handed out
    assert _same_bits(np.concatenate(got), vals)
    with pytest.raises(ValueError):
        list(iter_blocks([text], 30, 5, pool=BlockPool(1, 5, 30, np.float32)))


# -- the word-at-a-time fraction reader: every fraction length and every stop byte


@pytest.mark.parametrize("nfrac", range(0, 26))
def test_fraction_words_every_length_bit_identical(nfrac):
    rng = np.random.default_rng(nfrac)
    toks = []
    for k in range(60):
        digits = "".join(rng.choice(list("0123456789"), nfrac))
        toks.append(f"{'-' if k % 3 == 0 else ''}{k % 17}.{digits}")
    lines = [[str(i), *toks[i:] + toks[:i]] for i in range(5)]
    text = "\r\n".join(",".join(r) for r in lines) + "\r\n"
    _, _, vals = _parse(text, 60, block_rows=2, piece=997)
    assert _same_bits(vals, _oracle(lines)[1])


@pytest.mark.parametrize("stop", ["/", ":", "e", " ", "\x80", "\xff", "_", "."])
@pytest.mark.parametrize("at", [0, 1, 5, 7, 8, 9, 15, 16, 17])
def test_fraction_word_stops_at_a_non_digit(stop, at):
    """A non-digit byte anywhere in a fraction word: the token is parsed as Python float()
    would (``e`` starts an exponent) or rejected at its column."""
    good = ["1.2345678901234"] * 50
    bad = "3." + "7" * at + stop + "12"
    row = good[:20] + [bad] + good[20:]
    text = "5," + ",".join(row) + "\n"
    try:
        want = None if stop == "_" else float(bad)  # the parser refuses underscores
    except ValueError:
        want = None
    if want is None:
        with pytest.raises(FormatError) as info:
            _parse(text, 51, piece=1 << 20)
        assert info.value.column == 22 and info.value.line == 1
    else:
        _, _, vals = _parse(text, 51, piece=1 << 20)
        assert vals[0, 20] == want


@pytest.mark.parametrize("tok", ["nan", "NaN", "-inf", "Infinity", "+inf", "1e999", "-2e400"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nonfinite_refused_with_line_and_column(tok, dtype):
    text = "1,0.5,1.5,2.5\n2,0.25," + tok + ",3.5\n3,1,2,3\n"
    with pytest.raises(FormatError) as info:
        list(iter_blocks([text.encode()], 3, 2, name="M.csv", dtype=dtype))
    err = info.value
    assert (err.file, err.line, err.column) == ("M.csv", 2, 3)
    assert "non-finite" in str(err) and tok in str(err) and "--allow-nonfinite" in str(err)


def test_float32_overflow_refused():
    # finite as a double, beyond float32's range: refused when storing float32
    text = "1,0.5,3.5e38\n"
    assert list(iter_blocks([text.encode()], 2, 2))[0].values[0, 1] == 3.5e38
    with pytest.raises(FormatError) as info:
        list(iter_blocks([text.encode()], 2, 2, name="M.csv", dtype=np.float32))
    assert (info.value.line, info.value.column) == (1, 3)


def test_nonfinite_accepted_as_nan_and_counted():
    from atlas_engine.convert.blockparse import ParseStats

    text = "1,nan,1.5\n2,-inf,1e999\n3,1,2\n"
    stats = ParseStats()
    blocks = list(iter_blocks([text.encode()], 2, 2, stats=stats, nonfinite="nan"))
    vals = np.concatenate([b.values for b in blocks])
    assert np.isnan(vals[:2]).tolist() == [[True, False], [True, True]]
    assert stats.nonfinite == 3 and (vals[2] == [1, 2]).all()


@pytest.mark.parametrize("piece", [1, 2, 3, 5, 1000])
@pytest.mark.parametrize("kind", ["float", "bool"])
def test_utf8_bom_stripped(piece, kind):
    data = b"\xef\xbb\xbf" + b"7,1,0\n8,0,1\n"
    chunks = [data[i:i + piece] for i in range(0, len(data), piece)]
    blocks = list(iter_blocks(chunks, 2, 4, kind=kind))
    assert blocks[0].ids.tolist() == [7, 8]
    assert blocks[0].values.astype(int).tolist() == [[1, 0], [0, 1]]


def test_line_without_end_refused_before_it_grows():
    # a member that inflates to a huge line (no newline): refused once past the bound for its
    # field count, not buffered whole
    from atlas_engine.convert.blockparse import max_line_bytes

    def pieces():
        yield b"1,0.5,0.5\n2,"
        for _ in range(10_000):
            yield b"0" * 4096
        raise AssertionError("read past the line bound")

    with pytest.raises(FormatError) as info:
        list(iter_blocks(pieces(), 2, 4, name="M.csv"))
    assert info.value.line == 2 and "line longer than" in str(info.value)
    assert max_line_bytes(2) < 4096 * 10
