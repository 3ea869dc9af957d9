"""The seed's pandas way to region means: read the six donors' CSVs, group by structure, write.

The baseline of ``bench_command.py``: what a user of the download guide writes by hand::

    python benchmarks/seed_pandas_aggregate.py EXTRACTED_DIR OUT.csv|OUT.parquet

EXTRACTED_DIR holds one folder per donor (``normalized_microarray_donor9861/`` …) with the
extracted MicroarrayExpression.csv and SampleAnnot.csv. All samples of all donors are pooled
per structure (``aggregate --by structure --combine pooled``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def main(src: str, out: str) -> None:
    parts = []
    for folder in sorted(Path(src).iterdir()):
        if not (folder / "MicroarrayExpression.csv").exists():
            continue
        expr = pd.read_csv(folder / "MicroarrayExpression.csv", header=None, index_col=0)
        samples = pd.read_csv(folder / "SampleAnnot.csv")
        expr.columns = samples["structure_id"].to_numpy()
        parts.append(expr)
    data = pd.concat(parts, axis=1)                       # probes × all samples
    means = data.T.groupby(level=0).mean()               # structures × probes
    means.index.name = "structure_id"
    if out.endswith(".parquet"):
        means.columns = means.columns.astype(str)
        means.to_parquet(out)
    else:
        means.to_csv(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
