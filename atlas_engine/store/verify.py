"""Check a converted store: dimensions, sample counts, probe↔gene summary, NaN/inf, chunk CRCs."""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from ..sources.donors import DONORS, N_PROBES
from . import layout as L
from .open import open_store

_KNOWN_COUNTS = {d.id: d.n_samples for d in DONORS}


@dataclass
class VerifyReport:
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def fail(self, text: str) -> None:
        self.ok = False
        self.problems.append(text)


def _check_chunks(arr: zarr.Array, recorded: list[list[int]], chunks: tuple[int, int],
                  name: str, report: VerifyReport) -> tuple[int, int]:
    n_nan = n_inf = 0
    pc, sc = chunks
    n, m = arr.shape
    if len(recorded) != -(-n // pc):
        report.fail(f"{name}: {len(recorded)} chunk rows recorded, expected {-(-n // pc)}")
        return 0, 0
    for bi, r0 in enumerate(range(0, n, pc)):
        block = arr[r0:r0 + pc, :]
        if block.dtype.kind == "f":
            n_nan += int(np.isnan(block).sum())
            n_inf += int(np.isinf(block).sum())
        for bj, j0 in enumerate(range(0, m, sc)):
            piece = np.ascontiguousarray(block[:, j0:j0 + sc])
            crc = zlib.crc32(piece.view(np.uint8).reshape(-1)) & 0xFFFFFFFF
            if bj >= len(recorded[bi]) or recorded[bi][bj] != crc:
                report.fail(f"{name}: chunk ({bi}, {bj}) checksum differs from conversion")
    return n_nan, n_inf


def verify_store(url: str | os.PathLike, *, checksums: bool = True) -> VerifyReport:
    """Recompute what conversion recorded and check the layout; ``report.ok`` is the verdict.

    A BrainSpan store is checked by :func:`atlas_engine.store.brainspan.verify_brainspan`."""
    from .brainspan import store_format, verify_brainspan

    if store_format(os.fspath(url)) == L.FORMAT_BRAINSPAN:
        return verify_brainspan(url, checksums=checksums)
    store = open_store(url)
    report = VerifyReport()
    probes = store.probes
    n_probes = len(probes)
    s = report.summary
    s["donors"] = store.donors
    s["probes"] = n_probes
    genes = probes["gene_id"]
    per_gene = genes.value_counts()
    s["genes"] = int(per_gene.size)
    hist = per_gene.value_counts().sort_index()
    s["probes_per_gene"] = {int(k): int(v) for k, v in hist.items()}
    s["non_refseq_probes"] = int((probes["entrez_id"] == L.MISSING_INT).sum())
    s["samples"] = {}
    s["nan"] = s["inf"] = 0
    full_scale = n_probes == N_PROBES
    s["sources"] = _sources(store)
    for d in store.donors:
        ds = store.donor(d)
        n_s = ds.sizes[L.SAMPLE_DIM]
        s["samples"][d] = n_s
        if ds.sizes[L.PROBE_DIM] != n_probes:
            report.fail(f"donor {d}: {ds.sizes[L.PROBE_DIM]} probes, Probes table has {n_probes}")
        recorded_n = ds.attrs.get("donor", {}).get("n_samples")
        if recorded_n != n_s:
            report.fail(f"donor {d}: {n_s} samples, SampleAnnot had {recorded_n}")
        if full_scale and d in _KNOWN_COUNTS and n_s != _KNOWN_COUNTS[d]:
            report.fail(f"donor {d}: {n_s} samples, the real data has {_KNOWN_COUNTS[d]}")
        for name in (L.EXPRESSION, L.PACALL):
            if ds[name].dims != (L.PROBE_DIM, L.SAMPLE_DIM):
                report.fail(f"donor {d}: {name} has dims {ds[name].dims}")
        if not ds.attrs.get("complete"):
            report.fail(f"donor {d}: not marked complete")
        if checksums:
            group = zarr.open_group(store.url, mode="r", zarr_format=3)[L.donor_path(d)]
            cs = ds.attrs.get("checksums", {})
            chunks = tuple(cs.get("chunks", (0, 0)))
            for name in (L.EXPRESSION, L.PACALL):
                if name not in cs:
                    report.fail(f"donor {d}: no checksums recorded for {name}")
                    continue
                nn, ni = _check_chunks(group[name], cs[name], chunks, f"donor {d} {name}",
                                       report)
                s["nan"] += nn
                s["inf"] += ni
    s["total_samples"] = sum(s["samples"].values())
    _verify_rnaseq(store, report, checksums)
    return report


def _verify_rnaseq(store: Any, report: VerifyReport, checksums: bool) -> None:
    """The RNA-seq groups (``rnaseq/{id}``): dimensions, completeness, sample count and the
    chunk checksums conversion recorded for ``tpm`` and ``counts``."""
    donors = store.rnaseq_donors
    if not donors:
        return
    s = report.summary
    s["rnaseq"] = {}
    for d in donors:
        ds = store.rnaseq(d)
        n_g, n_s = ds.sizes[L.GENE_DIM], ds.sizes[L.SAMPLE_DIM]
        s["rnaseq"][d] = {"genes": n_g, "samples": n_s}
        info = ds.attrs.get("donor", {})
        if info.get("n_samples") != n_s or info.get("n_genes") != n_g:
            report.fail(f"RNA-seq donor {d}: {n_g} genes × {n_s} samples, conversion "
                        f"recorded {info.get('n_genes')} × {info.get('n_samples')}")
        if not ds.attrs.get("complete"):
            report.fail(f"RNA-seq donor {d}: not marked complete")
        for name in L.RNASEQ_ARRAYS:
            if ds[name].dims != (L.GENE_DIM, L.SAMPLE_DIM):
                report.fail(f"RNA-seq donor {d}: {name} has dims {ds[name].dims}")
        if not checksums:
            continue
        group = zarr.open_group(store.url, mode="r", zarr_format=3)[f"{L.RNASEQ_GROUP}/{d}"]
        cs = ds.attrs.get("checksums", {})
        chunks = tuple(cs.get("chunks", (0, 0)))
        for name in L.RNASEQ_ARRAYS:
            if name not in cs:
                report.fail(f"RNA-seq donor {d}: no checksums recorded for {name}")
                continue
            nn, ni = _check_chunks(group[name], cs[name], chunks, f"RNA-seq donor {d} {name}",
                                   report)
            s["nan"] += nn
            s["inf"] += ni


def _sources(store: Any) -> dict[int, dict[str, Any] | None]:
    """Each donor's source file (its group's provenance ``origin``: name, size, sha256, how the
    donor was identified); ``None`` where not recorded or not readable (reported elsewhere)."""
    out: dict[int, dict[str, Any] | None] = {}
    for d in store.donors:
        try:
            out[d] = (store.donor(d).attrs.get("provenance") or {}).get("origin")
        except Exception:  # noqa: BLE001 - verify reports problems, it does not crash on them
            out[d] = None
    return out
