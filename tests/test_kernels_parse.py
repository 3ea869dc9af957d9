"""The text-parsing kernels called directly (no driver): each against a plain-Python oracle.

Covers :mod:`atlas_engine.kernels.csvparse` (its float tokens read by
:mod:`atlas_engine.kernels.floatscan`), :mod:`atlas_engine.kernels.labelscan` and
:mod:`atlas_engine.kernels.countscan`; the drivers' behaviour (file, line, column in errors,
chunking) is in tests/test_blockparse.py, tests/test_labelparse.py and tests/test_celltypes.py.
Buffers are read-only ``np.frombuffer`` arrays, as the drivers pass them.
"""

from __future__ import annotations

import csv
import io
import math
import re
import subprocess
import sys
from fractions import Fraction

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas_engine.kernels import countscan as cs
from atlas_engine.kernels import csvparse as cp
from atlas_engine.kernels import floatscan as fs
from atlas_engine.kernels import labelscan as ls

KERNELS = {
    fs: ["_bitlen", "_round_quotient", "_exact_div_pow10", "_lower", "_special", "_parse_float",
         "_load8", "_eight_digits", "_fast_float"],
    cp: ["_parse_id", "_line_end", "_parse_values", "parse_float_lines", "parse_bool_lines"],
    ls: ["_parse_label", "parse_label_lines"],
    cs: ["parse_count_lines"],
}
DELIMS = (44, 10, 13)


def _buf(data: bytes) -> np.ndarray:
    return np.frombuffer(data, np.uint8)


def _bits(x: float) -> int:
    return int(np.float64(x).view(np.uint64))


def _same(x: float, y: float) -> bool:
    """Bit-identical doubles (any NaN matches any NaN)."""
    return (math.isnan(x) and math.isnan(y)) or _bits(x) == _bits(y)


def _py_float(tok: str) -> float | None:
    """Python ``float(tok)``, except for what the kernels refuse although Python reads it
    (surrounding spaces, underscores); ``None`` when refused."""
    if not tok or tok != tok.strip() or "_" in tok:
        return None
    try:
        return float(tok)
    except ValueError:
        return None


def _slow_table(cap: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64)


def _fill_slow(buf: np.ndarray, end: int, out: np.ndarray, nslow: int,
               sp: np.ndarray, sr: np.ndarray, sc: np.ndarray) -> None:
    """What the drivers do with the side table (with non-finite values accepted): Python
    ``float()`` of each recorded token, NaN when not finite."""
    for k in range(nslow):
        a = b = int(sp[k])
        while b < end and buf[b] not in DELIMS:
            b += 1
        with np.errstate(over="ignore"):
            out[sr[k], sc[k]] = float(bytes(buf[a:b]))
        if not np.isfinite(out[sr[k], sc[k]]):
            out[sr[k], sc[k]] = np.nan


def _stored(tok: str) -> float:
    """The float64 stored for ``tok`` when non-finite values are accepted (as NaN)."""
    v = float(tok)
    return v if math.isfinite(v) else math.nan


def _same_rows(got: np.ndarray, tokens: list[list[str]]) -> bool:
    return got.shape == (len(tokens), len(tokens[0])) and all(
        _same(a, _stored(t)) for ga, ta in zip(got.tolist(), tokens, strict=True)
        for a, t in zip(ga, ta, strict=True))


decimal_token = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(min_value=0.0, max_value=5e4).map(repr),
    st.builds(lambda m, k: f"{m}.{k}", st.integers(0, 10**9), st.integers(0, 10**12)),
    st.builds(lambda m, e: f"{m}e{e}", st.integers(-10**18, 10**18), st.integers(-330, 310)),
    st.builds(lambda m, k: f"{str(m)[:-k]}.{str(m)[-k:]}",
              st.integers(2**53, 10**19 - 1), st.integers(1, 18)),
    st.text("0123456789", min_size=1, max_size=25),
    st.sampled_from(["nan", "-NaN", "inf", "+Inf", "-infinity", "INFINITY", "-0", "+0.0", "1.",
                     ".5", "-.5", "9007199254740993", "1.7976931348623157e308", "4.9e-324",
                     "2.2250738585072011e-308", "1e23", "1e22", "1e-400", "1e400", "0e999999"]),
)
# tokens the checked path must classify as Python does: junk, partial numbers, specials
odd_token = st.text("0123456789.eE+-nNaAiIfFtTyY x_", max_size=12)


# -- the kernels are where they belong, built as before, and imported only on use


def test_every_kernel_is_a_cached_nogil_dispatcher():
    for module, names in KERNELS.items():
        for name in names:
            fn = getattr(module, name)
            assert isinstance(fn, numba.core.registry.CPUDispatcher), name
            assert fn.__module__ == module.__name__, name
            assert fn.targetoptions["nogil"] is True, name
            assert type(fn._cache).__name__ == "KernelsCache", name  # kernels/_cache.py


def test_converters_reexport_the_kernels():
    from atlas_engine.convert import blockparse, countparse, labelparse

    assert blockparse.parse_float_lines is cp.parse_float_lines
    assert blockparse.parse_bool_lines is cp.parse_bool_lines
    assert labelparse.parse_label_lines is ls.parse_label_lines
    assert countparse.parse_count_lines is cs.parse_count_lines
    assert (blockparse.E_NONFINITE, labelparse.E_LABEL, countparse.E_BIG) == (7, 6, 6)


def test_kernels_package_does_not_import_the_parsers():
    code = ("import sys, atlas_engine.kernels\n"
            "print([m for m in sys.modules if m.split('.')[-1] in "
            "('csvparse', 'floatscan', 'labelscan', 'countscan')])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == "[]"


# -- csvparse: integer and bit helpers


@pytest.mark.parametrize("q", [0, 1, 2, 3, 255, 256, 2**52, 2**53 - 1, 2**53, 2**53 + 1,
                               2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1])
def test_bitlen(q):
    assert fs._bitlen(np.uint64(q)) == q.bit_length()


def test_bitlen_random():
    rng = np.random.default_rng(0)
    for q in rng.integers(0, 2**63, 500, dtype=np.uint64) << rng.integers(0, 2, 500).astype(
            np.uint64):
        assert fs._bitlen(np.uint64(q)) == int(q).bit_length()


@settings(max_examples=300, deadline=None)
@given(st.integers(2**53, 2**64 - 1), st.booleans(), st.integers(-120, 60))
def test_round_quotient_is_round_to_nearest_even(q, sticky, exp2):
    # (q + frac) * 2^exp2 with frac in (0, 1) iff sticky: any such frac rounds alike (q has
    # more than 53 bits, so no rounding boundary lies strictly between q and q + 1)
    want = float((Fraction(q) + (Fraction(1, 2) if sticky else 0)) * Fraction(2) ** exp2)
    assert _bits(fs._round_quotient(np.uint64(q), sticky, exp2)) == _bits(want)


@pytest.mark.parametrize("q,sticky", [(2**54 + 1, False), (2**54 + 1, True), (2**54 + 3, False),
                                      (2**54 - 1, False), (2**64 - 1, False), (2**64 - 1, True)])
def test_round_quotient_ties_and_carry(q, sticky):
    want = float(Fraction(2 * q + 1, 2)) if sticky else float(Fraction(q))
    assert _bits(fs._round_quotient(np.uint64(q), sticky, 0)) == _bits(want)


@settings(max_examples=300, deadline=None)
@given(st.integers(2**53, 2**64 - 1), st.integers(1, 22))
def test_exact_div_pow10_is_correctly_rounded(m, k):
    # Python's int / int is correctly rounded
    assert _bits(fs._exact_div_pow10(np.uint64(m), k)) == _bits(m / 10**k)


def test_lower_every_byte():
    got = [fs._lower(np.uint8(c)) for c in range(256)]
    assert got == [c + 32 if 65 <= c <= 90 else c for c in range(256)]


def test_load8_little_endian_word():
    data = bytes(range(1, 40))
    buf = _buf(data)
    for i in range(len(data) - 8):
        assert int(fs._load8(buf, i)) == int.from_bytes(data[i:i + 8], "little")


@settings(max_examples=200, deadline=None)
@given(st.text("0123456789", min_size=8, max_size=8), st.integers(1, 8))
def test_eight_digits_word_and_shifted_tail(digits, n):
    word = int.from_bytes(bytes(ord(c) - 48 for c in digits), "little")
    assert int(fs._eight_digits(np.uint64(word))) == int(digits)
    # a tail of n digits shifted so that they are the low-order ones (as the fast path does)
    tail = int.from_bytes(bytes(ord(c) - 48 for c in digits[:n]) + bytes(8 - n), "little")
    shifted = (tail << (64 - 8 * n)) & (2**64 - 1)
    assert int(fs._eight_digits(np.uint64(shifted))) == int(digits[:n])


# -- csvparse: tokens


@pytest.mark.parametrize("tok", ["nan", "NaN", "NAN", "-nan", "+nan", "inf", "Inf", "-INF",
                                 "+inf", "infinity", "-Infinity", "iNfInItY", "", "+", "-", "in",
                                 "infinit", "infinityy", "nana", "1.0", "0.5", "-0.5", "n", "x"])
def test_special(tok):
    data = b"xx," + tok.encode() + b",yy"
    got = fs._special(_buf(data), 3, 3 + len(tok))
    low = tok.lower().lstrip("+-")
    if low in ("nan", "inf", "infinity") and len(tok) - len(low) <= 1:
        want = float(tok)
        assert _same(got, want) and (math.isnan(want) or got == want)
    else:
        assert got == 0.5


def _check_parse_float(tok: str, delim: bytes, prefix: bytes = b"7,") -> None:
    data = prefix + tok.encode() + delim + b"9.5\n"
    end = len(prefix) + len(tok) + len(delim)     # delim b"" = the end of the data
    x, nxt, status = fs._parse_float(_buf(data), len(prefix), end)
    want = _py_float(tok)
    assert (status == 2) == (want is None), (tok, status, want)
    if status != 2:
        assert nxt == len(prefix) + len(tok), (tok, nxt)
    if status == 0:
        assert _same(x, want), (tok, x, want)


@settings(max_examples=400, deadline=None)
@given(st.one_of(decimal_token, odd_token), st.sampled_from([b",", b"\n", b"\r", b""]))
def test_parse_float_against_python(tok, delim):
    _check_parse_float(tok, delim)


@pytest.mark.parametrize("tok", ["", ".", "-", "+", "e5", ".e5", "1e", "1e+", "1e5e5", "1.5.3",
                                 "--1", "1-", " 1", "1 ", "1_0", "0x10", "0.5nan", "in", "nan5",
                                 "1.", ".5", "+.5", "-0", "00", "0e999999999", "1e99999999999",
                                 "9007199254740993", "12345678901234567.89",
                                 "12345678901234567890123", "0." + "0" * 30 + "1", "4.9e-324"])
@pytest.mark.parametrize("delim", [b",", b"\r\n", b""])
def test_parse_float_edge_tokens(tok, delim):
    _check_parse_float(tok, delim)


def _fast_oracle(tok: str) -> float | None:
    """The tokens the fast path promises to take: ``[-]digits[.digits]``, 1-19 digits, mantissa
    below 2^53."""
    m = re.fullmatch(r"(-?)(\d*)(?:\.(\d*))?", tok)
    if m is None:
        return None
    digits = m.group(2) + (m.group(3) or "")
    if not 1 <= len(digits) <= 19 or int(digits) >= 2**53:
        return None
    return float(tok)


@settings(max_examples=400, deadline=None)
@given(st.one_of(decimal_token, odd_token, st.builds(
    lambda s, a, b: f"{s}{a}.{b}", st.sampled_from(["", "-"]),
    st.text("0123456789", max_size=10), st.text("0123456789", max_size=24))),
    st.sampled_from([b",", b"\n", b"\r"]))
def test_fast_float_takes_its_tokens_exactly(tok, delim):
    # digits after the delimiter: the word loads must not read past it
    data = b"1," + tok.encode() + delim + b"9" * cp._FAST_MARGIN
    x, nxt, ok = fs._fast_float(_buf(data), 2)
    want = _fast_oracle(tok)
    assert ok == (want is not None), (tok, ok)
    if ok:
        assert _bits(x) == _bits(want) and nxt == 2 + len(tok), (tok, x, want)


@pytest.mark.parametrize("tok,want", [("0", 0), ("-0", 0), ("12", 12), ("-12", -12),
                                      ("0012", 12), ("9" * 18, int("9" * 18)),
                                      ("-" + "9" * 18, -int("9" * 18)), ("9" * 19, None),
                                      ("", None), ("-", None), ("+5", None), ("1.0", None),
                                      ("1e3", None), ("12x", None), (" 1", None)])
@pytest.mark.parametrize("delim", [b",", b"\n", b"\r\n", b""])
def test_parse_id(tok, want, delim):
    data = tok.encode() + delim
    v, nxt, ok = cp._parse_id(_buf(data), 0, len(data))
    assert bool(ok) == (want is not None)
    if ok:
        assert v == want and nxt == len(tok)


@pytest.mark.parametrize("data,i", [(b"ab\ncd\n", 0), (b"ab\ncd\n", 3), (b"ab\ncd", 3),
                                    (b"\n\n", 0), (b"\n\n", 1), (b"", 0), (b"abc", 1)])
def test_line_end(data, i):
    nl = data.find(b"\n", i)
    assert cp._line_end(_buf(data), i, len(data)) == (nl + 1 if nl >= 0 else len(data))


# -- csvparse: the values of one line


def _values(line: bytes, ncols: int, *, dtype=np.float64, nan_ok=False, cap=64, r=3):
    buf = _buf(line)
    row = np.full(ncols, -1.0, dtype)
    sp, sr, sc = _slow_table(cap)
    i, col, nslow, code = cp._parse_values(buf, line.index(b","), len(line), ncols, row, r,
                                           sp, sr, sc, 0, nan_ok)
    return buf, row, (i, col, nslow, code), (sp, sr, sc)


@pytest.mark.parametrize("line,ncols,want", [
    (b"7,1.5,-2,3e2\n", 3, (12, 3, 0, cp.OK)),
    (b"7,1.5,-2,3e2\r\n", 3, (13, 3, 0, cp.OK)),
    (b"7,1.5,-2,3e2", 3, (12, 3, 0, cp.OK)),           # no newline at the end of the data
    (b"7,1.5\n", 3, (5, 1, 0, cp.E_FEW)),
    (b"7,1.5", 3, (5, 1, 0, cp.E_FEW)),
    (b"7,1,2,3\n", 2, (6, 2, 0, cp.E_MANY)),
    (b"7,1,x\n", 2, (5, 1, 0, cp.E_TOKEN)),
    (b"7,1,\n", 2, (4, 1, 0, cp.E_TOKEN)),
    (b"7,1, 2\n", 2, (6, 1, 0, cp.E_TOKEN)),
    (b"7,1,-inf\n", 2, (8, 1, 0, cp.E_NONFINITE)),
    (b"7,NaN,1\n", 2, (5, 0, 0, cp.E_NONFINITE)),
    (b"7,1,2\rX\n", 2, (5, 2, 0, cp._BAD_CR)),
])
def test_parse_values_codes(line, ncols, want):
    _, row, got, _ = _values(line, ncols)
    assert got == want
    if want[3] == cp.OK:
        assert row.tolist() == [1.5, -2.0, 300.0]


def test_parse_values_nonfinite_as_nan_and_float32_range():
    _, row, got, _ = _values(b"7,1,-inf,nan\n", 3, nan_ok=True)
    assert got[3] == cp.OK and row[0] == 1 and np.isnan(row[1:]).all()
    _, row, got, _ = _values(b"7,1,-Infinity\n", 2, dtype=np.float32)
    assert got[1:] == (1, 0, cp.E_NONFINITE)
    _, row, got, _ = _values(b"7,1,-Infinity\n", 2, dtype=np.float32, nan_ok=True)
    assert got[1:] == (2, 0, cp.OK) and np.isnan(row[1])
    # no token of the kernel's own paths exceeds float32's range (m < 2^53, e <= 22, or
    # m < 2^64): 3.5e38 goes to the side table, where the driver checks the stored value
    _, row, got, (sp, _, sc) = _values(b"7,1,3.5e38\n", 2, dtype=np.float32)
    assert got[1:] == (2, 1, cp.OK) and (sp[0], sc[0]) == (4, 1)


def test_parse_values_slow_tokens_go_to_the_side_table():
    line = b"7,1e400,2,1e-400,4.9e-324,123456789012345678901234,5\n"
    buf, row, (i, col, nslow, code), (sp, sr, sc) = _values(line, 6, r=3)
    assert code == cp.OK and col == 6 and nslow >= 3
    toks = line.rstrip(b"\n").split(b",")[1:]
    starts = [line.index(b"," + t) + 1 for t in toks]
    for k in range(nslow):
        assert sr[k] == 3 and starts[sc[k]] == sp[k] and np.isnan(row[sc[k]])
    _fill_slow(buf, len(line), row[None, :], nslow, sp, np.zeros(nslow, np.int64), sc)
    assert _same_rows(row[None, :], [[t.decode() for t in toks]])


def test_parse_values_full_side_table():
    # room for one slow token: the second value stops the line, whatever it is
    _, _, got, _ = _values(b"7,1e400,2\n", 2, cap=1)
    assert got[2:] == (1, cp._FULL)
    _, _, got, _ = _values(b"7,1,2\n", 2, cap=0)
    assert got[2:] == (0, cp._FULL)


@settings(max_examples=150, deadline=None)
@given(st.lists(decimal_token, min_size=1, max_size=40), st.booleans())
def test_parse_values_bit_identical(tokens, crlf):
    line = ("7," + ",".join(tokens) + ("\r\n" if crlf else "\n")).encode()
    buf, row, (i, col, nslow, code), (sp, sr, sc) = _values(line, len(tokens), nan_ok=True)
    assert code == cp.OK and col == len(tokens) and i == len(line) - 1
    _fill_slow(buf, len(line), row[None, :], nslow, sp, np.zeros(nslow, np.int64), sc)
    assert _same_rows(row[None, :], [tokens])


# -- csvparse: whole lines


def _float_lines(data: bytes, ncols: int, max_rows: int = 100, row0: int = 0, *,
                 dtype=np.float64, nan_ok: bool = False, cap: int = 64, pos: int = 0):
    buf = _buf(data)
    ids = np.full(row0 + max_rows, -1, np.int64)
    out = np.full((row0 + max_rows, ncols), -1.0, dtype)
    sp, sr, sc = _slow_table(cap)
    res = cp.parse_float_lines(buf, pos, len(data), ncols, ids, out, row0, max_rows,
                               sp, sr, sc, nan_ok)
    _fill_slow(buf, len(data), out, res[2], sp, sr, sc)
    return res, ids, out


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(decimal_token, min_size=3, max_size=3), min_size=1, max_size=8),
       st.sampled_from(["\n", "\r\n"]), st.booleans(), st.integers(0, 2))
def test_parse_float_lines_against_python(rows, eol, final_eol, row0):
    text = eol.join(f"{100 + k}," + ",".join(r) for k, r in enumerate(rows))
    data = (text + (eol if final_eol else "")).encode()
    (n, pos, _, err, *_), ids, out = _float_lines(data, 3, row0=row0, nan_ok=True)
    assert (n, pos, err) == (len(rows), len(data), cp.OK)
    assert ids[row0:row0 + n].tolist() == [100 + k for k in range(len(rows))]
    assert _same_rows(out[row0:row0 + n], rows)


def test_parse_float_lines_empty_and_max_rows():
    assert _float_lines(b"", 2)[0] == (0, 0, 0, cp.OK, 0, 0, 0)
    data = b"1,1,2\n2,3,4\n3,5,6"
    (n, pos, *_), ids, out = _float_lines(data, 2, max_rows=2)
    assert (n, pos) == (2, 12) and ids.tolist() == [1, 2]
    (n, pos, *_), ids, out = _float_lines(data, 2, pos=12)
    assert (n, pos, ids[0], out[0].tolist()) == (1, len(data), 3, [5.0, 6.0])


@pytest.mark.parametrize("data,want", [
    # (rows, pos, err, err_row, err_col, err_pos): err_col is the 1-based field
    (b"1,1,2\n\n2,3,4\n", (1, 6, cp.E_EMPTY_LINE, 1, 1, 6)),
    (b"1,1,2\r\n\r\n", (1, 7, cp.E_EMPTY_LINE, 1, 1, 7)),
    (b"1,1,2\nx,3,4\n", (1, 6, cp.E_ID, 1, 1, 6)),
    (b"1,1,2\n2,3\n", (1, 6, cp.E_FEW, 1, 3, 9)),
    (b"1,1,2\n2,3,4,5\n", (1, 6, cp.E_MANY, 1, 4, 12)),
    (b"1,1,2\n2,3,abc\n", (1, 6, cp.E_TOKEN, 1, 3, 13)),
    (b"1,inf,2\n", (0, 0, cp.E_NONFINITE, 0, 2, 5)),
    (b"1,1,2\r2,3,4\n", (0, 0, cp.E_TOKEN, 0, 3, 5)),
])
def test_parse_float_lines_errors(data, want):
    (n, pos, _, err, erow, ecol, epos), _, _ = _float_lines(data, 2)
    assert (n, pos, err, erow, ecol, epos) == want


def test_parse_float_lines_full_side_table_stops_before_the_line():
    data = b"1,1e400,2\n2,1e400,1e400\n"
    (n, pos, nslow, err, *_), ids, out = _float_lines(data, 2, cap=2)
    # the second line needs two more slow slots: it is left for the next call
    assert (n, pos, nslow, err) == (1, 10, 1, cp.OK) and np.isnan(out[0, 0])


def _bool_lines(data: bytes, ncols: int, max_rows: int = 100):
    ids = np.full(max_rows, -1, np.int64)
    out = np.full((max_rows, ncols), 9, np.uint8)
    res = cp.parse_bool_lines(_buf(data), 0, len(data), ncols, ids, out, 0, max_rows)
    return res, ids, out


@pytest.mark.parametrize("ncols", [1, 3, 40])
@pytest.mark.parametrize("eol,final", [("\n", True), ("\r\n", True), ("\n", False)])
def test_parse_bool_lines_values(ncols, eol, final):
    rng = np.random.default_rng(ncols)
    want = rng.integers(0, 2, (5, ncols))
    text = eol.join(f"{k}," + ",".join(map(str, r)) for k, r in enumerate(want))
    data = (text + (eol if final else "")).encode()
    (n, pos, err, *_), ids, out = _bool_lines(data, ncols)
    assert (n, pos, err) == (5, len(data), cp.OK)
    assert ids[:5].tolist() == list(range(5)) and (out[:5] == want).all()


@pytest.mark.parametrize("bad", ["2", "10", "01", "0.", "", " 1", "1 ", "-1"])
@pytest.mark.parametrize("ncols", [3, 40])          # short lines and the fixed-stride path
def test_parse_bool_lines_bad_token(bad, ncols):
    row = ["1"] * ncols
    row[1] = bad
    data = ("5," + ",".join(["0"] * ncols) + "\n6," + ",".join(row) + "\n").encode()
    (n, pos, err, erow, ecol, epos), _, _ = _bool_lines(data, ncols)
    assert (n, err, erow, ecol) == (1, cp.E_TOKEN, 1, 3)
    assert data[epos - 1:epos] == b"," and data[epos:].startswith(bad.encode())


@pytest.mark.parametrize("data,want", [
    (b"", (0, 0, cp.OK, 0, 0, 0)),
    (b"1,0,1\n\n", (1, 6, cp.E_EMPTY_LINE, 1, 1, 6)),
    (b"1,0,1\n-,0,1\n", (1, 6, cp.E_ID, 1, 1, 6)),
    (b"1,0\n", (0, 0, cp.E_FEW, 0, 3, 3)),
    (b"1,0,1,1\n", (0, 0, cp.E_MANY, 0, 4, 6)),
    (b"1,0,1\r", (0, 0, cp.E_TOKEN, 0, 3, 5)),
])
def test_parse_bool_lines_errors(data, want):
    assert _bool_lines(data, 2)[0] == want


# -- labelscan


def _label_oracle(data: bytes) -> tuple[bytes, int, int] | None:
    """The label at the start of ``data`` as its docstring states it: ``(bytes between the
    quotes or up to the delimiter, kind, index after it)``; None when refused."""
    if data.startswith(b'"'):
        m = re.match(rb'"((?:[^"\r\n]|"")*)"(?=[,\r\n]|\Z)', data)
        if m is None or not m.group(1):
            return None
        inner = m.group(1)
        return inner, ls.LABEL_ESCAPED if b'""' in inner else ls.LABEL_QUOTED, m.end()
    m = re.match(rb"[^,\r\n]*", data)
    return (m.group(), ls.LABEL_PLAIN, m.end()) if m.group() else None


def _csv_field(text: str) -> str:
    """``text`` as a CSV field: plain when it can be, else double-quoted."""
    if text and not any(c in text for c in ',"\r\n'):
        return text
    return '"' + text.replace('"', '""') + '"'


label_text = st.one_of(
    st.from_regex(r"[A-Z][A-Z0-9]{0,6}(-[A-Z0-9]{1,4})?", fullmatch=True),
    st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
            min_size=1, max_size=8),
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text('ab",\r\n', max_size=8), label_text.map(_csv_field)),
       st.sampled_from([b",1\n", b",", b"\n", b"\r\n", b""]))
def test_parse_label_against_oracle(field, after):
    data = field.encode() + after
    a, b, kind, nxt, ok = ls._parse_label(_buf(data), 0, len(data))
    want = _label_oracle(data)
    assert bool(ok) == (want is not None), (data, ok)
    if ok:
        assert (bytes(data[a:b]), int(kind), int(nxt)) == want


@pytest.mark.parametrize("data,want", [
    (b"GENE,1", (0, 4, ls.LABEL_PLAIN, 4, True)),
    (b'GE"NE,1', (0, 5, ls.LABEL_PLAIN, 5, True)),
    (b'"A,B",1', (1, 4, ls.LABEL_QUOTED, 5, True)),
    (b'"A""B",1', (1, 5, ls.LABEL_ESCAPED, 6, True)),
    (b'"A"', (1, 2, ls.LABEL_QUOTED, 3, True)),         # no newline at the end of the data
    (b",1", (0, 0, ls.LABEL_PLAIN, 0, False)),
    (b'"",1', (1, 1, ls.LABEL_QUOTED, 2, False)),
    (b'"AB\n', (1, 3, ls.LABEL_QUOTED, 3, False)),
    (b'"AB', (1, 3, ls.LABEL_QUOTED, 3, False)),
    (b'"A"x,1', (1, 2, ls.LABEL_QUOTED, 3, False)),
])
def test_parse_label_cases(data, want):
    got = ls._parse_label(_buf(data), 0, len(data))
    assert tuple(int(v) for v in got[:4]) + (bool(got[4]),) == want


def _label_lines(data: bytes, ncols: int, max_rows: int = 100, *, nan_ok: bool = False,
                 cap: int = 64):
    buf = _buf(data)
    lab = [np.full(max_rows, -1, np.int64), np.full(max_rows, -1, np.int64),
           np.full(max_rows, -1, np.int8)]
    out = np.full((max_rows, ncols), -1.0)
    sp, sr, sc = _slow_table(cap)
    res = ls.parse_label_lines(buf, 0, len(data), ncols, *lab, out, 0, max_rows, sp, sr, sc,
                               nan_ok)
    _fill_slow(buf, len(data), out, res[2], sp, sr, sc)
    labels = [bytes(buf[lab[0][r]:lab[1][r]]).decode() for r in range(res[0])]
    return res, labels, lab[2][:res[0]].tolist(), out


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(label_text, st.lists(decimal_token, min_size=2, max_size=2)),
                min_size=1, max_size=6), st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_parse_label_lines_against_csv(rows, eol, final):
    text = eol.join(_csv_field(lab) + "," + ",".join(t) for lab, t in rows)
    data = (text + (eol if final else "")).encode()
    (n, pos, _, err, *_), labels, kinds, out = _label_lines(data, 2, nan_ok=True)
    assert (n, pos, err) == (len(rows), len(data), cp.OK)
    decoded = [lab.replace('""', '"') if k == ls.LABEL_ESCAPED else lab
               for lab, k in zip(labels, kinds, strict=True)]
    assert decoded == [lab for lab, _ in rows]
    assert decoded == [r[0] for r in csv.reader(io.StringIO(data.decode(), newline=""))]
    assert _same_rows(out[:n], [toks for _, toks in rows])


@pytest.mark.parametrize("data,want", [
    (b"", (0, 0, cp.OK, 0, 0, 0)),
    (b"A,1,2\n\n", (1, 6, cp.E_EMPTY_LINE, 1, 1, 6)),
    (b"A,1,2\n,1,2\n", (1, 6, ls.E_LABEL, 1, 1, 6)),
    (b'A,1,2\n"B,1,2\n', (1, 6, ls.E_LABEL, 1, 1, 6)),
    (b"A,1\n", (0, 0, cp.E_FEW, 0, 3, 3)),
    (b"A,1,2,3\n", (0, 0, cp.E_MANY, 0, 4, 6)),
    (b"A,1,2x\n", (0, 0, cp.E_TOKEN, 0, 3, 6)),
    (b"A,1,nan\n", (0, 0, cp.E_NONFINITE, 0, 3, 7)),
    (b"A,1,2\rB,1,2\n", (0, 0, cp.E_TOKEN, 0, 3, 5)),
])
def test_parse_label_lines_errors(data, want):
    (n, pos, _, err, erow, ecol, epos), _, _, _ = _label_lines(data, 2)
    assert (n, pos, err, erow, ecol, epos) == want


def test_parse_label_lines_max_rows_and_full_side_table():
    data = b'"A",1,2\nB,1e400,3\nC,1e400,1e400\n'
    (n, pos, nslow, err, *_), labels, _, out = _label_lines(data, 2, max_rows=1)
    assert (n, pos, nslow, err, labels) == (1, 8, 0, cp.OK, ["A"])
    (n, pos, nslow, err, *_), labels, _, out = _label_lines(data, 2, cap=2)
    assert (n, pos, nslow, err, labels) == (2, 18, 1, cp.OK, ["A", "B"])
    assert np.isnan(out[1, 0]) and out[1, 1] == 3.0


# -- countscan


def _count_lines(data: bytes, ncols: int, max_rows: int = 100, max_nnz: int = 1000,
                 row0: int = 0, nnz0: int = 0):
    buf = _buf(data)
    id_s = np.full(row0 + max_rows, -1, np.int64)
    id_e = np.full(row0 + max_rows, -1, np.int64)
    indptr = np.zeros(row0 + max_rows + 1, np.int64)
    indptr[:row0 + 1] = nnz0
    indices = np.full(max_nnz, -1, np.int32)
    values = np.full(max_nnz, -1, np.int32)
    res = cs.parse_count_lines(buf, 0, len(data), ncols, max_rows, max_nnz, id_s, id_e,
                               indptr, indices, values, row0, nnz0)
    names = [bytes(buf[id_s[r]:id_e[r]]).decode() for r in range(row0, row0 + res[0])]
    return res, names, indptr, indices, values


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.one_of(st.just(0), st.integers(0, 2**31 - 1)), min_size=4,
                         max_size=4), min_size=1, max_size=7),
       st.booleans(), st.sampled_from(["\n", "\r\n"]), st.booleans(), st.integers(0, 2))
def test_parse_count_lines_against_dense(rows, quoted, eol, final, row0):
    dense = np.array(rows, np.int64)
    names = [f"cell_{k}" for k in range(len(rows))]
    text = eol.join((f'"{nm}"' if quoted else nm) + "," + ",".join(map(str, r))
                    for nm, r in zip(names, rows, strict=True)) + (eol if final else "")
    data = text.encode()
    (n, pos, nnz, err, *_), got_names, indptr, indices, values = _count_lines(
        data, 4, row0=row0, nnz0=5 * row0)
    assert (n, pos, err, got_names) == (len(rows), len(data), cs.OK, names)
    ip = indptr[row0:row0 + n + 1] - 5 * row0
    assert nnz - 5 * row0 == ip[-1] == np.count_nonzero(dense)
    got = np.zeros_like(dense)
    for r in range(n):
        sl = slice(5 * row0 + ip[r], 5 * row0 + ip[r + 1])
        assert (values[sl] != 0).all()
        got[r, indices[sl]] = values[sl]
    assert (got == dense).all()


def test_parse_count_lines_empty_and_max_rows():
    assert _count_lines(b"", 2)[0] == (0, 0, 0, cs.OK, 0, 0, 0)
    (n, pos, nnz, err, *_), names, *_ = _count_lines(b"a,1,0\nb,0,2\n", 2, max_rows=1)
    assert (n, pos, nnz, err, names) == (1, 6, 1, cs.OK, ["a"])


def test_parse_count_lines_nnz_room():
    data = b"a,1,2\nb,3,4\n"
    # room for three values: the second line is left for the next call
    (n, pos, nnz, err, *_), names, indptr, *_ = _count_lines(data, 2, max_nnz=3)
    assert (n, pos, nnz, err, names, indptr[1]) == (1, 6, 2, cs.OK, ["a"], 2)
    # no room for the first line: -1 and nothing consumed
    (n, pos, nnz, err, *_), *_ = _count_lines(data, 2, max_nnz=1)
    assert (n, pos, nnz, err) == (0, 0, 0, -1)
    # zeros take no room
    (n, pos, nnz, err, *_), *_ = _count_lines(b"a,0,0\nb,0,0\n", 2, max_nnz=0)
    assert (n, nnz, err) == (2, 0, cs.OK)


@pytest.mark.parametrize("data,want", [
    # (rows, pos, err, err_row, err_col, err_pos)
    (b"a,1,2\n\n", (1, 6, cs.E_EMPTY_LINE, 1, 1, 6)),
    (b"a,1,2\r\n\r\n", (1, 7, cs.E_EMPTY_LINE, 1, 1, 7)),
    (b"a,1,2\n,1,2\n", (1, 6, cs.E_ID, 1, 1, 6)),
    (b'a,1,2\n"b,1,2\n', (1, 6, cs.E_ID, 1, 1, 6)),
    (b'a,1,2\n"",1,2\n', (1, 6, cs.E_ID, 1, 1, 6)),
    (b"a\n", (0, 0, cs.E_FEW, 0, 2, 1)),
    (b"a,1\n", (0, 0, cs.E_FEW, 0, 3, 3)),
    (b"a,1,2,3\n", (0, 0, cs.E_MANY, 0, 4, 6)),
    (b"a,1,\n", (0, 0, cs.E_TOKEN, 0, 3, 4)),
    (b"a,1,-2\n", (0, 0, cs.E_TOKEN, 0, 3, 4)),
    (b"a,1.5,2\n", (0, 0, cs.E_TOKEN, 0, 2, 2)),
    (b"a,1,NA\n", (0, 0, cs.E_TOKEN, 0, 3, 4)),
    (b"a,1, 2\n", (0, 0, cs.E_TOKEN, 0, 3, 4)),
    (b"a,2147483647,2147483648\n", (0, 0, cs.E_BIG, 0, 3, 13)),
    (b"a,1,2\r", (0, 0, cs.E_TOKEN, 0, 3, 4)),
])
def test_parse_count_lines_errors(data, want):
    (n, pos, _, err, erow, ecol, epos), *_ = _count_lines(data, 2)
    assert (n, pos, err, erow, ecol, epos) == want
