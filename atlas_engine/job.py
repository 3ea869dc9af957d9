"""The main job: fetch → convert → aggregate → report, into one output folder.

``run_job`` is what ``atlas-engine run`` does against the Allen API (or a mirror);
``run_demo`` does the same offline against generated data served by a loopback mirror.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import FetchError

#: The default grouping of the main job: depth 5 of the Allen ontology is the level of gyri
#: and nuclei (e.g. /brain/gray matter/telencephalon/cerebral cortex/frontal lobe/<gyrus>/),
#: close to the ~80-region parcellations people use.
DEFAULT_BY = "depth:5"
MATRIX_NAME = "regions_by_genes.csv"


@dataclass
class JobResult:
    out: Path
    store: Path
    files: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def _log(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, flush=True)


def run_job(
    *,
    out: str | Path,
    data_dir: str | Path,
    base_url: str | None = None,
    donors: str = "all",
    by: str = DEFAULT_BY,
    stat: str = "mean",
    genes: str | None = None,
    collapse: str | None = "mean",
    top: int = 50,
    dtype: str = "float32",
    concurrency: int = 4,
    memory_limit: str | None = None,
    block_bytes: int | None = None,
    quiet: bool = False,
) -> JobResult:
    """Fetch the donor zips into ``data_dir/raw``, convert them into ``data_dir/ahba.zarr``,
    aggregate (``by``, ``stat``, donors combined, probes collapsed to genes) and write the
    matrix, counts, a heatmap of the ``top`` most variable genes, ``summary.md`` and
    ``provenance.json`` into ``out``. Each stage skips work already done and verified."""
    from .aggregate.api import aggregate
    from .convert.donor import convert_microarray
    from .fetch import fetch_ahba
    from .malloc import trim
    from .report.heatmap import plot_heatmap, region_labels
    from .report.summary import write_summary
    from .report.tables import write_result
    from .store.open import open_store

    out = Path(out)
    data_dir = Path(data_dir)
    raw = data_dir / "raw"
    store = data_dir / "ahba.zarr"
    out.mkdir(parents=True, exist_ok=True)
    result = JobResult(out=out, store=store)

    t = time.perf_counter()
    _log(quiet, f"[1/4] fetch → {raw}")
    report = fetch_ahba(raw, donors=donors, what="microarray", base_url=base_url,
                        concurrency=concurrency, quiet=quiet)
    if not report.ok:
        raise FetchError(f"fetch failed: {report.summary()}; {report.cause()}")
    result.timings["fetch"] = time.perf_counter() - t

    t = time.perf_counter()
    _log(quiet, f"[2/4] convert → {store}")
    conv = convert_microarray(raw, store, dtype=dtype, donors=None if donors == "all" else
                              donors.split(","), memory_limit=memory_limit,
                              log=None if quiet else (lambda s: print("      " + s, flush=True)))
    result.timings["convert"] = time.perf_counter() - t
    trim()  # hand the converter's freed buffers back before aggregation allocates its own

    t = time.perf_counter()
    _log(quiet, f"[3/4] aggregate by {by} ({stat}, donors combined, probes → genes: {collapse})")
    st = open_store(store)
    agg = aggregate(st, by=by, stat=stat, genes=genes, combine="combined", collapse=collapse,
                    block_bytes=block_bytes)
    result.files += write_result(agg, out / MATRIX_NAME)
    result.timings["aggregate"] = time.perf_counter() - t

    t = time.perf_counter()
    _log(quiet, "[4/4] report")
    table = agg.to_frame().set_index("structure_id")
    with_samples = agg.groups.loc[agg.groups.n_samples > 0, "structure_id"].to_numpy()
    matrix = table.loc[with_samples].drop(columns=["acronym", "name"])
    labels = region_labels(agg.groups, st.ontology.table["hemisphere"])
    if len(matrix) >= 2 and matrix.shape[1] >= 2:
        n_top = min(top, matrix.shape[1])
        title = (f"{n_top} most variable of {matrix.shape[1]} genes, {len(matrix)} regions "
                 f"with samples at {by} ({stat}, z-scored per gene)")
        result.files.append(plot_heatmap(matrix, out / "heatmap.png", top=top,
                                         row_labels=labels, title=title,
                                         ylabel=f"region ({by}; L/R = hemisphere)"))
    result.timings["report"] = time.perf_counter() - t

    g = agg.groups
    in_store = st.samples["donor"].value_counts().reindex(agg.donors).fillna(0).astype(int)
    result.summary = {
        "version": __version__,
        "python": platform.python_version(),
        "base_url": base_url or "the Allen API (default)",
        "raw": str(raw),
        "store": str(store),
        "out": str(out),
        "donors": agg.donors,
        "samples_per_donor": {str(d): int(n) for d, n in in_store.items()},
        "samples_in_regions_per_donor": {str(d): int(in_store[d] - agg.unassigned_by_donor.get(d, 0))
                                         for d in agg.donors},
        "converted": conv.converted,
        "skipped_conversion": conv.skipped,
        "unknown_structures": {str(k): v for k, v in conv.unknown_structures.items()},
        "by": by,
        "stat": stat,
        "collapse": collapse,
        "genes": len(agg.features),
        "non_refseq_probes_left_out": agg.params.get("non_refseq_probes_left_out", 0),
        "missing_genes": agg.missing_genes,
        "groups": len(g),
        "groups_without_samples": int((g.n_samples == 0).sum()),
        "unassigned_samples": agg.unassigned_samples,
        "downloads": [{"file": r.spec.name, "status": r.status, "bytes": r.size,
                       "requests": r.requests}
                      for r in report.results] if report.results else [],
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
    }
    prov = out / "provenance.json"
    prov.write_text(json.dumps(result.summary, indent=2, default=str) + "\n")
    result.files.append(prov)
    result.files.append(write_summary(out / "summary.md", result.summary, result.files))
    _log(quiet, f"done: {len(g)} regions × {len(agg.features)} genes → {out / MATRIX_NAME}")
    return result


def run_demo(
    *,
    out: str | Path,
    probes: int = 2000,
    samples_fraction: float = 0.1,
    seed: int = 0,
    flaky: bool = False,
    quiet: bool = False,
    **job: Any,
) -> JobResult:
    """The main job offline: generate Allen-format data into ``out/mirror``, serve it on
    loopback with the real URL layout (optionally with dropped connections and 503s, to show
    resume and retry), and run :func:`run_job` against it."""
    from .testing.server import Faults, MirrorServer
    from .testing.synth import write_all

    out = Path(out)
    mirror = out / "mirror"
    marker = mirror / ".synth.json"
    params = {"probes": probes, "samples_fraction": samples_fraction, "seed": seed,
              "brainspan": True, "gtex": True}
    if not (marker.exists() and json.loads(marker.read_text()) == params):
        _log(quiet, f"[0/4] generate Allen-format data → {mirror} ({probes} probes, "
                    f"{samples_fraction:g} of the real sample counts)")
        # BrainSpan and GTEx files too (not part of the job; they make the mirror serve every
        # dataset the engine reads, for the examples in docs/brainspan.md)
        write_all(mirror, probes=probes, samples_fraction=samples_fraction, seed=seed,
                  brainspan=True, gtex=True, quiet=quiet)
        marker.write_text(json.dumps(params))
    faults = Faults(drop_after=200_000, drop_first=3, fail_first=2, fail_status=503,
                    retry_after=0.2, scope="download") if flaky else None
    server = MirrorServer(mirror, faults=faults)
    url = server.start_in_thread()
    _log(quiet, f"      mirror serving {mirror} at {url}")
    try:
        result = run_job(out=out, data_dir=out / "data", base_url=url, quiet=quiet, **job)
    finally:
        server.stop_thread()
    return result
