"""Golden for ``probe_selection='rnaseq'``: abagen 0.1.3 on generated microarray and RNA-seq data.

Same dataset and atlas as make_e2e_golden.py (``E2E_PARAMS``; the atlas is the saved
tests/data/abagen_golden/e2e_atlas.nii.gz), plus the generated RNA-seq zips of donors 9861 and
10021. Two stages, one file:

* ``.venv/bin/python benchmarks/abagen_oracle/make_rnaseq_golden.py``: generates the data with
  ``atlas_engine.testing.synth.write_all``, extracts the microarray zips into
  ``DATA/microarray/normalized_microarray_donor{id}/`` and the RNA-seq zips into
  ``DATA/rnaseq/rnaseq_donor{id}/`` (abagen's ``fetch_rnaseq`` layout), then runs the second
  stage in the abagen virtualenv with ``ABAGEN_DATA=DATA`` (abagen's ``_rnaseq`` looks the
  RNA-seq files up without the ``data_dir`` argument);
* ``--abagen DATA_DIR``: calls ``abagen.get_expression_data`` for every option set in ``CASES``
  and saves ``tests/data/abagen_golden/rnaseq.npz`` and ``rnaseq_params.json``.

tests/test_pipeline_rnaseq.py regenerates the same data, converts it (float64) and compares.
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

HERE = Path(__file__).resolve().parent
OUT = HERE.parents[1] / "tests" / "data" / "abagen_golden"
ABAGEN_PY = os.environ.get("ABAGEN_PYTHON", "/tmp/abagen-venv/bin/python")

#: option sets run through abagen (name -> keyword arguments beyond the fixed ones)
CASES: dict[str, dict] = {
    "rnaseq": {"probe_selection": "rnaseq"},
    "rnaseq_ibf": {"probe_selection": "rnaseq", "ibf_threshold": 0.2},
    "rnaseq_mirror": {"probe_selection": "rnaseq", "lr_mirror": "bidirectional"},
    "rnaseq_two_donors": {"probe_selection": "rnaseq", "donors": ["10021", "12876"]},
}


def stage_generate() -> None:
    sys.path.insert(0, str(HERE))
    from make_e2e_golden import E2E_PARAMS, generate_data

    p = E2E_PARAMS
    with tempfile.TemporaryDirectory() as tmp:
        raw, data_dir, _ = generate_data(Path(tmp), brainspan=False)
        for z in sorted(raw.glob("rnaseq_donor*.zip")):
            dest = data_dir / "rnaseq" / z.stem
            dest.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(z) as zf:
                zf.extractall(dest)
        (OUT / "rnaseq_params.json").write_text(json.dumps(
            {"dataset": {k: p[k] for k in ("probes", "samples_fraction", "seed")},
             "atlas": "e2e_atlas.nii.gz", "cases": CASES, "abagen": "0.1.3",
             "fixed": {"corrected_mni": False, "reannotated": False}}, indent=1) + "\n")
        env = {**os.environ, "ABAGEN_DATA": str(data_dir)}
        subprocess.run([ABAGEN_PY, __file__, "--abagen", str(data_dir)], check=True, env=env,
                       cwd=tmp)


def stage_abagen(data_dir: str) -> None:
    warnings.simplefilter("ignore")
    import abagen

    sys.path.insert(0, str(HERE))
    from make_e2e_golden import save_case, save_npz

    atlas = str(OUT / "e2e_atlas.nii.gz")
    info = str(OUT / "e2e_atlas_info.csv")
    out: dict[str, np.ndarray] = {}
    for name, kw in CASES.items():
        frame, counts = abagen.get_expression_data(
            atlas, info, data_dir=data_dir, corrected_mni=False, reannotated=False,
            return_counts=True, verbose=0, **kw)
        save_case(out, name, frame, counts)
    save_npz(out, "rnaseq")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--abagen":
        stage_abagen(sys.argv[2])
    else:
        stage_generate()
