"""Throughput of the grouped kernels on an in-memory float32 array, against baselines.

Prints a markdown table of GB/s of float32 input read (best of ``--repeat`` rounds, after a
warm-up that compiles the kernels; each round runs every variant once, so a shared machine's
changing load hits them alike) and the load average:

* the per-structure kernel (``group_sum_count`` along the sample axis, ~400 groups): numba
  parallel and serial; the same through ``groupby_reduce(stats="mean")`` (kernel + finalize);
  the serial kernel per block on Dask threads (``--chunks`` probe rows per block);
* the per-gene collapse (probe axis, ~20k genes from 58,692 probes), same variants;
* ``numpy .sum(axis=1)`` over the same array: the memory-bandwidth ceiling;
* the pandas way (a samples × probes DataFrame grouped by structure label, ``.mean()``);
* flox ``groupby_reduce`` on the Dask array, when flox is importable;
* a linear-scaling check: the parallel per-structure kernel on 1×, 2× and 4× the samples.

Usage::

    python benchmarks/bench_kernels.py              # full size, 58,692 × 3,702 (0.87 GB)
    python benchmarks/bench_kernels.py --scale 0.1  # a tenth of the probes
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np

from atlas_engine.aggregate.engine import groupby_reduce
from atlas_engine.kernels import group_sum_count

N_PROBE, N_SAMPLE = 58_692, 3_702
N_STRUCTURES, N_GENES = 400, 20_000
CEILING = "numpy .sum(axis=1) (bandwidth ceiling)"
PANDAS_S = "per-structure mean, pandas groupby"
PANDAS_G = "per-gene collapse mean, pandas groupby"
FLOX = "per-structure mean, flox on Dask (threads)"


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the 58,692 probes")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--chunks", type=int, default=2048,
                    help="probe rows per Dask block (2048 × 3702 float32 = 29 MiB)")
    ap.add_argument("--skip-pandas", action="store_true")
    ap.add_argument("--skip-flox", action="store_true")
    ap.add_argument("--skip-scaling", action="store_true")
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
    # per gene: whole probe columns per block (what the engine rechunks probe blocks to), each
    # block contiguous as a store chunked by samples hands it over (slicing columns out of the
    # C-order array here would time a strided copy instead of the engine)
    cols = max(1, (64 << 20) // (n_probe * 4))
    arr_s = da.concatenate([da.from_array(np.ascontiguousarray(values[:, a:a + cols]),
                                          chunks=(-1, -1))
                            for a in range(0, N_SAMPLE, cols)], axis=1)
    jobs: list[tuple[str, Callable[[], object]]] = []

    def run(name: str, fn: Callable[[], object]) -> None:
        jobs.append((name, fn))

    def mean(labels: np.ndarray, axis: int, n: int, parallel: bool) -> object:
        return groupby_reduce(values, labels, axis=axis, n_groups=n, stats="mean",
                              parallel=parallel)

    print(f"array {n_probe} × {N_SAMPLE} float32 = {gb:.2f} GB; {load()}")
    run(CEILING, lambda: values.sum(axis=1))
    for par, tag in ((True, "parallel"), (False, "serial")):
        run(f"per-structure kernel (sum+count), numba {tag}",
            lambda par=par: group_sum_count(values, s_labels, N_STRUCTURES, axis=1,
                                            parallel=par))
    for par, tag in ((True, "parallel"), (False, "serial")):
        run(f"per-structure mean (kernel+finalize), numba {tag}",
            lambda par=par: mean(s_labels, 1, N_STRUCTURES, par))
    run(f"per-structure mean, Dask threads ({args.chunks}-row blocks, serial kernel)",
        lambda: dask.compute(groupby_reduce(arr, s_labels, axis=1, n_groups=N_STRUCTURES,
                                            stats="mean"), scheduler="threads"))
    for par, tag in ((True, "parallel"), (False, "serial")):
        run(f"per-gene kernel (sum+count), numba {tag}",
            lambda par=par: group_sum_count(values, p_labels, n_genes, axis=0, parallel=par))
    for par, tag in ((True, "parallel"), (False, "serial")):
        run(f"per-gene collapse mean (kernel+finalize), numba {tag}",
            lambda par=par: mean(p_labels, 0, n_genes, par))
    run(f"per-gene collapse mean, Dask threads ({cols}-sample blocks, serial kernel)",
        lambda: dask.compute(groupby_reduce(arr_s, p_labels, axis=0, n_groups=n_genes,
                                            stats="mean"), scheduler="threads"))
    if not args.skip_pandas:
        import pandas as pd

        def pandas_way() -> object:
            frame = pd.DataFrame(values.T)  # samples × probes, as the seed builds it
            return frame.groupby(s_labels).mean()

        run(PANDAS_S, pandas_way)

        def pandas_genes() -> object:
            frame = pd.DataFrame(values)
            return frame.groupby(p_labels).mean()

        run(PANDAS_G, pandas_genes)
    if not args.skip_flox:
        try:
            import flox

            run(FLOX, lambda: dask.compute(
                flox.groupby_reduce(arr, s_labels, func="nanmean",
                                    expected_groups=np.arange(N_STRUCTURES), isbin=False),
                scheduler="threads"))
        except ImportError:
            print("  flox not importable: skipped")

    # round-robin: every variant once per round, so load changes on a shared machine hit all
    # of them alike; best of the rounds
    times: dict[str, list[float]] = {name: [] for name, _ in jobs}
    for _name, fn in jobs:
        fn()  # warm-up (numba compilation, page faults)
    for r in range(args.repeat):
        for name, fn in jobs:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        print(f"  round {r + 1}/{args.repeat} done ({load()})", flush=True)
    rows = [(name, min(ts)) for name, ts in times.items()]
    ref = dict(rows)
    ceiling = ref[CEILING]
    pandas_s, pandas_g, flox_t = ref.get(PANDAS_S), ref.get(PANDAS_G), ref.get(FLOX)
    print()
    print(f"| work ({n_probe} × {N_SAMPLE} float32, {gb:.2f} GB) | s | GB/s | "
          "GB/s ÷ numpy-sum GB/s | speed-up vs pandas | speed-up vs flox |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, t in rows:
        base = pandas_g if "per-gene" in name else pandas_s
        vs_pandas = f"{base / t:.1f}×" if base else "–"
        vs_flox = f"{flox_t / t:.1f}×" if flox_t and "per-structure" in name else "–"
        print(f"| {name} | {t:.3f} | {gb / t:.2f} | {ceiling / t:.2f} | {vs_pandas} | {vs_flox} |")
    print(f"\n{load()}")

    if not args.skip_scaling:
        del arr, arr_s
        wides = {k: (values if k == 1 else np.tile(values, (1, k)), np.tile(s_labels, k))
                 for k in (1, 2, 4)}
        best = {k: float("inf") for k in wides}
        for w, lab in wides.values():  # warm-up
            group_sum_count(w, lab, N_STRUCTURES, axis=1, parallel=True)
        for _ in range(args.repeat):  # round-robin, as above
            for k, (w, lab) in wides.items():
                t0 = time.perf_counter()
                group_sum_count(w, lab, N_STRUCTURES, axis=1, parallel=True)
                best[k] = min(best[k], time.perf_counter() - t0)
        print("\n| samples | GB | per-structure kernel (parallel) s | GB/s | s ÷ (1× s) |")
        print("|---:|---:|---:|---:|---:|")
        for k, (w, _) in wides.items():
            print(f"| {k}× ({w.shape[1]}) | {w.nbytes / 1e9:.2f} | {best[k]:.3f} | "
                  f"{w.nbytes / 1e9 / best[k]:.2f} | {best[k] / best[1]:.2f} |")
        print(f"\n{load()}")


if __name__ == "__main__":
    main()
