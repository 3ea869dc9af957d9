"""Whole commands as a user runs them, against their baseline in the same run.

Each figure is a whole process — interpreter start, imports, compute, writing the output —
timed from outside, the two commands alternated (A B A B …) so that a drift of the machine's
speed hits both; peak RSS from the kernel's accounting of the finished child::

    python benchmarks/bench_command.py --store bench-data/full.zarr \\
        --raw bench-data/full --repeat 3

It extracts the donor zips in RAW once (into RAW-extracted/) for the pandas baseline, then
compares ``atlas-engine aggregate STORE --by structure --combine pooled --out m.csv`` (and
``.parquet``) with ``seed_pandas_aggregate.py`` (read the six CSVs, group by structure, write).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from installed import compile_package

HERE = Path(__file__).resolve().parent


def run_once(cmd: list[str]) -> float:
    """Wall seconds of one run of ``cmd`` (which must succeed)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
    return wall


def peak_rss(cmd: list[str]) -> float:
    """Peak RSS (MiB) of ``cmd`` measured in a child of a fresh interpreter."""
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True,
                         check=True).stdout
    return int(out.strip()) / 1024


def extract(raw: Path) -> Path:
    dest = raw.with_name(raw.name + "-extracted")
    for z in sorted(raw.glob("normalized_microarray_donor*.zip")):
        folder = dest / z.stem
        if (folder / "MicroarrayExpression.csv").exists():
            continue
        with zipfile.ZipFile(z) as zf:
            zf.extractall(folder)
    return dest


def compare(name: str, a: list[str], b: list[str], repeat: int) -> dict:
    walls_a, walls_b = [], []
    for _ in range(repeat):
        walls_a.append(run_once(a))
        walls_b.append(run_once(b))
    ratios = sorted(wb / wa for wa, wb in zip(walls_a, walls_b, strict=True))
    row = {
        "name": name,
        "engine_s": (min(walls_a), statistics.median(walls_a), max(walls_a)),
        "baseline_s": (min(walls_b), statistics.median(walls_b), max(walls_b)),
        "ratio": (ratios[0], statistics.median(ratios), ratios[-1]),
        "engine_rss": peak_rss(a),
        "baseline_rss": peak_rss(b),
    }
    return row


def print_table(rows: list[dict], baseline: str) -> None:
    """The rows of :func:`compare` as a Markdown table."""
    print(f"| command | atlas-engine s (min/med/max) | {baseline} s | × (min/med/max) "
          "| RSS MiB engine / pandas |")
    print("|---|---|---|---|---|")
    for r in rows:
        e, p, x = r["engine_s"], r["baseline_s"], r["ratio"]
        print(f"| {r['name']} | {e[0]:.2f} / {e[1]:.2f} / {e[2]:.2f} | "
              f"{p[0]:.2f} / {p[1]:.2f} / {p[2]:.2f} | {x[0]:.1f} / {x[1]:.1f} / {x[2]:.1f} | "
              f"{r['engine_rss']:.0f} / {r['baseline_rss']:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, type=Path)
    ap.add_argument("--raw", required=True, type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    compile_package()  # as an installed copy: see installed.py
    src = extract(args.raw)
    exe = str(Path(sys.executable).with_name("atlas-engine"))
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        for suffix in (".csv", ".parquet"):
            a = [exe, "aggregate", str(args.store), "--by", "structure", "--combine", "pooled",
                 "--quiet", "--out", f"{tmp}/engine{suffix}"]
            b = [sys.executable, str(HERE / "seed_pandas_aggregate.py"), str(src),
                 f"{tmp}/pandas{suffix}"]
            rows.append(compare(f"aggregate --by structure --combine pooled -> {suffix}", a, b,
                                args.repeat))
    print_table(rows, "seed pandas")

if __name__ == "__main__":
    main()
