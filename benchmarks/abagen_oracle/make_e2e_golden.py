"""End-to-end golden: ``abagen.get_expression_data`` on a generated dataset and atlas.

Two stages, one file:

* run with the project's Python (``.venv/bin/python benchmarks/abagen_oracle/make_e2e_golden.py``):
  generates the dataset with ``atlas_engine.testing.synth`` (deterministic for the seed in
  ``E2E_PARAMS``), extracts the CSVs into abagen's data-dir layout, builds the atlas
  (synth_atlas.py) and saves it with its region info under tests/data/abagen_golden/, then
  runs the second stage in the abagen virtualenv;
* ``--abagen DATA_DIR`` (run by the first stage with /tmp/abagen-venv/bin/python): calls
  abagen 0.1.3 for every option set in ``CASES`` and saves the outputs in
  ``tests/data/abagen_golden/e2e.npz``.

tests/test_pipeline_store.py regenerates the same data, converts it to a float64 store and
compares with these outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
OUT = HERE.parents[1] / "tests" / "data" / "abagen_golden"
ABAGEN_PY = os.environ.get("ABAGEN_PYTHON", "/tmp/abagen-venv/bin/python")

#: generating parameters of the dataset (atlas_engine.testing.synth.write_all) and the atlas
E2E_PARAMS = {"probes": 200, "samples_fraction": 0.15, "seed": 7, "atlas_regions": 12,
              "atlas_seed": 3}

#: option sets run through abagen (name -> keyword arguments beyond the fixed ones)
CASES: dict[str, dict] = {
    "defaults": {},
    "max_intensity": {"probe_selection": "max_intensity"},
    "max_variance": {"probe_selection": "max_variance"},
    "pc_loading": {"probe_selection": "pc_loading"},
    "corr_intensity": {"probe_selection": "corr_intensity"},
    "corr_variance": {"probe_selection": "corr_variance"},
    "average": {"probe_selection": "average"},
    "independent": {"probe_selection": "max_variance", "donor_probes": "independent"},
    "common": {"probe_selection": "max_intensity", "donor_probes": "common"},
    "mirror": {"lr_mirror": "bidirectional"},
    "mirror_lr": {"lr_mirror": "leftright"},
    "region_samples": {"region_agg": "samples"},
    "norm_structures": {"norm_structures": True},
    "centroids": {"missing": "centroids"},
    "centroids_unmatched": {"missing": "centroids", "norm_matched": False},
    "unmatched": {"norm_matched": False},
    "donors_each": {"return_donors": True},
    "sim": {"sim_threshold": 1.5},
    "tol0": {"tolerance": 0, "ibf_threshold": 0.2},
    "zscore_minmax": {"sample_norm": "zscore", "gene_norm": "minmax"},
    "median": {"agg_metric": "median"},
}


def broad_class(path: str) -> str | None:
    """abagen's broad class from a structure_id_path (deepest class id on the path)."""
    classes = {4008: "cortex", 4249: "subcortex/brainstem", 4275: "subcortex/brainstem",
               4391: "subcortex/brainstem", 9001: "subcortex/brainstem",
               9131: "subcortex/brainstem", 9512: "subcortex/brainstem", 4696: "cerebellum",
               9218: "white matter", 9352: "other"}
    found = None
    for part in str(path).strip("/").split("/"):
        if part and int(part) in classes:
            found = classes[int(part)]
    return found


def extract(raw: Path, data_dir: Path) -> pd.DataFrame:
    """Unzip every donor into DATA/microarray/normalized_microarray_donor{id}/; return all
    SampleAnnot rows with the broad class."""
    rows = []
    for z in sorted(raw.glob("normalized_microarray_donor*.zip")):
        donor = z.stem.replace("normalized_microarray_donor", "")
        dest = data_dir / "microarray" / f"normalized_microarray_donor{donor}"
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(z) as zf:
            zf.extractall(dest)
        annot = pd.read_csv(dest / "SampleAnnot.csv")
        onto = pd.read_csv(dest / "Ontology.csv").set_index("id")
        annot["class"] = [broad_class(onto.loc[s, "structure_id_path"])
                          for s in annot["structure_id"]]
        rows.append(annot)
    return pd.concat(rows, ignore_index=True)


def generate_data(tmp: Path, **write_kw: object) -> tuple[Path, Path, pd.DataFrame]:
    """The E2E dataset (``E2E_PARAMS``): generated zips in ``tmp/raw``, abagen's data-dir
    layout in ``tmp/data``; returns both folders and the samples' annotation."""
    sys.path.insert(0, str(HERE.parents[1]))
    from atlas_engine.testing.synth import write_all

    p = E2E_PARAMS
    raw = tmp / "raw"
    write_all(raw, probes=p["probes"], samples_fraction=p["samples_fraction"],
              seed=p["seed"], quiet=True, **write_kw)
    data_dir = tmp / "data"
    return raw, data_dir, extract(raw, data_dir)


def save_case(out: dict[str, np.ndarray], name: str, frames: object,
              counts: pd.DataFrame) -> None:
    """One abagen result (a frame, or a dict of per-donor frames) and its counts into ``out``
    under ``name|values``/``labels``/``genes`` (``name@donor|…`` per donor) and
    ``name|counts``/``count_donors``."""
    frames = frames if isinstance(frames, dict) else {0: frames}
    for donor, df in frames.items():
        key = name if len(frames) == 1 else f"{name}@{donor}"
        out[f"{key}|values"] = df.to_numpy(dtype=np.float64)
        out[f"{key}|labels"] = df.index.to_numpy(dtype=np.int64)
        out[f"{key}|genes"] = df.columns.to_numpy().astype("U")
    out[f"{name}|counts"] = counts.to_numpy(dtype=np.int64)
    out[f"{name}|count_donors"] = np.asarray(counts.columns, dtype=np.int64)
    print(f"{name}: {frames[next(iter(frames))].shape}", flush=True)


def save_npz(out: dict[str, np.ndarray], stem: str) -> None:
    """``out`` as ``tests/data/abagen_golden/{stem}.npz`` (written whole, then renamed)."""
    tmp = OUT / f".{stem}.tmp.npz"
    np.savez_compressed(tmp, **out)
    os.replace(tmp, OUT / f"{stem}.npz")


def stage_generate() -> None:
    sys.path.insert(0, str(HERE))
    from synth_atlas import make_atlas, write_atlas

    p = E2E_PARAMS
    with tempfile.TemporaryDirectory() as tmp:
        raw, data_dir, annot = generate_data(Path(tmp), brainspan_genes=10,
                                             brainspan_samples=4)
        vol, affine, info = make_atlas(annot[["mni_x", "mni_y", "mni_z"]].to_numpy(),
                                       annot["class"].to_numpy(), p["atlas_regions"],
                                       seed=p["atlas_seed"])
        OUT.mkdir(parents=True, exist_ok=True)
        write_atlas(OUT / "e2e_atlas.nii.gz", vol, affine)
        info.to_csv(OUT / "e2e_atlas_info.csv", index=False)
        (OUT / "e2e_params.json").write_text(json.dumps(
            {**p, "cases": CASES, "abagen": "0.1.3",
             "fixed": {"corrected_mni": False, "reannotated": False}}, indent=1) + "\n")
        if os.environ.get("E2E_KEEP"):
            import shutil
            shutil.copytree(data_dir, os.environ["E2E_KEEP"], dirs_exist_ok=True)
        subprocess.run([ABAGEN_PY, __file__, "--abagen", str(data_dir)], check=True)


def stage_abagen(data_dir: str) -> None:
    warnings.simplefilter("ignore")
    import abagen

    atlas = str(OUT / "e2e_atlas.nii.gz")
    info = str(OUT / "e2e_atlas_info.csv")
    out: dict[str, np.ndarray] = {}
    for name, kw in CASES.items():
        res = abagen.get_expression_data(atlas, info, data_dir=data_dir, corrected_mni=False,
                                         reannotated=False, return_counts=True, verbose=0,
                                         **kw)
        frames, counts = res
        save_case(out, name, frames, counts)
    save_npz(out, "e2e")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--abagen":
        stage_abagen(sys.argv[2])
    else:
        stage_generate()
