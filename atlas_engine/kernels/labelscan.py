"""Numba kernels for header-less numeric CSV lines whose first field is a text label.

Pure compute, as :mod:`.csvparse`: the layout is ``label,v1,...,vN`` (the AHBA RNA-seq
``RNAseqTPM.csv`` / ``RNAseqCounts.csv``, labels being gene symbols). The values are read by
:func:`.csvparse._parse_values`, so they are bit-identical to Python's ``float(token)`` with the
same accepted syntax. Labels are not decoded here: each is recorded as byte offsets into the
buffer and a kind (:data:`LABEL_PLAIN`, :data:`LABEL_QUOTED`, :data:`LABEL_ESCAPED`);
:mod:`atlas_engine.convert.labelparse` decodes them and turns error codes into messages.

* :func:`parse_label_lines` - lines of ``label,values`` into label offsets and a float block.
* :func:`_parse_label` - one label, plain or double-quoted.

Labels: unquoted, every byte up to the first ``,`` (a ``"`` inside is kept literally);
double-quoted, ``"..."`` with ``""`` standing for one ``"``, commas inside being part of the
label, the closing quote followed by the delimiter and the whole label on one line. An empty
label or an unterminated quote is :data:`E_LABEL`.

numba's on-disk cache of these kernels is keyed by this file only: after editing the routines
they call in :mod:`.csvparse`, touch this file so that the cached builds are recompiled.
"""

from __future__ import annotations

import numpy as np

from ._cache import cached_njit
from .csvparse import _BAD_CR, _FULL, E_EMPTY_LINE, E_TOKEN, OK, _parse_values

#: error code of a bad label (empty, unterminated quote, text after the closing quote)
E_LABEL = 6

#: label kinds recorded by the kernel
LABEL_PLAIN = 0
LABEL_QUOTED = 1
LABEL_ESCAPED = 2   # quoted and holding ``""`` pairs


@cached_njit(nogil=True)
def _parse_label(buf: np.ndarray, i: int, end: int):
    """Label at ``i``: ``(start, stop, kind, next_index, ok)``; ``next_index`` is at the
    delimiter (or line end) after the label."""
    if i < end and buf[i] == 34:
        a = i + 1
        j = a
        kind = LABEL_QUOTED
        while j < end:
            c = buf[j]
            if c == 34:
                if j + 1 < end and buf[j + 1] == 34:
                    kind = LABEL_ESCAPED
                    j += 2
                    continue
                break
            if c == 10 or c == 13:
                return a, j, kind, j, False      # unterminated
            j += 1
        if j >= end:
            return a, j, kind, j, False          # unterminated
        b = j
        j += 1
        ok = b > a and (j == end or buf[j] == 44 or buf[j] == 10 or buf[j] == 13)
        return a, b, kind, j, ok
    j = i
    while j < end:
        c = buf[j]
        if c == 44 or c == 10 or c == 13:
            break
        j += 1
    return i, j, LABEL_PLAIN, j, j > i


@cached_njit(nogil=True)
def parse_label_lines(buf, pos, end, ncols, lab_start, lab_stop, lab_kind, out, row0, max_rows,
                      slow_pos, slow_row, slow_col, nan_ok=False):
    """Parse whole lines of ``buf[pos:end]`` into ``lab_*[row0:]`` / ``out[row0:, :]``.

    ``buf[pos:end]`` must hold whole lines (the last may lack its newline). Parses at most
    ``max_rows`` lines. Returns ``(rows, pos, nslow, err, err_row, err_col, err_pos)`` as
    :func:`.csvparse.parse_float_lines` does; the label of row ``r`` is
    ``buf[lab_start[r]:lab_stop[r]]`` of kind ``lab_kind[r]``.
    """
    rows = 0
    nslow = 0
    while rows < max_rows and pos < end:
        line_start = pos
        r = row0 + rows
        if buf[pos] == 10 or (buf[pos] == 13 and pos + 1 < end and buf[pos + 1] == 10):
            return rows, line_start, nslow, E_EMPTY_LINE, rows, 1, pos
        a, b, kind, i, ok = _parse_label(buf, pos, end)
        if not ok:
            return rows, line_start, nslow, E_LABEL, rows, 1, pos
        lab_start[r] = a
        lab_stop[r] = b
        lab_kind[r] = kind
        slow_mark = nslow
        i, col, nslow, err = _parse_values(buf, i, end, ncols, out[r], r, slow_pos, slow_row,
                                           slow_col, nslow, nan_ok)
        if err == _FULL:
            return rows, line_start, slow_mark, OK, 0, 0, 0
        if err == _BAD_CR:
            return rows, line_start, slow_mark, E_TOKEN, rows, col + 1, i
        if err != OK:
            return rows, line_start, slow_mark, err, rows, col + 2, i
        pos = i + 1 if i < end else end
        rows += 1
    return rows, pos, nslow, OK, 0, 0, 0
