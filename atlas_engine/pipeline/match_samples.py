"""Samples to atlas regions: every donor's kept samples matched (abagen's rules or
``majority``), the per-region sample counts, and why each sample matched or did not."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .matching import HOW, VolumeAtlas
from .result import DonorSamples


def match_donors(atlas: VolumeAtlas, donors: list[DonorSamples], tolerance: float,
                 rule: str) -> list[np.ndarray]:
    """The atlas label of every kept sample of each donor (0: unmatched), with the
    explanation columns of the donors' sample tables filled."""
    labels = []
    for ds in donors:
        a = ds.annotation
        coords = a[["mni_x", "mni_y", "mni_z"]].to_numpy(dtype=np.float64)
        lab, how, radius = atlas.label_samples(
            coords, tolerance, a["hemisphere"].to_numpy(), a["structure"].to_numpy(),
            rule=rule, return_how=True)
        explain_matching(ds, atlas, coords, lab, how, radius, tolerance)
        labels.append(lab)
    return labels


def sample_counts_frame(labels: list[np.ndarray], all_labels: np.ndarray, donors: list[int]
            ) -> pd.DataFrame:
    from .regions import sample_counts

    c = sample_counts(labels, all_labels)
    return pd.DataFrame(c, index=pd.Index(all_labels, name="label"),
                        columns=pd.Index(donors, name="donor"))


def explain_matching(ds: DonorSamples, atlas: VolumeAtlas, coords: np.ndarray,
                      lab: np.ndarray, how: np.ndarray, radius: np.ndarray,
                      tolerance: float) -> None:
    """Fill label/match/radius/status/reason of one donor's kept samples in its explanation
    table (``match``: how the sample matched, :data:`~.matching.HOW`)."""
    qc = ds.table["qc_row"].to_numpy()
    idx = np.flatnonzero(qc >= 0)
    order = qc[idx]
    rejected = np.flatnonzero(how == 4)
    free = np.zeros(len(lab), dtype=np.int64)
    if rejected.size:  # the region the hemisphere/class filter refused
        free[rejected] = atlas.label_samples(coords[rejected], tolerance)
    labels = np.zeros(len(qc), dtype=np.int64)
    labels[idx] = lab[order]
    ds.table["label"] = labels
    match = np.full(len(qc), "", dtype=object)
    match[idx] = [HOW[int(h)] for h in how[order].tolist()]
    ds.table["match"] = match
    rad = np.full(len(qc), np.nan)
    rad[idx] = np.where(radius[order] >= 0, radius[order], np.nan)
    ds.table["match_radius_mm"] = rad
    reasons = ds.table["reason"].to_numpy().copy()
    status = ds.table["status"].to_numpy().copy()
    for i, j in zip(idx.tolist(), order.tolist(), strict=True):
        h, r = int(how[j]), int(radius[j])
        if lab[j] != 0:
            status[i] = "matched"
            if h == 1:
                reasons[i] = f"matched to region {lab[j]}: inside a labelled voxel"
            elif h == 3:
                reasons[i] = (f"matched to region {lab[j]}: several regions within {r} mm, "
                              "nearest centroid")
            else:
                reasons[i] = f"matched to region {lab[j]}: within {r} mm"
        elif h == 4:
            status[i] = "unmatched"
            reasons[i] = (f"unmatched: region {free[j]} within {tolerance:g} mm has another "
                          "hemisphere or class")
        else:
            status[i] = "unmatched"
            reasons[i] = f"unmatched: no atlas voxel within {tolerance:g} mm (too far)"
    ds.table["status"] = status
    ds.table["reason"] = reasons


