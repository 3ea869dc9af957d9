"""BrainSpan commands at full size against their pandas baseline in the same run.

Whole processes timed from outside, alternated (engine, pandas, engine, pandas, …), peak RSS
of each finished child (see bench_command.py)::

    python benchmarks/bench_brainspan.py --raw bench-data/bs --repeat 2

RAW holds ``genes_matrix_csv.zip`` (``atlas-engine synth`` / ``write_brainspan`` at
52,376 × 524). Compared: ``convert --dataset brainspan`` with pandas reading the zip and writing
Parquet; ``aggregate --by period,structure`` (all genes, donors combined) with a pandas
groupby; ``trajectory`` of six genes with its figure against pandas + matplotlib.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_command import compare, print_table  # noqa: E402
from installed import compile_package  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", required=True, type=Path)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    compile_package()  # as an installed copy: see installed.py
    zpath = args.raw / "genes_matrix_csv.zip"
    with zipfile.ZipFile(zpath) as zf:
        rows = pd.read_csv(zf.open("rows_metadata.csv"), keep_default_na=False)
    genes = rows["gene_symbol"].iloc[2:8].tolist()
    exe = str(Path(sys.executable).with_name("atlas-engine"))
    base = [sys.executable, str(HERE / "seed_pandas_brainspan.py")]
    out = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        store = f"{tmp}/bs.zarr"
        out.append(compare("convert --dataset brainspan",
                           [exe, "convert", str(args.raw), store, "--dataset", "brainspan",
                            "--quiet"],
                           [*base, "convert", str(zpath), f"{tmp}/bs.parquet"], args.repeat))
        out.append(compare("aggregate --by period,structure (all genes) -> .csv",
                           [exe, "aggregate", store, "--by", "period,structure", "--quiet",
                            "--out", f"{tmp}/agg.csv"],
                           [*base, "aggregate", str(zpath), f"{tmp}/pagg.csv"], args.repeat))
        out.append(compare(f"trajectory {' '.join(genes)} --plot",
                           [exe, "trajectory", store, *genes, "--quiet", "--out",
                            f"{tmp}/t.csv", "--plot", f"{tmp}/t.png"],
                           [*base, "trajectory", str(zpath), f"{tmp}/pt.csv", f"{tmp}/pt.png",
                            *genes], args.repeat))
    print_table(out, "pandas")

if __name__ == "__main__":
    main()
