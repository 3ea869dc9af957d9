"""Cell Types benchmark: convert and per-cluster statistics at M1 scale (or a fraction of it).

Every step runs in its own process; wall time and that process's peak RSS (``wait4``) are
reported, with the 1-minute load average just before it. In one run, for each ``--scales``:

* ``convert``: ``atlas-engine`` conversion of ``matrix.csv`` + ``metadata.csv`` to the store;
* ``pandas``: the reader a user would write: ``pandas.read_csv(chunksize=...)`` with int32
  columns, each chunk to ``scipy.sparse.csr_matrix``, then ``vstack`` (the CSR only, no obs);
* ``polars``: the same with ``polars.scan_csv(...).collect_batches()`` (int32 schema);
* ``aggregate``: ``atlas-engine aggregate STORE --by cluster --stat sum,mean,var,nnz --out
  agg.zarr -q``: the whole command as a user runs it (start-up, per-cluster statistics of all
  genes on 2 Dask threads, the AnnData result written);
* ``scanpy``: ``scanpy.get.aggregate`` (same four) on the same counts already in memory as CSR
  (the read is not timed; the reported time is the call alone);
* ``means`` / ``trimmed``: the same command with ``--stat mean`` / ``--stat trimmed_mean``.

Usage::

    python benchmarks/bench_celltypes.py --data bench-data/ct --scales 0.25
    python benchmarks/bench_celltypes.py --data bench-data/ct --scales 0.25,0.5,1,2 --skip pandas
    python benchmarks/bench_celltypes.py --data bench-data/ct --scales 1 --keep \
        --skip convert,pandas,polars,aggregate,scanpy --rounds 4    # means / trimmed, alternating

Data for each scale is generated once under ``DATA/s{scale}/`` (76,533 × scale cells × 50,281
genes, 127 clusters; ``--keep`` leaves it there).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from installed import compile_package

M1_CELLS = 76_533
M1_GENES = 50_281
M1_CLUSTERS = 127
HERE = Path(__file__).resolve().parent

STEP_CODE = {
    "convert": """
from atlas_engine.celltypes.convert import convert_celltypes
convert_celltypes(SRC, STORE, overwrite=True)
""",
    "pandas": """
import numpy as np, pandas as pd
from scipy import sparse
with open(MATRIX) as fh:
    header = fh.readline().rstrip('\\n').split(',')
dtype = {g: np.int32 for g in header[1:]}
dtype['sample_name'] = str
parts, names = [], []
for chunk in pd.read_csv(MATRIX, chunksize=1000, dtype=dtype, engine='c'):
    names.extend(chunk['sample_name'].tolist())
    parts.append(sparse.csr_matrix(chunk.iloc[:, 1:].to_numpy(np.int32)))
X = sparse.vstack(parts, format='csr')
print('nnz', X.nnz)
""",
    "polars": """
import numpy as np, polars as pl
from scipy import sparse
with open(MATRIX) as fh:
    header = fh.readline().rstrip('\\n').split(',')
schema = {g: pl.Int32 for g in header[1:]}
schema = {'sample_name': pl.String, **schema}
parts, names = [], []
for batch in pl.scan_csv(MATRIX, schema=schema).collect_batches(chunk_size=1000):
    names.extend(batch['sample_name'].to_list())
    parts.append(sparse.csr_matrix(batch.drop('sample_name').to_numpy()))
X = sparse.vstack(parts, format='csr')
print('nnz', X.nnz)
""",
    "scanpy": """
import time, warnings
import anndata as ad, scanpy as sc
warnings.simplefilter('ignore')
a = ad.read_zarr(STORE)
a = ad.AnnData(X=a.X, obs=a.obs[['cluster']], var=a.var[[]])
t0 = time.perf_counter()
g = sc.get.aggregate(a, by='cluster', func=['sum', 'mean', 'count_nonzero', 'var'])
print('CALL_SECONDS', time.perf_counter() - t0)
""",
}


#: whole commands as a user runs them (the console script: start-up, compute, writing the
#: AnnData result); ``{STORE}`` and ``{OUT}`` are filled in
COMMANDS = {
    "aggregate": ["aggregate", "{STORE}", "--by", "cluster", "--stat", "sum,mean,var,nnz",
                  "--out", "{OUT}/agg.zarr", "-q"],
    "means": ["aggregate", "{STORE}", "--by", "cluster", "--stat", "mean",
              "--out", "{OUT}/means.zarr", "-q"],
    "trimmed": ["aggregate", "{STORE}", "--by", "cluster", "--stat", "trimmed_mean",
                "--out", "{OUT}/trimmed.zarr", "-q"],
}


def run_step(step: str, env: dict[str, str]) -> dict[str, float]:
    if step in COMMANDS:
        out = Path(env["STORE"]).parent / "out"
        out.mkdir(exist_ok=True)
        args = [a.format(STORE=env["STORE"], OUT=out) for a in COMMANDS[step]]
        cmd = [str(Path(sys.executable).parent / "atlas-engine"), *args]
    else:
        code = "".join(f"{k} = {v!r}\n" for k, v in env.items()) + STEP_CODE[step]
        cmd = [sys.executable, "-c", code]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1",
                                 "OPENBLAS_NUM_THREADS": "1"})
    out = proc.stdout.read().decode() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"step {step} failed (status {status})")
    res = {"seconds": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
           "load1": round(load, 2)}
    for line in out.splitlines():
        if line.startswith("CALL_SECONDS"):
            res["call_seconds"] = round(float(line.split()[1]), 2)
    return res


def generate(root: Path, scale: float) -> Path:
    folder = root / f"s{scale:g}"
    src = folder / "aibs_human_m1_10x"
    if (src / "metadata.csv").is_file():
        return src
    # in its own process: a child's peak RSS counts its parent's at fork, so the parent stays
    # small (no numpy, no generated data)
    t0 = time.perf_counter()
    code = ("from atlas_engine.testing.synth_celltypes import CellTypeWorldSpec, write_dataset\n"
            f"spec = CellTypeWorldSpec(n_cells={int(round(M1_CELLS * scale))}, "
            f"n_genes={M1_GENES}, n_clusters={M1_CLUSTERS}, seed=1)\n"
            f"write_dataset({str(folder)!r}, 'human-m1', spec, summaries=False)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    print(f"generated {scale:g}x in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return src


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="bench-data/ct")
    ap.add_argument("--scales", default="0.25")
    ap.add_argument("--skip", default="", help="steps to skip (comma-separated)")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat aggregate / scanpy / means / trimmed, alternating")
    args = ap.parse_args()
    compile_package()  # as an installed copy: see installed.py
    root = Path(args.data)
    skip = {s for s in args.skip.split(",") if s}
    results = []
    for scale in (float(s) for s in args.scales.split(",")):
        src = generate(root, scale)
        store = str(src.parent / "m1.zarr")
        env = {"SRC": str(src), "STORE": store, "MATRIX": str(src / "matrix.csv")}
        row: dict[str, object] = {"scale": scale,
                                  "csv_gb": round((src / "matrix.csv").stat().st_size / 1e9, 2)}
        for step in ("convert", "pandas", "polars"):
            if step not in skip:
                row[step] = run_step(step, env)
                print(json.dumps({"scale": scale, step: row[step]}), file=sys.stderr)
        # the compared steps alternate, round after round, so that each ratio pairs runs
        # made side by side
        for r in range(args.rounds):
            for step in ("aggregate", "scanpy", "means", "trimmed"):
                if step in skip:
                    continue
                res = run_step(step, env)
                row[step] = res if args.rounds == 1 else [*row.get(step, []), res]
                print(json.dumps({"scale": scale, "round": r, step: res}), file=sys.stderr)
        results.append(row)
        if not args.keep:
            shutil.rmtree(src.parent)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
