"""Numba kernels for header-less numeric CSV lines ``id,v1,...,vN`` (integer id, then values).

Pure compute: a ``uint8`` buffer holding whole lines in, preallocated arrays filled, and plain
integers out (rows parsed, the next position, an error code with its row, field and byte
position). No file access and no messages: :mod:`atlas_engine.convert.blockparse` feeds the
bytes and turns the codes into errors naming file, line and column. Every kernel releases the
GIL (``nogil``) and is cached on disk (:func:`._cache.cached_njit`).

* :func:`parse_float_lines` - lines of decimal values into a float64 / float32 block, with
  a side table of the rare tokens left to Python ``float()``.
* :func:`parse_bool_lines` - lines of ``0`` / ``1`` values into a uint8 block.
* :func:`_parse_values` - the values of one line after its first field; shared with the
  label-column kernel of :mod:`.labelscan`.
* :func:`_parse_id` - the integer id leading a line; the float tokens are read by
  :mod:`.floatscan` (:func:`~.floatscan._fast_float`, :func:`~.floatscan._parse_float`).

Float tokens are read by :mod:`.floatscan`, bit for bit as Python's ``float()`` reads them.

Accepted float syntax: optional sign, digits with an optional ``.`` and fraction, optional
``e``/``E`` exponent, as Python ``float()`` reads them, and the tokens ``nan``, ``inf``,
``infinity`` (any case, optionally signed). A non-finite value (those tokens, or a number
beyond the range of the output dtype) is reported as :data:`E_NONFINITE` unless ``nan_ok``,
which stores NaN instead. Rejected (:data:`E_TOKEN`): empty fields, surrounding spaces,
underscores, hexadecimal. Lines end in ``\\n`` or ``\\r\\n`` (a ``\\r`` alone is a bad token);
the last line of the buffer may lack its newline. Boolean lines accept exactly ``0`` and ``1``.
"""

from __future__ import annotations

import numpy as np

from ._cache import cached_njit
from .floatscan import _FAST_MARGIN, _fast_float, _parse_float

# error codes returned by the kernels
OK = 0
E_FEW = 1        # line ended before ncols values
E_MANY = 2       # more than ncols values on a line
E_TOKEN = 3      # a value token is not a number
E_ID = 4         # the id token is not an integer
E_EMPTY_LINE = 5
E_NONFINITE = 7  # nan / inf / out of the dtype's range (6 is :data:`.labelscan.E_LABEL`)


@cached_njit(nogil=True)
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


@cached_njit(nogil=True)
def _line_end(buf: np.ndarray, i: int, end: int) -> int:
    """Index just past the ``\\n`` ending the line at ``i`` (or ``end``)."""
    while i < end and buf[i] != 10:
        i += 1
    return i + 1 if i < end else end


#: :func:`_parse_values` outcomes beside the error codes: the slow-token side table is full
#: (stop before the line), and a ``\r`` not followed by ``\n`` ends the line
_FULL = -1
_BAD_CR = -2


@cached_njit(nogil=True, inline="always")
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


@cached_njit(nogil=True)
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


@cached_njit(nogil=True)
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
