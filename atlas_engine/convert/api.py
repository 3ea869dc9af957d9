"""``convert``: one entry point for every dataset the engine converts (the CLI calls it too)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError

__all__ = ["DATASETS", "ConvertSummary", "convert", "detect_dataset"]

#: What ``convert`` can be asked to convert (``auto`` looks at the source).
DATASETS = ("auto", "ahba", "ahba-rnaseq", "brainspan", "celltypes")


@dataclass
class ConvertSummary:
    """What a :func:`convert` call did: one entry per dataset converted."""

    store: str
    dataset: str
    microarray: Any = None     # convert.donor.ConvertResult
    rnaseq: Any = None         # convert.rnaseq.RnaseqResult
    brainspan: dict[str, Any] | None = None
    celltypes: dict[str, Any] | None = None
    messages: list[str] = field(default_factory=list)


def detect_dataset(src: str | os.PathLike) -> str:
    """``ahba`` when ``src`` holds microarray donors, ``ahba-rnaseq`` when it holds only
    RNA-seq donors, ``brainspan`` when it holds a BrainSpan genes matrix, ``celltypes`` when
    it holds a Cell Types matrix (a portal ``matrix.csv`` or a 2018 zip with
    ``*_exon-matrix.csv``). Archives are recognised by their members, whatever their names
    (:mod:`.discover`); a source with none raises :class:`ConfigError` listing what was looked
    for."""
    from .discover import scan
    from .recognise import BRAINSPAN, MICROARRAY, RNASEQ

    def celltypes() -> bool:
        # imported only when needed: the Cell Types converter brings pandas, numba, zarr
        # and scipy, ~0.7 s before an AHBA conversion could start otherwise
        from ..celltypes.convert import looks_like_celltypes

        return looks_like_celltypes(src)

    try:
        sc = scan(src)
    except ConfigError:
        # nothing of the AHBA / BrainSpan kinds: a Cell Types set, or the scan's own error
        if celltypes():
            return "celltypes"
        raise
    for kind, dataset in ((MICROARRAY, "ahba"), (RNASEQ, "ahba-rnaseq"),
                          (BRAINSPAN, "brainspan")):
        if sc.of_kind(kind):
            return dataset
    if celltypes():
        return "celltypes"
    raise sc.nothing()


def convert(
    src: str | os.PathLike,
    store: str | os.PathLike,
    *,
    dataset: Literal["auto", "ahba", "ahba-rnaseq", "brainspan", "celltypes"] = "auto",
    dtype: Literal["float32", "float64"] = "float32",
    donors: str | Iterable[int | str] | None = None,
    rnaseq: bool = True,
    memory_limit: int | str | None = None,
    jobs: int | None = None,
    force: bool = False,
    allow_nonfinite: bool = False,
    wait: bool = False,
    log: Callable[[str], None] | None = None,
) -> ConvertSummary:
    """Convert downloaded Allen files into a Zarr v3 store.

    Parameters
    ----------
    src : str or os.PathLike
        A folder of donor zips (or extracted donor folders), RNA-seq zips, or a BrainSpan zip;
        or one such zip or folder. Any file names: archives are recognised by their members and
        donors identified by their content (a name contradicting the content is an error).
    store : str or os.PathLike
        The Zarr store to create or complete (a path or an fsspec URL).
    dataset : str, default "auto"
        ``"auto"`` (microarray donors, with their RNA-seq donors if ``src`` has them; only
        RNA-seq when that is all there is; else a BrainSpan genes matrix or a Cell Types
        matrix), ``"ahba"``, ``"ahba-rnaseq"``, ``"brainspan"`` or ``"celltypes"`` (an AnnData
        store, see :func:`atlas_engine.celltypes.convert.convert_celltypes`).
    dtype : str, default "float32"
        Stored precision of the expression values (``"float32"`` or ``"float64"``).
    donors : str, iterable of int or str, or None, default None
        Donor ids or names (``"9861,10021"`` or a list); default every donor in ``src``.
    rnaseq : bool, default True
        With the microarray donors, also convert the RNA-seq donors found in ``src``.
    memory_limit : int, str or None, default None
        Bound on working memory (``"512MB"``); limits how many donors convert at once.
    jobs : int, optional
        Donors converted in parallel (default: 2 on 2+ cores).
    force : bool, default False
        Reconvert the selected donors even when they are current (the repair for a donor
        that ``verify`` or a reader found damaged).
    allow_nonfinite : bool, default False
        Store ``nan``/``inf`` tokens (and values beyond the dtype's range) as NaN, counted in
        the provenance, instead of refusing them with their file, line and column.
    wait : bool, default False
        When another process is converting into ``store`` (it holds the store's lock), wait
        for it instead of raising :class:`~atlas_engine.errors.StoreBusyError`.
    log : callable, optional
        Called with one line of progress text at a time.

    Returns
    -------
    ConvertSummary
        Converted and skipped donors per dataset, with timings.

    Raises
    ------
    ConfigError
        An unknown ``dataset`` or donor, or nothing in ``src`` that can be converted.
    FormatError
        An input file without the expected Allen layout (named with its line and column).
    StoreBusyError
        Another process is converting into ``store`` and ``wait`` is False.

    Notes
    -----
    Re-running skips donors already converted from unchanged sources and finishes interrupted
    ones, repairing whatever a crash left (docs/reliability.md). Process-wide tuning (malloc
    arenas, BLAS threads, garbage collector) is left to the caller: the command line applies
    :func:`atlas_engine.tuning.process_tuning`.
    """
    if dataset not in DATASETS:
        raise ConfigError(f"dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    log = log or (lambda s: None)
    donor_list = (donors.split(",") if isinstance(donors, str) else
                  list(donors) if donors is not None else None)
    if dataset == "auto":
        dataset = detect_dataset(src)  # type: ignore[assignment]
    out = ConvertSummary(os.fspath(store), dataset)

    def rna() -> None:
        from .rnaseq import convert_rnaseq

        out.rnaseq = r = convert_rnaseq(src, store, dtype=dtype, donors=donor_list,
                                        force=force, allow_nonfinite=allow_nonfinite,
                                        wait=wait, log=log)
        out.messages.append(f"RNA-seq: converted {r.converted or 'nothing'}, skipped "
                            f"{r.skipped or 'none'} in {r.seconds:.1f} s → {store}")

    if dataset == "ahba-rnaseq":
        rna()
        return out
    if dataset == "celltypes":
        from ..celltypes.convert import convert_celltypes

        out.celltypes = rep = convert_celltypes(src, store)
        if rep["status"] == "exists":
            out.messages.append(f"{store} exists (complete); nothing to do")
            return out
        out.messages.append(
            f"Cell Types ({rep['layout']}): {rep['cells']:,} cells × {rep['genes']:,} genes, "
            f"{rep['nnz']:,} non-zero counts in {rep['seconds']:.1f} s → {store}")
        if rep.get("cells_without_metadata"):
            out.messages.append(
                f"warning: {rep['cells_without_metadata']} cells have no metadata row (first: "
                f"{', '.join(rep['cells_without_metadata_first'][:3])})")
        if rep.get("metadata_rows_without_cells"):
            out.messages.append(
                f"warning: {rep['metadata_rows_without_cells']} metadata rows have no cell in "
                f"the matrix (first: {', '.join(rep['metadata_rows_without_cells_first'][:3])})")
        return out
    if dataset == "brainspan":
        from .brainspan import convert_brainspan

        out.brainspan = b = convert_brainspan(src, store, dtype=dtype,
                                              allow_nonfinite=allow_nonfinite, wait=wait)
        out.messages.append(f"BrainSpan: {b['genes']} genes × {b['samples']} samples in "
                            f"{b['seconds']:.1f} s → {store}")
        return out
    from .donor import convert_microarray
    from .rnaseq import find_rnaseq

    res = convert_microarray(src, store, dtype=dtype, donors=donor_list,
                             memory_limit=memory_limit, jobs=jobs, force=force,
                             allow_nonfinite=allow_nonfinite, wait=wait, log=log)
    out.microarray = res
    mb = res.bytes_parsed / 1e6
    out.messages.append(
        f"converted {res.converted or 'nothing'}, skipped {res.skipped or 'none'} in "
        f"{res.seconds:.1f} s ({mb:.0f} MB of CSV, {mb / max(res.seconds, 1e-9):.0f} MB/s) "
        f"→ {store}")
    for d, k in res.nonfinite.items():
        out.messages.append(f"warning: donor {d}: {k} non-finite value(s) stored as NaN "
                            "(allow_nonfinite)")
    for d, ids in res.unknown_structures.items():
        out.messages.append(f"warning: donor {d}: structure ids {ids} are not in the ontology "
                            "(samples kept)")
    if rnaseq and find_rnaseq(src, donor_list):
        rna()
    return out
