"""The scaled robust sigmoid's block kernel, with glibc's exp in numba against numpy's exp.

    python benchmarks/bench_srs.py --repeat 15

Blocks of 2**20 values shaped as the pipeline's two uses: genes × a donor's matched samples
(1,906 × 550, the per-atlas gene normalisation) and samples × genes (70 × 14,980, the sample
normalisation). For each: ``numpy.exp`` and ``kernels.expglibc.exp_inplace`` on the same
values, then the whole block kernel (sort, quartiles, exp, logistic, rescale) on each exp
path (``srs._srs_block``, the numpy path forced by making the once-per-process check fail).
Round-robin best of ``--repeat``; every pair's results are compared bit for bit first.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

from atlas_engine.kernels import expglibc, srs


def best_of(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Round-robin: each function once per round, the best time of each (ms)."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {k: round(v * 1e3, 2) for k, v in best.items()}


def numpy_path_block(g: np.ndarray) -> np.ndarray:
    """``srs._srs_block`` with the check failing: numpy's exp on the block."""
    real = srs.matches_numpy
    srs.matches_numpy = lambda: False
    try:
        return srs._srs_block(g)
    finally:
        srs.matches_numpy = real


def one_shape(rng: np.random.Generator, shape: tuple[int, int], repeat: int
              ) -> dict[str, float]:
    """The timings of one block shape, after checking each pair's results are identical."""
    x = rng.normal(6.0, 2.0, shape)
    arg = rng.normal(0.0, 3.0, x.size)
    a, b = np.exp(arg), arg.copy()
    expglibc.exp_inplace(b)
    if not np.array_equal(a, b):
        raise SystemExit("exp differs from numpy's")
    if not np.array_equal(srs._srs_block(x.copy()), numpy_path_block(x.copy())):
        raise SystemExit("the sigmoid differs between the exp paths")
    buf, flat = np.empty_like(x), np.empty_like(arg)

    def fresh() -> np.ndarray:
        np.copyto(buf, x)
        return buf

    def glibc_exp() -> None:
        np.copyto(flat, arg)
        expglibc.exp_inplace(flat)

    return best_of({
        "numpy exp": lambda: np.exp(arg, out=flat),
        "glibc exp in numba": glibc_exp,
        "sort (part of the block)": lambda: np.sort(x, axis=1),
        "block, numpy exp": lambda: numpy_path_block(fresh()),
        "block, glibc exp in numba": lambda: srs._srs_block(fresh()),
    }, repeat)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    if not expglibc.matches_numpy():
        raise SystemExit("numpy's exp is not glibc's here: the kernel keeps numpy's exp")
    out: dict[str, dict[str, float]] = {}
    for label, shape in (("genes x matched samples", (1906, 550)),
                         ("samples x genes", (70, 14980))):
        out[label] = one_shape(rng, shape, args.repeat)
        print(label, out[label], flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
