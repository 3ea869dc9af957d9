"""Golden for ``missing='interpolate'``: abagen 0.1.3 on the end-to-end dataset and atlas.

Same two stages as make_e2e_golden.py, on the same generated data (``E2E_PARAMS``) with an
atlas of more regions (``ATLAS_PARAMS``; synth_atlas.py), saved as
tests/data/abagen_golden/e2e_interp_atlas.nii.gz with its info table:

* ``.venv/bin/python benchmarks/abagen_oracle/make_interp_golden.py`` generates the data,
  extracts the CSVs and runs the second stage in the abagen virtualenv;
* ``--abagen DATA_DIR`` calls abagen for every option set in ``CASES`` and writes
  tests/data/abagen_golden/e2e_interp.npz (and e2e_interp_params.json).

The atlas has regions without a sample of some donors and one region far from every sample,
so every donor gets pseudo-samples (abagen fails on a donor that has none to add, which the
region info can cause: hence more regions than the other golden's atlas).
tests/test_pipeline_interpolate.py compares the store pipeline with these outputs.
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
OUT = HERE.parents[1] / "tests" / "data" / "abagen_golden"
ABAGEN_PY = os.environ.get("ABAGEN_PYTHON", "/tmp/abagen-venv/bin/python")

#: regions and seed of the atlas (synth_atlas.make_atlas)
ATLAS_PARAMS = {"atlas_regions": 40, "atlas_seed": 5}

#: option sets (name -> keyword arguments beyond the fixed ones); "info": False runs
#: without the region info table (no hemisphere/class constraint)
CASES: dict[str, dict] = {
    "interp": {"missing": "interpolate"},
    "interp_unmatched": {"missing": "interpolate", "norm_matched": False},
    "interp_noinfo": {"missing": "interpolate", "info": False},
    "interp_noinfo_unmatched": {"missing": "interpolate", "norm_matched": False,
                                "info": False},
    "interp_samples": {"missing": "interpolate", "region_agg": "samples"},
    "interp_median": {"missing": "interpolate", "agg_metric": "median",
                      "norm_matched": False},
    "interp_donors": {"missing": "interpolate", "return_donors": True},
    "interp_mirror": {"missing": "interpolate", "lr_mirror": "bidirectional",
                      "probe_selection": "max_intensity"},
    "interp_tol0_zscore": {"missing": "interpolate", "tolerance": 0,
                           "gene_norm": "zscore", "info": False},
}


def stage_generate() -> None:
    sys.path.insert(0, str(HERE))
    from make_e2e_golden import E2E_PARAMS, generate_data
    from synth_atlas import make_atlas, write_atlas

    p = E2E_PARAMS
    with tempfile.TemporaryDirectory() as tmp:
        _, data_dir, annot = generate_data(Path(tmp), brainspan=False)
        vol, affine, info = make_atlas(annot[["mni_x", "mni_y", "mni_z"]].to_numpy(),
                                       annot["class"].to_numpy(),
                                       ATLAS_PARAMS["atlas_regions"],
                                       seed=ATLAS_PARAMS["atlas_seed"])
        write_atlas(OUT / "e2e_interp_atlas.nii.gz", vol, affine)
        info.to_csv(OUT / "e2e_interp_atlas_info.csv", index=False)
        (OUT / "e2e_interp_params.json").write_text(json.dumps(
            {**p, **ATLAS_PARAMS, "cases": CASES, "abagen": "0.1.3",
             "fixed": {"corrected_mni": False, "reannotated": False}}, indent=1) + "\n")
        subprocess.run([ABAGEN_PY, __file__, "--abagen", str(data_dir)], check=True)


def stage_abagen(data_dir: str) -> None:
    warnings.simplefilter("ignore")
    import abagen

    sys.path.insert(0, str(HERE))
    from make_e2e_golden import save_case, save_npz

    atlas = str(OUT / "e2e_interp_atlas.nii.gz")
    info = str(OUT / "e2e_interp_atlas_info.csv")
    out: dict[str, np.ndarray] = {}
    for name, case in CASES.items():
        kw = {k: v for k, v in case.items() if k != "info"}
        res = abagen.get_expression_data(atlas, info if case.get("info", True) else None,
                                         data_dir=data_dir, corrected_mni=False,
                                         reannotated=False, return_counts=True, verbose=0,
                                         **kw)
        frames, counts = res
        save_case(out, name, frames, counts)
    save_npz(out, "e2e_interp")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--abagen":
        stage_abagen(sys.argv[2])
    else:
        stage_generate()
