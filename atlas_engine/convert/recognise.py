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

This module holds the content signatures, the claims a file or folder name makes
(:func:`name_claims`) and what one zip or folder is (:class:`Found`, :func:`inspect_zip`,
:func:`inspect_folder`). Which donor an archive holds is decided by :mod:`.identify`; a whole
source is scanned by :mod:`.discover`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import AtlasEngineError, ConfigError, FormatError
from ..sources.donors import DONORS, MICROARRAY_MEMBERS, well_known_files
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
_KNOWN = {d.id: d for d in DONORS}
_BY_NAME = {d.name.lower(): d.id for d in DONORS}
_FULL = {d.id: d.n_samples for d in DONORS}
_DONOR_NAME_RE = re.compile(r"H0351\.\d{4}", re.IGNORECASE)


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
