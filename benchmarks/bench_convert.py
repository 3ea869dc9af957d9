"""Conversion benchmark: ``atlas-engine convert`` vs pandas.read_csv, and store read paths.

Reports in one run: wall time and peak RSS of the converter from the donor zips (default and
``--memory-limit 512MB``), the pandas C-engine baseline over the extracted CSVs (float32), CSV
MB/s, and the time to read one gene (all its probes × all samples) and one structure (all probes
× its samples) from the store, for each chunk shape given with ``--chunks``.

Usage::

    atlas-engine synth bench-data/full            # once, full size (~4 GB of CSV)
    python benchmarks/bench_convert.py --data bench-data/full
    python benchmarks/bench_convert.py --data /tmp/small --chunks 2048x128,1024x64,4096x256
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

PANDAS_CODE = r"""
import sys, pandas as pd, numpy as np
for f in sys.argv[1:]:
    name = f.rsplit('/', 1)[-1]
    kind = np.float32 if name.startswith('Microarray') else np.int8
    with open(f) as fh:
        ncols = fh.readline().count(',') + 1
    dtype = {i: kind for i in range(1, ncols)}
    dtype[0] = np.int64
    pd.read_csv(f, header=None, index_col=0, dtype=dtype, engine='c')
"""


def run_measured(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS MB) of that child alone."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    return wall, usage.ru_maxrss / 1024


def csv_bytes(data: Path) -> int:
    total = 0
    for z in sorted(data.glob("normalized_microarray_donor*.zip")):
        with zipfile.ZipFile(z) as zf:
            total += sum(zf.getinfo(m).file_size
                         for m in ("MicroarrayExpression.csv", "PACall.csv"))
    return total


def read_paths(store: Path, repeat: int = 3) -> dict[str, float]:
    from atlas_engine import open_store

    st = open_store(store)
    probes = st.probes
    counts = probes["gene_id"].value_counts()
    gene = counts.index[0]
    rows = (probes["gene_id"] == gene).to_numpy().nonzero()[0]
    sid = st.samples["structure_id"].value_counts().index[0]
    cols = (st.samples["structure_id"] == sid).to_numpy().nonzero()[0]
    expr = st.expression
    out = {}
    for name, sel in (("one_gene_s", (rows, slice(None))), ("one_structure_s",
                                                           (slice(None), cols))):
        best = 1e9
        for _ in range(repeat):
            t = time.perf_counter()
            expr[sel].values  # noqa: B018 - the read is the measurement
            best = min(best, time.perf_counter() - t)
        out[name] = round(best, 4)
    out["gene_probes"] = int(len(rows))
    out["structure_samples"] = int(len(cols))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="directory of donor zips")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch (default: temp dir)")
    ap.add_argument("--chunks", default="", help="extra chunk shapes to time reads, e.g. "
                    "1024x64,4096x256 (probes x samples)")
    ap.add_argument("--skip-pandas", action="store_true")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_convert_"))
    work.mkdir(parents=True, exist_ok=True)
    exe = [str(Path(sys.executable).with_name("atlas-engine"))]
    results: dict[str, object] = {"data": str(args.data), "cpus": os.cpu_count()}
    nbytes = csv_bytes(args.data)
    results["csv_mb"] = round(nbytes / 1e6, 1)

    store = work / "store.zarr"
    shutil.rmtree(store, ignore_errors=True)
    wall, rss = run_measured([*exe, "convert", str(args.data), str(store), "--quiet"])
    print("convert done", file=sys.stderr)
    results["convert"] = {"wall_s": round(wall, 2), "peak_rss_mb": round(rss),
                          "csv_mb_per_s": round(nbytes / 1e6 / wall, 1)}
    wall, _ = run_measured([*exe, "convert", str(args.data), str(store), "--quiet"])
    results["rerun_skip_s"] = round(wall, 2)
    store2 = work / "store512.zarr"
    shutil.rmtree(store2, ignore_errors=True)
    wall, rss = run_measured([*exe, "convert", str(args.data), str(store2), "--quiet",
                              "--memory-limit", "512MB"])
    results["convert_512MB"] = {"wall_s": round(wall, 2), "peak_rss_mb": round(rss),
                                "csv_mb_per_s": round(nbytes / 1e6 / wall, 1)}
    shutil.rmtree(store2, ignore_errors=True)

    if not args.skip_pandas:
        ext = work / "extracted"
        files = []
        for z in sorted(args.data.glob("normalized_microarray_donor*.zip")):
            d = ext / z.stem
            with zipfile.ZipFile(z) as zf:
                for m in ("MicroarrayExpression.csv", "PACall.csv"):
                    if not (d / m).exists():
                        zf.extract(m, d)
                    files.append(str(d / m))
        wall, rss = run_measured([sys.executable, "-c", PANDAS_CODE, *files])
        results["pandas_read_csv"] = {"wall_s": round(wall, 2), "peak_rss_mb": round(rss),
                                      "csv_mb_per_s": round(nbytes / 1e6 / wall, 1)}
        results["speedup_vs_pandas"] = round(wall / results["convert"]["wall_s"], 2)
        shutil.rmtree(ext, ignore_errors=True)

    results["reads"] = {"default": read_paths(store)}
    for spec in filter(None, args.chunks.split(",")):
        from atlas_engine.convert.donor import convert_microarray

        pc, sc = (int(x) for x in spec.lower().split("x"))
        other = work / f"store_{pc}x{sc}.zarr"
        shutil.rmtree(other, ignore_errors=True)
        convert_microarray(args.data, other, probe_chunk=pc, sample_chunk=sc)
        results["reads"][spec] = read_paths(other)
        shutil.rmtree(other, ignore_errors=True)
    shutil.rmtree(store, ignore_errors=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
