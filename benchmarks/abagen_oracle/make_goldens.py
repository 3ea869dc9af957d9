"""Regenerate the abagen parity goldens in tests/data/abagen_golden/.

Runs abagen 0.1.3's own functions on small generated inputs and saves inputs and outputs as
compressed ``.npz`` files. It needs a separate environment (abagen 0.1.3 runs only with
pandas < 2 and numpy < 2)::

    python3 -m venv /tmp/abagen-venv
    /tmp/abagen-venv/bin/pip install abagen==0.1.3 'pandas<2' 'numpy<2' 'scipy<1.14' 'nibabel<5.3'
    /tmp/abagen-venv/bin/python benchmarks/abagen_oracle/make_goldens.py

The tests (tests/test_pipeline_parity.py) read the files without abagen.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

warnings.simplefilter("ignore")

import abagen  # noqa: E402
import nibabel as nib  # noqa: E402
from abagen import correct, matching, probes_, samples_  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "abagen_golden"
NORMS = ["srs", "rs", "sig", "scaled_sig", "scaled_sig_qnt", "mixed_sig", "zscore", "center",
         "minmax"]


def save(name: str, **arrays) -> None:
    tmp = OUT / f".{name}.tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, OUT / f"{name}.npz")


def golden_normalize(rng: np.random.Generator) -> None:
    x = rng.normal(8, 2, size=(40, 12))
    x[:, 3] = 5.0  # constant gene (IQR = 0)
    x[:20, 4] = 1.0  # half-constant gene
    x[7] = np.nan  # all-NaN sample row (skipped)
    x[11, 5] = np.nan  # a single NaN propagates through its gene
    classes = np.array(["cortex", "subcortex/brainstem"] * 20)
    df = pd.DataFrame(x)
    out = {"x": x, "classes": classes.astype("U")}
    for m in NORMS:
        out[f"gene_{m}"] = np.asarray(correct.normalize_expression(df, norm=m, ignore_warn=True))
        out[f"sample_{m}"] = np.asarray(
            correct.normalize_expression(df.T, norm=m, ignore_warn=True).T
        )
        st = pd.DataFrame({"structure": classes}, index=df.index)
        out[f"group_{m}"] = np.asarray(
            correct.normalize_expression(df, norm=m, structures=st, ignore_warn=True)
        )
    blocks = [rng.normal(k, 1, size=(n, 6)) for k, n in enumerate((9, 12, 7))]
    blocks[1][3] = np.nan
    # normalize_expression(norm='batch') is rejected by abagen 0.1.3 itself (the name is not in
    # its method table), so the batch step is called directly; it drops all-NaN rows.
    res = correct._batch_correct([pd.DataFrame(b) for b in blocks])
    for k, (b, r) in enumerate(zip(blocks, res, strict=True)):
        out[f"batch_in_{k}"] = b
        out[f"batch_out_{k}"] = np.asarray(r)
    save("normalize", **out)


def make_donors(rng, n_probes=48, n_genes=14, sizes=(30, 26, 22), round_to=None):
    pids = np.sort(rng.choice(np.arange(1000, 9000), n_probes, replace=False))
    genes = np.array([f"G{g:02d}" for g in range(n_genes)])
    sym = np.concatenate([genes, rng.choice(genes, n_probes - n_genes)])
    rng.shuffle(sym)
    probes = pd.DataFrame({"gene_symbol": sym}, index=pd.Index(pids, name="probe_id"))
    expr, annot, pacall = {}, {}, {}
    for d, n in enumerate(sizes):
        base = rng.normal(6, 1.5, size=(n_probes, 1))
        x = base + rng.normal(0, 1, size=(n_probes, n))
        if round_to is not None:
            x = np.round(x, round_to)
        sid = rng.choice(np.arange(4000, 4012), n)
        cols = pd.Index(np.arange(1, n + 1), name="sample_id")
        expr[d] = pd.DataFrame(x, index=probes.index, columns=cols)
        annot[d] = pd.DataFrame({"structure_id": sid}, index=cols)
        pacall[d] = pd.DataFrame(rng.random((n_probes, n)) < rng.random((n_probes, 1)),
                                 index=probes.index, columns=cols).astype(int)
    return probes, expr, annot, pacall


def golden_probes(rng: np.random.Generator) -> None:
    for tag, round_to in (("cont", None), ("ties", 0)):
        probes, expr, annot, pacall = make_donors(rng, round_to=round_to)
        out = {"probe_id": probes.index.to_numpy(), "gene_symbol": probes.gene_symbol.to_numpy()
               .astype("U")}
        for d in expr:
            out[f"expr_{d}"] = expr[d].to_numpy()
            out[f"sid_{d}"] = annot[d]["structure_id"].to_numpy()
            out[f"pacall_{d}"] = pacall[d].to_numpy().astype(bool)
        for t in (0.0, 0.25, 0.5, 1.0):
            kept = probes_.filter_probes(pacall, annot, probes, threshold=t)
            out[f"ibf_{t}"] = np.isin(probes.index, kept.index)
        methods = ["diff_stability", "average", "max_intensity", "max_variance", "pc_loading",
                   "corr_intensity", "corr_variance"]
        for m in methods:
            modes = ["aggregate"] if m in probes_.AGG_METHODS else ["aggregate", "independent",
                                                                      "common"]
            for mode in modes:
                res = probes_.collapse_probes({k: v.copy() for k, v in expr.items()}, annot,
                                              probes, method=m, donor_probes=mode)
                for d, frame in res.items():
                    out[f"{m}_{mode}_{d}"] = frame.to_numpy()
                    out[f"{m}_{mode}_{d}_genes"] = np.asarray(frame.columns).astype("U")
        save(f"probes_{tag}", **out)


def golden_stability(rng: np.random.Generator) -> None:
    out = {}
    frames = []
    for d in range(4):
        x = rng.normal(size=(15, 20)) + np.linspace(0, 2, 15)[:, None] * rng.random(20)
        x[rng.choice(15, 3, replace=False)] = np.nan  # regions without samples
        x[2, 3] = np.nan
        frames.append(pd.DataFrame(x))
        out[f"regions_{d}"] = x
    for rank in (True, False):
        for pct, thr in ((True, 0.9), (True, 0.5), (False, 0.2)):
            kept, stab = correct.keep_stable_genes([f.copy() for f in frames], threshold=thr,
                                                   percentile=pct, rank=rank,
                                                   return_stability=True)
            key = f"{int(rank)}_{int(pct)}_{thr}"
            out[f"stab_{key}"] = stab
            out[f"keep_{key}"] = np.isin(frames[0].columns, kept[0].columns)
    save("stability", **out)


def golden_matching(rng: np.random.Generator) -> None:
    shape = (14, 16, 12)
    data = np.zeros(shape, dtype=np.int32)
    data[1:7, 2:8, 1:6] = 1
    data[7:13, 2:8, 1:6] = 2
    data[1:7, 8:15, 3:11] = 3
    data[7:13, 8:15, 3:11] = 4
    data[6:8, 6:10, 4:8] = 5  # bilateral block in the middle
    affine = np.array([[-2.0, 0, 0, 13], [0, 2, 0, -20], [0, 0, 2, -8], [0, 0, 0, 1]])
    info = pd.DataFrame({"id": [1, 2, 3, 4, 5],
                         "hemisphere": ["R", "L", "R", "L", "B"],
                         "structure": ["cortex", "cortex", "subcortex/brainstem",
                                       "subcortex/brainstem", "subcortex/brainstem"]})
    n = 150
    xyz = np.column_stack([rng.uniform(-16, 16, n), rng.uniform(-22, 12, n),
                           rng.uniform(-10, 18, n)])
    xyz[:20] = np.round(xyz[:20])  # on-grid and integer coordinates
    hemi = np.where(xyz[:, 0] < 0, "L", np.where(xyz[:, 0] > 0, "R", "B"))
    struct = rng.choice(["cortex", "subcortex/brainstem"], n)
    img = nib.Nifti1Image(data, affine)
    annot = pd.DataFrame({"mni_x": xyz[:, 0], "mni_y": xyz[:, 1], "mni_z": xyz[:, 2],
                          "hemisphere": hemi, "structure": struct},
                         index=pd.Index(np.arange(1, n + 1), name="sample_id"))
    out = {"atlas": data, "affine": affine, "xyz": xyz, "hemi": hemi.astype("U"),
           "struct": struct.astype("U"), "info_id": info["id"].to_numpy(),
           "info_hemi": info["hemisphere"].to_numpy().astype("U"),
           "info_struct": info["structure"].to_numpy().astype("U")}
    for use_info in (False, True):
        tree = matching.AtlasTree(img, atlas_info=info if use_info else None)
        for tol in (0, 1, 2, 3):
            lab = tree.label_samples(annot.copy(), tolerance=tol)
            out[f"labels_{int(use_info)}_{tol}"] = lab["label"].to_numpy()
    save("matching", **out)


def golden_aggregate(rng: np.random.Generator) -> None:
    labels_all = np.arange(1, 9)
    out = {"all_labels": labels_all}
    micro = {}
    for d in range(3):
        n = 25 + 5 * d
        lab = rng.choice(np.arange(0, 7), n)  # labels 7, 8 never sampled; 0 = unmatched
        x = rng.random((n, 10))
        x[rng.random((n, 10)) < 0.03] = np.nan
        if d == 1:
            x[:, 4] = np.nan  # a gene normalised badly in one donor
        micro[d] = pd.DataFrame(x, index=pd.Index(lab, name="label"))
        out[f"x_{d}"], out[f"lab_{d}"] = x, lab
    for agg in ("donors", "samples"):
        for metric in ("mean", "median"):
            res = samples_.aggregate_samples({k: v.copy() for k, v in micro.items()},
                                             labels=labels_all, region_agg=agg,
                                             agg_metric=metric)
            out[f"agg_{agg}_{metric}"] = res.to_numpy()
            out[f"agg_{agg}_{metric}_genes"] = np.asarray(res.columns)
            out[f"agg_{agg}_{metric}_index"] = np.asarray(res.index)
    res = samples_.aggregate_samples({k: v.copy() for k, v in micro.items()},
                                     labels=labels_all, return_donors=True)
    for d, frame in res.items():
        out[f"donor_{d}"] = frame.to_numpy()
    save("aggregate", **out)


def golden_toy_ds() -> None:
    """abagen's tests/test_probes.py::test_diff_stability inputs, through abagen."""
    index = pd.Index([1000, 2000, 3000, 4000, 5000, 6000], name="probe_id")
    prb = pd.DataFrame({"gene_symbol": list("aaabbc")}, index=index)
    e0 = np.array([[0, 2, 4, 9], [1, 3, 3, 2], [2, 4, 4, 1], [3, 5, 1, 0], [4, 6, 6, 7],
                   [5, 7, 3, 4]], dtype=float)
    e1 = np.array([[1, 2, 3], [3, 2, 1], [1, 3, 2], [1, 3, 2], [1, 2, 3], [1, 2, 3]],
                  dtype=float)
    expr = [pd.DataFrame(e0, index=index, columns=["one", "two", "three", "four"]),
            pd.DataFrame(e1, index=index, columns=["one", "two", "three"])]
    annot = [pd.DataFrame({"structure_id": [0, 0, 1, 2]}, index=expr[0].columns),
             pd.DataFrame({"structure_id": [0, 1, 2]}, index=expr[1].columns)]
    res = probes_._diff_stability(expr, prb, annot)
    save("toy_ds", e0=e0, e1=e1, out0=res[0].to_numpy(), out1=res[1].to_numpy(),
         chosen=np.asarray(res[0].columns))


def main() -> int:
    print(f"abagen {abagen.__version__}, pandas {pd.__version__}, numpy {np.__version__}")
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240611)
    golden_normalize(rng)
    golden_probes(rng)
    golden_stability(rng)
    golden_matching(rng)
    golden_aggregate(rng)
    golden_toy_ds()
    total = sum(p.stat().st_size for p in OUT.glob("*.npz"))
    print(f"wrote {len(list(OUT.glob('*.npz')))} files, {total / 1024:.1f} KiB to {OUT}")
    return 0


if __name__ == "__main__":
    tempfile.tempdir = tempfile.gettempdir()
    sys.exit(main())
