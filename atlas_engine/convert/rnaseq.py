"""Convert the AHBA RNA-seq donors (``rnaseq_donor{id}.zip`` or abagen's extracted
``rnaseq_donor{id}/`` folders) into the ``rnaseq/{id}`` groups of an AHBA store.

Layout (shared allen_formats.md §3.7): ``RNAseqTPM.csv`` and ``RNAseqCounts.csv`` have no header,
the gene symbol first and one value per sample (parsed by :mod:`.labelparse`, exact as the
microarray values); ``Genes.csv`` has one row per gene (the matrices' rows, in the same order);
``SampleAnnot.csv`` one row per sample (the matrices' columns). Each donor group is staged and
published atomically like a microarray donor; the root attributes list it under ``rnaseq``
afterwards. Donors whose recorded source size and mtime and options match are skipped.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from .. import __version__
from ..errors import ConfigError, FormatError
from ..sources.donors import DONORS, RNASEQ_WKF
from ..store import layout as L
from ..store import location
from . import writer
from .sources import DonorSource, sha256_file
from .staging import Staged
from .store_lock import disk_errors, store_lock
from .zipstream import MemberSource

if TYPE_CHECKING:   # pandas and the numba parser load only when a donor converts
    import pandas as pd

    from .blockparse import ParseStats

RNASEQ_MATRICES = tuple(zip(L.RNASEQ_ARRAYS, ("RNAseqTPM.csv", "RNAseqCounts.csv"),
                            ("TPM", "fragment counts"), strict=True))
GENES_COLUMNS = ("gene_symbol", "gene_id", "entrez_id", "chromosome", "strand",
                 "number_of_transcripts", "median_transcriptome_length", "median_genome_length",
                 "median_number_of_exons", "median_gene_start", "median_gene_end")
SAMPLE_COLUMNS = ("RNAseq_sample_name", "replicate_sample", "sample_name", "well_id",
                  "microarray_run_id", "ontology_color", "main_structure", "sub_structure",
                  "ontology_structure_id", "ontology_structure_acronym", "hemisphere", "brain",
                  "million_clusters", "clip_percentage", "RIN_RNA_quality", "rnaseq_run_id",
                  "A.Pct", "C.Pct", "G.Pct", "T.Pct", "N.Pct")
#: the spelling in Allen's readme, accepted for the same column
_ALT_SPELLING = {"RIN_RNA_squality": "RIN_RNA_quality"}
#: how the RNA-seq tables write a missing cell
RNASEQ_NA = ("NA", "")
MEMBERS = ("Genes.csv", "RNAseqTPM.csv", "RNAseqCounts.csv", "SampleAnnot.csv")



class RnaseqSource(DonorSource):
    """Where one RNA-seq donor's CSVs are: a zip, or an extracted folder."""

    members = MEMBERS


@dataclass
class RnaseqResult:
    store: str
    converted: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    seconds: float = 0.0
    bytes_parsed: int = 0
    shapes: dict[int, tuple[int, int]] = field(default_factory=dict)


def rnaseq_path(donor_id: int) -> str:
    """Group path of one RNA-seq donor inside the store."""
    return f"{L.RNASEQ_GROUP}/{int(donor_id)}"


def find_rnaseq(src: str | os.PathLike, donors: Iterable[int | str] | None = None
                ) -> list[RnaseqSource]:
    """RNA-seq zips / folders in ``src`` (any names: recognised by their members, the donor
    identified from their content, see :mod:`.discover`), in donor-id order. With ``donors``,
    only those of them that are present (donors without RNA-seq are not an error)."""
    from .discover import scan, select
    from .recognise import RNASEQ

    found = select(scan(src), RNASEQ, donors, required=False)
    return [RnaseqSource(f.donor, f.path, f) for f in found if f.donor is not None]


# -------------------------------------------------------------------------------------------
# tables
# -------------------------------------------------------------------------------------------

def read_genes(src: MemberSource) -> pd.DataFrame:
    """Genes.csv as a frame (missing integer ids → -1); symbols must be unique."""
    from .metadata import read_typed_table

    ints = GENES_COLUMNS[1:3] + GENES_COLUMNS[5:]
    frame = read_typed_table(src, GENES_COLUMNS, ints, (), na=RNASEQ_NA, rename=_ALT_SPELLING)
    dup = frame["gene_symbol"].duplicated()
    if dup.any():
        k = int(np.flatnonzero(dup.to_numpy())[0])
        raise FormatError(src.display, f"duplicate gene symbol {frame['gene_symbol'].iloc[k]!r}",
                          line=k + 2, column=1, expected="one row per gene symbol")
    if (frame["gene_symbol"] == "").any():
        k = int(np.flatnonzero((frame["gene_symbol"] == "").to_numpy())[0])
        raise FormatError(src.display, "empty gene symbol", line=k + 2, column=1,
                          expected="a gene symbol")
    return frame


def read_rnaseq_samples(src: MemberSource) -> pd.DataFrame:
    """SampleAnnot.csv of an RNA-seq donor."""
    from .metadata import read_typed_table

    ints = ("well_id", "microarray_run_id", "ontology_structure_id", "rnaseq_run_id")
    floats = ("million_clusters", "clip_percentage", "RIN_RNA_quality", "A.Pct", "C.Pct",
              "G.Pct", "T.Pct", "N.Pct")
    frame = read_typed_table(src, SAMPLE_COLUMNS, ints, floats, na=RNASEQ_NA,
                             rename=_ALT_SPELLING)
    if frame.empty:
        raise FormatError(src.display, "no samples", line=2, expected="one row per sample")
    return frame


def _column_values(col: pd.Series) -> np.ndarray:
    if col.dtype.kind in "if":
        return col.to_numpy()
    return col.astype(str).to_numpy(dtype=object)


def _tables_dataset(genes: pd.DataFrame, samples: pd.DataFrame) -> dict[str, Any]:
    coords: dict[str, Any] = {
        L.GENE_DIM: (L.GENE_DIM, _column_values(genes["gene_symbol"])),
        L.SAMPLE_DIM: (L.SAMPLE_DIM, np.arange(1, len(samples) + 1, dtype=np.int64)),
    }
    for c in GENES_COLUMNS[1:]:
        coords[c] = (L.GENE_DIM, _column_values(genes[c]))
    for c in SAMPLE_COLUMNS:
        coords[c] = (L.SAMPLE_DIM, _column_values(samples[c]))
    return coords


# -------------------------------------------------------------------------------------------
# one donor
# -------------------------------------------------------------------------------------------

def _options(dtype: str, gene_chunk: int, sample_chunk: int, nonfinite: str = "refuse"
             ) -> dict[str, Any]:
    return {"dtype": dtype, "gene_chunk": gene_chunk, "sample_chunk": sample_chunk,
            "nonfinite": nonfinite}


#: the arrays every RNA-seq donor group holds
RNASEQ_DONOR_ARRAYS = (*L.RNASEQ_ARRAYS, L.GENE_DIM, L.SAMPLE_DIM)


def _whole(g: zarr.Group) -> bool:
    return writer.group_whole(g, RNASEQ_DONOR_ARRAYS)


def _is_current(store_url: str, src: RnaseqSource, opts: dict[str, Any]) -> bool:
    try:
        g = zarr.open_group(location.join(store_url, rnaseq_path(src.donor_id)), mode="r",
                            zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError, ValueError):
        return False
    attrs = g.attrs.asdict()
    prov = attrs.get("provenance", {})
    return (bool(attrs.get("complete")) and prov.get("source") == src.fingerprint()
            and prov.get("options") == opts and _whole(g))


def _stream(src: MemberSource, arr: zarr.Array, symbols: np.ndarray, ncols: int,
            dtype: str, nonfinite: str = "refuse") -> tuple[list[list[int]], ParseStats]:
    """Parse one matrix member into ``arr`` block by block; labels checked against Genes.csv."""
    from .blockparse import ParseStats
    from .labelparse import iter_label_blocks

    stats = ParseStats()
    out = writer.BlockWriter(arr)
    crcs: list[list[int]] = []
    n = len(symbols)
    for block in iter_label_blocks(src.iter_chunks(), ncols, arr.chunks[0], name=src.display,
                                   stats=stats, dtype=dtype, nonfinite=nonfinite):
        r0, r1 = block.start, block.start + len(block.labels)
        if r1 > n:
            raise FormatError(src.display, "more rows than Genes.csv", line=n + 1,
                              expected=f"{n} rows (one per gene of Genes.csv)")
        bad = np.flatnonzero(block.labels != symbols[r0:r1])
        if bad.size:
            k = int(bad[0])
            raise FormatError(src.display, f"gene symbol {str(block.labels[k])!r} differs from "
                              "Genes.csv", line=r0 + k + 1, column=1,
                              expected=repr(str(symbols[r0 + k])))
        crcs.append(out.write(r0, block.values))
    if stats.rows != n:
        raise FormatError(src.display, f"file ends after {stats.rows} rows", line=stats.rows + 1,
                          expected=f"{n} rows (one per gene of Genes.csv)")
    return crcs, stats


def _first_line_fields(src: MemberSource) -> int:
    from .labelparse import count_fields

    head = b""
    for piece in src.iter_chunks(read_size=1 << 16, piece_size=1 << 16):
        head += piece
        if b"\n" in head:
            break
    return count_fields(head.split(b"\n", 1)[0]) if head else 0


def convert_rnaseq_donor(store_url: str, src: RnaseqSource, opts: dict[str, Any],
                         publish: Callable[[Staged, dict[str, Any]], None] | None = None
                         ) -> dict[str, Any]:
    """Stage, fill and publish ``rnaseq/{id}``; returns a summary for the root attributes.
    ``publish(staged, info)`` moves the group into place and lists it (default: only moved)."""
    t0 = time.perf_counter()
    genes = read_genes(src.member("Genes.csv"))
    samples = read_rnaseq_samples(src.member("SampleAnnot.csv"))
    n, m = len(genes), len(samples)
    symbols = genes["gene_symbol"].to_numpy().astype(np.dtypes.StringDType())
    for _, member, _ in RNASEQ_MATRICES:
        ms = src.member(member)
        nf = _first_line_fields(ms)
        if nf and nf != m + 1:
            raise FormatError(ms.display, f"{nf - 1} values on the first line but "
                              f"SampleAnnot.csv lists {m} samples", line=1,
                              expected=f"{m + 1} fields (a gene symbol and {m} values)")
    staged = Staged.begin(store_url, rnaseq_path(src.donor_id))
    try:
        writer.write_dataset(staged.url, _tables_dataset(genes, samples))
        chunks = (min(opts["gene_chunk"], n), min(opts["sample_chunk"], m))
        crcs: dict[str, Any] = {}
        sizes: dict[str, int] = {}
        slow = 0
        nonfinite: dict[str, int] = {}
        for name, member, units in RNASEQ_MATRICES:
            arr = writer.create_matrix(staged.url, name, (n, m), chunks, opts["dtype"],
                                       (L.GENE_DIM, L.SAMPLE_DIM), {"units": units})
            crcs[name], st = _stream(src.member(member), arr, symbols, m, opts["dtype"],
                                     opts.get("nonfinite", "refuse"))
            sizes[member] = st.bytes
            slow += st.slow_tokens
            nonfinite[name] = st.nonfinite
        known = {d.id: d for d in DONORS}.get(src.donor_id)
        info = {"donor_id": src.donor_id, "name": known.name if known else None,
                "n_genes": n, "n_samples": m}
        sha = sha256_file(src.path) if src.is_zip else None
        g = zarr.open_group(staged.url, mode="a", zarr_format=3)
        g.attrs.update({
            "donor": info,
            "provenance": {"source": src.fingerprint(),
                           "sha256": sha,
                           "origin": src.origin(sha),
                           "members": sizes, "nonfinite_values": nonfinite,
                           "converter": f"atlas-engine {__version__}",
                           "options": opts,
                           "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "seconds": round(time.perf_counter() - t0, 3)},
            "checksums": {"algorithm": "crc32", "chunks": list(chunks), **crcs},
            "slow_tokens": slow,
            "nonfinite": sum(nonfinite.values()),
        })
        g.attrs["complete"] = True
        if publish is None:
            staged.publish()
        else:
            publish(staged, dict(info))
    except BaseException:
        staged.abort()
        raise
    info["bytes"] = sum(sizes.values())
    return info


def _clean_own_staging(store_url: str) -> None:
    path = location.local_path(store_url)
    staging = path / L.STAGING_DIR if path is not None else None
    if staging is None or not staging.exists():
        return
    for p in staging.iterdir():
        if p.name.startswith(f"{L.RNASEQ_GROUP}-"):
            shutil.rmtree(p, ignore_errors=True)


def convert_rnaseq(src: str | os.PathLike, store: str | os.PathLike, *, dtype: str = "float32",
                   donors: Iterable[int | str] | None = None,
                   gene_chunk: int = L.PROBE_CHUNK, sample_chunk: int = L.SAMPLE_CHUNK,
                   force: bool = False, allow_nonfinite: bool = False, wait: bool = False,
                   log: Callable[[str], None] | None = None) -> RnaseqResult:
    """Convert the RNA-seq donors found in ``src`` into ``store`` (an AHBA store, created if
    needed), one ``rnaseq/{id}`` group each.

    Holds the store's writer lock throughout (``wait`` as
    :func:`~atlas_engine.convert.donor.convert_microarray`); ``force`` reconverts current
    donors; ``allow_nonfinite`` stores nan/inf tokens as NaN instead of refusing them.
    Raises :class:`ConfigError` when ``src`` holds no RNA-seq donor (of ``donors``) and
    :class:`FormatError` on the first bad input; donors completed before it stay, the failing
    donor leaves nothing behind.
    """
    t0 = time.perf_counter()
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"dtype must be float32 or float64, not {dtype!r}")
    if gene_chunk < 1 or sample_chunk < 1:
        raise ConfigError("chunk sizes must be ≥ 1")
    log = log or (lambda s: None)
    sources = find_rnaseq(src, donors)
    if not sources:
        from .discover import scan
        from .recognise import RNASEQ

        if donors is None:
            raise scan(src).nothing((RNASEQ,))
        raise ConfigError(f"{src} holds no AHBA RNA-seq donor archive for donor(s) "
                          f"{list(donors)} (AHBA RNA-seq exists for donors "
                          f"{sorted(RNASEQ_WKF)}; recognised by their members Genes.csv, "
                          "RNAseqTPM.csv, RNAseqCounts.csv, SampleAnnot.csv)")
    for s in sources:
        log(s.found.describe() if s.found is not None else f"RNA-seq donor {s.donor_id}")
    store_url = os.fspath(store)
    opts = _options(dtype, gene_chunk, sample_chunk, "nan" if allow_nonfinite else "refuse")
    with store_lock(store_url, wait=wait, log=log), \
            disk_errors(store_url, "the RNA-seq donors"):
        return _convert_locked(store_url, sources, opts, force, log, t0)


def _convert_locked(store_url: str, sources: list[RnaseqSource], opts: dict[str, Any],
                    force: bool, log: Callable[[str], None], t0: float) -> RnaseqResult:
    from .publish import check_layout as _check_layout

    root = writer.open_root(store_url)
    info = writer.root_info(root)
    if info and info.get("format") != L.FORMAT_MICROARRAY:
        raise ConfigError(f"{store_url} holds a {info.get('format')!r} store, not AHBA")
    _check_layout(store_url, info)
    result = RnaseqResult(store_url)
    _clean_own_staging(store_url)
    done: dict[int, dict[str, Any]] = {}

    def publish(staged: Staged, got: dict[str, Any]) -> None:
        with writer.ROOT_LOCK:
            if staged.replaces():
                _publish_root(store_url, opts, drop=got["donor_id"])
            staged.publish()
            _publish_root(store_url, opts, new=got)

    for s in sources:
        if not force and _is_current(store_url, s, opts):
            result.skipped.append(s.donor_id)
            g = zarr.open_group(location.join(store_url, rnaseq_path(s.donor_id)), mode="r")
            done[s.donor_id] = dict(g.attrs["donor"])
            continue
        got = convert_rnaseq_donor(store_url, s, opts, publish)
        log(f"RNA-seq donor {s.donor_id}: {got['n_genes']} genes × {got['n_samples']} samples")
        result.converted.append(s.donor_id)
        result.bytes_parsed += got.pop("bytes")
        done[s.donor_id] = got
    listed = (writer.root_info(writer.open_root(store_url)).get("rnaseq") or {}).get("donors", [])
    if not set(done) <= set(listed):   # a donor an interrupted run published but did not list
        _publish_root(store_url, opts)
    for d, v in done.items():
        result.shapes[d] = (int(v["n_genes"]), int(v["n_samples"]))
    result.seconds = time.perf_counter() - t0
    return result


def _publish_root(store_url: str, opts: dict[str, Any], new: dict[str, Any] | None = None,
                  drop: int | None = None) -> None:
    """List the complete RNA-seq donor groups of the store (minus ``drop``) in the root
    attributes (``rnaseq`` key) together with the consolidated metadata, in one atomic step."""
    def update(cur: dict[str, Any]) -> dict[str, Any]:
        if not cur:
            cur = {"format": L.FORMAT_MICROARRAY, "layout_version": L.LAYOUT_VERSION,
                   "donors": []}
        old = cur.get("rnaseq") or {}
        infos = {int(k): v for k, v in (old.get("donor_info") or {}).items()}
        found = _complete_rnaseq(store_url)
        if new is not None:
            infos[int(new["donor_id"])] = {k: v for k, v in new.items() if k != "bytes"}
        present = sorted(d for d in found if d != drop)
        for d in present:
            if d not in infos:
                infos[d] = found[d]
        cur["rnaseq"] = {"group": L.RNASEQ_GROUP, "donors": present,
                         "donor_info": {str(d): infos[d] for d in present},
                         "dtype": old.get("dtype") or opts["dtype"],
                         "options": old.get("options") or opts,
                         "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if new is not None:
            cur["rnaseq"].update({"dtype": opts["dtype"], "options": opts})
        return cur

    writer.write_root(store_url, update)


def _complete_rnaseq(store_url: str) -> dict[int, dict[str, Any]]:
    """Donor id → recorded ``donor`` attributes of every complete, whole RNA-seq group."""
    return writer.complete_groups(store_url, L.RNASEQ_GROUP, RNASEQ_DONOR_ARRAYS)
