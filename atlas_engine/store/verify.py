"""Check a converted store: layout, dimensions, sample counts, probe↔gene summary, NaN/inf, and
every chunk of every array (its CRC-32C as read, and the CRC-32 of its values recorded at
conversion for the matrices).

``verify_store`` never raises on damage: every problem becomes one line of the report naming
what is wrong and the command that repairs it (re-convert that donor).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import AtlasEngineError, StoreError
from ..sources.donors import DONORS, N_PROBES
from . import layout as L
from .integrity import owner, repair_hint

_KNOWN_COUNTS = {d.id: d.n_samples for d in DONORS}


@dataclass
class VerifyReport:
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def fail(self, text: str) -> None:
        self.ok = False
        self.problems.append(text)


def _problem(exc: BaseException, hint: str = "") -> str:
    """One line for ``exc``; ``hint`` (the repair) added unless the message has it already."""
    if isinstance(exc, AtlasEngineError):
        return str(exc)
    return f"{type(exc).__name__}: {str(exc)[:300]}" + (f"; {hint}" if hint else "")


def _check_chunk_rows(url: str, path: str, steps: list[tuple[int, int, int, Any]], m: int,
                      sc: int, name: str, hint: str
                      ) -> tuple[int, int, int, list[str], Exception | None]:
    """One task: for each ``(bi, r0, r1, recorded)`` of ``steps`` (consecutive blocks of rows,
    together about one chunk row of the array), read rows ``r0:r1`` of the 2-D array ``path``
    (each chunk's CRC-32C checked as it is read) and compare each chunk's values with
    ``recorded``, the CRC-32s conversion recorded for block ``bi`` (``None``: not compared).

    Returns
    -------
    (n_nan, n_inf, n_negative, problems, error)
        The NaN, inf and negative counts and the lines of the report, in block and chunk order
        (a block that cannot be read is one line, and counts nothing); ``error``: what stopped the
        comparison (recorded checksums that are not numbers; the blocks after it are not
        read), else ``None``.
    """
    from .blockread import read_rows

    n_nan = n_inf = n_neg = 0
    problems: list[str] = []
    for bi, r0, r1, recorded in steps:
        try:
            block = read_rows(url, path, r0, r1)
        except Exception as exc:  # noqa: BLE001 - verify reports, never crashes
            problems.append(_problem(exc))
            continue
        if block.dtype.kind == "f":
            n_nan += int(np.isnan(block).sum())
            n_inf += int(np.isinf(block).sum())
            n_neg += int((block < 0).sum())
        if recorded is None:
            continue
        try:
            for bj, j0 in enumerate(range(0, m, sc)):
                piece = np.ascontiguousarray(block[:, j0:j0 + sc])
                crc = zlib.crc32(piece.view(np.uint8).reshape(-1)) & 0xFFFFFFFF
                if bj >= len(recorded) or recorded[bj] != crc:
                    problems.append(f"{name}: chunk ({bi}, {bj}) values differ from "
                                    f"conversion; {hint}")
        except Exception as exc:  # noqa: BLE001 - the caller raises it in block order
            return n_nan, n_inf, n_neg, problems, exc
    return n_nan, n_inf, n_neg, problems, None


def _check_matrix(url: str, path: str, recorded: Any, chunks: tuple[int, int], name: str,
                  report: VerifyReport) -> tuple[int, int, int]:
    """Read every chunk row of the 2-D array ``path`` (each chunk's CRC-32C checked as it is
    read) and compare each chunk's values with the CRC-32 recorded at conversion; returns the
    NaN, inf and negative counts.

    One Dask task per chunk row of the array (:func:`_check_chunk_rows`, run by
    :func:`atlas_engine.aggregate.rowtasks.compute`: Dask's threads, or the workers of an
    active ``dask.distributed`` client); the problems are reported in chunk order."""
    from ..aggregate.rowtasks import compute, task
    from .blockread import array_shape

    hint = repair_hint(url, path)
    (n, m), (cr, _), _ = array_shape(url, path)
    pc, sc = chunks
    if not isinstance(recorded, list) or pc < 1 or sc < 1 or len(recorded) != -(-n // pc):
        report.fail(f"{name}: the recorded chunk checksums do not match the array's shape "
                    f"({n} × {m}); {hint}")
        recorded = None
        pc = max(pc, 1)
    # blocks of pc rows (the recorded chunks' rows: the array's own when they agree), as
    # many per task as one chunk row of the array holds
    steps = [(bi, r0, min(n, r0 + pc),
              None if recorded is None else (recorded[bi] if bi < len(recorded) else []))
             for bi, r0 in enumerate(range(0, n, pc))]
    per_task = max(1, int(cr) // pc)
    done = compute([task(_check_chunk_rows, url, path, steps[k:k + per_task], m, sc, name, hint)
                    for k in range(0, len(steps), per_task)])
    # the problems in chunk order, as one pass over the blocks finds them
    n_nan = n_inf = n_neg = 0
    for nn, ni, ng, problems, error in done:
        n_nan += nn
        n_inf += ni
        n_neg += ng
        for text in problems:
            report.fail(text)
        if error is not None:
            raise error
    return n_nan, n_inf, n_neg


def _check_matrices(url: str, group: str, names: Sequence[str], attrs: dict[str, Any],
                    label: str, hint: str, report: VerifyReport) -> Iterator[tuple[str, int, int]]:
    """Check each matrix ``names`` of ``group`` against the chunk checksums recorded in its
    attributes (:func:`_check_matrix`), adding its NaN and inf counts to the summary; yields
    ``(name, n_nan, n_inf)`` for each one read, for the caller's own expectations. A matrix
    without recorded checksums, or that cannot be read, is a line of the report."""
    cs = attrs.get("checksums", {})
    chunks = tuple(cs.get("chunks", (0, 0)))
    for name in names:
        if name not in cs:
            report.fail(f"{label}: no checksums recorded for {name}; {hint}")
            continue
        try:
            nn, ni, _ = _check_matrix(url, f"{group}/{name}", cs[name], chunks, f"{label} {name}",
                                   report)
        except Exception as exc:  # noqa: BLE001 - verify reports, never crashes
            report.fail(f"{label} {name}: {_problem(exc, hint)}")
            continue
        report.summary["nan"] += nn
        report.summary["inf"] += ni
        yield name, nn, ni


def _check_group_arrays(url: str, group: str, report: VerifyReport,
                        skip: tuple[str, ...] = ()) -> None:
    """Read every 1-D array (table column) of ``group`` whole: each chunk's CRC-32C is checked
    and a missing chunk is reported."""
    import zarr

    from .checked import checked_store

    try:
        grp = zarr.open_group(checked_store(url), path=group, mode="r", zarr_format=3)
        arrays = dict(grp.arrays())
    except Exception as exc:  # noqa: BLE001 - verify reports, never crashes
        report.fail(f"{group} ({owner(group)}): cannot be opened: "
                    f"{_problem(exc, repair_hint(url, group))}")
        return
    for name, arr in sorted(arrays.items()):
        if name in skip or arr.ndim != 1:
            continue
        try:
            arr[:]
        except Exception as exc:  # noqa: BLE001 - verify reports, never crashes
            report.fail(_problem(exc))


def verify_store(url: str | os.PathLike, *, checksums: bool = True) -> VerifyReport:
    """Recompute what conversion recorded and check the layout; ``report.ok`` is the verdict.

    Checks the dimensions, sample counts, completeness and NaN/inf counts of every donor
    (microarray and RNA-seq) against what conversion recorded. A BrainSpan store is checked by
    :func:`atlas_engine.store.brainspan.verify_brainspan`. Damage never raises: every problem
    is one line of the report, naming what is wrong and the command that repairs it.

    Parameters
    ----------
    url : str or os.PathLike
        The store: a local path or an fsspec URL.
    checksums : bool, default True
        Also read every chunk of every array, checking its CRC-32C and, for the matrices, the
        CRC-32 of its values recorded at conversion; False checks the metadata only.

    Returns
    -------
    VerifyReport
        ``ok`` (no problem found), ``problems`` (one line each) and ``summary`` (donors,
        samples, probes and genes, NaN/inf counts, the source files).

    Raises
    ------
    StoreError
        ``url`` is not a readable store of the current layout at all
        (:class:`~atlas_engine.errors.StoreNotFoundError` when there is nothing there).
    """
    from .brainspan import store_format, verify_brainspan
    from .open import open_store

    if store_format(os.fspath(url)) == L.FORMAT_BRAINSPAN:
        return verify_brainspan(url, checksums=checksums)
    store = open_store(url)
    url = store.url
    report = VerifyReport()
    s = report.summary
    s["donors"] = store.donors
    s["samples"] = {}
    s["nan"] = s["inf"] = 0
    s["nonfinite_accepted"] = {}
    s["probes"] = s["genes"] = s["non_refseq_probes"] = 0
    s["probes_per_gene"] = {}
    if checksums:
        _check_group_arrays(url, L.PROBES_GROUP, report)
        _check_group_arrays(url, L.ONTOLOGY_GROUP, report)
    try:
        probes = store.probes
    except Exception as exc:  # noqa: BLE001 - verify reports, never crashes
        report.fail(f"probe table: {_problem(exc)}")
        probes = None
    n_probes = len(probes) if probes is not None else None
    if probes is not None:
        s["probes"] = n_probes
        per_gene = probes["gene_id"].value_counts()
        s["genes"] = int(per_gene.size)
        hist = per_gene.value_counts().sort_index()
        s["probes_per_gene"] = {int(k): int(v) for k, v in hist.items()}
        s["non_refseq_probes"] = int((probes["entrez_id"] == L.MISSING_INT).sum())
    full_scale = n_probes == N_PROBES
    s["sources"] = {}
    for d in store.donors:
        # each donor's group opened once: its checks, and its source file (the provenance
        # ``origin``: name, size, sha256, how the donor was identified; None if not recorded)
        ds = _verify_donor(store, d, n_probes, full_scale, checksums, report)
        s["sources"][d] = (None if ds is None
                           else (ds.attrs.get("provenance") or {}).get("origin"))
    s["total_samples"] = sum(s["samples"].values())
    _verify_rnaseq(store, report, checksums)
    return report


def _verify_donor(store: Any, d: int, n_probes: int | None, full_scale: bool, checksums: bool,
                  report: VerifyReport) -> Any:
    """Check donor ``d``'s group; returns the opened group (``None`` if it cannot be opened)."""
    s = report.summary
    group = L.donor_path(d)
    hint = repair_hint(store.url, group)
    try:
        ds = store.group_layout(group)
    except Exception as exc:  # noqa: BLE001 - verify reports, never crashes
        report.fail(f"donor {d}: {_problem(exc)}")
        return None
    missing = [a for a in (L.EXPRESSION, L.PACALL, *L.SAMPLE_COLUMNS)
               if a not in ds.arrays]
    if missing:
        report.fail(f"donor {d}: arrays missing: {', '.join(missing)}; {hint}")
    n_s = ds.sizes.get(L.SAMPLE_DIM, 0)
    s["samples"][d] = n_s
    if n_probes is not None and ds.sizes.get(L.PROBE_DIM) != n_probes:
        report.fail(f"donor {d}: {ds.sizes.get(L.PROBE_DIM)} probes, Probes table has "
                    f"{n_probes}; {hint}")
    recorded_n = ds.attrs.get("donor", {}).get("n_samples")
    if recorded_n != n_s:
        report.fail(f"donor {d}: {n_s} samples, SampleAnnot had {recorded_n}; {hint}")
    if full_scale and d in _KNOWN_COUNTS and n_s != _KNOWN_COUNTS[d]:
        report.fail(f"donor {d}: {n_s} samples, the real data has {_KNOWN_COUNTS[d]}")
    for name in (L.EXPRESSION, L.PACALL):
        if name in ds.arrays and ds.arrays[name] != (L.PROBE_DIM, L.SAMPLE_DIM):
            report.fail(f"donor {d}: {name} has dims {ds.arrays[name]}; {hint}")
    if not ds.attrs.get("complete"):
        report.fail(f"donor {d}: not marked complete; {hint}")
    accepted = (ds.attrs.get("provenance") or {}).get("nonfinite_values") or 0
    if accepted:
        s["nonfinite_accepted"][d] = int(accepted)
    if not checksums:
        return ds
    _check_group_arrays(store.url, group, report, skip=(L.EXPRESSION, L.PACALL))
    present = [n for n in (L.EXPRESSION, L.PACALL) if n not in missing]
    for name, nn, ni in _check_matrices(store.url, group, present, ds.attrs, f"donor {d}",
                                        hint, report):
        if name == L.EXPRESSION and nn != accepted:
            report.fail(f"donor {d}: {nn} NaN values in expression where conversion stored "
                        f"{accepted}; {hint}")
        if ni:
            report.fail(f"donor {d}: {ni} infinite values in {name}; {hint}")
    return ds


def _verify_rnaseq(store: Any, report: VerifyReport, checksums: bool) -> None:
    """The RNA-seq groups (``rnaseq/{id}``): dimensions, completeness, sample count and the
    chunk checksums of ``tpm`` and ``counts`` and of the gene and sample tables."""
    donors = store.rnaseq_donors
    if not donors:
        return
    s = report.summary
    s["rnaseq"] = {}
    for d in donors:
        group = f"{L.RNASEQ_GROUP}/{d}"
        hint = repair_hint(store.url, group)
        try:
            ds = store.group_layout(group)
        except Exception as exc:  # noqa: BLE001 - verify reports, never crashes
            report.fail(f"RNA-seq donor {d}: {_problem(exc)}")
            continue
        n_g, n_s = ds.sizes.get(L.GENE_DIM, 0), ds.sizes.get(L.SAMPLE_DIM, 0)
        s["rnaseq"][d] = {"genes": n_g, "samples": n_s}
        info = ds.attrs.get("donor", {})
        if info.get("n_samples") != n_s or info.get("n_genes") != n_g:
            report.fail(f"RNA-seq donor {d}: {n_g} genes × {n_s} samples, conversion "
                        f"recorded {info.get('n_genes')} × {info.get('n_samples')}; {hint}")
        if not ds.attrs.get("complete"):
            report.fail(f"RNA-seq donor {d}: not marked complete; {hint}")
        for name in L.RNASEQ_ARRAYS:
            if name not in ds.arrays:
                report.fail(f"RNA-seq donor {d}: {name} is missing; {hint}")
            elif ds.arrays[name] != (L.GENE_DIM, L.SAMPLE_DIM):
                report.fail(f"RNA-seq donor {d}: {name} has dims {ds.arrays[name]}; {hint}")
        per_array = (ds.attrs.get("provenance") or {}).get("nonfinite_values") or {}
        accepted = sum(per_array.values())
        if accepted:
            s["nonfinite_accepted"][f"rnaseq {d}"] = int(accepted)
        if not checksums:
            continue
        _check_group_arrays(store.url, group, report, skip=L.RNASEQ_ARRAYS)
        present = [n for n in L.RNASEQ_ARRAYS if n in ds.arrays]
        for name, nn, ni in _check_matrices(store.url, group, present, ds.attrs,
                                            f"RNA-seq donor {d}", hint, report):
            if nn != per_array.get(name, 0) or ni:
                report.fail(f"RNA-seq donor {d} {name}: {nn} NaN and {ni} infinite values where "
                            f"conversion stored {per_array.get(name, 0)} NaN; {hint}")


__all__ = ["VerifyReport", "verify_store", "StoreError"]
