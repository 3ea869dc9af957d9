"""Block parser for header-less numeric CSV matrices with a leading integer id column.

The layout is Allen's ``MicroarrayExpression.csv`` / ``PACall.csv`` and BrainSpan's
``expression_matrix.csv``: every line is ``id,v1,...,vN`` with exactly ``N`` values. The numba
kernels of :mod:`atlas_engine.kernels.csvparse` work on raw bytes holding whole lines, release
the GIL, and fill preallocated arrays; the Python driver :func:`iter_blocks` here feeds them a
byte stream, yields fixed-height row blocks and turns the kernels' error codes into
:class:`~atlas_engine.errors.FormatError` naming file, line and column.

Float tokens and exactness
--------------------------
Every float is the double Python's ``float(token)`` gives, bit for bit (float32: the exact
double rounded once); how the kernels get there is described in
:mod:`atlas_engine.kernels.csvparse`. The rare tokens the kernels leave aside (more than 19
digits, large exponents, denormals) are converted here with Python ``float()`` (counted in
``ParseStats.slow_tokens``).

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
from typing import Any

import numpy as np

from ..errors import FormatError
from ..kernels.csvparse import (
    E_EMPTY_LINE,
    E_FEW,
    E_ID,
    E_MANY,
    E_NONFINITE,
    E_TOKEN,
    OK,
    parse_bool_lines,
    parse_float_lines,
)
from .zipstream import BOM, MappedPiece

__all__ = [
    "E_EMPTY_LINE", "E_FEW", "E_ID", "E_MANY", "E_NONFINITE", "E_TOKEN", "MAX_FIELD_BYTES", "OK",
    "SLOW_CAPACITY", "Block", "BlockPool", "LineTooLong", "ParseStats", "iter_blocks",
    "line_regions", "max_line_bytes", "nonfinite_error", "parse_bool_lines", "parse_float_lines",
    "shape_error", "slow_tokens", "strip_bom",
]

#: longest field a line may average (Allen writes ~20 bytes per value); bounds the buffered line
MAX_FIELD_BYTES = 64

#: capacity of the slow-token side table per kernel call
SLOW_CAPACITY = 1 << 14


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


def slow_tokens(buf: np.ndarray, end: int, out: np.ndarray, sp: np.ndarray, sr: np.ndarray,
                sc: np.ndarray, nslow: int, nan_ok: bool, name: str, line0: int) -> None:
    """Parse the ``nslow`` tokens the numba line parser left to Python (positions ``sp``, into
    ``out[sr, sc]``: text it does not read itself, such as ``1e400``, ``nan`` or hex floats)
    with Python's ``float``; a value that is not finite is NaN when ``nan_ok``, else a
    :class:`~atlas_engine.errors.FormatError` naming line (``line0`` + row + 1) and column."""
    for k in range(nslow):
        a = int(sp[k])
        b = a
        while b < end and buf[b] not in (44, 10, 13):
            b += 1
        with np.errstate(over="ignore"):   # float32: beyond its range → ±inf
            out[sr[k], sc[k]] = float(bytes(buf[a:b]))
        if not math.isfinite(out[sr[k], sc[k]]):
            if not nan_ok:
                raise nonfinite_error(name, line0 + int(sr[k]) + 1, int(sc[k]) + 2,
                                      _token_text(buf, a, end))
            out[sr[k], sc[k]] = np.nan


def max_line_bytes(ncols: int) -> int:
    """The longest line accepted for ``ncols`` values after the id or label."""
    return MAX_FIELD_BYTES * (ncols + 1) + 4096


class LineTooLong(Exception):
    """Raised by :func:`line_regions` when a line exceeds its bound (the caller knows where)."""


def strip_bom(chunks: Iterable[bytes | MappedPiece]) -> Iterator[bytes | MappedPiece]:
    """The byte stream ``chunks`` without a leading UTF-8 byte-order mark."""
    it = iter(chunks)
    head = b""
    for piece in it:
        if isinstance(piece, MappedPiece) and not head and len(piece) >= len(BOM):
            yield piece.after(len(BOM)) if piece.startswith(BOM) else piece
            break
        head += piece[:] if isinstance(piece, MappedPiece) else piece
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


def line_regions(chunks: Iterable[bytes | MappedPiece], stats: ParseStats,
                 max_line: int | None = None
                 ) -> Iterator[tuple[np.ndarray, int, int]]:
    """Whole lines out of a byte stream of any chunking: ``(buf, start, end)`` with
    ``buf[start:end]`` holding only complete lines (the last line of the stream may lack its
    newline). Pieces (``bytes`` or :class:`~.zipstream.MappedPiece` views of a mapped file)
    are used in place; only a line split across pieces is copied. Counts the
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
                carry += piece[:]
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
        yield (piece.view() if isinstance(piece, MappedPiece)
               else np.frombuffer(piece, np.uint8)), start, last + 1
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
                slow_tokens(buf, end, out, sp, sr, sc, nslow, nan_ok, name, st["line0"])
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


def warm_up(dtype: Any = np.float32) -> None:
    """Load the matrix parsers' compiled kernels (numba's on-disk cache) by parsing two tiny
    blocks, the values into ``dtype`` (the store's) and the present/absent calls. numba's
    first call in a process also initialises its compiler and runtime (~0.4 s here, much of it
    in LLVM outside the GIL): on a thread started before the tables are read, that is off the
    streams' critical path. Never raises (a failure shows up in the real parse)."""
    try:
        for data, kind, out in ((b"1,0.5\n", "float", np.dtype(dtype)),
                                (b"1,1\n", "bool", np.dtype(np.uint8))):
            for _ in iter_blocks([data], 1, 1, kind=kind, name="warm-up", dtype=out):
                pass
    except Exception:  # noqa: BLE001
        pass
