"""Sample QC: hemisphere check, broad class, left/right mirroring, similarity threshold
(abagen ``samples_.py``). Pure pandas/numpy on a donor's SampleAnnot table and the ontology."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..choices import MIRROR_MODES
from ..errors import ConfigError
from ..store.ontology import Ontology
from .registry import check_choice


def hemispheres(structure_ids: np.ndarray, ontology: Ontology) -> np.ndarray:
    """'L' / 'R' / 'B' per sample from the ontology (missing hemisphere → 'B')."""
    ids, back = _unique_ids(structure_ids)
    hemi = ontology.table["hemisphere"] if "hemisphere" in ontology.table else None
    out = []
    for s in ids.tolist():     # each structure once
        h = None if hemi is None else hemi.get(s)
        out.append("B" if h is None or (isinstance(h, float) and np.isnan(h)) or h == "" else str(h))
    return np.asarray(out, dtype=object)[back]


def broad_classes(structure_ids: np.ndarray, ontology: Ontology) -> np.ndarray:
    """abagen's broad class per sample (None when no class id is on the path)."""
    ids, back = _unique_ids(structure_ids)
    return np.asarray([ontology.broad_class(s) for s in ids.tolist()], dtype=object)[back]


def _unique_ids(structure_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct structure ids (as int) and, per sample, the position of its id."""
    ids, back = np.unique(np.asarray(structure_ids).astype(np.int64), return_inverse=True)
    return ids, back.reshape(-1)


def hemisphere_mismatch(
    structure_ids: np.ndarray, mni_x: np.ndarray, ontology: Ontology
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which samples agree with their structure's hemisphere.

    Keep ``(L & x < 0) | (R & x > 0) | (B & x == 0)``. Returns ``(keep, hemisphere, class)``.
    """
    hemi = hemispheres(structure_ids, ontology)
    x = np.asarray(mni_x, dtype=np.float64)
    keep = ((hemi == "L") & (x < 0)) | ((hemi == "R") & (x > 0)) | ((hemi == "B") & (x == 0))
    return np.asarray(keep, dtype=bool), hemi, broad_classes(structure_ids, ontology)


def drop_mismatch_samples(annotation: pd.DataFrame, ontology: Ontology) -> pd.DataFrame:
    """The rows of ``annotation`` (columns structure_id, mni_x, ...) that pass the hemisphere
    check, with ``hemisphere`` and ``structure`` (broad class) columns added."""
    keep, hemi, cls = hemisphere_mismatch(
        annotation["structure_id"].to_numpy(), annotation["mni_x"].to_numpy(), ontology
    )
    return annotation.assign(hemisphere=hemi, structure=cls)[keep]


def mirror_samples(
    annotation: pd.DataFrame, ontology: Ontology, swap: str = "bidirectional"
) -> tuple[pd.DataFrame, np.ndarray]:
    """Duplicate samples into the opposite hemisphere (abagen ``mirror_samples``).

    Every sample with ``mni_x < 0`` (leftright / bidirectional) and then every one with
    ``mni_x > 0`` (rightleft / bidirectional) is appended with ``mni_x`` negated and the
    structure of the same acronym in the other hemisphere (structure_id, structure_acronym,
    structure_name replaced).

    Returns
    -------
    annotation : DataFrame
        Original rows then the duplicates (index repeats the original labels).
    source : (N,) int array
        Position in the input of each output row, to repeat expression / PACall columns.
    """
    check_choice("lr_mirror mode", swap, MIRROR_MODES)
    table = ontology.table
    by_key = {
        (str(a), str(h)): int(i)
        for i, a, h in zip(table["id"], table["acronym"], table["hemisphere"], strict=True)
    }
    x = annotation["mni_x"].to_numpy()
    parts = [np.arange(len(annotation))]
    if swap in ("leftright", "bidirectional"):
        parts.append(np.flatnonzero(x < 0))
    if swap in ("rightleft", "bidirectional"):
        parts.append(np.flatnonzero(x > 0))
    dup = np.concatenate(parts[1:]) if len(parts) > 1 else np.zeros(0, dtype=np.int64)
    flipped = annotation.iloc[dup].copy()
    swap_h = {"L": "R", "R": "L"}
    new_ids = []
    for sid in flipped["structure_id"].to_numpy().tolist():
        row = table.loc[int(sid)]
        h = row["hemisphere"]
        target = (str(row["acronym"]), swap_h.get(str(h), str(h)))
        if target not in by_key:
            raise ConfigError(
                f"structure {sid} ({row['acronym']}) has no counterpart in hemisphere {target[1]}"
            )
        new_ids.append(by_key[target])
    if len(flipped):
        new = table.loc[new_ids]
        flipped["structure_id"] = new["id"].to_numpy()
        if "structure_acronym" in flipped:
            flipped["structure_acronym"] = new["acronym"].to_numpy()
        if "structure_name" in flipped:
            flipped["structure_name"] = new["name"].to_numpy()
        flipped["mni_x"] = flipped["mni_x"] * -1
    out = pd.concat([annotation, flipped])
    return out, np.concatenate([parts[0], dup]).astype(np.int64)


def similarity_threshold(expression: np.ndarray, threshold: float) -> np.ndarray:
    """Keep mask of samples whose summed correlation to all samples is at least
    ``mean - threshold·std(ddof=1)`` (expression: probes × samples)."""
    corr = np.corrcoef(np.asarray(expression, dtype=np.float64).T)
    sim = corr.sum(axis=1)
    return sim >= np.mean(sim) - threshold * np.std(sim, ddof=1)


def load_corrected_mni() -> pd.DataFrame:
    """The bundled corrected MNI coordinates (alleninf), indexed by ``well_id``."""
    from importlib.resources import files

    with files("atlas_engine.data").joinpath("corrected_mni_coordinates.csv.gz").open("rb") as fh:
        table = pd.read_csv(fh, compression="gzip")
    return table.rename(columns={"corrected_mni_x": "mni_x", "corrected_mni_y": "mni_y",
                                 "corrected_mni_z": "mni_z"}).set_index("well_id")


def corrected_coordinates(
    annotation: pd.DataFrame, table: pd.DataFrame | None = None
) -> pd.DataFrame:
    """``annotation`` with mni_x/y/z replaced by the corrected coordinates of its well ids.

    Raises :class:`ConfigError` naming the well ids missing from the table (as abagen does;
    generated data has none of the real ids, so use ``corrected_mni=False`` there).
    """
    ref = load_corrected_mni() if table is None else table
    wells = annotation["well_id"].to_numpy()
    missing = np.setdiff1d(wells, ref.index.to_numpy())
    if missing.size:
        shown = ", ".join(map(str, missing[:20].tolist()))
        more = f" (and {missing.size - 20} more)" if missing.size > 20 else ""
        raise ConfigError(
            f"{missing.size} well id(s) have no corrected MNI coordinates: {shown}{more}; "
            "use corrected_mni=False for data that are not the real AHBA samples"
        )
    out = annotation.copy()
    out[["mni_x", "mni_y", "mni_z"]] = ref.loc[wells, ["mni_x", "mni_y", "mni_z"]].to_numpy()
    return out
