"""Aggregation throughput from a converted store, against baselines, in one run.

Every variant runs in its own Python process (so its peak RSS is its own) and reads the same
store. GB/s is float32 expression bytes reduced per second of wall time (the store's values,
not the compressed bytes on disk).

Variants
--------
``numpy-sum``        the whole matrix loaded, ``x.sum(axis=1)``: the in-memory bandwidth ceiling
``dask-sum``         ``sum`` over the store through Dask threads: the read + decompress ceiling
``structure``        per-structure mean, all donors pooled, from the store (Dask threads)
``structure-combined`` per-structure mean per donor, then over donors (abagen's default)
``gene``             per-gene collapse (probes → genes mean, every sample), from the store
                     (:func:`~atlas_engine.aggregate.collapse.collapse_probes`)
``structure-cluster`` / ``gene-cluster``   the same on a 2-worker ``LocalCluster``
``pandas``           the seed's way: the matrix loaded into a samples × probes DataFrame,
                     ``groupby(structure).mean()`` (time of the groupby alone, and with load)
``flox``             ``flox.groupby_reduce(func="nanmean")`` on the same Dask array
``scale-K``          per-structure mean over the first K donors (1×, 2×, 4× samples)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS = ("numpy-sum", "dask-sum", "structure", "structure-combined", "gene",
            "structure-cluster", "gene-cluster", "pandas", "flox")
BLOCK_BYTES = 32 * 2**20


def _rss_mb() -> dict[str, float]:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"peak_rss_mb": self_kb / 1024, "peak_rss_children_mb": child_kb / 1024}


def _donor_arrays(st: Any, donors: list[int]) -> list[Any]:
    """The donors' expression arrays as Dask arrays read through zarr (for the baselines),
    blocks of whole chunk-rows × all of a donor's samples."""
    import dask.array as da
    import zarr

    from ..store import layout as L

    out = []
    for d in donors:
        arr = zarr.open_array(st.url, path=f"{L.donor_path(d)}/{L.EXPRESSION}", mode="r")
        rows = max(arr.chunks[0], BLOCK_BYTES // (arr.shape[1] * arr.dtype.itemsize)
                   // arr.chunks[0] * arr.chunks[0])
        out.append(da.from_zarr(arr, chunks=(rows, arr.shape[1])))
    return out


def run_variant(variant: str, store: str, cluster: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """Run one variant in this process; returns seconds, bytes and GB/s (plus RSS).

    ``cluster``: ``scheduler``, ``workers`` and ``memory_limit`` of
    :func:`~atlas_engine.aggregate.cluster.get_client` for the ``*-cluster`` variants
    (default: a local cluster of 2 workers)."""
    import dask.array as da

    from .. import open_store
    from ..aggregate.api import aggregate
    from ..aggregate.engine import groupby_reduce

    st = open_store(store)
    donors = list(st.donors)
    if variant.startswith("scale-"):
        donors = donors[: int(variant.split("-")[1])]
    n_samples = int(st.samples["donor"].isin(donors).sum())
    nbytes = len(st.probes) * n_samples * 4
    arrays = _donor_arrays(st, donors)
    extra: dict[str, Any] = {}

    def timed(fn: Any) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    if variant == "numpy-sum":
        x = np.concatenate([np.asarray(a) for a in arrays], axis=1)
        x.sum(axis=1)  # warm
        secs = min(timed(lambda: x.sum(axis=1)) for _ in range(3))
    elif variant == "dask-sum":
        big = da.concatenate(arrays, axis=1)
        secs = timed(lambda: big.sum(axis=1).compute())
    elif variant in ("structure", "structure-combined") or variant.startswith("scale-"):
        mode = "combined" if variant == "structure-combined" else "pooled"
        aggregate(st, by="structure", combine=mode, donors=donors[:1], collapse=None,
                  genes=st.probes["gene_symbol"].iloc[:1].tolist())  # warm the kernels
        secs = timed(lambda: aggregate(st, by="structure", combine=mode, donors=donors))
    elif variant in ("gene", "gene-cluster", "structure-cluster"):
        from ..aggregate.collapse import collapse_probes

        def gene() -> None:
            collapse_probes(st, keep_non_refseq=True)

        def structure() -> None:
            aggregate(st, by="structure", combine="pooled")

        fn = structure if variant == "structure-cluster" else gene
        if variant.endswith("cluster"):
            from ..aggregate.cluster import get_client

            opts = {k: v for k, v in (cluster or {}).items() if v is not None}
            if not opts.get("scheduler") and not os.environ.get("DASK_SCHEDULER_ADDRESS"):
                opts.setdefault("workers", 2)   # else the scheduler named there is used
            with get_client(**opts) as client:
                client.run(lambda: None)
                extra["workers"] = len(client.scheduler_info()["workers"])
                secs = timed(fn)
                mem = client.run(lambda: __import__("resource").getrusage(
                    __import__("resource").RUSAGE_SELF).ru_maxrss)
                extra["worker_peak_rss_mb"] = max(mem.values()) / 1024
        else:
            groupby_reduce(np.zeros((4, 3), np.float32), np.array([0, 0, 1, 1]),
                           axis="probe", n_groups=2)  # warm
            from ..kernels import group_mean_probe

            group_mean_probe(np.zeros((4, 3), np.float32), np.array([0, 0, 1, 1]), 2,
                             out=np.empty((2, 6), np.float32)[:, :3])  # warm
            secs = timed(fn)
    elif variant == "pandas":
        import pandas as pd

        t0 = time.perf_counter()
        x = np.concatenate([np.asarray(a) for a in arrays], axis=1)
        frame = pd.DataFrame(x.T)
        frame["structure_name"] = st.samples["structure_name"].to_numpy()
        load = time.perf_counter() - t0
        secs = timed(lambda: frame.groupby("structure_name").mean())
        extra["seconds_with_load"] = secs + load
    elif variant == "flox":
        import flox

        big = da.concatenate(arrays, axis=1)
        labels = st.samples["structure_id"].to_numpy()
        _, codes = np.unique(labels, return_inverse=True)
        secs = timed(lambda: flox.groupby_reduce(big, codes, func="nanmean", axis=-1,
                                                 engine="numpy")[0].compute())
    else:
        raise SystemExit(f"unknown variant {variant!r} (valid: {', '.join(VARIANTS)}, scale-K)")
    return {"variant": variant, "seconds": secs, "bytes": nbytes, "gb_per_s": nbytes / secs / 1e9,
            "samples": n_samples, **extra, **_rss_mb()}


def run_all(store: str, variants: list[str] | None = None,
            cluster: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run every variant in a fresh subprocess; returns their results (``cluster``: as
    :func:`run_variant`)."""
    names = variants or [*VARIANTS, "scale-1", "scale-2", "scale-6"]
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in (cluster or {}).items()
             if v is not None]
    rows = []
    for name in names:
        proc = subprocess.run([sys.executable, "-m", "atlas_engine.bench.aggregate", "--variant",
                               name, *flags, store], capture_output=True, text=True)
        if proc.returncode != 0:
            rows.append({"variant": name, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table with ratios against the pandas and flox baselines."""
    by = {r["variant"]: r for r in rows if "error" not in r}
    lines = ["| variant | samples | s | GB/s | × pandas | × flox | peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | failed: {r['error']} | | | | | |")
            continue
        ratio = {k: (by[k]["seconds"] / r["seconds"] if k in by else float("nan"))
                 for k in ("pandas", "flox")}
        rss = max(r["peak_rss_mb"], r.get("worker_peak_rss_mb", 0.0))
        lines.append(f"| {r['variant']} | {r['samples']} | {r['seconds']:.2f} | "
                     f"{r['gb_per_s']:.2f} | {ratio['pandas']:.1f} | {ratio['flox']:.1f} | "
                     f"{rss:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store")
    ap.add_argument("--variant", default=None, help="run one variant in this process (JSON out)")
    ap.add_argument("--scheduler", default=None, help="cluster of the *-cluster variants")
    ap.add_argument("--workers", type=int, default=None,
                    help="local workers of the *-cluster variants (default 2)")
    ap.add_argument("--memory-limit", default=None, help="per local worker")
    args = ap.parse_args(argv)
    cluster = {"scheduler": args.scheduler, "workers": args.workers,
               "memory_limit": args.memory_limit}
    from ..malloc import tune_allocator

    tune_allocator()  # as the CLI does
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.store, cluster)))
        return
    print(f"load before: {os.getloadavg()}")
    rows = run_all(str(Path(args.store)), cluster=cluster)
    print(table(rows))
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
