"""Parser for header-less numeric CSV matrices whose first column is a text label.

The layout is the AHBA RNA-seq ``RNAseqTPM.csv`` / ``RNAseqCounts.csv``: every line is
``label,v1,...,vN`` with exactly ``N`` values, the label being a gene symbol. The numba kernel
:func:`atlas_engine.kernels.labelscan.parse_label_lines` reads the lines with the float routines
of :mod:`atlas_engine.kernels.csvparse`, so every value is bit-identical to Python's
``float(token)`` (float32: the exact double rounded once), and the accepted float syntax is the
same as :mod:`.blockparse`'s.

Labels
------
* unquoted: every byte up to the first ``,`` (a ``"`` inside is kept literally, as pandas and
  Python's ``csv`` module read it);
* double-quoted: ``"..."`` with ``""`` standing for one ``"``; commas inside are part of the
  label; the closing quote must be followed by the delimiter. A quoted label cannot span lines.

An empty label (``,1,2`` or ``"",1,2``) is an error, as is an unterminated quote. Labels are
decoded as UTF-8. The kernel records each label as byte offsets into the buffer (start, end,
and whether it needs unescaping); the driver here turns them into a numpy ``StringDType`` array
and the kernel's error codes into :class:`~atlas_engine.errors.FormatError` naming file, line
and column.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError
from ..kernels.csvparse import E_NONFINITE
from ..kernels.labelscan import (
    E_LABEL,
    LABEL_ESCAPED,
    LABEL_PLAIN,
    LABEL_QUOTED,
    parse_label_lines,
)
from .blockparse import (
    MAX_FIELD_BYTES,
    SLOW_CAPACITY,
    LineTooLong,
    ParseStats,
    _token_text,
    line_regions,
    max_line_bytes,
    nonfinite_error,
    shape_error,
    slow_tokens,
)

__all__ = [
    "E_LABEL", "LABEL_ESCAPED", "LABEL_PLAIN", "LABEL_QUOTED", "LabelBlock", "count_fields",
    "iter_label_blocks", "parse_label_lines", "read_label_matrix",
]


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
            slow_tokens(buf, end, out, sp, sr, sc, nslow, nan_ok, name, state["start"])
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
