"""Where each microarray donor's CSVs are (a zip or a folder, recognised by content) and the
cheap facts about them: fingerprints, file and member sha256, sizes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import AtlasEngineError, FormatError
from ..sources.donors import MICROARRAY_MEMBERS
from .zipstream import MemberSource

if TYPE_CHECKING:
    from .metadata import Table
    from .recognise import Found


@dataclass
class DonorSource:
    """Where one donor's five CSVs are: a zip, or an extracted folder."""

    donor_id: int
    path: Path
    #: how the archive was recognised and its donor identified (member names, evidence)
    found: Found | None = None
    #: the CSVs a folder holds (their sizes and mtimes make the folder's fingerprint)
    members: ClassVar[tuple[str, ...]] = MICROARRAY_MEMBERS

    @property
    def is_zip(self) -> bool:
        return self.path.is_file()

    def origin(self, sha256: str | None = None) -> dict[str, Any] | None:
        """The source file for the provenance: name, size, sha256, how it was identified."""
        return self.found.record(sha256) if self.found is not None else None

    def member(self, name: str) -> MemberSource:
        if self.found is not None:
            return self.found.member(name)
        if self.is_zip:
            return MemberSource(self.path, name)
        f = self.path / name
        if not f.exists():
            raise FormatError(self.path, f"missing file {name}", expected=f"{name} in the folder")
        return MemberSource(f)

    def fingerprint(self) -> dict[str, Any]:
        """Name, size and mtime of the source (of each CSV for a folder): cheap change check."""
        if self.is_zip:
            st = self.path.stat()
            return {"name": self.path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        files = {}
        for n in self.members:
            f = self.path / n
            if f.exists():
                st = f.stat()
                files[n] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        return {"name": self.path.name, "files": files}


def find_sources(src: str | os.PathLike, donors: Iterable[int | str] | None = None
                 ) -> list[DonorSource]:
    """Microarray donor zips / folders in ``src`` (any names: recognised by their members, the
    donor identified from their content, see :mod:`.discover`), in donor-id order or the given
    order."""
    from .discover import scan, select
    from .recognise import MICROARRAY

    sc = scan(src)
    if not sc.of_kind(MICROARRAY):
        raise sc.nothing((MICROARRAY,))
    return [DonorSource(f.donor, f.path, f) for f in select(sc, MICROARRAY, donors)
            if f.donor is not None]


def manifest_sha256(path: Path) -> str | None:
    """The sha256 that ``atlas-engine fetch`` recorded for ``path`` in its folder's
    manifest.json, if the file still has the recorded size and mtime (no re-hashing)."""
    from ..fetch.manifest import Manifest

    try:
        entry = Manifest.load(path.parent).entries.get(path.name)
    except AtlasEngineError:
        return None
    return entry.sha256 if entry is not None and entry.matches_stat(path) else None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while piece := fh.read(8 << 20):
            h.update(piece)
    return h.hexdigest()


def member_sha256(src: MemberSource) -> str:
    """sha256 of a (small) member's bytes, CRC-checked, without a leading byte-order mark (as
    :func:`.metadata.table_bytes` hashes them)."""
    from .zipstream import BOM

    h = hashlib.sha256()
    first = True
    for piece in src.iter_chunks():
        if first and piece.startswith(BOM):
            piece = piece[len(BOM):]
        first = False
        h.update(piece)
    return h.hexdigest()


def source_size(ds: DonorSource) -> int:
    if ds.is_zip:
        return ds.path.stat().st_size
    return sum((ds.path / n).stat().st_size for n in MICROARRAY_MEMBERS
               if (ds.path / n).exists())


def shared_tables(todo: list[DonorSource], ref: dict[str, Any]) -> tuple[Table, Table]:
    """Probes.csv and Ontology.csv of the first donor to convert, after checking that every
    other donor holds the same bytes (sha256) and that they are the tables the store was
    converted from (``ref``: its ``probes_source``), so one parse serves every donor."""
    from .metadata import read_ontology, read_probes

    first, *others = todo
    probes = read_probes(first.member("Probes.csv"))
    ontology = read_ontology(first.member("Ontology.csv"))
    if ref and ref.get("sha256") != probes.sha256:
        raise FormatError(probes.source, "Probes.csv differs from the one this store was "
                          f"converted from ({ref.get('file')})",
                          expected="the same Probes.csv in every donor")
    for ds in others:
        for name, table in (("Probes.csv", probes), ("Ontology.csv", ontology)):
            member = ds.member(name)
            if member_sha256(member) != table.sha256:
                raise FormatError(member.display, f"{name} differs from {table.source}",
                                  expected=f"the same {name} in every donor")
    return probes, ontology
