"""Numba routines reading one decimal float token from a ``uint8`` buffer, bit for bit as
Python's ``float(token)`` (the token level under :mod:`.csvparse`'s line kernels).

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
  recorded in the side table and the caller converts it with Python ``float()``.

The syntax accepted and the error codes returned are described in :mod:`.csvparse`.
"""

from __future__ import annotations

import math

import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from ._cache import cached_njit

_P10 = np.array([10.0**i for i in range(23)], dtype=np.float64)
_P5 = np.array([5**i for i in range(23)], dtype=np.uint64)
_P5BITS = np.array([int(5**i).bit_length() for i in range(23)], dtype=np.int64)
_TWO53 = np.uint64(1) << np.uint64(53)


@cached_njit(nogil=True, inline="always")
def _bitlen(q: np.uint64) -> int:
    """Number of significant bits of ``q`` (0 for 0), via the exponent of ``float(q)``."""
    if q == 0:
        return 0
    nb = math.frexp(np.float64(q))[1]
    # float(q) may round up to the next power of two
    if nb > 64 or (q >> np.uint64(nb - 1)) == 0:
        nb -= 1
    return nb


@cached_njit(nogil=True, inline="always")
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


@cached_njit(nogil=True)
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


@cached_njit(nogil=True, inline="always")
def _lower(c: np.uint8) -> int:
    c = int(c)
    if 65 <= c <= 90:
        return c + 32
    return c


@cached_njit(nogil=True)
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


@cached_njit(nogil=True)
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


@cached_njit(nogil=True, inline="always")
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


@cached_njit(nogil=True, inline="always")
def _eight_digits(t: np.uint64) -> np.uint64:
    """The value of eight decimal digits held one per byte (``t``: bytes minus ``'0'``, first
    digit in the lowest byte): pairs, then quads, then the whole, by three multiplications."""
    v = t * np.uint64(10) + (t >> _U8)
    v = ((v & _PAIR_MASK) * _MUL_A + ((v >> np.uint64(16)) & _PAIR_MASK) * _MUL_B)
    return (v >> np.uint64(32)) & np.uint64(0xFFFFFFFF)


@cached_njit(nogil=True, inline="always")
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
