"""Parser for count matrices in CSV text, straight into sparse rows (CSR pieces).

Every line is ``id,c1,...,cN``: a row name (the cell's ``sample_name`` in the portal
``matrix.csv``, or an Entrez id, possibly R-quoted ``"1"``, in the 2018 exon / intron matrices)
and ``N`` non-negative integer counts. Zeros, the vast majority of a single-cell matrix, are
skipped without being stored: a block comes out as ``indptr`` / ``indices`` / ``data`` of the
rows it holds, never as a dense array. The numba kernel
:func:`atlas_engine.kernels.countscan.parse_count_lines` parses the lines; the driver
:func:`iter_count_blocks` here feeds it the byte stream, decodes the row names and turns its
error codes into :class:`~atlas_engine.errors.FormatError`.

Accepted count tokens: ASCII digits, value ≤ 2**31 - 1 (int32). Anything else (an empty field,
a sign, a decimal point, ``NA``, spaces) is refused with the file, 1-based line and column.
Lines end in ``\\n`` or ``\\r\\n``; a missing newline at the end of the data is accepted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError
from ..kernels.countscan import (
    E_BIG,
    E_EMPTY_LINE,
    E_FEW,
    E_ID,
    E_MANY,
    E_TOKEN,
    OK,
    parse_count_lines,
)
from .blockparse import ParseStats, line_regions, shape_error

__all__ = [
    "E_BIG", "E_EMPTY_LINE", "E_FEW", "E_ID", "E_MANY", "E_TOKEN", "OK", "CountBlock",
    "iter_count_blocks", "parse_count_lines",
]

_INT32_MAX = 2**31 - 1


@dataclass
class CountBlock:
    """Rows ``start .. start + len(names)`` (0-based data rows) as CSR pieces."""

    start: int
    names: list[str]
    indptr: np.ndarray    # int64 (rows + 1,), starting at 0
    indices: np.ndarray   # int32 column of each stored count
    data: np.ndarray      # int32 counts (never 0)
    #: bytes of the stream consumed up to the end of this block (for resuming)
    end_offset: int = 0

    @property
    def n_rows(self) -> int:
        return len(self.names)


def _token_text(buf: np.ndarray, pos: int, end: int) -> str:
    b = pos
    while b < end and buf[b] not in (44, 10, 13):
        b += 1
    return bytes(buf[pos:b]).decode("utf-8", "replace")[:60]


def _raise(code: int, name: str, line: int, col: int, ncols: int, tok: str) -> None:
    shape = shape_error(code, name, line, col, f"{ncols + 1} fields (a row name and {ncols} counts)")
    if shape is not None:
        raise shape
    if code == E_ID:
        raise FormatError(name, "missing or unterminated row name", line=line, column=1,
                          expected="a cell or gene identifier")
    if code == E_BIG:
        raise FormatError(name, f"count {tok!r} too large", line=line, column=col,
                          expected=f"a count ≤ {_INT32_MAX}")
    raise FormatError(name, f"bad count token {tok!r}", line=line, column=col,
                      expected="a non-negative integer count")


def iter_count_blocks(
    chunks: Iterable[bytes],
    ncols: int,
    block_rows: int,
    *,
    name: str = "<data>",
    first_line: int = 2,
    start_row: int = 0,
    start_offset: int = 0,
    nnz_capacity: int | None = None,
    stats: ParseStats | None = None,
) -> Iterator[CountBlock]:
    """Parse the data lines of a count CSV (header already consumed) into :class:`CountBlock`.

    Parameters
    ----------
    chunks : iterable of bytes
        The data lines, in any chunking.
    ncols : int
        Counts per line (the header's width minus the row-name column).
    block_rows : int
        Rows per block (the last may be shorter; a block also ends early when it holds
        ``nnz_capacity`` stored counts).
    name : str
        File name used in errors.
    first_line : int
        1-based line number of the first data line in the file (2 after one header line).
    start_row, start_offset : int
        Data row index and byte offset of the first line in ``chunks`` (when resuming).
    nnz_capacity : int, optional
        Stored counts per block (default ``block_rows * ncols // 8``, grown when one row needs
        more).

    Raises
    ------
    FormatError
        On the first bad token, ragged row or empty line (file, line, column, expectation), and
        on a stream with no data line at all.
    """
    if block_rows < 1:
        raise ValueError("block_rows must be ≥ 1")
    stats = stats if stats is not None else ParseStats()
    cap = int(nnz_capacity or max(1024, block_rows * ncols // 8))
    state = {"row": start_row, "offset": start_offset}

    def fresh(cap: int) -> tuple[np.ndarray, ...]:
        return (np.zeros(block_rows + 1, np.int64), np.empty(cap, np.int32),
                np.empty(cap, np.int32), np.empty(block_rows, np.int64),
                np.empty(block_rows, np.int64))

    bufs = list(fresh(cap))
    names: list[str] = []
    filled = 0
    nnz = 0

    def emit() -> CountBlock:
        nonlocal filled, nnz, names
        indptr, indices, data = bufs[0], bufs[1], bufs[2]
        blk = CountBlock(state["row"], names, indptr[:filled + 1].copy(), indices[:nnz].copy(),
                         data[:nnz].copy(), state["offset"])
        state["row"] += filled
        stats.rows += filled
        names = []
        filled = 0
        nnz = 0
        return blk

    consumed = start_offset
    for buf, a, b in line_regions(chunks, stats):
        pos = a
        while pos < b:
            indptr, indices, data, id_s, id_e = bufs
            rows, pos2, nnz2, err, erow, ecol, epos = parse_count_lines(
                buf, pos, b, ncols, block_rows - filled, len(indices), id_s, id_e,
                indptr, indices, data, filled, nnz)
            if err == -1:
                if filled == 0:
                    # one row alone needs more room than the block has: grow the buffers
                    cap *= 2
                    bufs[1], bufs[2] = np.empty(cap, np.int32), np.empty(cap, np.int32)
                    continue
                state["offset"] = consumed + (pos - a)
                yield emit()
                continue
            if err:
                line = first_line + state["row"] - start_row + filled + int(erow)
                _raise(int(err), name, line, int(ecol), ncols, _token_text(buf, int(epos), b))
            for r in range(filled, filled + rows):
                names.append(bytes(buf[id_s[r]:id_e[r]]).decode("utf-8"))
            filled += rows
            nnz = int(nnz2)
            pos = int(pos2)
            if filled == block_rows or (pos < b and rows == 0):
                state["offset"] = consumed + (pos - a)
                yield emit()
        consumed += b - a
    if filled:
        state["offset"] = consumed
        yield emit()
    if state["row"] == start_row and start_row == 0:
        raise FormatError(name, "no data rows", line=first_line,
                          expected="at least one row of counts")
