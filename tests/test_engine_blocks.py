"""groupby_reduce_blocks (per-block labels) against groupby_reduce on the whole array."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from atlas_engine.aggregate.engine import groupby_reduce, groupby_reduce_blocks
from atlas_engine.errors import ConfigError


@pytest.mark.parametrize("lazy", [False, True])
def test_blocks_equal_whole(lazy):
    rng = np.random.default_rng(11)
    n, g = 5000, 13
    values = rng.normal(size=(1, n))
    values[0, rng.integers(0, n, 50)] = np.nan
    labels = rng.integers(-1, g, size=n)
    member = np.concatenate([np.eye(g, dtype=bool), rng.random((g, 4)) < 0.4], axis=1)
    whole = groupby_reduce(values, labels, axis="sample", n_groups=g,
                           stats=("count", "mean", "var", "min", "max"), membership=member)
    cuts = [0, 7, 900, 2500, 2501, 4100, n]
    pairs = [(values[:, a:b], labels[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    if lazy:
        pairs = [(dask.delayed(v), dask.delayed(lab)) for v, lab in pairs]
    got = groupby_reduce_blocks(pairs, n_groups=g, stats=("count", "mean", "var", "min", "max"),
                                membership=member, split_every=2)
    for k in ("count", "mean", "var", "min", "max"):
        np.testing.assert_allclose(np.asarray(got[k]), whole[k], equal_nan=True, rtol=1e-12)


def test_blocks_refuse_median():
    with pytest.raises(ConfigError, match="mergeable statistics only"):
        groupby_reduce_blocks([], n_groups=2, stats=("median",))
