"""Numba block parser for header-less numeric CSV matrices with a leading integer id column.

The layout is Allen's ``MicroarrayExpression.csv`` / ``PACall.csv`` and BrainSpan's
``expression_matrix.csv``: every line is ``id,v1,...,vN`` with exactly ``N`` values. The kernels
work on raw bytes holding whole lines, release the GIL, and fill preallocated arrays; the Python
driver :func:`iter_blocks` feeds them a byte stream and yields fixed-height row blocks.

Float tokens and exactness
--------------------------
Every float is the double Python's ``float(token)`` gives, bit for bit:

* the common token ``[-]digits[.digits]`` with at most 19 digits, mantissa ``m < 2^53``, ending
  at a delimiter (Allen writes 15 significant digits): the fraction is read eight bytes per
  word load (all eight tested for digits at once, converted by three multiplications) and the
  value is one IEEE division ``m / 10^k`` of two exact doubles (Clinger's fast path), correctly
  rounded; ~1.5 GB/s per core on Allen-like rows (~0.95 GB/s byte by byte). Every other token
  takes the checked path below.
* ``m × 10^e`` with at most 19 significant digits, ``m < 2^53`` and ``|e| ≤ 22``: one IEEE
  multiplication or division of two exact doubles (Clinger's fast path), correctly rounded.
* ``m ≥ 2^53`` (17–19 digit tokens such as Allen's) and ``-22 ≤ e < 0``: ``m / 10^k =
  (m / 5^k) · 2^-k`` with ``5^k < 2^52``; the quotient is computed with integer long division to
  54+ bits plus a sticky bit and rounded to nearest-even by hand (exact, no approximation).
* anything else (more than 19 digits, large exponents, denormals): the token's position is
  recorded and the driver converts it with Python ``float()`` (rare; counted in ``slow``).

Accepted float syntax: optional sign, digits with an optional ``.`` and fraction, optional
``e``/``E`` exponent, as Python ``float()`` reads them. Non-finite values — the tokens ``nan``,
``inf``, ``infinity`` (any case, optionally signed) and numbers beyond the range of the stored
dtype — are refused with their line and column unless ``nonfinite="nan"`` is asked for, which
stores them as NaN (and counts them). Rejected: empty fields, surrounding spaces, underscores,
hexadecimal. Lines end in ``\\n`` or ``\\r\\n``; a missing newline at the end of the data is
accepted, and so is a UTF-8 byte-order mark at the start (stripped). Boolean matrices (PACall)
accept exactly the tokens ``0`` and ``1``. A line longer than :func:`max_line_bytes` allows for
its field count is refused before it is buffered, so memory stays bounded whatever the input.
"""

from __future__ import annotations

import math
import queue
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from ..errors import FormatError
from .zipstream import BOM

# error codes returned by the kernels
OK = 0
E_FEW = 1        # line ended before ncols values
E_MANY = 2       # more than ncols values on a line
E_TOKEN = 3      # a value token is not a number
E_ID = 4         # the id token is not an integer
E_EMPTY_LINE = 5
E_NONFINITE = 7  # nan / inf / out of the dtype's range (6 is the label parser's E_LABEL)

#: longest field a line may average (Allen writes ~20 bytes per value); bounds the buffered line
MAX_FIELD_BYTES = 64

_P10 = np.array([10.0**i for i in range(23)], dtype=np.float64)
_P5 = np.array([5**i for i in range(23)], dtype=np.uint64)
_P5BITS = np.array([int(5**i).bit_length() for i in range(23)], dtype=np.int64)
_TWO53 = np.uint64(1) << np.uint64(53)

#: capacity of the slow-token side table per kernel call
SLOW_CAPACITY = 1 << 14


@numba.njit(nogil=True, cache=True, inline="always")
def _bitlen(q: np.uint64) -> int:
    """Number of significant bits of ``q`` (0 for 0), via the exponent of ``float(q)``."""
    if q == 0:
        return 0
    nb = math.frexp(np.float64(q))[1]
    # float(q) may round up to the next power of two
    if nb > 64 or (q >> np.uint64(nb - 1)) == 0:
        nb -= 1
    return nb


@numba.njit(nogil=True, cache=True, inline="always")
def _round_quotient(q: np.uint64, sticky: bool, exp2: int) -> float:
    """Round ``(q + frac) · 2^exp2`` to a double, ``q ≥ 2^53``, ``frac`` in (0,1) iff sticky."""
    shift = _bitlen(q) - 53
    mant = q >> np.uint64(shift)
    rem = q & ((np.uint64(1) << np.uint64(shift)) - np.uint64(1))
    half = np.uint64(1) << np.uint64(shift - 1)
    if rem > half or (rem == half and (sticky or (mant & np.uint64(1)) == 1)):
        mant += np.uint64(1)
        if mant == (np.uint64(1) << np.uint64(53)):
            mant = mant >> np.uint64(1)
            shift += 1
    return np.ldexp(np.float64(mant), exp2 + shift)


@numba.njit(nogil=True, cache=True)
def _exact_div_pow10(m: np.uint64, k: int) -> float:
    """Correctly rounded ``m / 10^k`` for ``2^53 ≤ m < 2^64`` and ``1 ≤ k ≤ 22``."""
    d = _P5[k]
    q = m // d
    r = m % d
    exp2 = -k
    dbits = _P5BITS[k]
    while q < (np.uint64(1) << np.uint64(54)):
        # r < d < 2^dbits: shift in b bits with r << b < 2^63 and q << b < 2^64 (q < 2^54)
        b = min(63 - dbits, 64 - max(_bitlen(q), 1))
        r = r << np.uint64(b)
        q = (q << np.uint64(b)) | (r // d)
        r = r % d
        exp2 -= b
    return _round_quotient(q, r != 0, exp2)


@numba.njit(nogil=True, cache=True, inline="always")
def _lower(c: np.uint8) -> int:
    c = int(c)
    if 65 <= c <= 90:
        return c + 32
    return c


@numba.njit(nogil=True, cache=True)
def _special(buf: np.ndarray, i: int, j: int) -> float:
    """``nan``/``inf``/``infinity`` (case-insensitive, optional sign) in ``buf[i:j]``; ``0.5``
    (never a special value) when the token is none of them."""
    neg = False
    if i < j and (buf[i] == 45 or buf[i] == 43):
        neg = buf[i] == 45
        i += 1
    n = j - i
    if n == 3 and _lower(buf[i]) == 110 and _lower(buf[i + 1]) == 97 and _lower(buf[i + 2]) == 110:
        return -np.nan if neg else np.nan
    is_inf = n == 3 and _lower(buf[i]) == 105 and _lower(buf[i + 1]) == 110 \
        and _lower(buf[i + 2]) == 102
    if n == 8:
        word = "infinity"
        is_inf = True
        for t in range(8):
            if _lower(buf[i + t]) != ord(word[t]):
                is_inf = False
                break
    if is_inf:
        return -np.inf if neg else np.inf
    return 0.5  # sentinel: not a special value (0.5 is never returned for a real match)


@numba.njit(nogil=True, cache=True)
def _parse_float(buf: np.ndarray, i: int, end: int):
    """Parse one float token starting at ``i``.

    Returns ``(value, next_index, status)``; status 0 = ok, 1 = slow path needed (value
    unset), 2 = not a number. ``next_index`` points at the delimiter (``,``/``\\r``/``\\n``) or
    ``end``.
    """
    start = i
    neg = False
    if i < end and (buf[i] == 45 or buf[i] == 43):
        neg = buf[i] == 45
        i += 1
    m = np.uint64(0)
    nd = 0
    e = 0
    ndig = 0
    slow = False
    while i < end:
        c = buf[i]
        if c < 48 or c > 57:
            break
        d = np.uint64(c - 48)
        ndig += 1
        if m == 0 and d == 0:
            pass
        elif nd < 19:
            m = m * np.uint64(10) + d
            nd += 1
        else:
            slow = True
        i += 1
    if i < end and buf[i] == 46:
        i += 1
        while i < end:
            c = buf[i]
            if c < 48 or c > 57:
                break
            d = np.uint64(c - 48)
            ndig += 1
            if m == 0 and d == 0:
                e -= 1
            elif nd < 19:
                m = m * np.uint64(10) + d
                nd += 1
                e -= 1
            else:
                slow = True
            i += 1
    if ndig > 0 and i < end and (buf[i] == 101 or buf[i] == 69):
        i += 1
        eneg = False
        if i < end and (buf[i] == 45 or buf[i] == 43):
            eneg = buf[i] == 45
            i += 1
        ed = 0
        ev = 0
        while i < end:
            c = buf[i]
            if c < 48 or c > 57:
                break
            if ev < 100000:
                ev = ev * 10 + (c - 48)
            ed += 1
            i += 1
        if ed == 0:
            return 0.0, i, 2
        e += -ev if eneg else ev
    # the token must end here
    j = i
    while j < end and buf[j] != 44 and buf[j] != 10 and buf[j] != 13:
        j += 1
    if j != i or ndig == 0:
        v = _special(buf, start, j)
        if v == 0.5:
            return 0.0, j, 2
        return v, j, 0
    if slow:
        return 0.0, i, 1
    if m == 0:
        return (-0.0 if neg else 0.0), i, 0
    if m < _TWO53 and -22 <= e <= 22:
        x = np.float64(m)
        x = x * _P10[e] if e >= 0 else x / _P10[-e]
        return (-x if neg else x), i, 0
    if -22 <= e < 0:
        x = _exact_div_pow10(m, -e)
        return (-x if neg else x), i, 0
    if e == 0:  # m ≥ 2^53 integer: uint64 -> float64 conversion rounds to nearest-even
        x = np.float64(m)
        return (-x if neg else x), i, 0
    return 0.0, i, 1


#: bytes that must follow a token start for the unchecked fast path (sign, 19 digits, dot,
#: one more digit to detect overflow and the delimiter fit well inside)
_FAST_MARGIN = 48


_U8 = np.uint64(8)
_ASCII0 = np.uint64(0x3030303030303030)
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_ADD76 = np.uint64(0x7676767676767676)
_HIGH = np.uint64(0x8080808080808080)
_PAIR_MASK = np.uint64(0x000000FF000000FF)
_MUL_A = np.uint64(100 + (1000000 << 32))
_MUL_B = np.uint64(1 + (10000 << 32))
_P10U = np.array([10**i for i in range(20)], dtype=np.uint64)


@numba.njit(nogil=True, cache=True, inline="always")
def _load8(buf: np.ndarray, i: int) -> np.uint64:
    """Eight bytes at ``i`` as a little-endian word. Unsigned indices skip numba's
    negative-index fix-up, which lets LLVM combine the eight byte loads into one."""
    j = np.uint64(i)
    return (np.uint64(buf[j]) | (np.uint64(buf[j + np.uint64(1)]) << _U8)
            | (np.uint64(buf[j + np.uint64(2)]) << np.uint64(16))
            | (np.uint64(buf[j + np.uint64(3)]) << np.uint64(24))
            | (np.uint64(buf[j + np.uint64(4)]) << np.uint64(32))
            | (np.uint64(buf[j + np.uint64(5)]) << np.uint64(40))
            | (np.uint64(buf[j + np.uint64(6)]) << np.uint64(48))
            | (np.uint64(buf[j + np.uint64(7)]) << np.uint64(56)))


@numba.njit(nogil=True, cache=True, inline="always")
def _eight_digits(t: np.uint64) -> np.uint64:
    """The value of eight decimal digits held one per byte (``t``: bytes minus ``'0'``, first
    digit in the lowest byte): pairs, then quads, then the whole, by three multiplications."""
    v = t * np.uint64(10) + (t >> _U8)
    v = ((v & _PAIR_MASK) * _MUL_A + ((v >> np.uint64(16)) & _PAIR_MASK) * _MUL_B)
    return (v >> np.uint64(32)) & np.uint64(0xFFFFFFFF)


@numba.njit(nogil=True, cache=True, inline="always")
def _fast_float(buf: np.ndarray, i: int):
    """Common-case token ``[-]digits[.digits]`` with at most 19 digits, mantissa below 2^53
    (so at most 19 fraction digits), ending at ``,``/``\\r``/``\\n``: one exact division.

    The fraction is read eight bytes at a time: one word load, a digit test of all eight bytes
    at once and three multiplications per word (the shorter tail word is shifted so that its
    digits are the low-order ones). The caller guarantees ``_FAST_MARGIN`` readable bytes
    from ``i``. Returns ``(value, next_index, ok)``; when not ok the token is left to
    :func:`_parse_float`.
    """
    neg = buf[np.uint64(i)] == 45
    if neg:
        i += 1
    i0 = i
    m = np.uint64(0)
    c = np.uint64(buf[np.uint64(i)]) - np.uint64(48)
    while c <= np.uint64(9) and i - i0 < 20:
        m = m * np.uint64(10) + c
        i += 1
        c = np.uint64(buf[np.uint64(i)]) - np.uint64(48)
    nd = i - i0
    nfrac = 0
    if c == np.uint64(46 - 48 + 2**64):
        i += 1
        # at most three words (24 fraction digits; more fail the 19-digit test below)
        while nfrac < 24:
            t = _load8(buf, i) - _ASCII0
            nondigit = (((t & _LOW7) + _ADD76) | t) & _HIGH
            if nondigit == 0:
                m = m * np.uint64(100000000) + _eight_digits(t)
                i += 8
                nfrac += 8
                continue
            n = np.int64(trailing_zeros(nondigit)) >> 3
            if n > 0:
                m = m * _P10U[n] + _eight_digits(t << np.uint64(64 - 8 * n))
                i += n
                nfrac += n
            break
        nd += nfrac
    b = buf[np.uint64(i)]
    if nd == 0 or nd > 19 or m >= _TWO53 or not (b == 44 or b == 10 or b == 13):
        return 0.0, i, False
    x = np.float64(m) / _P10[nfrac]
    return (-x if neg else x), i, True


@numba.njit(nogil=True, cache=True)
def _parse_id(buf: np.ndarray, i: int, end: int):
    """Integer id at ``i``: ``(value, next_index, ok)``."""
    neg = False
    if i < end and buf[i] == 45:
        neg = True
        i += 1
    v = 0
    nd = 0
    while i < end:
        c = buf[i]
        if c < 48 or c > 57:
            break
        v = v * 10 + (c - 48)
        nd += 1
        i += 1
    ok = 0 < nd <= 18 and (i == end or buf[i] == 44 or buf[i] == 10 or buf[i] == 13)
    return (-v if neg else v), i, ok


@numba.njit(nogil=True, cache=True)
def _line_end(buf: np.ndarray, i: int, end: int) -> int:
    """Index just past the ``\\n`` ending the line at ``i`` (or ``end``)."""
    while i < end and buf[i] != 10:
        i += 1
    return i + 1 if i < end else end


#: :func:`_parse_values` outcomes beside the error codes: the slow-token side table is full
#: (stop before the line), and a ``\r`` not followed by ``\n`` ends the line
_FULL = -1
_BAD_CR = -2


@numba.njit(nogil=True, cache=True, inline="always")
def _parse_values(buf, i, end, ncols, row, r, slow_pos, slow_row, slow_col, nslow, nan_ok):
    """The ``ncols`` values of one line into ``row`` (row ``r`` of the block), from ``i`` (the
    delimiter after the line's first field) through its line end; shared by the integer-id and
    the label parsers.

    Returns ``(i, col, nslow, code)``: ``i`` just before the next line's first byte (or at the
    offending token), the values read, the slow tokens recorded so far, and ``OK``, ``E_FEW``,
    ``E_MANY``, ``E_TOKEN``, ``E_NONFINITE``, ``_FULL`` or ``_BAD_CR``. A non-finite value
    (as stored in ``row``'s dtype) is an error unless ``nan_ok``, which stores NaN instead.
    (The fast path never yields one: its values are below 2^53.)
    """
    cap = slow_pos.shape[0]
    col = 0
    while True:
        # i is at a delimiter or end
        if i >= end:
            if col != ncols:
                return i, col, nslow, E_FEW
            break
        d = buf[np.uint64(i)]
        if d == 10 or d == 13:
            if col != ncols:
                return i, col, nslow, E_FEW
            break
        # buf[i] == ','
        i += 1
        if col == ncols:
            return i, col, nslow, E_MANY
        if nslow >= cap:
            return i, col, nslow, _FULL
        if i + _FAST_MARGIN <= end:
            x, j, fast = _fast_float(buf, i)
            if fast:
                row[np.uint64(col)] = x
                col += 1
                i = j
                continue
        x, i, st = _parse_float(buf, i, end)
        if st == 2:
            return i, col, nslow, E_TOKEN
        if st == 1:
            tok_start = i
            while tok_start > 0 and buf[tok_start - 1] != 44:
                tok_start -= 1
            slow_pos[nslow] = tok_start
            slow_row[nslow] = r
            slow_col[nslow] = col
            nslow += 1
            row[col] = np.nan
            col += 1
            continue
        row[col] = x
        y = row[col]
        if y != y or y - y != 0.0:
            if not nan_ok:
                return i, col, nslow, E_NONFINITE
            row[col] = np.nan
        col += 1
    if i < end and buf[i] == 13:
        if i + 1 < end and buf[i + 1] == 10:
            i += 1
        else:
            return i, col, nslow, _BAD_CR
    return i, col, nslow, OK


@numba.njit(nogil=True, cache=True)
def parse_float_lines(buf, pos, end, ncols, ids, out, row0, max_rows,
                      slow_pos, slow_row, slow_col, nan_ok=False):
    """Parse whole lines of ``buf[pos:end]`` into ``ids[row0:]`` / ``out[row0:, :]``.

    ``buf[pos:end]`` must hold whole lines (the last may lack its newline). Parses at most
    ``max_rows`` lines. Returns ``(rows, pos, nslow, err, err_row, err_col, err_pos)``: rows
    parsed, the byte position after them, slow tokens recorded in ``slow_*`` (their ``out``
    cells are to be filled by the caller), and on error the code, the row (relative to
    ``row0``), the 1-based field and the byte position of the offending token. Non-finite
    values: see :func:`_parse_values` (``nan_ok``).
    """
    rows = 0
    nslow = 0
    while rows < max_rows and pos < end:
        line_start = pos
        r = row0 + rows
        if buf[pos] == 10 or (buf[pos] == 13 and pos + 1 < end and buf[pos + 1] == 10):
            return rows, line_start, nslow, E_EMPTY_LINE, rows, 1, pos
        v, i, ok = _parse_id(buf, pos, end)
        if not ok:
            return rows, line_start, nslow, E_ID, rows, 1, pos
        ids[r] = v
        slow_mark = nslow
        i, col, nslow, err = _parse_values(buf, i, end, ncols, out[r], r, slow_pos, slow_row,
                                           slow_col, nslow, nan_ok)
        if err == _FULL:
            # side table full: stop before this line, the caller drains and calls again
            return rows, line_start, slow_mark, OK, 0, 0, 0
        if err == _BAD_CR:
            return rows, line_start, slow_mark, E_TOKEN, rows, col + 1, i
        if err != OK:
            return rows, line_start, slow_mark, err, rows, col + 2, i
        pos = i + 1 if i < end else end
        rows += 1
    return rows, pos, nslow, OK, 0, 0, 0


@numba.njit(nogil=True, cache=True)
def parse_bool_lines(buf, pos, end, ncols, ids, out, row0, max_rows):
    """Like :func:`parse_float_lines` for 0/1 matrices into a uint8 ``out``.

    Returns ``(rows, pos, err, err_row, err_col, err_pos)``.
    """
    rows = 0
    while rows < max_rows and pos < end:
        line_start = pos
        r = row0 + rows
        if buf[pos] == 10 or (buf[pos] == 13 and pos + 1 < end and buf[pos + 1] == 10):
            return rows, line_start, E_EMPTY_LINE, rows, 1, pos
        v, i, ok = _parse_id(buf, pos, end)
        if not ok:
            return rows, line_start, E_ID, rows, 1, pos
        ids[r] = v
        col = 0
        if i + 2 * ncols < end:
            # fixed stride: every field is ",0" or ",1"; stop at the first other byte and let
            # the checked loop below report it
            while col < ncols:
                c = buf[i + 1]
                if buf[i] != 44 or (c != 48 and c != 49):
                    break
                out[r, col] = c - 48
                col += 1
                i += 2
            if col > 0 and buf[i] != 44 and buf[i] != 10 and buf[i] != 13:
                col -= 1  # the last field was longer than one byte: recheck it below
                i -= 2
        while True:
            if i >= end or buf[i] == 10 or buf[i] == 13:
                if col != ncols:
                    return rows, line_start, E_FEW, rows, col + 2, i
                break
            i += 1
            if col == ncols:
                return rows, line_start, E_MANY, rows, col + 2, i
            if i < end and (buf[i] == 48 or buf[i] == 49) and (
                i + 1 == end or buf[i + 1] == 44 or buf[i + 1] == 10 or buf[i + 1] == 13
            ):
                out[r, col] = buf[i] - 48
                i += 1
            else:
                return rows, line_start, E_TOKEN, rows, col + 2, i
            col += 1
        if i < end and buf[i] == 13:
            if i + 1 < end and buf[i + 1] == 10:
                i += 1
            else:
                return rows, line_start, E_TOKEN, rows, col + 1, i
        pos = i + 1 if i < end else end
        rows += 1
    return rows, pos, OK, 0, 0, 0


# -------------------------------------------------------------------------------------------
# Python driver
# -------------------------------------------------------------------------------------------

@dataclass
class Block:
    """One parsed block: rows ``start .. start+len(ids)`` of the matrix (0-based)."""

    start: int
    ids: np.ndarray        # int64 (rows,)
    values: np.ndarray     # float64/float32 or bool (rows, ncols)
    #: the pool buffers the arrays view (blocks from a :class:`BlockPool` only)
    buffers: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)


@dataclass
class ParseStats:
    rows: int = 0
    bytes: int = 0
    slow_tokens: int = 0
    #: non-finite values stored as NaN (``nonfinite="nan"`` only; otherwise they are errors)
    nonfinite: int = 0


def _token_text(buf: np.ndarray, pos: int, end: int) -> str:
    a = pos
    while a > 0 and buf[a - 1] not in (44, 10):
        a -= 1
    b = pos
    while b < end and buf[b] not in (44, 10, 13):
        b += 1
    return bytes(buf[a:b]).decode("utf-8", "replace")[:60]


def shape_error(code: int, name: str, line: int, col: int, fields: str,
                empty: str | None = None) -> FormatError | None:
    """The error for a line of the wrong shape (too few or too many fields, empty), shared by
    every block parser; ``fields`` says what a line holds, ``empty`` what an empty line should
    have held (default ``fields``). ``None`` for other codes."""
    if code == E_FEW:
        return FormatError(name, f"ragged row: only {col - 1} fields", line=line, column=col,
                           expected=fields)
    if code == E_MANY:
        return FormatError(name, "ragged row: too many fields", line=line, column=col,
                           expected=fields)
    if code == E_EMPTY_LINE:
        return FormatError(name, "empty line", line=line, column=1, expected=empty or fields)
    return None


def _raise(code: int, name: str, line: int, col: int, ncols: int, tok: str, kind: str) -> None:
    shape = shape_error(code, name, line, col, f"{ncols + 1} fields (an id and {ncols} values)",
                        f"{ncols + 1} comma-separated fields")
    if shape is not None:
        raise shape
    if code == E_ID:
        raise FormatError(name, f"bad id token {tok!r}", line=line, column=1,
                          expected="an integer id")
    if code == E_NONFINITE:
        raise nonfinite_error(name, line, col, tok)
    want = "0 or 1" if kind == "bool" else "a decimal number"
    raise FormatError(name, f"bad value token {tok!r}", line=line, column=col, expected=want)


def nonfinite_error(name: str, line: int, col: int, tok: str) -> FormatError:
    """The error for a non-finite value (refused unless the user opts in)."""
    return FormatError(name, f"non-finite value {tok!r}", line=line, column=col,
                       expected="a finite number; to read nan/inf tokens as NaN, convert with "
                       "--allow-nonfinite")


def max_line_bytes(ncols: int) -> int:
    """The longest line accepted for ``ncols`` values after the id or label."""
    return MAX_FIELD_BYTES * (ncols + 1) + 4096


class LineTooLong(Exception):
    """Raised by :func:`line_regions` when a line exceeds its bound (the caller knows where)."""


def strip_bom(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The byte stream ``chunks`` without a leading UTF-8 byte-order mark."""
    it = iter(chunks)
    head = b""
    for piece in it:
        head += piece
        if len(head) >= len(BOM):
            break
    if head.startswith(BOM):
        head = head[len(BOM):]
    if head:
        yield head
    yield from it


class BlockPool:
    """A fixed set of reusable block buffers (ids and values), handed out and given back.

    :func:`iter_blocks` with a pool yields blocks whose arrays belong to the pool; the consumer
    calls :meth:`release` once it is done with a block. The pool size bounds the memory of
    blocks in flight (parsed but not yet written).
    """

    def __init__(self, size: int, block_rows: int, ncols: int, dtype: np.dtype | type) -> None:
        self._free: queue.Queue = queue.Queue()
        self.block_rows = block_rows
        self.dtype = np.dtype(dtype)
        for _ in range(max(1, size)):
            self._free.put((np.empty(block_rows, np.int64),
                            np.empty((block_rows, ncols), self.dtype)))

    def acquire(self) -> tuple[np.ndarray, np.ndarray]:
        return self._free.get()

    def give_back(self, buffers: tuple[np.ndarray, np.ndarray]) -> None:
        """Return buffers taken with :meth:`acquire` that never became a block."""
        self._free.put(buffers)

    def release(self, block: Block) -> None:
        """Give back the buffers of ``block`` (a block yielded with this pool)."""
        if block.buffers is None:
            raise ValueError("block does not belong to a pool")
        self._free.put(block.buffers)
        block.buffers = None


def line_regions(chunks: Iterable[bytes], stats: ParseStats, max_line: int | None = None
                 ) -> Iterator[tuple[np.ndarray, int, int]]:
    """Whole lines out of a byte stream of any chunking: ``(buf, start, end)`` with
    ``buf[start:end]`` holding only complete lines (the last line of the stream may lack its
    newline). Pieces are used in place; only a line split across pieces is copied. Counts the
    bytes into ``stats.bytes``. Each region must be consumed before the next is asked for.
    A leading UTF-8 byte-order mark is dropped. With ``max_line``, a line split across pieces
    that grows beyond it raises :class:`LineTooLong` instead of being buffered further."""
    carry = bytearray()
    for piece in strip_bom(chunks):
        if not piece:
            continue
        stats.bytes += len(piece)
        start = 0
        if carry:
            nl = piece.find(b"\n")
            if nl < 0:
                carry += piece
                if max_line is not None and len(carry) > max_line:
                    raise LineTooLong(len(carry))
                continue
            carry += piece[:nl + 1]
            head = np.frombuffer(bytes(carry), np.uint8)
            carry.clear()
            yield head, 0, len(head)
            start = nl + 1
        last = piece.rfind(b"\n")
        if last < start:
            carry += piece[start:]
            if max_line is not None and len(carry) > max_line:
                raise LineTooLong(len(carry))
            continue
        yield np.frombuffer(piece, np.uint8), start, last + 1
        carry += piece[last + 1:]
        if max_line is not None and len(carry) > max_line:
            raise LineTooLong(len(carry))
    if carry:
        tail = np.frombuffer(bytes(carry), np.uint8)
        yield tail, 0, len(tail)


def iter_blocks(
    chunks: Iterable[bytes],
    ncols: int,
    block_rows: int,
    *,
    kind: str = "float",
    name: str = "<data>",
    stats: ParseStats | None = None,
    dtype: np.dtype | type = np.float64,
    pool: BlockPool | None = None,
    nonfinite: str = "refuse",
) -> Iterator[Block]:
    """Parse a byte stream (any chunking) into blocks of ``block_rows`` rows (the last may be
    shorter).

    ``kind`` is ``"float"`` (values of ``dtype``: float64, or float32 rounded once from the
    exact double) or ``"bool"``. Without ``pool`` every block owns fresh arrays; with a
    :class:`BlockPool` (of ``block_rows`` rows, ``ncols`` columns and matching dtype: ``dtype``
    for floats, uint8 for bool) the blocks are views of pool buffers, no copy is made and the
    consumer must :meth:`BlockPool.release` each one. Pieces are parsed in place; only a line
    split across two pieces is copied. Raises :class:`FormatError` with file, 1-based line and
    column on the first bad token or ragged row, and on an empty stream. Non-finite values are
    refused with ``nonfinite="refuse"`` (the default) and stored as NaN (counted in
    ``stats.nonfinite``) with ``nonfinite="nan"``. A line too long for ``ncols`` values
    (:func:`max_line_bytes`) is refused before it is buffered.
    """
    if block_rows < 1:
        raise ValueError("block_rows must be ≥ 1")
    if nonfinite not in ("refuse", "nan"):
        raise ValueError(f"nonfinite must be 'refuse' or 'nan', not {nonfinite!r}")
    nan_ok = nonfinite == "nan"
    stats = stats if stats is not None else ParseStats()
    is_float = kind == "float"
    vdtype = np.dtype(dtype) if is_float else np.dtype(np.uint8)
    own = pool is None
    if pool is None:
        pool = BlockPool(1, block_rows, ncols, vdtype)
    elif pool.dtype != vdtype or pool.block_rows != block_rows:
        raise ValueError("pool buffers do not match block_rows / dtype")
    st = {"slow": [np.empty(SLOW_CAPACITY, np.int64) for _ in range(3)],
          "filled": 0, "line0": 0, "start": 0}
    bufs = [pool.acquire()]

    def emit(rows: int) -> Block:
        ids, out = bufs[0]
        if own:
            ids_v, out_v = ids[:rows].copy(), out[:rows].copy()
        else:
            ids_v, out_v = ids[:rows], out[:rows]
        if not is_float:
            out_v = out_v.view(bool)
        elif nan_ok:
            stats.nonfinite += int(np.count_nonzero(np.isnan(out_v)))
        blk = Block(st["start"], ids_v, out_v, None if own else bufs[0])
        stats.rows += rows
        st["start"] += rows
        st["line0"] += rows
        st["filled"] = 0
        return blk

    def region(buf: np.ndarray, pos: int, end: int) -> Iterator[Block]:
        """Parse the whole lines ``buf[pos:end]``, yielding each block as it fills."""
        while pos < end:
            ids, out = bufs[0]
            filled = st["filled"]
            if is_float:
                sp, sr, sc = st["slow"]
                rows, pos2, nslow, err, erow, ecol, epos = parse_float_lines(
                    buf, pos, end, ncols, ids, out, filled, block_rows - filled, sp, sr, sc,
                    nan_ok)
                for k in range(nslow):
                    a = int(sp[k])
                    b = a
                    while b < end and buf[b] not in (44, 10, 13):
                        b += 1
                    with np.errstate(over="ignore"):   # float32: beyond its range → ±inf
                        out[sr[k], sc[k]] = float(bytes(buf[a:b]))
                    if not math.isfinite(out[sr[k], sc[k]]):
                        if not nan_ok:
                            raise nonfinite_error(name, st["line0"] + int(sr[k]) + 1,
                                                  int(sc[k]) + 2, _token_text(buf, a, end))
                        out[sr[k], sc[k]] = np.nan
                stats.slow_tokens += nslow
                if rows == 0 and pos2 == pos and not err:
                    # one line holds more slow tokens than the side table: grow it
                    st["slow"] = [np.empty(2 * len(sp), np.int64) for _ in range(3)]
                    continue
            else:
                rows, pos2, err, erow, ecol, epos = parse_bool_lines(
                    buf, pos, end, ncols, ids, out, filled, block_rows - filled)
            st["filled"] = filled = filled + rows
            pos = pos2
            if err:
                tok = _token_text(buf, int(epos), end)
                _raise(int(err), name, st["line0"] + filled + 1, int(ecol), ncols, tok, kind)
            if filled == block_rows:
                yield emit(filled)
                if own:
                    continue
                bufs[0] = pool.acquire()

    try:
        try:
            for buf, a, b in line_regions(chunks, stats, max_line_bytes(ncols)):
                yield from region(buf, a, b)
        except LineTooLong as exc:
            raise FormatError(name, f"line longer than {exc.args[0]:,} bytes without a line "
                              "end", line=st["line0"] + st["filled"] + 1,
                              expected=f"{ncols + 1} fields of at most ~{MAX_FIELD_BYTES} "
                              "bytes each") from None
        if st["filled"]:
            yield emit(st["filled"])
        elif not own:
            pool.give_back(bufs[0])  # the buffer taken after the last full block
        if st["start"] == 0:
            raise FormatError(name, "empty file", line=1, expected="at least one data row")
    finally:
        bufs.clear()

