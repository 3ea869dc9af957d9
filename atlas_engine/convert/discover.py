"""Recognise Allen archives by what they hold, never by their names alone.

``convert`` is given a file or a folder. Each zip (any file name: ``human_microarray_expression.zip``
from ``curl -o``, ``178238387.zip`` named by its well-known-file id, or no extension at all) and
each folder (any name; the members may sit one folder down, as when a zip is extracted into a
folder named after it; abagen's data folder keeps donor folders under ``microarray/`` and
``rnaseq/``) is recognised by its members:

* an AHBA microarray donor holds ``MicroarrayExpression.csv`` / ``PACall.csv`` (and needs
  ``Probes.csv``, ``SampleAnnot.csv``, ``Ontology.csv``);
* an AHBA RNA-seq donor holds ``RNAseqTPM.csv`` / ``RNAseqCounts.csv`` (and needs ``Genes.csv``,
  ``SampleAnnot.csv``);
* a BrainSpan genes matrix holds ``expression_matrix.csv`` (and needs ``rows_metadata.csv``,
  ``columns_metadata.csv``).

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
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..errors import AtlasEngineError, ConfigError, FormatError
from ..sources import wells as W
from ..sources.donors import DONORS, MICROARRAY_MEMBERS, RNASEQ_WKF, well_known_files
from ..ziputil import open_checked_zip
from .zipstream import MemberSource

MICROARRAY = "microarray"
RNASEQ = "rnaseq"
BRAINSPAN = "brainspan"


@dataclass(frozen=True)
class Signature:
    """What makes an archive of one kind: any ``distinctive`` member, and all ``required``."""

    kind: str
    label: str
    required: tuple[str, ...]
    distinctive: tuple[str, ...]


SIGNATURES: tuple[Signature, ...] = (
    Signature(MICROARRAY, "AHBA microarray donor", MICROARRAY_MEMBERS,
              ("MicroarrayExpression.csv", "PACall.csv")),
    Signature(RNASEQ, "AHBA RNA-seq donor",
              ("Genes.csv", "RNAseqTPM.csv", "RNAseqCounts.csv", "SampleAnnot.csv"),
              ("RNAseqTPM.csv", "RNAseqCounts.csv")),
    Signature(BRAINSPAN, "BrainSpan genes matrix",
              ("expression_matrix.csv", "rows_metadata.csv", "columns_metadata.csv"),
              ("expression_matrix.csv",)),
)
_BY_KIND = {s.kind: s for s in SIGNATURES}
#: readme members (Allen's donor zips have ``Contents.txt``; BrainSpan's LMD zips ``readme.txt``)
_README = ("contents.txt", "readme.txt", "readme", "readme.md")
#: downloads still in progress (``atlas-engine fetch`` writes ``NAME.part``)
_PARTIAL = (".part", ".partial", ".crdownload", ".download", ".tmp")
_KNOWN = {d.id: d for d in DONORS}
_BY_NAME = {d.name.lower(): d.id for d in DONORS}
_FULL = {d.id: d.n_samples for d in DONORS}
_DONOR_NAME_RE = re.compile(r"H0351\.\d{4}", re.IGNORECASE)
_README_LIMIT = 1 << 20


def donor_label(donor_id: int) -> str:
    """``9861 (H0351.2001)``, or the bare id for a donor outside the six."""
    d = _KNOWN.get(int(donor_id))
    return f"{donor_id} ({d.name})" if d else str(donor_id)


def _a(label: str) -> str:
    """``label`` with its indefinite article."""
    return ("an " if label[0] in "AEIOU" else "a ") + label


def _and(items: Iterable[Any]) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# -------------------------------------------------------------------------------------------
# names: claims, never proof
# -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    """What a file or folder name says: a kind and/or a donor, and why."""

    text: str
    kind: str | None = None
    donor: int | None = None


_SPECIFIC = ((re.compile(r"normalized_microarray_donor(\d+)", re.IGNORECASE), MICROARRAY),
             (re.compile(r"rnaseq_donor(\d+)", re.IGNORECASE), RNASEQ))
_GENERIC = re.compile(r"(?<![a-z0-9])donor[_\- ]?(\d+)", re.IGNORECASE)
_WKF_STEM = re.compile(r"^(\d{6,12})(?![0-9])")


def name_claims(name: str) -> list[Claim]:
    """Claims made by one file or folder name (only known donors and files count)."""
    out: list[Claim] = []
    quoted = f'name "{name}"'
    for rx, kind in _SPECIFIC:
        m = rx.search(name)
        if m:
            d = int(m.group(1))
            out.append(Claim(quoted, kind, d if d in _KNOWN else None))
            return out
    if "genes_matrix_csv" in name.lower():
        return [Claim(quoted, BRAINSPAN)]
    m = _WKF_STEM.match(name)
    if m:
        wkf = well_known_files().get(int(m.group(1)))
        if wkf is not None:
            what = f"donor {wkf.donor}'s {wkf.kind} zip" if wkf.donor else f"the {wkf.kind} zip"
            return [Claim(f"{quoted} (well-known file {wkf.id} is {what})", wkf.kind, wkf.donor)]
    m = _GENERIC.search(name)
    if m and int(m.group(1)) in _KNOWN:
        out.append(Claim(quoted, None, int(m.group(1))))
    else:
        named = {_BY_NAME[n.lower()] for n in _DONOR_NAME_RE.findall(name) if n.lower() in _BY_NAME}
        if len(named) == 1:
            out.append(Claim(quoted, None, named.pop()))
    return out


# -------------------------------------------------------------------------------------------
# what one zip or folder is
# -------------------------------------------------------------------------------------------

@dataclass
class Found:
    """A recognised archive: a zip (members under ``prefix``) or a folder holding the members."""

    kind: str
    path: Path
    prefix: str = ""
    #: canonical member name -> name in the zip (without prefix) or the folder
    names: dict[str, str] = field(default_factory=dict)
    readme: str | None = None
    claims: list[Claim] = field(default_factory=list)
    donor: int | None = None
    n_samples: int | None = None
    evidence: str = ""
    #: donors the content leaves open when it cannot be attributed (``problem`` says why)
    candidates: tuple[int, ...] = ()
    problem: AtlasEngineError | None = None

    @property
    def is_zip(self) -> bool:
        return self.path.is_file()

    @property
    def display(self) -> str:
        """``path`` (or ``path:folder/`` for a zip whose members sit in a folder)."""
        return f"{self.path}:{self.prefix}" if self.prefix else str(self.path)

    def member(self, name: str) -> MemberSource:
        actual = self.names.get(name, name)
        if self.is_zip:
            return MemberSource(self.path, self.prefix + actual)
        f = self.path / actual
        if not f.exists():
            raise FormatError(self.path, f"missing file {name}", expected=f"{name} in the folder")
        return MemberSource(f)

    def size(self) -> int:
        if self.is_zip:
            return self.path.stat().st_size
        return sum((self.path / a).stat().st_size for a in self.names.values()
                   if (self.path / a).is_file())

    def describe(self) -> str:
        """One line for the progress log: what the archive is and how that was decided."""
        sig = _BY_KIND[self.kind]
        if self.donor is None:
            return f"{self.display}: {sig.label} (by its members)"
        full = _FULL.get(self.donor)
        count = ""
        if self.n_samples is not None and self.kind == MICROARRAY and full:
            count = (f", all {full} samples" if self.n_samples == full else
                     f", {self.n_samples} of {full} samples (a cut-down file)")
        elif self.n_samples is not None:
            count = f", {self.n_samples} samples"
        return (f"{self.display}: {sig.label} {donor_label(self.donor)}{count}; "
                f"identified by {self.evidence}")

    def record(self, sha256: str | None = None) -> dict[str, Any]:
        """The source file as recorded in a converted group's provenance (``origin``)."""
        return {"file": self.path.name, "container": "zip" if self.is_zip else "folder",
                "member_prefix": self.prefix or None, "size": self.size(), "sha256": sha256,
                "kind": self.kind, "donor": self.donor, "n_samples": self.n_samples,
                "donor_samples": _FULL.get(self.donor) if self.kind == MICROARRAY else None,
                "identified_by": self.evidence or "its members"}


def _classify(files: Iterable[str], where: str) -> tuple[Signature, dict[str, str], str | None] | None:
    """The signature ``files`` (names in one folder) match, canonical→actual names, readme."""
    lower = {f.lower(): f for f in files}
    hits = [s for s in SIGNATURES if any(d.lower() in lower for d in s.distinctive)]
    if not hits:
        return None
    if len(hits) > 1:
        raise FormatError(where, f"holds the files of both {_a(hits[0].label)} and "
                          f"{_a(hits[1].label)}", expected="one archive's files per zip or folder")
    sig = hits[0]
    missing = [r for r in sig.required if r.lower() not in lower]
    if missing:
        raise FormatError(where, f"looks like {_a(sig.label)} but has no {_and(missing)}",
                          expected=f"members {', '.join(sig.required)}")
    names = {r: lower[r.lower()] for r in sig.required}
    readme = next((lower[r] for r in _README if r in lower), None)
    return sig, names, readme


def _junk(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return (not parts or parts[0] == "__MACOSX" or parts[-1].startswith("._")
            or parts[-1] == ".DS_Store")


def inspect_zip(path: Path) -> Found | None:
    """The archive a zip holds (at its root or in one folder inside), ``None`` if it holds no
    Allen archive. Unsafe or damaged zips raise."""
    with open_checked_zip(path) as zf:
        files = [n for n in zf.namelist() if not n.endswith("/") and not _junk(n)]
    by_dir: dict[str, list[str]] = {}
    for n in files:
        p = PurePosixPath(n)
        by_dir.setdefault("" if str(p.parent) == "." else f"{p.parent}/", []).append(p.name)
    hits = []
    for d, names in by_dir.items():
        got = _classify(names, f"{path}:{d}" if d else str(path))
        if got is not None:
            hits.append((d, got))
    if not hits:
        return None
    if len(hits) > 1:
        raise FormatError(path, f"holds several archives ({_and(d or '/' for d, _ in hits)})",
                          expected="one donor or dataset per zip (unzip it and convert the folder)")
    prefix, (sig, names, readme) = hits[0]
    claims = name_claims(path.name)
    if prefix:
        claims += name_claims(PurePosixPath(prefix).name)
    return Found(sig.kind, path, prefix, names, readme, claims)


def inspect_folder(path: Path, nested: bool = True) -> Found | None:
    """The archive a folder holds: its own files or, when it holds nothing but one subfolder
    (``nested``), that subfolder's."""
    try:
        entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    except OSError as exc:
        raise ConfigError(f"{path}: cannot list the folder ({exc.strerror})") from None
    got = _classify([p.name for p in entries if p.is_file()], str(path))
    if got is not None:
        sig, names, readme = got
        return Found(sig.kind, path, "", names, readme, name_claims(path.name))
    subdirs = [p for p in entries if p.is_dir()]
    if (nested and len(subdirs) == 1 and len(entries) == 1
            and not (subdirs[0] / "zarr.json").exists()):
        inner = inspect_folder(subdirs[0], nested=False)
        if inner is not None:
            inner.claims = name_claims(path.name) + inner.claims
        return inner
    return None


# -------------------------------------------------------------------------------------------
# which donor
# -------------------------------------------------------------------------------------------

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


# -------------------------------------------------------------------------------------------
# a folder (or file) as a whole
# -------------------------------------------------------------------------------------------

@dataclass
class Scan:
    """Everything recognised in a source, plus what was looked at and not recognised."""

    root: Path
    found: list[Found] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Found]:
        return [f for f in self.found if f.kind == kind]

    def nothing(self, kinds: Iterable[str] = (MICROARRAY, RNASEQ, BRAINSPAN)) -> ConfigError:
        """The error for a source with no archive of ``kinds``: what was looked for, and what
        was there instead."""
        sigs = [s for s in SIGNATURES if s.kind in kinds]
        wanted = [f"{_a(s.label)} ({', '.join(s.required)})" for s in sigs]
        joined = wanted[0] if len(wanted) == 1 else ", ".join(wanted[:-1]) + " or " + wanted[-1]
        text = (f"{self.root}: nothing to convert: looked for a zip or folder (any name) "
                f"holding {joined}")
        others = [f"{_BY_KIND[f.kind].label} {f.path.name}" for f in self.found
                  if f.kind not in kinds]
        seen = others + self.ignored
        if seen:
            shown = ", ".join(seen[:6]) + (f" and {len(seen) - 6} more" if len(seen) > 6 else "")
            text += f"; it holds {shown}"
        elif self.root.is_dir():
            text += "; the folder is empty"
        return ConfigError(text)


def _file_found(p: Path, explicit: bool) -> tuple[Found | None, str | None]:
    if p.name.endswith(_PARTIAL):
        return None, f"{p.name} (a download in progress)"
    if not zipfile.is_zipfile(p):
        with open(p, "rb") as fh:
            magic = fh.read(4)
        if p.suffix.lower() == ".zip" or magic == b"PK\x03\x04":
            open_checked_zip(p).close()   # raises: "not a valid zip archive (...)"
        if explicit:
            raise ConfigError(f"{p}: not a zip archive (expected an AHBA donor zip, an RNA-seq "
                              "zip, BrainSpan's genes_matrix_csv.zip or a folder)")
        return None, f"{p.name} (not a zip)"
    got = inspect_zip(p)
    return (got, None) if got is not None else (None, f"{p.name} (a zip of other files)")


def _scan_dir(folder: Path, out: Scan, depth: int, rel: str = "") -> None:
    """Add the archives among ``folder``'s entries to ``out``; a subfolder that is no archive
    is searched ``depth`` more levels down (abagen's data folder: ``microarray/<donor folders>``,
    ``rnaseq/<donor folders>``)."""
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            if (p / "zarr.json").exists():
                out.ignored.append(f"{rel}{p.name}/ (a Zarr store)")
                continue
            got = inspect_folder(p)
            if got is not None:
                out.found.append(got)
                continue
            n_before = len(out.found)
            if depth > 0:
                _scan_dir(p, out, depth - 1, f"{rel}{p.name}/")
            if len(out.found) == n_before:
                out.ignored.append(f"{rel}{p.name}/ (no archive's files)")
        elif p.is_file():
            got, why = _file_found(p, explicit=False)
            if got is not None:
                out.found.append(got)
            elif why:
                out.ignored.append(f"{rel}{why}")


def scan(src: str | Path) -> Scan:
    """Recognise every archive in ``src`` (a zip, a folder of zips/folders, or one archive's
    folder; when the folder's own entries hold none, its subfolders' entries) and identify its
    donor. Raises for damaged archives, names contradicting content (two swapped names in one
    message) and one donor found twice; archives the content cannot attribute carry their
    ``problem`` (raised by whoever needs them)."""
    root = Path(src)
    out = Scan(root)
    if not root.exists():
        raise ConfigError(f"{root}: no such file or folder")
    if root.is_file():
        got, why = _file_found(root, explicit=True)
        if got is None:
            out.ignored.append(why or root.name)
            raise out.nothing()
        out.found.append(got)
    else:
        own = inspect_folder(root)
        if own is not None:
            out.found.append(own)
        else:
            _scan_dir(root, out, depth=0)
            if not any(f.path.parent == root for f in out.found):
                # no archive of its own (e.g. abagen's data folder: microarray/ and rnaseq/
                # folders of donor folders): look one level further down
                out.found.clear()
                out.ignored.clear()
                _scan_dir(root, out, depth=1)
    mismatches: list[_Mismatch] = []
    for f in out.found:
        try:
            identify(f)
        except _Mismatch as m:
            mismatches.append(m)
    if mismatches:
        raise _mismatch_error(mismatches)
    _one_per_donor(out)
    return out


def _mismatch_error(ms: list[_Mismatch]) -> FormatError:
    """One error; two donor archives whose names are swapped are named together."""
    for a in ms:
        for b in ms:
            if (a is not b and a.donor is not None and b.donor is not None
                    and a.claim.donor == b.donor and b.claim.donor == a.donor):
                return FormatError(
                    f"{a.found.display} and {b.found.display}",
                    f"names swapped: {a.found.path.name} holds donor {donor_label(a.donor)} "
                    f"by {a.evidence}; {b.found.path.name} holds donor "
                    f"{donor_label(b.donor)} by {b.evidence}",
                    expected="each file named for the donor it holds, or neutral names")
    return ms[0].error()


def _one_per_donor(sc: Scan) -> None:
    """A donor found both as a zip and as a folder keeps the zip (abagen extracts next to the
    download); found twice in zips or twice in folders, it is an error naming both."""
    keep: dict[tuple[str, int], Found] = {}
    drop: list[Found] = []
    for f in sc.found:
        if f.donor is None:
            continue
        key = (f.kind, f.donor)
        other = keep.get(key)
        if other is None:
            keep[key] = f
        elif other.is_zip != f.is_zip:
            zipped, folder = (other, f) if other.is_zip else (f, other)
            keep[key] = zipped
            drop.append(folder)
            sc.ignored.append(f"{folder.path.name}/ (donor {f.donor}, also in {zipped.path.name})")
        else:
            raise ConfigError(f"{other.display} and {f.display} both hold "
                              f"{_BY_KIND[f.kind].label} {donor_label(f.donor)}; keep one")
    sc.found = [f for f in sc.found if all(f is not d for d in drop)]


def select(sc: Scan, kind: str, donors: Iterable[int | str] | None, *,
           required: bool = True) -> list[Found]:
    """The donor archives of ``kind`` in ``sc`` (all, in donor-id order, or those of ``donors``
    in the given order). Archives the content could not attribute raise when they could be a
    wanted donor. ``required``: an error when ``donors`` names one not found."""
    items = sc.of_kind(kind)
    want: list[int] | None = None
    if donors is not None:
        want = []
        for d in donors:
            key = str(d).strip()
            if not key:
                continue
            if key.lower() in _BY_NAME:
                want.append(_BY_NAME[key.lower()])
            elif key.isdigit():
                want.append(int(key))
            else:
                raise ConfigError(f"unknown donor {key!r} (expected a donor id or name, e.g. "
                                  "9861 or H0351.2001)")
    for f in items:
        if f.problem is not None and (want is None or set(f.candidates) & set(want)):
            raise f.problem
    by_donor = {f.donor: f for f in items if f.donor is not None}
    if want is None:
        return [by_donor[d] for d in sorted(by_donor)]
    missing = [d for d in want if d not in by_donor]
    if missing and required:
        label = _BY_KIND[kind].label
        have = sorted(by_donor)
        raise ConfigError(f"{sc.root}: no {label} archive for donor(s) {missing} "
                          f"(found donor(s) {have or 'none'}; archives are recognised by "
                          f"their members, {', '.join(_BY_KIND[kind].required)})")
    return [by_donor[d] for d in want if d in by_donor]
