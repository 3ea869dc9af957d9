"""Scan a source for Allen archives and select the donors to convert.

``convert`` is given a file or a folder: a zip, a folder of zips and folders (searched one level
further down when its own entries hold none, as abagen's data folder), or one archive's folder.
Each archive is recognised by its members, whatever its name (:mod:`.recognise`), and its donor
identified from its content (:mod:`.identify`). This module holds the scan (:func:`scan`,
:class:`Scan`) and the choice of donor archives of one kind (:func:`select`).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, FormatError
from ..ziputil import open_checked_zip
from .identify import _Mismatch, identify
from .recognise import (
    _BY_KIND,
    _BY_NAME,
    BRAINSPAN,
    MICROARRAY,
    RNASEQ,
    SIGNATURES,
    Found,
    _a,
    donor_label,
    inspect_folder,
    inspect_zip,
)

#: downloads still in progress (``atlas-engine fetch`` writes ``NAME.part``)
_PARTIAL = (".part", ".partial", ".crdownload", ".download", ".tmp")


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
