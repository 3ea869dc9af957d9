"""Numba kernel for count matrices in CSV text, straight into sparse rows (CSR pieces).

Pure compute: a ``uint8`` buffer holding whole lines in, CSR arrays filled, plain integers out.
Every line is ``id,c1,...,cN``: a row name (possibly R-quoted, ``"1"``; recorded as a byte span
with the quotes stripped, not decoded) and ``N`` non-negative integer counts. Zeros are skipped
without being stored. :mod:`atlas_engine.convert.countparse` feeds the bytes, decodes the row
names and turns the error codes into messages naming file, line and column.

* :func:`parse_count_lines` - lines of counts into ``indptr`` / ``indices`` / ``data``.

Accepted count tokens: ASCII digits, value ≤ 2**31 - 1 (int32; larger is :data:`E_BIG`).
Anything else (an empty field, a sign, a decimal point, ``NA``, spaces) is :data:`E_TOKEN`.
Lines end in ``\\n`` or ``\\r\\n``; the last line of the buffer may lack its newline.
"""

from __future__ import annotations

from ._cache import cached_njit

# error codes returned by the kernel (shape codes as in :mod:`.csvparse`)
OK = 0
E_FEW = 1
E_MANY = 2
E_TOKEN = 3
E_EMPTY_LINE = 5
E_BIG = 6
E_ID = 7


@cached_njit(nogil=True)
def parse_count_lines(buf, pos, end, ncols, max_rows, max_nnz, id_start, id_end,
                      indptr, indices, data, row0, nnz0):
    """Parse whole lines of ``buf[pos:end]`` into CSR pieces.

    Fills ``id_start/id_end[row0 + r]`` (byte span of the row name, quotes stripped),
    ``indptr[row0 + r + 1]`` and ``indices/data[nnz0 ...]``. Stops before a line that would
    exceed ``max_rows`` rows or ``max_nnz`` stored values (it is then parsed by the next call).

    Returns ``(rows, pos, nnz, err, err_row, err_col, err_pos)``; ``err_row`` counts from
    ``row0`` and ``err_col`` is 1-based (the id is column 1). ``err == -1`` (no row
    parsed): the first line's non-zero counts do not fit in the ``max_nnz - nnz0`` left.
    """
    rows = 0
    nnz = nnz0
    while pos < end and rows < max_rows:
        line_start = pos
        i = pos
        if buf[i] == 10 or (buf[i] == 13 and i + 1 < end and buf[i + 1] == 10):
            return rows, line_start, nnz, E_EMPTY_LINE, rows, 1, i
        # id: up to the first comma; R quotes stripped
        a = i
        if buf[i] == 34:
            a = i + 1
            i += 1
            while i < end and buf[i] != 34 and buf[i] != 10:
                i += 1
            if i >= end or buf[i] != 34:
                return rows, line_start, nnz, E_ID, rows, 1, line_start
            b = i
            i += 1
        else:
            while i < end and buf[i] != 44 and buf[i] != 10 and buf[i] != 13:
                i += 1
            b = i
        if b == a:
            return rows, line_start, nnz, E_ID, rows, 1, line_start
        if i >= end or buf[i] != 44:
            return rows, line_start, nnz, E_FEW, rows, 2, i
        i += 1
        start_nnz = nnz
        col = 0
        while True:
            # one count token
            if col >= ncols:
                return rows, line_start, nnz0, E_MANY, rows, col + 2, i
            v = 0
            t0 = i
            while i < end:
                c = buf[i]
                if c < 48 or c > 57:
                    break
                v = v * 10 + (c - 48)
                if v > 2147483647:
                    return rows, line_start, nnz0, E_BIG, rows, col + 2, t0
                i += 1
            if i == t0:
                return rows, line_start, nnz0, E_TOKEN, rows, col + 2, t0
            if v != 0:
                if nnz >= max_nnz:
                    # no room: hand this line to the next call
                    if rows == 0:
                        return 0, line_start, nnz0, -1, 0, 0, 0
                    return rows, line_start, start_nnz, OK, 0, 0, 0
                indices[nnz] = col
                data[nnz] = v
                nnz += 1
            col += 1
            if i >= end or buf[i] == 10 or (buf[i] == 13 and i + 1 < end and buf[i + 1] == 10):
                break
            if buf[i] != 44:
                return rows, line_start, nnz0, E_TOKEN, rows, col + 1, t0
            i += 1
        if col < ncols:
            return rows, line_start, nnz0, E_FEW, rows, col + 2, i
        if i < end and buf[i] == 13:
            i += 1
        id_start[row0 + rows] = a
        id_end[row0 + rows] = b
        indptr[row0 + rows + 1] = nnz
        rows += 1
        pos = i + 1 if i < end else end
        nnz0 = nnz
    return rows, pos, nnz, OK, 0, 0, 0
