"""The tables the local Allen mirror answers RMA queries from, read out of a raw directory.

Everything comes from the files themselves (docs/architecture.md "Raw directory"):

* ``Probe`` and ``Gene`` from ``Probes.csv`` of the first donor zip present (donor order of
  :data:`~atlas_engine.sources.donors.DONORS`); genes are the distinct ``gene_id`` values.
* ``Structure`` and the structure graph from that zip's ``Ontology.csv``.
* ``Donor`` from :data:`~atlas_engine.sources.donors.DONORS`, for donors whose zip exists, plus
  BrainSpan's donors and ``Specimen`` (one per BrainSpan sample) from ``columns_metadata.csv``
  of ``genes_matrix_csv.zip`` when the directory has it. BrainSpan record fields are INFERRED
  (Donor: ``id``, ``name``, ``external_donor_name``, ``sex``, ``age``, ``age_years``,
  ``organism_id``; Specimen: ``id``, ``name``, ``donor_id``, ``structure_id``; specimen ids are
  made here as ``BRAINSPAN_SPECIMEN_BASE + column_num``, the real ids being unknown).
* samples and expression values (``service::human_microarray_expression``) from each donor's
  ``SampleAnnot.csv`` and ``MicroarrayExpression.csv`` (rows scanned out of the zip member and
  cached per donor).
* ``CellType`` (one record per cluster of each generated Cell Types data set) from the data
  sets' metadata (:mod:`.server_celltypes`; the real model's fields are UNCONFIRMED).

Tables load lazily, once, under a lock (the server evaluates queries in worker threads).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import FormatError
from ..sources.donors import (
    DONORS,
    HBA_STRUCTURE_GRAPH,
    HUMAN_MA_PRODUCT_ID,
    Donor,
    well_known_files,
)
from ..store.ontology import ONTOLOGY_COLUMNS, parse_path
from ..ziputil import open_checked_zip
from .server_rma import RmaError, zscores

Record = dict[str, Any]

PROBES_HEADER = ["probe_id", "probe_name", "gene_id", "gene_symbol", "gene_name", "entrez_id",
                 "chromosome"]
SAMPLE_HEADER = ["structure_id", "slab_num", "well_id", "slab_type", "structure_acronym",
                 "structure_name", "polygon_id", "mri_voxel_x", "mri_voxel_y", "mri_voxel_z",
                 "mni_x", "mni_y", "mni_z"]

#: Allen Hemisphere ids: 1 left, 2 right, 3 both/none.
HEMISPHERE_IDS = {"L": 1, "R": 2, "": 3}
#: Allen organism id of Homo sapiens.
HUMAN_ORGANISM_ID = 2

#: Products the mirror knows. Only HumanMA (id 2) is confirmed (shared allen_formats.md §1); the
#: abbreviations of the others are UNCONFIRMED and are there so product filters can fail to match.
PRODUCTS: tuple[Record, ...] = (
    {"abbreviation": "Mouse", "description": "Adult mouse brain in situ hybridization",
     "id": 1, "name": "Mouse Brain"},
    {"abbreviation": "HumanMA", "description": "Human brain microarray (six adult donors)",
     "id": HUMAN_MA_PRODUCT_ID, "name": "Human Brain Microarray"},
    {"abbreviation": "DevHumanTranscriptome", "description": "BrainSpan RNA-seq and exon arrays",
     "id": 24, "name": "Developing Human Transcriptome"},
)

#: BrainSpan's product (Developing Human Transcriptome)
BRAINSPAN_PRODUCT_ID = 24
#: Generated Specimen ids: this + the sample's column_num (real ids UNCONFIRMED)
BRAINSPAN_SPECIMEN_BASE = 700_000_000

#: Depth of the ancestor reported as a sample's ``top_level_structure`` (3 = e.g. cerebral
#: cortex under brain/gray matter/telencephalon). The real choice is UNCONFIRMED.
TOP_LEVEL_DEPTH = 3


def _sorted(record: Record) -> Record:
    # Record keys are alphabetical in the stored Structure example (shared allen_formats.md §5.3).
    return {k: record[k] for k in sorted(record)}


def _int_or_none(text: str) -> int | None:
    text = text.strip()
    if text == "" or text.upper() in ("NA", "NAN", "<NA>"):
        return None
    return int(float(text))


def _read_member(zf: zipfile.ZipFile, zip_path: Path, member: str) -> Iterator[list[str]]:
    try:
        raw = zf.open(member)
    except KeyError:
        raise FormatError(zip_path, f"member {member} is missing",
                          expected="the five AHBA CSVs at the zip root") from None
    with raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        yield from csv.reader(text)


def _header_checked(rows: Iterator[list[str]], where: str, expected: list[str]) -> None:
    header = next(rows, None)
    if header is None or [h.strip() for h in header] != expected:
        raise FormatError(where, f"unexpected header {header}", line=1,
                          expected=",".join(expected))


class MirrorData:
    """Lazily loaded tables of one raw directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._lock = threading.RLock()
        self._probes: list[Record] | None = None
        self._genes: list[Record] | None = None
        self._gene_by_id: dict[int, Record] = {}
        self._probes_by_gene: dict[int, list[Record]] = {}
        self._probe_row: dict[int, Record] = {}
        self._ontology: list[dict[str, str]] | None = None
        self._structures: list[Record] | None = None
        self._samples: dict[int, list[Record]] = {}
        self._expr: dict[int, dict[int, list[str]]] = {}
        self._bs_columns: list[dict[str, str]] | None = None
        self._cell_types: list[Record] | None = None

    # -- files --------------------------------------------------------------------------------
    def file_for_id(self, wkf_id: int) -> Path | None:
        """The served file for a well-known-file id (``None`` when unknown or absent).

        Ids come from :func:`well_known_files` plus an optional ``index.json`` in the directory
        mapping ``"<id>"`` to a path relative to it.
        """
        known = well_known_files().get(wkf_id)
        candidates: list[Path] = []
        if known is not None:
            candidates.append(self.root / known.filename)
        index = self.root / "index.json"
        if index.is_file():
            try:
                extra = json.loads(index.read_text())
            except ValueError as exc:
                raise FormatError(index, f"not valid JSON ({exc})",
                                  expected='{"<id>": "relative/file"}') from None
            rel = extra.get(str(wkf_id)) if isinstance(extra, dict) else None
            if isinstance(rel, str):
                candidates.insert(0, self.root / rel)
        root = self.root.resolve()
        for path in candidates:
            resolved = path.resolve()
            if root in resolved.parents and resolved.is_file():
                return resolved
        return None

    def served_files(self) -> dict[int, Path]:
        """Every well-known-file id the directory can serve, with its file."""
        ids = list(well_known_files())
        index = self.root / "index.json"
        if index.is_file():
            with contextlib.suppress(ValueError):
                extra = json.loads(index.read_text())
                if isinstance(extra, dict):
                    ids += [int(k) for k in extra if str(k).isdigit()]
        out = {}
        for wkf in dict.fromkeys(ids):
            path = self.file_for_id(wkf)
            if path is not None:
                out[wkf] = path
        return out

    def donors(self) -> list[Donor]:
        """Donors whose microarray zip exists, in :data:`DONORS` order."""
        return [d for d in DONORS if (self.root / d.zip_name).is_file()]

    def _first_zip(self) -> Path:
        donors = self.donors()
        if not donors:
            raise RmaError(f"no normalized_microarray_donor*.zip in {self.root}")
        return self.root / donors[0].zip_name

    # -- Probe / Gene ---------------------------------------------------------------------------
    def _load_probes(self) -> None:
        with self._lock:
            if self._probes is not None:
                return
            path = self._first_zip()
            probes: list[Record] = []
            genes: dict[int, Record] = {}
            with open_checked_zip(path) as zf:
                rows = _read_member(zf, path, "Probes.csv")
                _header_checked(rows, f"{path}:Probes.csv", PROBES_HEADER)
                for lineno, row in enumerate(rows, start=2):
                    if not row:
                        continue
                    if len(row) != 7:
                        raise FormatError(f"{path}:Probes.csv", f"{len(row)} fields", line=lineno,
                                          expected="7 fields")
                    try:
                        pid, gid = int(row[0]), int(row[2])
                        entrez = _int_or_none(row[5])
                    except ValueError as exc:
                        raise FormatError(f"{path}:Probes.csv", str(exc), line=lineno,
                                          expected="integer probe_id, gene_id, entrez_id") from None
                    chrom = row[6].strip() or None
                    probe = {"gene_id": gid, "id": pid, "name": row[1], "probe_type": "DNA"}
                    probes.append(probe)
                    self._probe_row[pid] = {"id": pid, "name": row[1], "gene-id": gid,
                                            "gene-symbol": row[3], "gene-name": row[4],
                                            "entrez-id": entrez, "chromosome": chrom}
                    if gid not in genes:
                        genes[gid] = _sorted({
                            "id": gid, "acronym": row[3], "name": row[4], "entrez_id": entrez,
                            "chromosome": chrom, "organism_id": HUMAN_ORGANISM_ID,
                            "original_symbol": row[3], "original_name": row[4],
                        })
                    self._probes_by_gene.setdefault(gid, []).append(probe)
            self._gene_by_id = genes
            self._genes = list(genes.values())
            self._probes = probes

    # -- Structure ------------------------------------------------------------------------------
    def ontology_rows(self) -> list[dict[str, str]]:
        with self._lock:
            if self._ontology is None:
                path = self._first_zip()
                with open_checked_zip(path) as zf:
                    rows = _read_member(zf, path, "Ontology.csv")
                    where = f"{path}:Ontology.csv"
                    _header_checked(rows, where, list(ONTOLOGY_COLUMNS))
                    out = []
                    for lineno, row in enumerate(rows, start=2):
                        if not row:
                            continue
                        if len(row) != len(ONTOLOGY_COLUMNS):
                            raise FormatError(where, f"{len(row)} fields", line=lineno,
                                              expected=f"{len(ONTOLOGY_COLUMNS)} fields")
                        out.append(dict(zip(ONTOLOGY_COLUMNS, row, strict=True)))
                self._ontology = out
            return self._ontology

    def structures(self) -> list[Record]:
        """``model::Structure`` records (the 21 fields of shared allen_formats.md §5.6)."""
        with self._lock:
            if self._structures is None:
                out = []
                for row in self.ontology_rows():
                    path = row["structure_id_path"]
                    out.append(_sorted({
                        "id": int(row["id"]), "atlas_id": None, "name": row["name"],
                        "acronym": row["acronym"], "st_level": None,
                        "ontology_id": None,  # HBA ontology id UNCONFIRMED
                        "hemisphere_id": HEMISPHERE_IDS.get(row["hemisphere"].strip(), 3),
                        "weight": 8690,
                        "parent_structure_id": _int_or_none(row["parent_structure_id"]),
                        "depth": len(parse_path(path)) - 1, "graph_id": HBA_STRUCTURE_GRAPH,
                        "graph_order": int(row["graph_order"]), "structure_id_path": path,
                        "color_hex_triplet": row["color_hex_triplet"],
                        "neuro_name_structure_id": None, "neuro_name_structure_id_path": None,
                        "failed": False, "sphinx_id": int(row["graph_order"]) + 1,
                        "structure_name_facet": None, "failed_facet": None,
                        "safe_name": row["name"],
                    }))
                self._structures = out
            return self._structures

    def structure_graph(self) -> list[Record]:
        """The graph as nested nodes (roots first), children ordered by ``graph_order``."""
        nodes: dict[int, Record] = {}
        parent_of: dict[int, int | None] = {}
        for row in sorted(self.ontology_rows(), key=lambda r: int(r["graph_order"])):
            sid = int(row["id"])
            parent = _int_or_none(row["parent_structure_id"])
            path = parse_path(row["structure_id_path"])
            if parent is None and len(path) >= 2:
                parent = path[-2]
            parent_of[sid] = parent
            nodes[sid] = {
                "id": sid, "atlas_id": None, "ontology_id": None, "acronym": row["acronym"],
                "name": row["name"], "color_hex_triplet": row["color_hex_triplet"],
                "graph_order": int(row["graph_order"]), "st_level": None,
                "hemisphere_id": HEMISPHERE_IDS.get(row["hemisphere"].strip(), 3),
                "parent_structure_id": parent, "children": [],
            }
        roots = []
        for sid, node in nodes.items():
            parent = parent_of[sid]
            if parent is not None and parent in nodes:
                nodes[parent]["children"].append(node)
            else:
                roots.append(node)
        return roots

    # -- samples and expression ---------------------------------------------------------------
    def samples(self, donor: Donor) -> list[Record]:
        with self._lock:
            if donor.id not in self._samples:
                path = self.root / donor.zip_name
                where = f"{path}:SampleAnnot.csv"
                out = []
                with open_checked_zip(path) as zf:
                    rows = _read_member(zf, path, "SampleAnnot.csv")
                    _header_checked(rows, where, SAMPLE_HEADER)
                    for lineno, row in enumerate(rows, start=2):
                        if not row:
                            continue
                        if len(row) != len(SAMPLE_HEADER):
                            raise FormatError(where, f"{len(row)} fields", line=lineno,
                                              expected=f"{len(SAMPLE_HEADER)} fields")
                        out.append(dict(zip(SAMPLE_HEADER, row, strict=True)))
                self._samples[donor.id] = out
            return self._samples[donor.id]

    def expression_rows(self, donor: Donor, probe_ids: list[int]) -> dict[int, list[str]]:
        """The CSV tokens of the wanted rows of ``MicroarrayExpression.csv`` (cached per donor)."""
        with self._lock:
            cache = self._expr.setdefault(donor.id, {})
            missing = {p for p in probe_ids if p not in cache}
            if missing:
                path = self.root / donor.zip_name
                prefixes = {f"{p},".encode(): p for p in missing}
                with open_checked_zip(path) as zf, zf.open("MicroarrayExpression.csv") as fh:
                    for line in fh:
                        head = line[:line.find(b",") + 1]
                        pid = prefixes.get(head)
                        if pid is None:
                            continue
                        tokens = line.decode().rstrip("\r\n").split(",")
                        cache[pid] = tokens[1:]
                        missing.discard(pid)
                        if not missing:
                            break
            return {p: cache[p] for p in probe_ids if p in cache}

    def microarray_expression(self, probes: list[int], donors: list[int] | None,
                              structures: list[int] | None) -> dict[str, list[Record]]:
        """``msg`` of ``service::human_microarray_expression`` (shared allen_formats.md §5.5)."""
        self._load_probes()
        unknown = [p for p in probes if p not in self._probe_row]
        if unknown:
            raise RmaError(f"unknown probe id(s): {', '.join(map(str, unknown))}")
        present = {d.id: d for d in self.donors()}
        if donors is None:
            chosen = list(present.values())
        else:
            missing = [d for d in donors if d not in present]
            if missing:
                raise RmaError(f"unknown donor id(s): {', '.join(map(str, missing))}")
            chosen = [present[d] for d in dict.fromkeys(donors)]
        by_id = {int(r["id"]): r for r in self.ontology_rows()}
        wanted = set(structures) if structures else None
        sample_msgs: list[Record] = []
        columns: list[tuple[Donor, list[int]]] = []
        for donor in chosen:
            keep = []
            for j, s in enumerate(self.samples(donor)):
                sid = int(s["structure_id"])
                path = parse_path(by_id[sid]["structure_id_path"]) if sid in by_id else [sid]
                if wanted is not None and not wanted.intersection(path):
                    continue
                keep.append(j)
                top = path[min(TOP_LEVEL_DEPTH, len(path) - 1)]
                sample_msgs.append(self._sample_msg(donor, s, by_id.get(sid), by_id.get(top)))
            columns.append((donor, keep))
        rows_by_donor = {donor.id: self.expression_rows(donor, probes) for donor, _ in columns}
        probe_msgs = []
        for pid in probes:
            tokens: list[str] = []
            for donor, keep in columns:
                row = rows_by_donor[donor.id].get(pid)
                if row is None:
                    raise RmaError(f"probe {pid} has no expression row for donor {donor.id}")
                tokens.extend(row[j] for j in keep)
            msg = dict(self._probe_row[pid])
            msg["expression_level"] = tokens
            msg["z-score"] = zscores([float(t) for t in tokens])
            probe_msgs.append(msg)
        return {"probes": probe_msgs, "samples": sample_msgs}

    @staticmethod
    def _sample_msg(donor: Donor, s: dict[str, str], structure: dict[str, str] | None,
                    top: dict[str, str] | None) -> Record:
        def struct(row: dict[str, str] | None, fallback_id: str) -> Record:
            if row is None:
                return {"id": int(fallback_id), "name": None, "abbreviation": None, "color": None}
            return {"id": int(row["id"]), "name": row["name"], "abbreviation": row["acronym"],
                    "color": row["color_hex_triplet"]}

        return {
            "donor": {"id": donor.id, "name": donor.name, "age": f"{donor.age} years",
                      "sex": donor.sex},
            "sample": {"well": int(s["well_id"]), "polygon": int(s["polygon_id"]),
                       "slab_num": int(s["slab_num"]), "slab_type": s["slab_type"],
                       "mri": [int(s["mri_voxel_x"]), int(s["mri_voxel_y"]),
                               int(s["mri_voxel_z"])]},
            "structure": struct(structure, s["structure_id"]),
            "top_level_structure": struct(top, s["structure_id"]),
        }

    # -- BrainSpan --------------------------------------------------------------------------
    def brainspan_columns(self) -> list[dict[str, str]]:
        """``columns_metadata.csv`` rows of ``genes_matrix_csv.zip`` (empty without the zip)."""
        with self._lock:
            if self._bs_columns is None:
                path = self.root / "genes_matrix_csv.zip"
                rows: list[dict[str, str]] = []
                if path.is_file():
                    header = ["column_num", "donor_id", "donor_name", "age", "gender",
                              "structure_id", "structure_acronym", "structure_name"]
                    with open_checked_zip(path) as zf:
                        it = _read_member(zf, path, "columns_metadata.csv")
                        _header_checked(it, f"{path}:columns_metadata.csv", header)
                        for lineno, row in enumerate(it, start=2):
                            if len(row) != len(header):
                                raise FormatError(f"{path}:columns_metadata.csv",
                                                  f"{len(row)} fields", line=lineno,
                                                  expected=f"{len(header)} fields")
                            rows.append(dict(zip(header, row, strict=True)))
                self._bs_columns = rows
            return self._bs_columns

    def brainspan_donors(self) -> list[Record]:
        from ..sources.devtime import age_years

        out: dict[int, Record] = {}
        for r in self.brainspan_columns():
            d = int(r["donor_id"])
            if d not in out:
                out[d] = _sorted({"id": d, "name": r["donor_name"],
                                  "external_donor_name": r["donor_name"], "sex": r["gender"],
                                  "age": r["age"], "age_years": round(age_years(r["age"]), 4),
                                  "organism_id": HUMAN_ORGANISM_ID})
        return list(out.values())

    def specimens(self) -> list[Record]:
        return [_sorted({"id": BRAINSPAN_SPECIMEN_BASE + int(r["column_num"]),
                         "name": f"{r['donor_name']}.{r['structure_acronym']}",
                         "donor_id": int(r["donor_id"]), "structure_id": int(r["structure_id"])})
                for r in self.brainspan_columns()]

    # -- the Tables protocol ------------------------------------------------------------------
    def table(self, model: str) -> list[Record]:
        if model == "Probe":
            self._load_probes()
            assert self._probes is not None
            return self._probes
        if model == "Gene":
            self._load_probes()
            assert self._genes is not None
            return self._genes
        if model == "Structure":
            return self.structures()
        if model == "Donor":
            return [_sorted({"id": d.id, "name": d.name, "external_donor_name": d.name,
                             "sex": d.sex, "age": f"{d.age} years", "age_years": d.age,
                             "organism_id": HUMAN_ORGANISM_ID}) for d in self.donors()] + \
                self.brainspan_donors()
        if model == "Specimen":
            return self.specimens()
        if model == "Product":
            return [_sorted(p) for p in PRODUCTS]
        if model == "CellType":
            with self._lock:
                if self._cell_types is None:
                    from .server_celltypes import cell_types

                    self._cell_types = cell_types(self.root)
                return self._cell_types
        raise RmaError(f"unknown model {model!r}")

    def related(self, model: str, assoc: str, record: Record) -> tuple[str, list[Record]]:
        """Records associated with ``record`` through ``assoc`` and their model."""
        if assoc == "products" and model != "Product":
            brainspan = model == "Specimen" or (
                model == "Donor" and record["id"] in {d["id"] for d in self.brainspan_donors()})
            pid = BRAINSPAN_PRODUCT_ID if brainspan else HUMAN_MA_PRODUCT_ID
            return "Product", [_sorted(p) for p in PRODUCTS if p["id"] == pid]
        if model == "Specimen" and assoc == "donor":
            return "Donor", [d for d in self.brainspan_donors() if d["id"] == record["donor_id"]]
        if model == "Specimen" and assoc == "structure":
            cols = self.brainspan_columns()
            hit = next((c for c in cols if int(c["structure_id"]) == record["structure_id"]), None)
            return "Structure", [] if hit is None else [{
                "id": int(hit["structure_id"]), "acronym": hit["structure_acronym"],
                "name": hit["structure_name"]}]
        if model == "Probe" and assoc in ("gene", "genes"):
            self._load_probes()
            gene = self._gene_by_id.get(record["gene_id"])
            return "Gene", [gene] if gene is not None else []
        if model == "Gene" and assoc == "probes":
            self._load_probes()
            return "Probe", self._probes_by_gene.get(record["id"], [])
        raise RmaError(f"unknown association {assoc!r} of model {model}")
