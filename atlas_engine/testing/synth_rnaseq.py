"""AHBA RNA-seq zips (``rnaseq_donor{9861,10021}.zip``) generator.

Members at the zip root (shared ``allen_formats.md`` §2, §3.7): ``Contents.txt``, ``Genes.csv``,
``Ontology.csv``, ``RNAseqCounts.csv``, ``RNAseqTPM.csv`` and ``SampleAnnot.csv``.

* ``RNAseqTPM.csv`` / ``RNAseqCounts.csv``: no header; the gene symbol (double-quoted), then one
  value per sample in SampleAnnot order. TPM values carry up to 15 significant digits with
  trailing zeros dropped (``12.3456789012345``), ``0`` for no expression, and values below
  1e-4 in exponent form (``3.45678901234567e-05``), as R's ``write.csv`` prints them. Counts are
  mostly whole numbers (``17``) and partly fractional (``3.5``). Whether the real files quote
  the symbol is UNCONFIRMED (the converter reads both forms).
* ``Genes.csv``: header ``gene_symbol,gene_id,entrez_id,chromosome,strand,...``; missing ids
  are ``NA``. Text columns are double-quoted (UNCONFIRMED, as above).
* ``SampleAnnot.csv``: the 21 RNA-seq annotation columns; every RNA-seq sample is one of the
  donor's microarray samples (same ``well_id`` and structure), text columns double-quoted.

Genes are the microarray generator's RefSeq genes (a few left out) plus RNA-seq-only genes;
``log2(TPM + 1)`` follows the same structure factors and gene loadings as the microarray values
(:mod:`.synth_model`), so probe-to-RNA-seq correlations are meaningful. A few genes are zero in
every sample (abagen's rnaseq selection drops such constant genes). The output is a pure
function of the arguments and does not change any microarray file.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_output
from ..sources.donors import RNASEQ_WKF, Donor, resolve_donors
from .synth_format import quote, render_decimal_rows, zip_member
from .synth_model import build_probes, build_samples, build_structures, scaled_count
from .synth_ontology import build_ontology, ontology_csv

#: samples per real RNA-seq donor
RNASEQ_SAMPLES = 121
#: members in the order they are written
RNASEQ_MEMBERS = ("Contents.txt", "Genes.csv", "Ontology.csv", "RNAseqCounts.csv",
                  "RNAseqTPM.csv", "SampleAnnot.csv")
GENES_HEADER = ("gene_symbol,gene_id,entrez_id,chromosome,strand,number_of_transcripts,"
                "median_transcriptome_length,median_genome_length,median_number_of_exons,"
                "median_gene_start,median_gene_end")
SAMPLE_HEADER = ("RNAseq_sample_name,replicate_sample,sample_name,well_id,microarray_run_id,"
                 "ontology_color,main_structure,sub_structure,ontology_structure_id,"
                 "ontology_structure_acronym,hemisphere,brain,million_clusters,clip_percentage,"
                 "RIN_RNA_quality,rnaseq_run_id,A.Pct,C.Pct,G.Pct,T.Pct,N.Pct")

CONTENTS = """Allen Human Brain Atlas: RNA-Seq, one donor (generated test data)

RNAseqTPM.csv     TPM values, (row, column) = (gene, sample); no header, the first column is
                  the gene symbol.
RNAseqCounts.csv  fragment counts in the same layout (counts can be fractional).
Genes.csv         one row per gene symbol: identifiers (NA when not used elsewhere), location
                  and size.
Ontology.csv      the structure ontology.
SampleAnnot.csv   one row per sample, in the column order of RNAseqTPM.csv; well_id matches
                  the microarray sample.
"""


def rnaseq_zip_name(donor_id: int) -> str:
    return f"rnaseq_donor{int(donor_id)}.zip"


def _gene_table(probes: pd.DataFrame, gene_index: np.ndarray, rng: np.random.Generator
                ) -> tuple[pd.DataFrame, np.ndarray]:
    """RNA-seq genes: ``(Genes.csv table sorted by symbol, model gene index or -1)``."""
    ref = probes["entrez_id"].notna().to_numpy()
    frame = pd.DataFrame({"gene_symbol": probes["gene_symbol"].to_numpy()[ref],
                          "gene_id": probes["gene_id"].to_numpy()[ref],
                          "entrez_id": probes["entrez_id"].to_numpy()[ref],
                          "chromosome": probes["chromosome"].to_numpy()[ref],
                          "model": gene_index[ref]}).drop_duplicates("gene_symbol")
    frame = frame[rng.random(len(frame)) >= 0.05]           # a few microarray genes missing
    n_extra = max(2, len(frame) // 12)
    stems = rng.choice(["LINC", "MIR", "SNORD", "LOC"], size=n_extra)
    nums = rng.choice(np.arange(100, 99_999), size=n_extra, replace=False)
    extra = pd.DataFrame({
        "gene_symbol": [f"{s}{n:05d}" if s == "LINC" else f"{s}{n}"
                        for s, n in zip(stems, nums, strict=True)],
        "gene_id": pd.array([None] * n_extra, dtype="Int64"),
        "entrez_id": pd.array([None] * n_extra, dtype="Int64"),
        "chromosome": rng.choice([str(c) for c in range(1, 23)] + ["X"], size=n_extra),
        "model": -1,
    })
    frame = frame.astype({"gene_id": "Int64", "entrez_id": "Int64"})  # the extra rows' dtype
    genes = pd.concat([frame, extra], ignore_index=True)
    genes = genes.drop_duplicates("gene_symbol").sort_values("gene_symbol", kind="stable")
    genes = genes.reset_index(drop=True)
    n = len(genes)
    genes["strand"] = rng.choice(["+", "-"], size=n)
    genes["number_of_transcripts"] = rng.integers(1, 12, n)
    tlen = rng.integers(300, 9000, n)
    genes["median_transcriptome_length"] = tlen
    genes["median_genome_length"] = tlen + rng.integers(0, 200_000, n)
    genes["median_number_of_exons"] = rng.integers(1, 30, n)
    start = rng.integers(10_000, 240_000_000, n)
    genes["median_gene_start"] = start
    genes["median_gene_end"] = start + genes["median_genome_length"].to_numpy()
    model = genes.pop("model").to_numpy(np.int64)
    return genes, model


def genes_csv(genes: pd.DataFrame) -> bytes:
    """Genes.csv bytes: symbol and chromosome quoted, missing ids ``NA``."""
    lines = [GENES_HEADER]
    for r in genes.itertuples(index=False):
        gid = "NA" if pd.isna(r.gene_id) else str(int(r.gene_id))
        ez = "NA" if pd.isna(r.entrez_id) else str(int(r.entrez_id))
        chrom = "NA" if r.chromosome is None or pd.isna(r.chromosome) else quote(str(r.chromosome))
        lines.append(f"{quote(r.gene_symbol)},{gid},{ez},{chrom},{quote(r.strand)},"
                     f"{r.number_of_transcripts},{r.median_transcriptome_length},"
                     f"{r.median_genome_length},{r.median_number_of_exons},"
                     f"{r.median_gene_start},{r.median_gene_end}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _sample_table(donor: Donor, annot: pd.DataFrame, ontology: pd.DataFrame,
                  rng: np.random.Generator) -> pd.DataFrame:
    onto = ontology.set_index("id")
    sid = annot["structure_id"].to_numpy()
    parent = onto.loc[sid, "parent_structure_id"].to_numpy()
    main = [onto.loc[int(p), "acronym"] if not pd.isna(p) and int(p) in onto.index else ""
            for p in parent]
    n = len(annot)
    pct = rng.dirichlet([25, 25, 25, 25], size=n) * 99.9
    run = 500_000_000 + np.sort(rng.choice(9_000_000, size=n, replace=False))
    return pd.DataFrame({
        "RNAseq_sample_name": [f"{donor.name}_{w}" for w in annot["well_id"]],
        "replicate_sample": "No",
        "sample_name": [f"{donor.name}.{k + 1:03d}" for k in range(n)],
        "well_id": annot["well_id"].to_numpy(),
        "microarray_run_id": 160_000_000 + annot["well_id"].to_numpy(),
        "ontology_color": ["#" + str(c) for c in onto.loc[sid, "color_hex_triplet"]],
        "main_structure": main,
        "sub_structure": onto.loc[sid, "acronym"].to_numpy(),
        "ontology_structure_id": sid,
        "ontology_structure_acronym": onto.loc[sid, "acronym"].to_numpy(),
        "hemisphere": [h if h else "NA" for h in onto.loc[sid, "hemisphere"].fillna("")],
        "brain": donor.name,
        "million_clusters": np.round(rng.uniform(15, 60, n), 2),
        "clip_percentage": np.round(rng.uniform(0.5, 8, n), 3),
        "RIN_RNA_quality": np.round(rng.uniform(5.0, 8.5, n), 1),
        "rnaseq_run_id": run,
        "A.Pct": np.round(pct[:, 0], 2), "C.Pct": np.round(pct[:, 1], 2),
        "G.Pct": np.round(pct[:, 2], 2), "T.Pct": np.round(pct[:, 3], 2),
        "N.Pct": np.round(99.9 - pct.sum(axis=1) + 0.1, 2),
    })


def sample_annot_csv(samples: pd.DataFrame) -> bytes:
    """SampleAnnot.csv bytes: text columns double-quoted, numbers bare."""
    text_cols = {"RNAseq_sample_name", "replicate_sample", "sample_name", "ontology_color",
                 "main_structure", "sub_structure", "ontology_structure_acronym", "hemisphere",
                 "brain"}
    lines = [SAMPLE_HEADER]
    cols = SAMPLE_HEADER.split(",")
    for row in samples[cols].itertuples(index=False, name=None):
        lines.append(",".join(quote(str(v)) if c in text_cols else str(v)
                              for c, v in zip(cols, row, strict=True)))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _decimal_text(x: np.ndarray, digits: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                              list[str]]:
    """``(mantissa, frac digits, override positions, override text)`` printing each value of
    ``x`` (≥ 0) with ``digits`` significant digits, whole numbers without a decimal point and
    values below 1e-4 in exponent form."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore"):
        e = np.floor(np.log10(np.where(x > 0, x, 1.0))).astype(np.int64)
    frac = np.clip(digits - 1 - e, 0, 18)
    small = (x > 0) & (x < 1e-4)
    whole = (x == np.rint(x)) & (x < 1e15)          # "0", "17": no decimal point
    frac = np.where(small | whole, 0, frac)
    mant = np.rint(np.where(small, 0.0, x) * 10.0 ** frac).astype(np.int64)
    pos = np.flatnonzero(small.ravel())
    text = [f"{v:.{digits}g}" for v in x.ravel()[pos].tolist()]
    return mant, frac.astype(np.int8), pos, text


def matrix_csv(symbols: np.ndarray, mant: np.ndarray, frac: np.ndarray,
               over_pos: np.ndarray, over_text: list[str]) -> bytes:
    """``"SYMBOL",v1,...`` rows (the symbol double-quoted)."""
    body = render_decimal_rows(np.zeros(len(symbols), np.int64), mant, frac,
                               override_pos=over_pos, override_text=over_text)
    lines = body.split(b"\n")[:-1]
    out = [quote(str(s)).encode("utf-8") + line[1:]
           for s, line in zip(symbols, lines, strict=True)]
    return b"\n".join(out) + b"\n"


def rnaseq_values(model: np.ndarray, level: np.ndarray, amp: np.ndarray, loading: np.ndarray,
                  factors: np.ndarray, tlen: np.ndarray, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(TPM, counts)`` genes × samples.

    ``model`` is each gene's index into the per-gene ``level``/``amp``/``loading`` (-1: an
    RNA-seq-only gene, drawn here); ``factors`` the structure factors of each sample.
    """
    n, s = len(model), factors.shape[0]
    known = model >= 0
    lv = np.where(known, level[np.maximum(model, 0)], rng.normal(2.5, 1.0, n))
    am = np.where(known, amp[np.maximum(model, 0)], rng.uniform(0.02, 0.2, n))
    ld = np.where(known[:, None], loading[np.maximum(model, 0)],
                  rng.normal(0, 1, (n, loading.shape[1])) / np.sqrt(loading.shape[1]))
    y = 1.3 * (lv[:, None] - 3.0) + 1.6 * am[:, None] * (ld @ factors.T)
    y = y + rng.normal(0.0, 0.35, (n, s))
    raw = np.where(y > -1.0, np.exp2(np.maximum(y, -1.0)) - 0.5, 0.0)
    silent = rng.random(n) < 0.04
    raw[silent] = 0.0
    total = raw.sum(axis=0)
    tpm = raw / np.where(total > 0, total, 1.0) * 1e6
    depth = rng.uniform(8.0, 20.0, s)
    counts = tpm * (tlen[:, None] / 1000.0) * depth[None, :] / 50.0
    whole = rng.random((n, s)) < 0.75
    counts = np.where(whole, np.rint(counts), np.round(counts, 2))
    return tpm, counts


def _write_zip(path: Path, members: dict[str, bytes]) -> None:
    """A deflated zip of ``members`` in the order of the Allen files."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in RNASEQ_MEMBERS:
            with zip_member(zf, name) as fh:
                fh.write(members[name])


def write_rnaseq(
    dest: str | os.PathLike[str],
    *,
    probes: int,
    samples_fraction: float = 1.0,
    seed: int = 0,
    donors: str | Iterable[str | int] | None = None,
    mismatches: int | None = None,
    min_samples: int | None = None,
) -> dict[int, Path]:
    """Write ``rnaseq_donor{id}.zip`` for the selected donors that have RNA-seq (9861, 10021).

    The arguments are those the microarray zips were written with
    (:func:`atlas_engine.testing.synth.write_ahba`): the RNA-seq samples are
    ``max(min_samples, round(121 * samples_fraction))`` of the donor's microarray samples
    (at most all of them). Returns donor id → zip path.
    """
    from .synth import DEFAULT_MIN_SAMPLES, DEFAULT_MISMATCHES

    mismatches = DEFAULT_MISMATCHES if mismatches is None else mismatches
    min_samples = DEFAULT_MIN_SAMPLES if min_samples is None else min_samples
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    selected = [d for d in resolve_donors(donors) if d.id in RNASEQ_WKF]
    if not selected:
        return {}
    ontology = build_ontology()
    structures = build_structures(ontology, seed)
    model = build_probes(probes, seed)
    onto_bytes = ontology_csv(ontology)
    # per-gene parameters of the microarray model (loading and amp are per gene; level: the
    # mean over the gene's probes)
    gi = model.gene_index
    n_genes = int(gi.max()) + 1
    level = np.bincount(gi, weights=model.level, minlength=n_genes) / np.maximum(
        np.bincount(gi, minlength=n_genes), 1)
    amp = np.zeros(n_genes)
    amp[gi] = model.amp
    loading = np.zeros((n_genes, model.loading.shape[1]))
    loading[gi] = model.loading
    genes, gmodel = _gene_table(model.table, gi, np.random.default_rng([seed, 20, 0]))
    genes_bytes = genes_csv(genes)
    symbols = genes["gene_symbol"].to_numpy()
    tlen = genes["median_transcriptome_length"].to_numpy(np.float64)
    written: dict[int, Path] = {}
    for donor in selected:
        n = scaled_count(donor.n_samples, samples_fraction, min_samples)
        ds = build_samples(donor, n, structures, seed, mismatches)
        rng = np.random.default_rng([seed, 20, donor.id])
        k = min(n, scaled_count(RNASEQ_SAMPLES, samples_fraction, min_samples))
        rows = np.sort(rng.choice(n, size=k, replace=False))
        annot = ds.annot.iloc[rows].reset_index(drop=True)
        samples = _sample_table(donor, annot, ontology, rng)
        tpm, counts = rnaseq_values(gmodel, level, amp, loading,
                                    structures.factors[ds.leaf[rows]], tlen, rng)
        path = out / rnaseq_zip_name(donor.id)
        members = {
            "Contents.txt": CONTENTS.encode("utf-8"),
            "Genes.csv": genes_bytes,
            "Ontology.csv": onto_bytes,
            "RNAseqCounts.csv": matrix_csv(symbols, *_decimal_text(counts)),
            "RNAseqTPM.csv": matrix_csv(symbols, *_decimal_text(tpm)),
            "SampleAnnot.csv": sample_annot_csv(samples),
        }
        atomic_output(path, lambda tmp, members=members: _write_zip(tmp, members))
        written[donor.id] = path
    return written
