"""The six Allen Human Brain Atlas donors and the well-known files the engine knows about.

Ids come from abagen's ``WELL_KNOWN_IDS`` (``abagen/datasets/fetchers.py``); sample counts from
abagen's tests and the per-donor blocks of ``corrected_mni_coordinates.csv.gz`` (10021, 14380 and
15697 are inferred from those blocks, see shared allen_formats.md §1).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class Donor:
    name: str          # e.g. "H0351.2001"
    id: int            # Allen Donor.id, abagen's ``subj``
    microarray_wkf: int
    t1w_wkf: int
    t2w_wkf: int
    n_samples: int
    age: int
    sex: str

    @property
    def zip_name(self) -> str:
        return f"normalized_microarray_donor{self.id}.zip"

    @property
    def folder_name(self) -> str:
        """abagen's extracted folder name."""
        return f"normalized_microarray_donor{self.id}"


DONORS: tuple[Donor, ...] = (
    Donor("H0351.2001", 9861, 178238387, 157722636, 157722638, 946, 24, "M"),
    Donor("H0351.2002", 10021, 178238373, 157723301, 157723303, 893, 39, "M"),
    Donor("H0351.1009", 12876, 178238359, 157722290, 157722292, 363, 57, "M"),
    Donor("H0351.1012", 14380, 178238316, 157721937, 157721939, 529, 31, "M"),
    Donor("H0351.1015", 15496, 178238266, 162021642, 162021644, 470, 49, "F"),
    Donor("H0351.1016", 15697, 178236545, 157682966, 157682968, 501, 55, "M"),
)

N_PROBES = 58_692
N_SAMPLES = sum(d.n_samples for d in DONORS)  # 3702

#: AHBA RNA-seq zips (two donors, 121 samples each).
RNASEQ_WKF: dict[int, int] = {9861: 278447594, 10021: 278448166}

#: BrainSpan "RNA-Seq Gencode v10 summarized to genes" (genes_matrix_csv.zip). Some scripts label
#: 267666525 "exons" and 267666527 "genes"; the majority of sources (and the file name) say genes.
BRAINSPAN_GENES_WKF = 267666525

#: The old P56 mouse brain annotation zip (MetaImage ``annotation.mhd`` + ``.raw``, 25 µm;
#: pre-CCFv3; shared more_datasets.md §2.2).
MOUSE_P56_ANNOTATION_WKF = 197642854

#: Human Brain Atlas structure graph id (``/api/v2/structure_graph_download/10.json``).
HBA_STRUCTURE_GRAPH = 10

#: Allen product id of the Human Brain Microarray (abbreviation ``HumanMA``).
HUMAN_MA_PRODUCT_ID = 2

MICROARRAY_MEMBERS = (
    "MicroarrayExpression.csv",
    "PACall.csv",
    "Probes.csv",
    "SampleAnnot.csv",
    "Ontology.csv",
)


@dataclass(frozen=True)
class WellKnownFile:
    """A downloadable file: its Allen id, the name it is saved under, and what it is."""

    id: int
    filename: str
    kind: str              # "microarray" | "rnaseq" | "brainspan" | "mouse-annotation" | "mri"
    donor: int | None = None


def well_known_files() -> dict[int, WellKnownFile]:
    """Every well-known file the engine fetches, keyed by id (the mirror serves the same ids)."""
    files = {d.microarray_wkf: WellKnownFile(d.microarray_wkf, d.zip_name, "microarray", d.id)
             for d in DONORS}
    for donor, wkf in RNASEQ_WKF.items():
        files[wkf] = WellKnownFile(wkf, f"rnaseq_donor{donor}.zip", "rnaseq", donor)
    files[BRAINSPAN_GENES_WKF] = WellKnownFile(BRAINSPAN_GENES_WKF, "genes_matrix_csv.zip", "brainspan")
    files[MOUSE_P56_ANNOTATION_WKF] = WellKnownFile(
        MOUSE_P56_ANNOTATION_WKF, "P56_Mouse_annotation.zip", "mouse-annotation")
    for d in DONORS:
        for kind, wkf in (("T1", d.t1w_wkf), ("T2", d.t2w_wkf)):
            files[wkf] = WellKnownFile(wkf, f"mri_donor{d.id}_{kind}.nii.gz", "mri", d.id)
    return files


def get_donor(key: str | int) -> Donor:
    """Look a donor up by id (``9861``, ``"9861"``) or name (``"H0351.2001"``)."""
    text = str(key).strip()
    for d in DONORS:
        if text == str(d.id) or text.lower() == d.name.lower():
            return d
    valid = ", ".join(f"{d.id}/{d.name}" for d in DONORS)
    if text.lower() in ("combined", "pooled", "each"):
        raise ConfigError(f"--donors {text}: --donors takes donor ids or names ({valid}); "
                          f"how donors are combined is `aggregate --combine {text.lower()}`")
    raise ConfigError(f"unknown donor {key!r} (valid: {valid})")


def resolve_donors(spec: str | Iterable[str | int] | None) -> list[Donor]:
    """``"all"``/``None`` → all six; ``"9861,H0351.2002"`` or a list → those, in the given order."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return list(DONORS)
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[Donor] = []
    for item in items:
        if str(item).strip() == "":
            continue
        d = get_donor(item)
        if d not in out:
            out.append(d)
    if not out:
        raise ConfigError("no donors selected")
    return out
