"""The data generator's kernels called directly (no wrapper): each against a plain numpy/Python oracle.

Covers :mod:`atlas_engine.kernels.synthtext`: the value kernels of
:mod:`atlas_engine.testing.synth_model` (``_combine_block``, ``_to_mantissa``), the CSV row
renderers of :mod:`atlas_engine.testing.synth_format` (``_write_uint``,
``_render_decimal_rows``, ``_render_flag_rows``) and the count-row writer of
:mod:`atlas_engine.testing.synth_celltypes` (``_format_rows``). The wrappers and the generated
files are tested in tests/test_synth.py and tests/test_celltypes.py. Inputs are drawn with fixed
seeds.
"""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import numba
import numpy as np
import pytest
from scipy import sparse

from atlas_engine.kernels import synthtext as st
from atlas_engine.testing import synth_celltypes, synth_format, synth_model

KERNELS = {"_combine_block", "_to_mantissa", "_write_uint", "_render_decimal_rows",
           "_render_flag_rows", "_format_rows"}


def _dispatchers(module) -> dict[str, numba.core.dispatcher.Dispatcher]:
    return {name: obj for name, obj in vars(module).items()
            if isinstance(obj, numba.core.dispatcher.Dispatcher)}


# -- where the kernels live ----------------------------------------------------------------------

def test_every_dispatcher_in_synthtext_belongs_to_it():
    found = _dispatchers(st)
    assert set(found) == KERNELS
    for name, fn in found.items():
        assert fn.__module__ == "atlas_engine.kernels.synthtext", name
        assert fn.targetoptions.get("nogil") is True, name
        assert type(fn._cache).__name__ != "NullCache", name  # compiled with cache=True


def test_generator_modules_use_the_moved_kernels_and_define_none():
    for module in (synth_model, synth_format, synth_celltypes):
        for name, fn in _dispatchers(module).items():
            assert fn.__module__ == "atlas_engine.kernels.synthtext", (module.__name__, name)
            assert fn is getattr(st, name)
    assert synth_model._combine_block is st._combine_block
    assert synth_model._to_mantissa is st._to_mantissa
    assert synth_format._render_decimal_rows is st._render_decimal_rows
    assert synth_format._render_flag_rows is st._render_flag_rows
    assert synth_celltypes._format_rows is st._format_rows
    for name in ("FLOOR", "FLOOR_MANTISSA", "CEILING", "PA_MIDPOINT", "PA_SLOPE"):
        assert getattr(synth_model, name) == getattr(st, name), name


def test_importing_the_kernels_package_does_not_import_synthtext():
    code = ("import sys, atlas_engine.kernels; "
            "print('atlas_engine.kernels.synthtext' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- _write_uint ---------------------------------------------------------------------------------

def test_write_uint_matches_str_int():
    rng = np.random.default_rng(11)
    values = [0, 1, 9, 10, 11, 99, 100, 101, 12345, 10**15, 2**63 - 1]
    values += [int(x) for x in rng.integers(0, 2**63 - 1, size=200, dtype=np.int64)]
    values += [int(x) for x in rng.integers(0, 1000, size=50)]
    for value in values:
        start = int(rng.integers(0, 5))
        out = np.full(start + 25, 255, dtype=np.uint8)
        end = st._write_uint(out, start, value)
        assert out[start:end].tobytes() == str(value).encode(), value
        assert end == start + len(str(value))
        assert (out[:start] == 255).all() and (out[end:] == 255).all()


# -- _render_decimal_rows ------------------------------------------------------------------------

def _decimal_text(m: int, f: int, strip: bool) -> str:
    """``m / 10**f`` written with exactly ``f`` decimals, or with trailing fractional zeros
    removed keeping one (``strip``); no point when ``f == 0``."""
    if f == 0:
        return str(m)
    text = f"{Decimal(m).scaleb(-f):.{f}f}"
    if strip:
        head, tail = text.split(".")
        text = head + "." + (tail.rstrip("0") or "0")
    return text


def _render(labels, mant, frac, strip, over_pos=(), over_text=()):
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    mant = np.ascontiguousarray(mant, dtype=np.int64)
    frac = np.ascontiguousarray(frac, dtype=np.int8)
    over_pos = np.asarray(over_pos, dtype=np.int64)
    lengths = [len(t) for t in over_text]
    over_off = np.zeros(len(lengths) + 1, dtype=np.int64)
    over_off[1:] = np.cumsum(lengths)
    over_buf = np.frombuffer("".join(over_text).encode("ascii"), dtype=np.uint8)
    n, s = mant.shape
    out = np.full(n * (s * 64 + 32) + 1, 255, dtype=np.uint8)
    used = st._render_decimal_rows(labels, mant, frac, strip, over_pos, over_off, over_buf, out)
    assert (out[used:] == 255).all()
    return out[:used].tobytes()


@pytest.mark.parametrize("strip", [True, False])
def test_render_decimal_rows_matches_python_decimal_text(strip):
    rng = np.random.default_rng(21)
    n, s = 17, 13
    mant = rng.integers(0, 10**18, size=(n, s), dtype=np.int64)
    mant[rng.random((n, s)) < 0.3] //= 10**9          # short mantissas: leading zeros after '.'
    mant[rng.random((n, s)) < 0.1] = 0
    mant[0, :5] = [10**14, 44081, 120000000000000, 5, 999999999999999999]
    frac = rng.integers(0, 19, size=(n, s)).astype(np.int8)
    frac[0, :5] = [14, 6, 14, 0, 18]
    labels = rng.integers(0, 10**9, size=n)
    labels[0] = 0
    pos = np.sort(rng.choice(n * s, size=9, replace=False))
    texts = [repr(float(x)) for x in rng.normal(5, 3, size=pos.size)]
    texts[0] = "nan"
    got = _render(labels, mant, frac, strip, pos, texts)
    over = dict(zip(pos.tolist(), texts, strict=True))
    want = "".join(
        str(int(labels[i])) + "".join(
            "," + (over[i * s + j] if i * s + j in over
                   else _decimal_text(int(mant[i, j]), int(frac[i, j]), strip))
            for j in range(s)) + "\n"
        for i in range(n))
    assert got == want.encode()


def test_render_decimal_rows_15_digit_tokens_are_python_repr():
    # as the generator documents it: a 15-significant-digit decimal m / 10**f (f = 13 or 14;
    # values from 1 to 100 as generated), trailing zeros stripped, is exactly Python's repr of
    # the double it parses to
    rng = np.random.default_rng(22)
    mant = rng.integers(10**14, 10**15, size=(30, 20), dtype=np.int64)
    zeros = rng.random(mant.shape) < 0.2               # trailing zeros to strip
    mant[zeros] = mant[zeros] // 10**6 * 10**6
    mant[0, :4] = [10**14, 2 * 10**14, 123450000000000, st.FLOOR_MANTISSA]
    frac = np.where(rng.random(mant.shape) < 0.5, 13, 14)
    labels = np.arange(30) * 7919
    lines = _render(labels, mant, frac, True).decode().splitlines()
    assert len(lines) == 30
    for i, line in enumerate(lines):
        label, *tokens = line.split(",")
        assert label == str(labels[i])
        for j, token in enumerate(tokens):
            assert token == repr(float(Decimal(int(mant[i, j])).scaleb(-int(frac[i, j]))))


def test_render_decimal_rows_empty():
    assert _render(np.zeros(0), np.zeros((0, 3)), np.zeros((0, 3)), True) == b""
    assert _render([7], np.zeros((1, 0)), np.zeros((1, 0)), True) == b"7\n"


# -- _render_flag_rows ---------------------------------------------------------------------------

def test_render_flag_rows_matches_joins():
    rng = np.random.default_rng(31)
    for n, s in [(0, 4), (1, 0), (1, 1), (23, 17)]:
        labels = rng.integers(0, 10**12, size=n).astype(np.int64)
        flags = rng.random((n, s)) < 0.4
        out = np.full(n * (2 * s + 21) + 1, 255, dtype=np.uint8)
        used = st._render_flag_rows(labels, flags, out)
        want = "".join(f"{int(labels[i])}" + "".join("," + ("1" if x else "0") for x in flags[i])
                       + "\n" for i in range(n))
        assert out[:used].tobytes() == want.encode()
        assert (out[used:] == 255).all()


# -- _combine_block ------------------------------------------------------------------------------

def test_combine_block_matches_numpy():
    rng = np.random.default_rng(41)
    n, s, k = 37, 29, 6
    offset = rng.normal(7.0, 6.0, n)                   # wide: some values hit FLOOR and CEILING
    amp = rng.gamma(1.0, 1.5, n)
    loading = rng.normal(0, 1, (n, k))
    sd = rng.uniform(0.05, 0.6, n)
    factors = rng.normal(0, 1, (s, k))
    sample_shift = rng.normal(0, 0.1, s)
    noise = rng.standard_normal((n, s), dtype=np.float32)
    uniform = rng.random((n, s), dtype=np.float32)
    v = np.full((n, s), np.nan)
    pa = np.zeros((n, s), dtype=np.bool_)
    st._combine_block(offset, amp, loading, sd, factors, sample_shift, noise, uniform, v, pa)

    dot = np.zeros((n, s))
    for kk in range(k):                                # the kernel's summation order
        dot += loading[:, kk, None] * factors[None, :, kk]
    x = offset[:, None] + amp[:, None] * dot + sample_shift[None, :] + sd[:, None] * noise
    x = np.clip(x, st.FLOOR, st.CEILING)
    np.testing.assert_allclose(v, x, rtol=1e-14, atol=0)
    assert (v == st.FLOOR).any() and (v == st.CEILING).any()
    assert v.min() == st.FLOOR and v.max() == st.CEILING
    p = 1.0 / (1.0 + np.exp(-st.PA_SLOPE * (v - st.PA_MIDPOINT)))
    clear = np.abs(uniform - p) > 1e-9                 # leave exact ties to libm rounding
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(pa[clear], (uniform < p)[clear])
    assert pa.any() and not pa.all()


# -- _to_mantissa --------------------------------------------------------------------------------

def test_to_mantissa_matches_numpy():
    rng = np.random.default_rng(51)
    v = rng.uniform(st.FLOOR - 0.3, st.CEILING, size=(40, 25))
    edge = [st.FLOOR, np.nextafter(st.FLOOR, 0), np.nextafter(st.FLOOR, 20), 10.0,
            np.nextafter(10.0, 0), st.CEILING, 1.0, 9.999999999999995]
    v[0, :len(edge)] = edge
    mant = np.zeros(v.shape, dtype=np.int64)
    frac = np.zeros(v.shape, dtype=np.int8)
    st._to_mantissa(v, mant, frac)
    floor = v <= st.FLOOR
    big = v >= 10.0
    want_mant = np.where(floor, st.FLOOR_MANTISSA,
                         np.where(big, np.rint(v * 1e13), np.rint(v * 1e14))).astype(np.int64)
    want_frac = np.where(floor, 14, np.where(big, 13, 14)).astype(np.int8)
    np.testing.assert_array_equal(mant, want_mant)
    np.testing.assert_array_equal(frac, want_frac)
    assert floor.any() and big.any()
    assert st.FLOOR_MANTISSA == int(Decimal(repr(st.FLOOR)).scaleb(14))
    # the decimals stand for their values to 15 significant digits
    back = mant / 10.0 ** frac.astype(np.float64)
    np.testing.assert_allclose(back[~floor], v[~floor], rtol=1e-14)


# -- _format_rows --------------------------------------------------------------------------------

def test_format_rows_matches_dense_str_join():
    rng = np.random.default_rng(61)
    n, ncols = 31, 23
    dense = np.where(rng.random((n, ncols)) < 0.3, rng.integers(1, 50, (n, ncols)), 0)
    dense[0, :4] = [2**31 - 1, 10**11, 1, 10]
    dense[5] = 0                                       # an all-zero row
    dense[:, -1] = np.where(rng.random(n) < 0.5, 7, 0)
    csr = sparse.csr_matrix(dense)
    csr.sort_indices()
    names = [f'"cell{i}"' if i % 3 else f"Zelle-ä{i}" for i in range(n)]
    enc = [x.encode() for x in names]
    name_off = np.zeros(n + 1, np.int64)
    name_off[1:] = np.cumsum([len(e) for e in enc])
    name_buf = np.frombuffer(b"".join(enc), np.uint8)
    out = np.full(int(name_off[-1]) + n * (13 * ncols + 1) + 1, 255, np.uint8)
    used = st._format_rows(name_buf, name_off, csr.indptr.astype(np.int64),
                           csr.indices.astype(np.int64), csr.data.astype(np.int64), ncols, out)
    want = b"".join(enc[i] + b"".join(b"," + str(int(x)).encode() for x in dense[i]) + b"\n"
                    for i in range(n))
    assert out[:used].tobytes() == want
    assert (out[used:] == 255).all()


def test_format_rows_empty_block():
    out = np.full(8, 255, np.uint8)
    used = st._format_rows(np.zeros(0, np.uint8), np.zeros(1, np.int64), np.zeros(1, np.int64),
                           np.zeros(0, np.int64), np.zeros(0, np.int64), 3, out)
    assert used == 0
