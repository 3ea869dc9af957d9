"""Throughput of the grouped kernels on an in-memory float32 array, against baselines.

Prints a markdown table of GB/s of float32 input read (best of ``--repeat`` runs, after a
warm-up that compiles the kernels):

* per-structure sum+count / mean (``axis="sample"``), numba serial, numba parallel, and the
  serial kernel per block on Dask threads;
* per-gene collapse (``axis="probe"``, ~20k genes from 58,692 probes), same variants;
* ``numpy .sum(axis=1)`` over the same array: the memory-bandwidth ceiling;
* the pandas way (a samples × probes DataFrame grouped by structure label, ``.mean()``);
* flox ``groupby_reduce`` on the Dask array, when flox is importable.

Usage::

    python benchmarks/bench_kernels.py              # full size, 58,692 × 3,702 (0.87 GB)
    python benchmarks/bench_kernels.py --scale 0.1  # a tenth of the probes
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from atlas_engine.aggregate.engine import groupby_reduce

N_PROBE, N_SAMPLE = 58_692, 3_702
N_STRUCTURES, N_GENES = 400, 20_000


def best_time(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up (numba compilation, page faults)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the 58,692 probes")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunks", type=int, default=4096, help="probe rows per Dask block")
    ap.add_argument("--skip-pandas", action="store_true")
    args = ap.parse_args(argv)

    import dask
    import dask.array as da

    rng = np.random.default_rng(0)
    n_probe = max(int(N_PROBE * args.scale), 1)
    values = rng.normal(8.0, 2.0, (n_probe, N_SAMPLE)).astype(np.float32)
    s_labels = rng.integers(0, N_STRUCTURES, N_SAMPLE)
    n_genes = max(min(N_GENES, n_probe // 3), 1)
    p_labels = rng.integers(-1, n_genes, n_probe)
    gb = values.nbytes / 1e9
    arr = da.from_array(values, chunks=(args.chunks, -1))
    rows: list[tuple[str, float]] = []

    def run(name: str, fn: Callable[[], object]) -> None:
        t = best_time(fn, args.repeat)
        rows.append((name, t))
        print(f"  {name}: {t:.3f} s", flush=True)

    print(f"array {n_probe} × {N_SAMPLE} float32 = {gb:.2f} GB")
    run("numpy .sum(axis=1) (bandwidth ceiling)", lambda: values.sum(axis=1))
    run("per-structure mean, numba serial", lambda: groupby_reduce(
        values, s_labels, axis=1, n_groups=N_STRUCTURES, stats="mean", parallel=False))
    run("per-structure mean, numba parallel", lambda: groupby_reduce(
        values, s_labels, axis=1, n_groups=N_STRUCTURES, stats="mean", parallel=True))
    run("per-structure mean, Dask threads (serial kernel per block)", lambda: dask.compute(
        groupby_reduce(arr, s_labels, axis=1, n_groups=N_STRUCTURES, stats="mean"),
        scheduler="threads"))
    run("per-gene collapse mean, numba serial", lambda: groupby_reduce(
        values, p_labels, axis=0, n_groups=n_genes, stats="mean", parallel=False))
    run("per-gene collapse mean, numba parallel", lambda: groupby_reduce(
        values, p_labels, axis=0, n_groups=n_genes, stats="mean", parallel=True))
    if not args.skip_pandas:
        import pandas as pd

        def pandas_way() -> object:
            frame = pd.DataFrame(values.T)  # samples × probes, as the seed builds it
            return frame.groupby(s_labels).mean()

        run("per-structure mean, pandas groupby", pandas_way)

        def pandas_genes() -> object:
            frame = pd.DataFrame(values)
            return frame.groupby(p_labels).mean()

        run("per-gene collapse mean, pandas groupby", pandas_genes)
    try:
        import flox

        run("per-structure mean, flox on Dask (threads)", lambda: dask.compute(
            flox.groupby_reduce(arr, s_labels, func="nanmean",
                                expected_groups=np.arange(N_STRUCTURES), isbin=False),
            scheduler="threads"))
    except ImportError:
        print("  flox not importable: skipped")

    ref = dict(rows)
    ceiling = ref["numpy .sum(axis=1) (bandwidth ceiling)"]
    pandas_s = ref.get("per-structure mean, pandas groupby")
    pandas_g = ref.get("per-gene collapse mean, pandas groupby")
    flox_t = ref.get("per-structure mean, flox on Dask (threads)")
    print()
    print(f"| work ({n_probe} × {N_SAMPLE} float32, {gb:.2f} GB) | s | GB/s | "
          "× numpy sum time | speed-up vs pandas | speed-up vs flox |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, t in rows:
        base = pandas_g if "per-gene" in name else pandas_s
        vs_pandas = f"{base / t:.1f}×" if base else "–"
        vs_flox = f"{flox_t / t:.1f}×" if flox_t and "per-structure" in name else "–"
        print(f"| {name} | {t:.3f} | {gb / t:.2f} | {t / ceiling:.2f} | {vs_pandas} | {vs_flox} |")


if __name__ == "__main__":
    main()
