"""Numba parser for header-less numeric CSV matrices whose first column is a text label.

The layout is the AHBA RNA-seq ``RNAseqTPM.csv`` / ``RNAseqCounts.csv``: every line is
``label,v1,...,vN`` with exactly ``N`` values, the label being a gene symbol. The float tokens
are read by the routines of :mod:`.blockparse` (``_fast_float`` / ``_parse_float``), so every
value is bit-identical to Python's ``float(token)`` (float32: the exact double rounded once),
and the accepted float syntax is the same (see :mod:`.blockparse`).

Labels
------
* unquoted: every byte up to the first ``,`` (a ``"`` inside is kept literally, as pandas and
  Python's ``csv`` module read it);
* double-quoted: ``"..."`` with ``""`` standing for one ``"``; commas inside are part of the
  label; the closing quote must be followed by the delimiter. A quoted label cannot span lines.

An empty label (``,1,2`` or ``"",1,2``) is an error, as is an unterminated quote. Labels are
decoded as UTF-8. The kernel records each label as byte offsets into the buffer (start, end,
and whether it needs unescaping); the driver turns them into a numpy ``StringDType`` array.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numba
import numpy as np

from ..errors import FormatError
from .blockparse import (
    _BAD_CR,
    _FULL,
    E_EMPTY_LINE,
    E_NONFINITE,
    E_TOKEN,
    MAX_FIELD_BYTES,
    OK,
    SLOW_CAPACITY,
    LineTooLong,
    ParseStats,
    _parse_values,
    _token_text,
    line_regions,
    max_line_bytes,
    nonfinite_error,
    shape_error,
)

#: error code of a bad label (empty, unterminated quote, text after the closing quote)
E_LABEL = 6

#: label kinds recorded by the kernel
LABEL_PLAIN = 0
LABEL_QUOTED = 1
LABEL_ESCAPED = 2   # quoted and holding ``""`` pairs


@numba.njit(nogil=True, cache=True)
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


@numba.njit(nogil=True, cache=True)
def parse_label_lines(buf, pos, end, ncols, lab_start, lab_stop, lab_kind, out, row0, max_rows,
                      slow_pos, slow_row, slow_col, nan_ok=False):
    """Parse whole lines of ``buf[pos:end]`` into ``lab_*[row0:]`` / ``out[row0:, :]``.

    ``buf[pos:end]`` must hold whole lines (the last may lack its newline). Parses at most
    ``max_rows`` lines. Returns ``(rows, pos, nslow, err, err_row, err_col, err_pos)`` as
    :func:`.blockparse.parse_float_lines` does; the label of row ``r`` is
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


# -------------------------------------------------------------------------------------------
# Python driver
# -------------------------------------------------------------------------------------------

@dataclass
class LabelBlock:
    """One parsed block: rows ``start .. start+len(labels)`` of the matrix (0-based)."""

    start: int
    labels: np.ndarray     # StringDType (rows,)
    values: np.ndarray     # float64/float32 (rows, ncols)


def _decode(buf: np.ndarray, a: int, b: int, kind: int) -> str:
    text = bytes(buf[a:b]).decode("utf-8", "replace")
    return text.replace('""', '"') if kind == LABEL_ESCAPED else text


def _label_text(buf: np.ndarray, pos: int, end: int) -> str:
    b = pos
    while b < end and buf[b] not in (10, 13):
        b += 1
    line = bytes(buf[pos:b]).decode("utf-8", "replace")
    if line.startswith('"'):
        return line[:60]
    return line.split(",", 1)[0][:60]


def _raise(code: int, name: str, line: int, col: int, ncols: int, tok: str) -> None:
    shape = shape_error(code, name, line, col, f"{ncols + 1} fields (a label and {ncols} values)",
                        f"{ncols + 1} comma-separated fields")
    if shape is not None:
        raise shape
    if code == E_LABEL:
        raise FormatError(name, f"bad label {tok!r}", line=line, column=1,
                          expected='a non-empty label, plain or "double-quoted" (with "" for a '
                          "quote) on one line, followed by a comma")
    if code == E_NONFINITE:
        raise nonfinite_error(name, line, col, tok)
    raise FormatError(name, f"bad value token {tok!r}", line=line, column=col,
                      expected="a decimal number")


def count_fields(line: bytes) -> int:
    """Fields of one ``label,v1,...`` line (commas inside a quoted label do not count); -1 when
    a quoted label is not closed on the line."""
    line = line.rstrip(b"\r\n")
    start = 0
    if line.startswith(b'"'):
        k = 1
        while True:
            k = line.find(b'"', k)
            if k < 0:
                return -1
            if line[k + 1:k + 2] == b'"':
                k += 2
                continue
            start = k + 1
            break
    return line.count(b",", start) + 1


def iter_label_blocks(
    chunks: Iterable[bytes],
    ncols: int,
    block_rows: int,
    *,
    name: str = "<data>",
    stats: ParseStats | None = None,
    dtype: np.dtype | type = np.float64,
    nonfinite: str = "refuse",
) -> Iterator[LabelBlock]:
    """Parse a byte stream (any chunking) of ``label,v1,...,vN`` lines into blocks of
    ``block_rows`` rows (the last may be shorter), each owning its arrays.

    Values are ``dtype`` (float64, or float32 rounded once from the exact double). Raises
    :class:`FormatError` with file, 1-based line and column on the first bad label or token,
    ragged row or empty line, and on an empty stream. Non-finite values as
    :func:`.blockparse.iter_blocks` (``nonfinite``).
    """
    if block_rows < 1:
        raise ValueError("block_rows must be ≥ 1")
    if ncols < 1:
        raise ValueError("ncols must be ≥ 1")
    if nonfinite not in ("refuse", "nan"):
        raise ValueError(f"nonfinite must be 'refuse' or 'nan', not {nonfinite!r}")
    nan_ok = nonfinite == "nan"
    stats = stats if stats is not None else ParseStats()
    vdtype = np.dtype(dtype)
    state = {"slow": [np.empty(SLOW_CAPACITY, np.int64) for _ in range(3)], "filled": 0,
             "start": 0}
    lab_start = np.empty(block_rows, np.int64)
    lab_stop = np.empty(block_rows, np.int64)
    lab_kind = np.empty(block_rows, np.int8)
    labels: list[str] = []
    out = np.empty((block_rows, ncols), vdtype)

    def emit() -> LabelBlock:
        nonlocal out
        rows = state["filled"]
        if nan_ok:
            stats.nonfinite += int(np.count_nonzero(np.isnan(out[:rows])))
        blk = LabelBlock(state["start"], np.array(labels, dtype=np.dtypes.StringDType()),
                         out[:rows] if rows == block_rows else out[:rows].copy())
        out = np.empty((block_rows, ncols), vdtype)
        labels.clear()
        stats.rows += rows
        state["start"] += rows
        state["filled"] = 0
        return blk

    def region(buf: np.ndarray, pos: int, end: int) -> Iterator[LabelBlock]:
        while pos < end:
            filled = state["filled"]
            sp, sr, sc = state["slow"]
            rows, pos2, nslow, err, _erow, ecol, epos = parse_label_lines(
                buf, pos, end, ncols, lab_start, lab_stop, lab_kind, out, filled,
                block_rows - filled, sp, sr, sc, nan_ok)
            for k in range(nslow):
                a = int(sp[k])
                b = a
                while b < end and buf[b] not in (44, 10, 13):
                    b += 1
                with np.errstate(over="ignore"):   # float32: beyond its range → ±inf
                    out[sr[k], sc[k]] = float(bytes(buf[a:b]))
                if not np.isfinite(out[sr[k], sc[k]]):
                    if not nan_ok:
                        raise nonfinite_error(name, state["start"] + int(sr[k]) + 1,
                                              int(sc[k]) + 2, _token_text(buf, a, end))
                    out[sr[k], sc[k]] = np.nan
            stats.slow_tokens += nslow
            for r in range(filled, filled + rows):
                labels.append(_decode(buf, int(lab_start[r]), int(lab_stop[r]),
                                      int(lab_kind[r])))
            if rows == 0 and pos2 == pos and not err:
                state["slow"] = [np.empty(2 * len(sp), np.int64) for _ in range(3)]
                continue
            state["filled"] = filled = filled + rows
            pos = pos2
            if err:
                line = state["start"] + filled + 1
                tok = (_label_text(buf, int(epos), end) if err == E_LABEL
                       else _token_text(buf, int(epos), end))
                _raise(int(err), name, line, int(ecol), ncols, tok)
            if filled == block_rows:
                yield emit()

    try:
        for buf, a, b in line_regions(chunks, stats, max_line_bytes(ncols)):
            yield from region(buf, a, b)
    except LineTooLong as exc:
        raise FormatError(name, f"line longer than {exc.args[0]:,} bytes without a line end",
                          line=state["start"] + state["filled"] + 1,
                          expected=f"{ncols + 1} fields of at most ~{MAX_FIELD_BYTES} bytes "
                          "each") from None
    if state["filled"]:
        yield emit()
    if state["start"] == 0:
        raise FormatError(name, "empty file", line=1, expected="at least one data row")


def _first_line(chunks: Iterable[bytes]) -> tuple[bytes | None, Iterator[bytes]]:
    """The first line of a stream (``None`` for an empty stream), and the stream again from
    its beginning."""
    it = iter(chunks)
    seen: list[bytes] = []
    for piece in it:
        seen.append(piece)
        if b"\n" in piece:
            break
    head = b"".join(seen)
    line = head.split(b"\n", 1)[0] if head else None

    def again() -> Iterator[bytes]:
        yield head
        yield from it

    return line, again()


def read_label_matrix(
    chunks: Iterable[bytes],
    *,
    ncols: int | None = None,
    name: str = "<data>",
    dtype: np.dtype | type = np.float64,
    block_rows: int = 4096,
    stats: ParseStats | None = None,
    nonfinite: str = "refuse",
) -> tuple[np.ndarray, np.ndarray]:
    """The whole ``label,v1,...`` matrix: ``(labels StringDType (n,), values (n, ncols))``.

    ``ncols`` defaults to the number of values on the first line.
    """
    if ncols is None:
        line, chunks = _first_line(chunks)
        if line is None:
            raise FormatError(name, "empty file", line=1, expected="at least one data row")
        if not line.strip(b"\r"):
            raise FormatError(name, "empty line", line=1, column=1,
                              expected="label,value,... rows")
        nf = count_fields(line)
        if nf < 0:
            raise FormatError(name, f"bad label {line[:60].decode('utf-8', 'replace')!r}",
                              line=1, column=1, expected="a closing quote on the same line")
        ncols = nf - 1
        if ncols < 1:
            raise FormatError(name, "a row without values", line=1, column=2,
                              expected="label,value,... rows")
    blocks = list(iter_label_blocks(chunks, ncols, block_rows, name=name, stats=stats,
                                    dtype=dtype, nonfinite=nonfinite))
    labels = np.concatenate([b.labels for b in blocks])
    values = np.concatenate([b.values for b in blocks]) if len(blocks) > 1 else blocks[0].values
    return labels, values
