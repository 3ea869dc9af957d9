"""The pandas way to BrainSpan results, the baseline of ``bench_brainspan.py``: what a user
writes by hand from ``genes_matrix_csv.zip`` (the seed's Method 4 download)::

    python benchmarks/seed_pandas_brainspan.py convert ZIP OUT.parquet
    python benchmarks/seed_pandas_brainspan.py aggregate ZIP OUT.csv      # period × structure
    python benchmarks/seed_pandas_brainspan.py trajectory ZIP OUT.csv OUT.png GENE...

``aggregate`` is ``atlas-engine aggregate --by period,structure`` (mean per donor, then the
mean of donor means); ``trajectory`` is ``atlas-engine trajectory`` (log2(RPKM+1), per age and
region, donors combined, one figure).
"""

from __future__ import annotations

import sys
import zipfile

import numpy as np
import pandas as pd

KANG = [(4, 8, "P1"), (8, 10, "P2"), (10, 13, "P3"), (13, 16, "P4"), (16, 19, "P5"),
        (19, 24, "P6"), (24, 38, "P7")]
POSTNATAL = [(0, 6, "P8"), (6, 12, "P9"), (12, 72, "P10"), (72, 144, "P11"), (144, 240, "P12"),
             (240, 480, "P13"), (480, 720, "P14"), (720, 1e9, "P15")]
REGION = {**{a: "neocortex" for a in ("Ocx", "PCx", "TCx", "M1C-S1C", "DFC", "VFC", "MFC",
                                      "OFC", "M1C", "S1C", "IPC", "A1C", "STC", "ITC", "V1C")},
          "HIP": "hippocampus", "AMY": "amygdala", "STR": "striatum", "MGE": "ganglionic eminence",
          "LGE": "ganglionic eminence", "CGE": "ganglionic eminence", "DTH": "thalamus",
          "MD": "thalamus", "CBC": "cerebellum", "CB": "cerebellum", "URL": "cerebellum"}


def period(age: str) -> str:
    n, unit = age.split(" ")
    v = float(n)
    if unit == "pcw":
        return next(p for lo, hi, p in KANG if lo <= v < hi)
    months = v if unit == "mos" else v * 12
    return next(p for lo, hi, p in POSTNATAL if lo <= months < hi)


def age_pcd(age: str) -> float:
    n, unit = age.split(" ")
    v = float(n)
    return v * 7 if unit == "pcw" else 266 + (v / 12 if unit == "mos" else v) * 365


def read(zpath: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    with zipfile.ZipFile(zpath) as zf:
        rows = pd.read_csv(zf.open("rows_metadata.csv"))
        cols = pd.read_csv(zf.open("columns_metadata.csv"))
        expr = pd.read_csv(zf.open("expression_matrix.csv"), header=None, index_col=0)
    return rows, cols, expr


def main(argv: list[str]) -> None:
    what, zpath = argv[0], argv[1]
    rows, cols, expr = read(zpath)
    if what == "convert":
        expr.columns = expr.columns.astype(str)
        expr.to_parquet(argv[2])
        rows.to_parquet(argv[2] + ".rows.parquet")
        cols.to_parquet(argv[2] + ".cols.parquet")
        return
    cols["period"] = cols["age"].map(period)
    if what == "aggregate":
        data = expr.T
        data.index = pd.MultiIndex.from_frame(cols[["period", "structure_acronym", "donor_id"]])
        per_donor = data.groupby(level=[0, 1, 2]).mean()
        means = per_donor.groupby(level=[0, 1]).mean()
        means.columns = rows["gene_symbol"].to_numpy()
        means.to_csv(argv[2])
        return
    out, png, genes = argv[2], argv[3], argv[4:]
    sel = rows.index[rows["gene_symbol"].isin(genes)]
    data = np.log2(expr.iloc[sel].T + 1.0)
    data.columns = rows["gene_symbol"].to_numpy()[sel]
    cols["region"] = cols["structure_acronym"].map(REGION)
    cols["age_pcd"] = cols["age"].map(age_pcd)
    data.index = pd.MultiIndex.from_frame(cols[["region", "age_pcd", "donor_id"]])
    per_donor = data.groupby(level=[0, 1, 2]).mean()
    traj = per_donor.groupby(level=[0, 1]).mean()
    traj.to_csv(out)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(genes), figsize=(6 * len(genes), 4), squeeze=False)
    for ax, g in zip(axes[0], genes, strict=False):
        for region, t in traj[g].groupby(level=0):
            ax.plot(t.index.get_level_values(1), t.to_numpy(), "-o", ms=2, label=region)
        ax.set_xscale("log")
        ax.axvline(266, color="k", ls="--")
        ax.set_title(g)
    axes[0][0].legend()
    fig.savefig(png, dpi=150)


if __name__ == "__main__":
    main(sys.argv[1:])
