"""The glibc exp kernel and the scaled robust sigmoid built on it, against the C library's
``exp`` (``math.exp``), ``numpy.exp`` and the sigmoid computed by numpy alone, bit for bit,
on the kernel's path and on its fallback to numpy's exp."""

from __future__ import annotations

import math
import platform
from decimal import Decimal, getcontext
from pathlib import Path

import numpy as np
import pytest

from atlas_engine.kernels import expglibc, srs


def _glibc_with_fma() -> bool:
    name, version = platform.libc_ver()
    if name != "glibc" or tuple(int(v) for v in version.split(".")[:2]) < (2, 28):
        return False
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.exists() and " fma " in cpuinfo.read_text() + " "


needs_glibc = pytest.mark.skipif(not _glibc_with_fma(),
                                 reason="glibc >= 2.28 on a CPU with FMA only")


def test_table_is_its_definition():
    getcontext().prec = 60
    want = []
    for k in range(128):
        exact = (Decimal(k) / 128 * Decimal(2).ln()).exp()
        h = float(exact)
        t = float(exact / Decimal(h) - 1)
        want += [int(np.float64(t).view(np.uint64)),
                 int(np.float64(h).view(np.uint64)) - (k << 45)]
    assert expglibc.TABLE.tolist() == want


def _values(rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([
        rng.normal(0.0, 3.0, 400_000), rng.uniform(-760.0, 720.0, 200_000),
        rng.uniform(-1e-3, 1e-3, 50_000), rng.uniform(-1e-17, 1e-17, 1_000),
        np.exp(rng.uniform(-40.0, 6.4, 50_000)) * rng.choice([-1.0, 1.0], 50_000),
        [0.0, -0.0, 2.0 ** -54, -(2.0 ** -54), 2.0 ** -55, 511.99999, 512.0, -512.0, 709.78,
         709.79, -708.39, -745.13, -745.14, 5e-324, np.inf, -np.inf, np.nan]])


def _c_exp(v: float) -> float:
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


@needs_glibc
def test_exp_is_the_c_librarys():
    x = _values(np.random.default_rng(7))
    got = x.copy()
    expglibc.exp_inplace(got)
    want = np.array([_c_exp(v) for v in x.tolist()])
    np.testing.assert_array_equal(got, want)


def test_exp_matches_numpy_where_the_check_says_so():
    x = _values(np.random.default_rng(8))
    got = x.copy()
    expglibc.exp_inplace(got)
    with np.errstate(all="ignore"):
        want = np.exp(x)
    if expglibc.matches_numpy():
        np.testing.assert_array_equal(got, want)
    else:  # another exp under numpy: within an ulp or two, and the sigmoid keeps numpy's
        np.testing.assert_allclose(got, want, rtol=1e-15)


def _numpy_path(g: np.ndarray) -> np.ndarray:
    """The sigmoid in numpy alone: numpy's median and quartiles, exp, logistic and min-max
    rescale (a row with a NaN anywhere all NaN), the operations of the kernel in its order."""
    med = np.median(g, axis=1)
    q25, q75 = np.percentile(g, [25, 75], axis=1)
    s = (q75 - q25) / srs.IQR_NORMAL_SCALE
    with np.errstate(all="ignore"):
        v = 1.0 / (1.0 + np.exp(-(g - med[:, None]) / s[:, None]))
        lo, hi = np.min(v, axis=1, keepdims=True), np.max(v, axis=1, keepdims=True)
        out = (v - lo) / (hi - lo)
    out[np.isnan(v).any(axis=1)] = np.nan
    return out


def _blocks(rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for i in range(24):
        g = rng.normal(rng.uniform(-5, 10), rng.uniform(1e-6, 20),
                       (int(rng.integers(1, 60)), int(rng.integers(1, 700))))
        if i % 3 == 0:
            g[0] = 1.0                      # IQR 0: NaN row
        if i % 4 == 0 and g.shape[0] > 1:
            g[1, g.shape[1] // 2] = np.nan  # a NaN: NaN row
        if i % 5 == 0:
            g[-1, 0] = 1e6                  # an argument beyond 512: the library's exp
        if i % 7 == 0:
            g *= 1e-20                      # arguments near zero
        out.append(g)
    return out


def test_sigmoid_equals_numpy_bit_for_bit():
    for g in _blocks(np.random.default_rng(9)):
        np.testing.assert_array_equal(srs._srs_block(g.copy()), _numpy_path(g.copy()))


def test_sigmoid_keeps_numpys_exp_where_the_check_fails(monkeypatch):
    monkeypatch.setattr(srs, "matches_numpy", lambda: False)
    for g in _blocks(np.random.default_rng(10)):
        np.testing.assert_array_equal(srs._srs_block(g.copy()), _numpy_path(g.copy()))
