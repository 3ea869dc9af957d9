"""The quiet NaN-skipping median and mean: numpy's values bit for bit, no warning, and no
change to the process's warning filters (they run in Dask's threads)."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

from atlas_engine.kernels.nanreduce import nanmean_quiet, nanmedian_quiet


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,axis", [((7, 5), 0), ((700, 9), 0), ((3, 4, 6), 0),
                                        ((5, 8), 1), ((0, 3), 0), ((6, 1000), 0), ((4, 3), 1)])
def test_equal_to_numpy_without_a_warning(shape, axis, dtype):
    rng = np.random.default_rng(sum(shape) + axis)
    x = rng.normal(size=shape).astype(dtype)
    x[rng.random(shape) < 0.3] = np.nan
    if x.size:                                          # a slice with no value at all
        (x.__setitem__((slice(None), 0), np.nan) if axis == 0
         else x.__setitem__((0, slice(None)), np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want_med, want_mean = np.nanmedian(x, axis=axis), np.nanmean(x, axis=axis)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got_med, got_mean = nanmedian_quiet(x, axis), nanmean_quiet(x, axis)
    np.testing.assert_array_equal(got_med, want_med)
    np.testing.assert_array_equal(got_mean, want_mean)
    assert got_med.dtype == want_med.dtype and got_mean.dtype == want_mean.dtype


def test_threads_leave_the_warning_filters_alone():
    before = list(warnings.filters)
    x = np.full((5, 40), np.nan)
    x[:, ::2] = 1.0

    def work() -> None:
        for _ in range(200):
            nanmedian_quiet(x)
            nanmean_quiet(x)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert warnings.filters == before
