"""Allen-format data generator: the six AHBA donor zips, the structure graph and BrainSpan.

Files are written exactly as Allen ships them (shared ``allen_formats.md`` §3, §6, §8): per donor
``normalized_microarray_donor{id}.zip`` holding ``MicroarrayExpression.csv`` and ``PACall.csv``
(no header; ``probe_id`` then one column per sample), ``Probes.csv`` (string columns always
quoted), ``SampleAnnot.csv`` (acronym and name always quoted) and ``Ontology.csv`` (quoted only
where a field holds a comma); ``structure_graph_10.json``; and BrainSpan's
``genes_matrix_csv.zip`` (see :mod:`atlas_engine.testing.synth_brainspan`).

The generating model is in :mod:`atlas_engine.testing.synth_model`. Output is a pure function of
the arguments: the same seed gives byte-identical files, whatever the number of worker processes.

Example
-------
>>> from atlas_engine.testing.synth import write_ahba
>>> result = write_ahba("raw/", probes=300, samples_fraction=0.03)   # doctest: +SKIP
>>> result.zips[9861]                                                 # doctest: +SKIP
PosixPath('raw/normalized_microarray_donor9861.zip')
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue as queue_mod
import sys
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import atomic_output, atomic_write_text
from ..errors import ConfigError
from ..progress import bar, progress_enabled
from ..sources.donors import DONORS, HBA_STRUCTURE_GRAPH, N_PROBES, Donor, resolve_donors
from .synth_brainspan import write_brainspan
from .synth_format import quote, render_decimal_rows, render_flag_rows, zip_member
from .synth_model import (
    BLOCK_ROWS,
    REPR_SHARE,
    DonorValues,
    build_probes,
    build_samples,
    build_structures,
    donor_values,
    scaled_count,
    value_tokens,
)
from .synth_ontology import build_ontology, ontology_csv, structure_graph

__all__ = ["SynthResult", "write_ahba", "write_all", "write_brainspan",
           "probes_csv", "sample_annot_csv", "STRUCTURE_GRAPH_NAME"]

#: File name of the structure graph written next to the zips.
STRUCTURE_GRAPH_NAME = f"structure_graph_{HBA_STRUCTURE_GRAPH}.json"
#: Deliberate hemisphere / mni_x disagreements per donor (abagen drops such samples).
DEFAULT_MISMATCHES = 3
#: Smallest number of samples per donor when scaling down.
DEFAULT_MIN_SAMPLES = 4
#: Below this many matrix values in all, donors are written in-process (no worker start-up).
PARALLEL_MIN_VALUES = 20_000_000

PROBES_HEADER = "probe_id,probe_name,gene_id,gene_symbol,gene_name,entrez_id,chromosome"
SAMPLE_ANNOT_HEADER = ("structure_id,slab_num,well_id,slab_type,structure_acronym,structure_name,"
                       "polygon_id,mri_voxel_x,mri_voxel_y,mri_voxel_z,mni_x,mni_y,mni_z")


@dataclass
class SynthResult:
    """What :func:`write_ahba` (and :func:`write_all`) wrote, and how.

    Attributes
    ----------
    dest : Path
        Output directory.
    zips : dict[int, Path]
        Donor id → ``normalized_microarray_donor{id}.zip``.
    structure_graph : Path
        ``structure_graph_10.json``.
    n_probes : int
        Rows of every matrix and of Probes.csv.
    samples : dict[int, int]
        Donor id → number of samples (matrix columns, SampleAnnot rows).
    mismatches : dict[int, tuple[int, ...]]
        Donor id → 0-based SampleAnnot rows that abagen's hemisphere check drops: ``mni_x`` of
        the wrong sign for their structure's hemisphere (``mismatches`` of them deliberately,
        the others real samples near the midline), or a structure without hemisphere and
        ``mni_x`` not exactly 0 (all other samples pass).
    ontology : pandas.DataFrame
        The Ontology.csv table (``parent_structure_id`` as nullable Int64).
    probes : pandas.DataFrame
        The Probes.csv table (``entrez_id`` as nullable Int64).
    params : dict
        The generating parameters (seed, samples_fraction, ...).
    brainspan : Path or None
        ``genes_matrix_csv.zip`` when written by :func:`write_all`.
    rnaseq : dict[int, Path]
        Donor id → ``rnaseq_donor{id}.zip`` written by :func:`write_all` (9861, 10021).
    gtex : dict[str, Path]
        GTEx version (v8, v10) → median-TPM GCT file written by :func:`write_all`.
    """

    dest: Path
    zips: dict[int, Path]
    structure_graph: Path
    n_probes: int
    samples: dict[int, int]
    mismatches: dict[int, tuple[int, ...]]
    ontology: pd.DataFrame
    probes: pd.DataFrame
    params: dict[str, Any] = field(default_factory=dict)
    brainspan: Path | None = None
    rnaseq: dict[int, Path] = field(default_factory=dict)
    gtex: dict[str, Path] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return int(self.params["seed"])

    @property
    def donor_ids(self) -> list[int]:
        return list(self.zips)


# ---------------------------------------------------------------------------------------------
# small CSVs
# ---------------------------------------------------------------------------------------------

def probes_csv(table: pd.DataFrame) -> bytes:
    """Probes.csv bytes: probe_name, gene_symbol and gene_name always double-quoted, numbers
    bare, missing entrez_id / chromosome as empty fields."""
    lines = [PROBES_HEADER]
    for pid, pname, gid, sym, gname, ez, chrom in table.itertuples(index=False, name=None):
        ez_text = "" if pd.isna(ez) else str(int(ez))
        chrom_text = "" if chrom is None or pd.isna(chrom) else str(chrom)
        lines.append(f"{int(pid)},{quote(pname)},{int(gid)},{quote(sym)},{quote(gname)},"
                     f"{ez_text},{chrom_text}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def sample_annot_csv(annot: pd.DataFrame) -> bytes:
    """SampleAnnot.csv bytes: structure_acronym and structure_name always double-quoted,
    slab_type bare, MNI coordinates with one decimal (``-58.0``)."""
    lines = [SAMPLE_ANNOT_HEADER]
    for r in annot.itertuples(index=False):
        lines.append(
            f"{r.structure_id},{r.slab_num},{r.well_id},{r.slab_type},{quote(r.structure_acronym)},"
            f"{quote(r.structure_name)},{r.polygon_id},{r.mri_voxel_x},{r.mri_voxel_y},"
            f"{r.mri_voxel_z},{r.mni_x:.1f},{r.mni_y:.1f},{r.mni_z:.1f}"
        )
    return ("\n".join(lines) + "\n").encode("utf-8")


# ---------------------------------------------------------------------------------------------
# one donor zip (runs in a worker process or in-process)
# ---------------------------------------------------------------------------------------------

@dataclass
class _DonorJob:
    path: Path
    values: DonorValues
    probes_csv: bytes
    annot_csv: bytes
    ontology_csv: bytes
    repr_share: float


def _write_donor_zip(job: _DonorJob, tick: Callable[[int], None] | Any = None) -> Path:
    """Write one donor zip to a temporary name, then rename it into place.

    ``tick`` is called (or, for a queue, ``put``) with ``(donor_id, 1)`` after every block.
    """
    def report() -> None:
        if tick is None:
            return
        if hasattr(tick, "put"):
            tick.put((job.values.donor_id, 1))
        else:
            tick(1)

    values = job.values
    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            flags = []  # PACall blocks, kept from the value pass (1 byte per value)
            with zip_member(zf, "MicroarrayExpression.csv") as fh:
                for b in range(values.n_blocks):
                    ids, v, pa = values.block(b)
                    flags.append(pa)
                    trng = np.random.default_rng([values.seed, 7, values.donor_id, b])
                    mant, frac, pos, text = value_tokens(v, trng, job.repr_share)
                    fh.write(render_decimal_rows(ids, mant, frac, override_pos=pos,
                                                 override_text=text))
                    report()
            with zip_member(zf, "Ontology.csv") as fh:
                fh.write(job.ontology_csv)
            with zip_member(zf, "PACall.csv") as fh:
                for b in range(values.n_blocks):
                    lo = b * BLOCK_ROWS
                    fh.write(render_flag_rows(values.probe_ids[lo:lo + BLOCK_ROWS], flags[b]))
                    flags[b] = None
                    report()
            with zip_member(zf, "Probes.csv") as fh:
                fh.write(job.probes_csv)
            with zip_member(zf, "SampleAnnot.csv") as fh:
                fh.write(job.annot_csv)

    atomic_output(job.path, write)
    return job.path


def _run_jobs(jobs: list[_DonorJob], workers: int, quiet: bool) -> None:
    """Write every donor zip, ``workers`` processes at a time, with a bar per donor."""
    bars = {j.values.donor_id: bar(total=2 * j.values.n_blocks,
                                   desc=f"donor {j.values.donor_id}", unit="block", quiet=quiet)
            for j in jobs}
    try:
        if workers <= 1 or len(jobs) <= 1:
            for j in jobs:
                _write_donor_zip(j, bars[j.values.donor_id].update)
            return
        # fork (Linux) reuses the imported modules and compiled kernels, which saves seconds of
        # start-up per worker; elsewhere spawn. Workers only write files: no shared state.
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ctx.Manager() if progress_enabled(quiet) else _NullContext() as manager:
            q = manager.Queue() if manager is not None else None
            order = sorted(jobs, key=lambda j: -j.values.probe_ids.size
                           * j.values.sample_factors.shape[0])
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                pending = {pool.submit(_write_donor_zip, j, q) for j in order}
                while pending:
                    done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    for fut in done:
                        fut.result()
                    _drain(q, bars)
            _drain(q, bars)
    finally:
        for b in bars.values():
            b.close()


class _NullContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _drain(q: Any, bars: dict[int, Any]) -> None:
    if q is None:
        return
    while True:
        try:
            donor_id, n = q.get_nowait()
        except queue_mod.Empty:
            return
        bars[donor_id].update(n)


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------

def _check_args(probes: int, samples_fraction: float, min_samples: int) -> None:
    if not 1 <= probes <= 10 * N_PROBES:
        raise ConfigError(f"probes must be between 1 and {10 * N_PROBES} (got {probes})")
    if not 0 < samples_fraction <= 1:
        raise ConfigError(f"samples_fraction must be in (0, 1] (got {samples_fraction})")
    if min_samples < 1:
        raise ConfigError(f"min_samples must be at least 1 (got {min_samples})")


def write_ahba(
    dest: str | os.PathLike[str],
    *,
    probes: int = N_PROBES,
    samples_fraction: float = 1.0,
    seed: int = 0,
    donors: str | Iterable[str | int] | None = None,
    mismatches: int = DEFAULT_MISMATCHES,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    repr_share: float = REPR_SHARE,
    workers: int | None = None,
    quiet: bool = True,
) -> SynthResult:
    """Write AHBA microarray donor zips and ``structure_graph_10.json`` into ``dest``.

    Parameters
    ----------
    dest : path
        Output directory (created if missing). Existing files of the same names are replaced.
    probes : int
        Probes (matrix rows); the real files have 58,692.
    samples_fraction : float in (0, 1]
        Each donor gets ``max(min_samples, round(real_count * samples_fraction))`` samples; the
        real counts are 946, 893, 363, 529, 470 and 501.
    seed : int
        Seed of everything generated; the same seed gives byte-identical files.
    donors : "all", "9861,10021", list of ids/names or None
        Donors to write (default all six). A donor's files do not depend on which others are
        written.
    mismatches : int
        Samples per donor whose ``mni_x`` sign deliberately disagrees with their hemisphere.
    min_samples : int
        Lower bound of samples per donor when scaling down.
    repr_share : float
        Share of values written as ``repr`` of an unrounded double (16-17 significant digits);
        the rest carry 15 significant digits (fewer when trailing zeros are dropped).
    workers : int or None
        Processes writing donors in parallel; default: up to the CPU count for large outputs,
        in-process for small ones. Does not change the output.
    quiet : bool
        No progress bars.
    """
    _check_args(probes, samples_fraction, min_samples)
    selected: list[Donor] = resolve_donors(donors)
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)

    ontology = build_ontology()
    structures = build_structures(ontology, seed)
    probe_model = build_probes(probes, seed)
    probes_bytes = probes_csv(probe_model.table)
    ontology_bytes = ontology_csv(ontology)

    jobs: list[_DonorJob] = []
    samples: dict[int, int] = {}
    mism: dict[int, tuple[int, ...]] = {}
    for donor in selected:
        n = scaled_count(donor.n_samples, samples_fraction, min_samples)
        ds = build_samples(donor, n, structures, seed, mismatches)
        samples[donor.id] = n
        mism[donor.id] = ds.mismatches
        jobs.append(_DonorJob(
            path=out / donor.zip_name,
            values=donor_values(donor, probe_model, structures, ds, seed),
            probes_csv=probes_bytes, annot_csv=sample_annot_csv(ds.annot),
            ontology_csv=ontology_bytes, repr_share=repr_share,
        ))

    if workers is None:
        total = probes * sum(samples.values())
        workers = min(len(jobs), os.cpu_count() or 1) if total >= PARALLEL_MIN_VALUES else 1
    _run_jobs(jobs, workers, quiet)

    graph_path = out / STRUCTURE_GRAPH_NAME
    atomic_write_text(graph_path, json.dumps(structure_graph(ontology, HBA_STRUCTURE_GRAPH)))

    return SynthResult(
        dest=out,
        zips={d.id: out / d.zip_name for d in selected},
        structure_graph=graph_path,
        n_probes=probes,
        samples=samples,
        mismatches=mism,
        ontology=ontology,
        probes=probe_model.table,
        params={"probes": probes, "samples_fraction": samples_fraction, "seed": seed,
                "donors": [d.id for d in selected], "mismatches": mismatches,
                "min_samples": min_samples, "repr_share": repr_share},
    )


def write_all(
    dest: str | os.PathLike[str],
    *,
    probes: int = N_PROBES,
    samples_fraction: float = 1.0,
    seed: int = 0,
    donors: str | Iterable[str | int] | None = None,
    brainspan: bool = True,
    brainspan_genes: int = 2000,
    brainspan_samples: int = 524,
    rnaseq: bool = True,
    gtex: bool = True,
    workers: int | None = None,
    quiet: bool = True,
) -> SynthResult:
    """Everything ``atlas-engine synth`` writes: :func:`write_ahba` plus, unless
    ``brainspan=False``, :func:`write_brainspan` (``genes_matrix_csv.zip``) and, unless
    ``rnaseq=False``, the RNA-seq zips of the selected donors among 9861 and 10021
    (:func:`atlas_engine.testing.synth_rnaseq.write_rnaseq`) and, unless ``gtex=False``, the
    GTEx median-TPM GCT files of the same genes (:mod:`atlas_engine.testing.synth_gtex`) into
    ``dest``."""
    result = write_ahba(dest, probes=probes, samples_fraction=samples_fraction, seed=seed,
                        donors=donors, workers=workers, quiet=quiet)
    if rnaseq:
        from .synth_rnaseq import write_rnaseq

        result.rnaseq = write_rnaseq(dest, probes=probes, samples_fraction=samples_fraction,
                                     seed=seed, donors=donors)
    if brainspan:
        result.brainspan = write_brainspan(dest, genes=brainspan_genes,
                                           samples=brainspan_samples, seed=seed,
                                           gene_pool=refseq_genes(result.probes))
        result.params.update(brainspan_genes=brainspan_genes, brainspan_samples=brainspan_samples)
    if gtex:
        from .synth_gtex import write_gtex

        bs_genes = None
        if result.brainspan is not None:
            with zipfile.ZipFile(result.brainspan) as zf:
                bs_genes = pd.read_csv(zf.open("rows_metadata.csv"), dtype=str,
                                       keep_default_na=False)
        result.gtex = write_gtex(dest, probes=probes, seed=seed, brainspan_genes=bs_genes)
    return result


def refseq_genes(probes: pd.DataFrame) -> pd.DataFrame:
    """The distinct RefSeq genes (``gene_symbol``, ``entrez_id``) of a generated Probes table,
    in probe order: the gene set the BrainSpan and GTEx generators share with the AHBA one."""
    t = probes[probes["entrez_id"].notna()][["gene_symbol", "entrez_id"]]
    t = t.drop_duplicates("gene_symbol").reset_index(drop=True)
    t["entrez_id"] = t["entrez_id"].astype(np.int64)
    return t


#: Real donor order, for callers that want the ids without importing sources.
DONOR_IDS = tuple(d.id for d in DONORS)
