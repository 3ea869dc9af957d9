"""Which donor an AHBA archive holds, decided by its content.

A donor archive's donor comes from its content, strongest signal first:

1. ``SampleAnnot.csv`` well_ids: when every one is a known AHBA sample
   (:mod:`atlas_engine.sources.wells`), they name the donor; a cut-down file (fewer samples,
   as test fixtures are) is identified the same way and its sample count reported. Samples
   of several donors in one file are an error.
2. RNA-seq ``brain`` column, then a readme (``Contents.txt``) naming exactly one donor
   (``H0351.xxxx``) — both UNCONFIRMED in the real files (allen_formats.md §2, §3.7), so they
   are only used when the well_ids do not decide, and never overrule them.
3. The well_id range (generated data, whose well_ids are drawn from each donor's range) gives
   candidate donors, narrowed by the sample count when it is a donor's full count.

The file or folder name is only a claim: it picks among the candidates content leaves open,
and a name that contradicts the content (``normalized_microarray_donor9861.zip`` holding donor
10021, two donors' zips swapped, an RNA-seq zip named as a microarray one) is an error naming
both. An archive that content cannot attribute is an error that says so, not a guess.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from ..errors import AtlasEngineError, ConfigError, FormatError
from ..sources import wells as W
from ..sources.donors import RNASEQ_WKF
from .recognise import (
    _BY_KIND,
    _BY_NAME,
    _DONOR_NAME_RE,
    _FULL,
    _KNOWN,
    BRAINSPAN,
    RNASEQ,
    Claim,
    Found,
    _a,
    _and,
    donor_label,
)

_README_LIMIT = 1 << 20


class _Mismatch(Exception):
    def __init__(self, found: Found, claim: Claim, donor: int | None, kind: str,
                 evidence: str) -> None:
        super().__init__(evidence)
        self.found, self.claim, self.donor, self.kind, self.evidence = (
            found, claim, donor, kind, evidence)

    def error(self) -> FormatError:
        f, c = self.found, self.claim
        if c.kind is not None and c.kind != self.kind:
            said = _BY_KIND[c.kind].label + (f" {donor_label(c.donor)}" if c.donor else "")
            have = _BY_KIND[self.kind].label + (f" {donor_label(self.donor)}"
                                                if self.donor else "")
            return FormatError(f.display, f"the {c.text} says {said} but it holds {_a(have)}, "
                               f"by {self.evidence}", expected="a name that does not contradict "
                               "the content (any neutral name is accepted)")
        return FormatError(f.display, f"the {c.text} says donor {donor_label(c.donor or 0)} but "
                           f"the content is donor {donor_label(self.donor or 0)}, by "
                           f"{self.evidence}", expected=f"a name that does not contradict the "
                           f"content, e.g. {_suggest(f, self.donor)}")


def _suggest(f: Found, donor: int | str | None) -> str:
    stem = "rnaseq_donor" if f.kind == RNASEQ else "normalized_microarray_donor"
    return f"{stem}{donor}" + (".zip" if f.is_zip else "")


def _read_samples(f: Found) -> tuple[np.ndarray, list[str] | None]:
    """well_ids (and, for RNA-seq, the ``brain`` column) of the archive's SampleAnnot.csv."""
    src = f.member("SampleAnnot.csv")
    text = src.read_bytes().decode("utf-8-sig", "replace")
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if not header or "well_id" not in header:
        raise FormatError(src.display, f"no well_id column in the header {header}", line=1,
                          expected="the SampleAnnot.csv header with a well_id column")
    k = header.index("well_id")
    b = header.index("brain") if f.kind == RNASEQ and "brain" in header else None
    wells: list[int] = []
    brain: list[str] = []
    for i, row in enumerate(rows, start=2):
        if not row:
            continue
        try:
            wells.append(int(row[k]))
        except (ValueError, IndexError):
            raise FormatError(src.display, f"bad well_id {row[k] if k < len(row) else ''!r}",
                              line=i, column=k + 1, expected="an integer well_id") from None
        if b is not None and b < len(row):
            brain.append(row[b].strip())
    if not wells:
        raise FormatError(src.display, "no samples", line=2, expected="one row per sample")
    return np.asarray(wells, dtype=np.int64), (brain if b is not None else None)


def _brain_donor(values: list[str]) -> int | None:
    """The donor the RNA-seq ``brain`` column names (a donor name or id), if it names one."""
    got = set()
    for v in set(values):
        key = v.strip().lower()
        if key in _BY_NAME:
            got.add(_BY_NAME[key])
        elif key.isdigit() and int(key) in _KNOWN:
            got.add(int(key))
        else:
            return None
    return got.pop() if len(got) == 1 else None


def _readme_donor(f: Found) -> int | None:
    if f.readme is None:
        return None
    try:
        data = f.member(f.readme).read_bytes()[:_README_LIMIT].decode("latin-1")
    except AtlasEngineError:
        return None
    named = {_BY_NAME[n.lower()] for n in _DONOR_NAME_RE.findall(data) if n.lower() in _BY_NAME}
    return named.pop() if len(named) == 1 else None


def identify(f: Found) -> None:
    """Set ``f.donor`` and ``f.evidence`` from the content (see the module docstring); set
    ``f.problem`` when the content cannot attribute it. Raises :class:`_Mismatch` when the
    name contradicts the content, :class:`FormatError` for contradictory content."""
    for c in f.claims:
        if c.kind is not None and c.kind != f.kind:
            raise _Mismatch(f, c, None, f.kind, "its members")
    if f.kind == BRAINSPAN:
        f.evidence = "its members"
        return
    wells, brain = _read_samples(f)
    n = len(wells)
    f.n_samples = n
    sample_file = f.member("SampleAnnot.csv").display
    known = W.donor_of(wells)
    donor: int | None = None
    evidence = ""
    if (known > 0).all():
        owners, counts = np.unique(known, return_counts=True)
        if len(owners) > 1:
            parts = ", ".join(f"{donor_label(int(d))}: {int(c)}" for d, c in zip(owners, counts,
                                                                                 strict=True))
            raise FormatError(sample_file, f"samples of several donors ({parts})",
                              expected="one donor's samples per archive")
        donor = int(owners[0])
        evidence = f"its {n} well_ids, all donor {donor}'s"
        if W.BASIS.get(donor, "").startswith("inferred"):
            evidence += ", an inferred block of the well_id table"
    else:
        # UNCONFIRMED in the real files (allen_formats.md §2, §3.7): the RNA-seq ``brain``
        # column and the readme's text. Used only when the well_ids do not decide.
        by_brain = _brain_donor(brain) if brain else None
        by_readme = _readme_donor(f)
        if by_brain is not None:
            donor, evidence = by_brain, "its SampleAnnot.csv brain column"
        elif by_readme is not None:
            donor, evidence = by_readme, f"its {f.readme}, which names one donor"
    if donor is not None:
        for c in f.claims:
            if c.donor is not None and c.donor != donor:
                raise _Mismatch(f, c, donor, f.kind, evidence)
        f.donor, f.evidence = donor, evidence
        return
    # weak: the well_id range, the sample count, then the name among what they leave open
    cands = W.range_candidates(wells)
    if f.kind == RNASEQ and set(cands) & set(RNASEQ_WKF):
        cands = sorted(set(cands) & set(RNASEQ_WKF))
    lo, hi = int(wells.min()), int(wells.max())
    if not cands:
        raise FormatError(sample_file, f"well_ids {lo}-{hi} fit no AHBA donor", expected=(
            "well_ids of one donor (the 3,702 known samples, or one donor's well_id range)"))
    n_known = int((known > 0).sum())
    which = "not known AHBA samples" if not n_known else f"{n - n_known} of them no known AHBA sample"
    evidence = (f"its {n} well_ids, {lo} to {hi}, {which} but in the well_id range of "
                f"donor{'s' if len(cands) > 1 else ''} {_and(cands)}")
    if len(cands) > 1:
        by_count = [c for c in cands if _FULL.get(c) == n]
        if len(by_count) == 1:
            cands = by_count
            evidence += f", with donor {by_count[0]}'s full sample count {n}"
    claimed = {c.donor for c in f.claims if c.donor is not None}
    for c in f.claims:
        if c.donor is not None and c.donor not in cands:
            if len(cands) == 1:
                raise _Mismatch(f, c, cands[0], f.kind, evidence)
            raise FormatError(f.display, f"the {c.text} says donor {donor_label(c.donor)} but "
                              f"{evidence}", expected="a name that does not contradict the "
                              "content")
    if len(claimed) == 1:
        f.donor = claimed.pop()
        f.evidence = evidence + (f"; the name picks donor {f.donor}" if len(cands) > 1 else "")
    elif len(cands) == 1:
        f.donor, f.evidence = cands[0], evidence
    else:
        f.candidates = tuple(cands)
        f.problem = ConfigError(
            f"{f.display}: cannot tell which donor this is: {evidence}; name it "
            f"{_suggest(f, '<id>')} to pick one of them")
