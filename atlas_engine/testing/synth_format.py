"""Fast text rendering of numeric CSV rows, and deterministic zip members.

The matrices of the real files are large (58,692 × 3,702 values, about 4 GB of text), so rows are
rendered by numba kernels (in :mod:`atlas_engine.kernels.synthtext`) straight into a byte buffer
instead of ``repr`` per value.

A value is given as an integer mantissa ``m`` and a count ``f`` of fractional digits (value =
``m / 10**f``). For AHBA the mantissa has 15 significant digits; any decimal with at most 15
significant digits survives a round trip through a double, so Python's shortest round-trip
``repr(float(text))`` of such a value is exactly the decimal with its trailing zeros removed
(keeping one digit after the point). With ``strip=True`` the kernels write precisely that text.
Tokens that must carry 16–17 digits are rendered by Python's ``repr`` and spliced in through an
override list (positions in the flattened row-major block, plus their bytes).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO

import numpy as np

from ..kernels.synthtext import _render_decimal_rows, _render_flag_rows

try:  # isal's deflate is ~3x faster than zlib at the same ratio; output is valid deflate
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover - isal is a dependency; stdlib fallback
    import zlib as _deflate

#: Timestamp stored for every generated zip member (fixed, so output is byte-identical).
ZIP_DATE_TIME = (2013, 8, 22, 12, 0, 0)
#: isal compression level (0-3); 3 gives about zlib-6 ratios at a few hundred MB/s.
DEFLATE_LEVEL = 3


def render_decimal_rows(
    labels: np.ndarray,
    mantissa: np.ndarray,
    frac_digits: np.ndarray,
    *,
    strip: bool = True,
    override_pos: np.ndarray | Sequence[int] = (),
    override_text: Sequence[str] = (),
) -> bytes:
    """CSV text for rows ``label,value,...`` with values ``mantissa / 10**frac_digits``.

    Parameters
    ----------
    labels : (n,) int array
        First field of each row (probe id or row number), non-negative.
    mantissa : (n, s) int64 array, non-negative
    frac_digits : (n, s) int array
        Fractional digits of each value (0..18).
    strip : bool
        Drop trailing fractional zeros, keeping one digit (``repr`` style); otherwise print
        exactly ``frac_digits`` decimals (``%.6f`` style).
    override_pos, override_text : increasing flat indices ``i * s + j`` and ASCII tokens
        Tokens written verbatim instead of the values at those positions.
    """
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    mantissa = np.ascontiguousarray(mantissa, dtype=np.int64)
    frac = np.ascontiguousarray(frac_digits, dtype=np.int8)
    n, s = mantissa.shape
    over_pos = np.asarray(override_pos, dtype=np.int64)
    if over_pos.size != len(override_text):
        raise ValueError("override_pos and override_text differ in length")
    lengths = np.fromiter(map(len, override_text), dtype=np.int64, count=len(override_text))
    over_off = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=over_off[1:])
    over_buf = np.frombuffer("".join(override_text).encode("ascii"), dtype=np.uint8)
    widest = int(lengths.max(initial=0))
    width = max(20 + int(frac.max(initial=0)), widest) + 1
    out = np.empty(n * (s * width + 21) + 1, dtype=np.uint8)
    used = _render_decimal_rows(labels, mantissa, frac, strip, over_pos, over_off, over_buf, out)
    return out[:used].tobytes()


def render_flag_rows(labels: np.ndarray, flags: np.ndarray) -> bytes:
    """CSV text for rows ``label,0,1,...`` (PACall style)."""
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    flags = np.ascontiguousarray(flags, dtype=np.bool_)
    n, s = flags.shape
    out = np.empty(n * (2 * s + 21) + 1, dtype=np.uint8)
    used = _render_flag_rows(labels, flags, out)
    return out[:used].tobytes()


def quote(text: str) -> str:
    """Always double-quote (Probes.csv / SampleAnnot.csv string columns)."""
    return '"' + text.replace('"', '""') + '"'


def quote_minimal(text: str) -> str:
    """Quote only when needed (a comma, quote or newline in the field)."""
    if any(c in text for c in ',"\n\r'):
        return quote(text)
    return text


@contextmanager
def zip_member(zf: zipfile.ZipFile, name: str) -> Iterator[IO[bytes]]:
    """Open a deflated member of ``zf`` for streaming writes, with a fixed timestamp and mode.

    The member is written with zip64 extensions (sizes are not known in advance) and deflated by
    isal when it is installed (the ``zipfile`` writer otherwise uses zlib).
    """
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    with zf.open(info, "w", force_zip64=True) as fh:
        # zipfile picks zlib itself; swap in the faster, equally valid deflate stream when the
        # writer exposes its compressor (CPython does) and nothing has been written yet.
        if getattr(fh, "_compressor", None) is not None and _deflate.__name__ != "zlib":
            fh._compressor = _deflate.compressobj(DEFLATE_LEVEL, _deflate.DEFLATED, -15)
        yield fh
