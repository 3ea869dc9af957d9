"""Lower bounds under the pipeline's two whole-command figures, measured as whole processes.

    python benchmarks/bench_floors.py --store /tmp/pb/store.zarr --atlas /tmp/pb/atlas2 --rounds 5

Each round runs, one after the other, in new processes started from ``/tmp``:

* ``imports``: a process that only imports what a second atlas from the cache needs (numpy,
  pandas, dask, polars, nibabel) and loads the sigmoid and group-mean kernels from numba's
  on-disk cache (:func:`atlas_engine.kernels.srs.warm_up`) — no table, no data;
* ``second``: the command itself, ``atlas-engine aggregate STORE --by atlas:ATLAS.nii.gz
  --atlas-info ATLAS.csv`` (abagen's defaults but for the bundled coordinate tables);
* ``decode``: a process reading every donor's whole expression matrix once through the block
  reader on two threads (each chunk's CRC-32C checked, Blosc decoded), the least any cold run
  does; the time of that read is printed separately from the process's start.

Wall and CPU seconds per process (``resource.getrusage`` of the children), as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMPORTS = """
import os
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy, pandas, dask, polars, nibabel
from atlas_engine.kernels import srs
srs.warm_up()
"""

DECODE = """
import sys, time, json
from concurrent.futures import ThreadPoolExecutor
from atlas_engine.store.blockread import array_shape, read_rows
from atlas_engine.store.open import open_store
store = sys.argv[1]
st = open_store(store)
paths = [f"donors/{d}/expression" for d in st.donors]
jobs = []
for p in paths:
    (n, _), (cr, _), _ = array_shape(store, p)
    jobs += [(p, r, min(n, r + cr)) for r in range(0, n, cr)]
t = time.perf_counter()
with ThreadPoolExecutor(2) as pool:
    list(pool.map(lambda j: read_rows(store, *j).shape, jobs))
print(json.dumps({"read_s": round(time.perf_counter() - t, 3), "chunk_rows": len(jobs)}))
"""


def run(argv: list[str]) -> dict[str, float | str]:
    """One child process: wall seconds, its CPU seconds and its last stdout line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(argv, cwd="/tmp", capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    last = out.strip().splitlines()[-1] if out.strip() else ""
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "stdout": last}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="a converted store (its pipeline cache warm)")
    ap.add_argument("--atlas", required=True, help="ATLAS for ATLAS.nii.gz and ATLAS.csv")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    py = sys.executable
    env_path = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = env_path + os.pathsep + os.environ.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "m.csv"
        second = [py, "-m", "atlas_engine.cli", "aggregate", a.store, "-q",
                  "--no-corrected-mni", "--no-reannotated", "--by", f"atlas:{a.atlas}.nii.gz",
                  "--atlas-info", f"{a.atlas}.csv", "--out", str(out)]
        run(second)         # the cache for this atlas and numba's, in place before timing
        for r in range(a.rounds):
            for name, argv in (("imports", [py, "-c", IMPORTS]), ("second", second),
                               ("decode", [py, "-c", DECODE, a.store])):
                print(json.dumps({"round": r + 1, "what": name, **run(argv)}), flush=True)


if __name__ == "__main__":
    main()
