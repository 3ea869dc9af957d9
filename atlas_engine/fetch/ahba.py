"""``fetch_ahba``: what ``atlas-engine fetch`` downloads, planned from donors and kinds.

* ``microarray`` - ``normalized_microarray_donor{id}.zip`` per donor (well-known files)
* ``structure-graph`` - ``structure_graph_10.json`` (``/api/v2/structure_graph_download/10.json``)
* ``ontology`` - ``ontology_10.csv``: the RMA ``Structure`` model of graph 10, paged and
  written as CSV sorted by ``graph_order`` (one row per structure, every model field)
* ``brainspan`` - ``genes_matrix_csv.zip`` (from www.brainspan.org unless a base URL is given)
* ``rnaseq`` - ``rnaseq_donor{id}.zip`` for the selected donors that have RNA-seq (9861, 10021)
* ``structure-graph:1,10,...`` - ``structure_graph_{id}.json`` for each graph id (1 adult mouse,
  10 human, 16/17 developing human/mouse); plain ``structure-graph`` is graph 10
* ``mouse-ccf`` - the CCFv3 ``annotation_{10,25,50,100}.nrrd`` (informatics archive)
* ``mouse-p56`` - the old P56 annotation zip, well-known file 197642854 (MetaImage)
* ``human-atlas`` - the Human Reference Atlas 3D ``annotation_full.nii.gz``
* ``mri`` - ``mri_donor{id}_{T1,T2}.nii.gz`` for the selected donors (well-known files)

Files with a published SHA-256 (:data:`~atlas_engine.sources.volumes.KNOWN_SHA256`) are checked
against it when they come from the real archive; a mismatch fails the file.
* ``celltypes:<dataset>`` - a Cell Types data set (:mod:`.celltypes`)
* ``gtex`` / ``gtex-v10`` - GTEx's median-TPM GCT file of v8 / v10 (from the GTEx bucket on
  storage.googleapis.com unless a base URL is given)
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_write_bytes
from ..celltypes.datasets import DATASETS as CELLTYPES_DATASETS
from ..config import Config
from ..errors import ApiError, ConfigError
from ..pipeline.registry import fill_choices
from ..sources.donors import (
    BRAINSPAN_GENES_WKF,
    HBA_STRUCTURE_GRAPH,
    MOUSE_P56_ANNOTATION_WKF,
    RNASEQ_WKF,
    Donor,
    resolve_donors,
    well_known_files,
)
from ..sources.gtex import gtex_url as gtex_file_url
from ..sources.rma import model_query
from ..sources.urls import structure_graph_url, well_known_file_url
from ..sources.volumes import (
    CCF_SHAPES,
    DOWNLOAD_BASE_URL,
    HUMAN_ATLAS_DIR,
    KNOWN_SHA256,
    MOUSE_CCF_DIR,
    archive_url,
    ccf_annotation_name,
)
from .celltypes import plan_celltypes, split_what
from .download import (
    DEFAULT_PIECES,
    PIECE_THRESHOLD,
    Downloader,
    DownloadResult,
    DownloadSpec,
    summarize,
)
from .http import RetryPolicy, make_session
from .rma import DEFAULT_ORDER, RmaClient

WHAT_CHOICES = ("microarray", "ontology", "structure-graph", "brainspan", "rnaseq", "mouse-ccf",
                "mouse-p56", "human-atlas", "mri", "gtex", "gtex-v10")
DEFAULT_WHAT = ("microarray", "ontology", "structure-graph")
ONTOLOGY_NAME = f"ontology_{HBA_STRUCTURE_GRAPH}.csv"
STRUCTURE_GRAPH_NAME = f"structure_graph_{HBA_STRUCTURE_GRAPH}.json"
#: Columns put first in ontology_10.csv (the Ontology.csv order); other fields follow.
ONTOLOGY_LEAD = ("id", "acronym", "name", "parent_structure_id", "hemisphere_id",
                 "graph_order", "structure_id_path", "color_hex_triplet")


@dataclass
class FetchReport:
    """Results of one ``fetch_ahba`` run, one per planned file."""

    dest: Path
    results: list[DownloadResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failed(self) -> list[DownloadResult]:
        return [r for r in self.results if not r.ok]

    def summary(self) -> str:
        return summarize(self.results)

    def cause(self) -> str:
        """Why the failed files failed: the first error, and how many others there are
        (``""`` when nothing failed)."""
        failed = self.failed
        if not failed:
            return ""
        text = f"first error: {failed[0].error}"
        if len(failed) > 1:
            text += f" (and {len(failed) - 1} more)"
        return text


def parse_what(what: str | Iterable[str] | None) -> list[str]:
    """``"microarray,ontology"`` / a list / ``None`` (the default set) → validated kinds."""
    if what is None:
        return list(DEFAULT_WHAT)
    items = what.split(",") if isinstance(what, str) else list(what)
    out: list[str] = []
    graph_ids: list[int] = []
    last = ""
    for item in (i.strip().lower() for i in items):
        if not item:
            continue
        if item == "all":
            return list(WHAT_CHOICES)
        if item.startswith("structure-graph:") or (item.isdigit() and last == "graph"):
            text = item.partition(":")[2] if ":" in item else item
            if not text.isdigit():
                raise ConfigError(f"--what {item!r}: a structure graph id must be an integer "
                                  "(e.g. structure-graph:1,10)")
            graph_ids.append(int(text))
            last = "graph"
            if "structure-graph" not in out:
                out.append("structure-graph")
            continue
        last = ""
        if item not in WHAT_CHOICES:
            raise ConfigError(f"unknown --what {item!r} (valid: {', '.join(WHAT_CHOICES)}, all)")
        if item not in out:
            out.append(item)
    if not out:
        raise ConfigError("nothing selected to fetch")
    out += [f"structure-graph:{g}" for g in dict.fromkeys(graph_ids)]
    return out


def graph_ids_of(what: Sequence[str]) -> list[int]:
    """Structure graph ids selected by :func:`parse_what` output (10 for plain
    ``structure-graph``)."""
    ids = [int(w.partition(":")[2]) for w in what if w.startswith("structure-graph:")]
    if not ids and "structure-graph" in what:
        ids = [HBA_STRUCTURE_GRAPH]
    return ids


def plan_downloads(what: Sequence[str], donors: Sequence[Donor], base_url: str,
                   brainspan_url: str, download_url: str | None = None,
                   gtex_url: str | None = None) -> list[DownloadSpec]:
    """The plain-GET files of a fetch (everything except the RMA-built ontology)."""
    files = well_known_files()
    specs: list[DownloadSpec] = []
    if "microarray" in what:
        for d in donors:
            specs.append(DownloadSpec(well_known_file_url(base_url, d.microarray_wkf),
                                      d.zip_name, "zip", d.microarray_wkf))
    for gid in graph_ids_of(what):
        specs.append(DownloadSpec(structure_graph_url(base_url, gid),
                                  f"structure_graph_{gid}.json", "json"))
    archive = (download_url or DOWNLOAD_BASE_URL).rstrip("/")
    real = download_url is None or archive == DOWNLOAD_BASE_URL
    if "mouse-ccf" in what:
        for res in sorted(CCF_SHAPES):
            rel = f"{MOUSE_CCF_DIR}/{ccf_annotation_name(res)}"
            specs.append(DownloadSpec(archive_url(archive, rel), ccf_annotation_name(res), "raw",
                                      sha256=KNOWN_SHA256.get(rel) if real else None))
    if "human-atlas" in what:
        rel = f"{HUMAN_ATLAS_DIR}/annotation_full.nii.gz"
        specs.append(DownloadSpec(archive_url(archive, rel), "annotation_full.nii.gz", "raw",
                                  sha256=KNOWN_SHA256.get(rel) if real else None))
    if "mouse-p56" in what:
        wkf = files[MOUSE_P56_ANNOTATION_WKF]
        specs.append(DownloadSpec(well_known_file_url(base_url, wkf.id), wkf.filename, "zip",
                                  wkf.id))
    if "mri" in what:
        for d in donors:
            for wid in (d.t1w_wkf, d.t2w_wkf):
                wkf = files[wid]
                specs.append(DownloadSpec(well_known_file_url(base_url, wkf.id), wkf.filename,
                                          "raw", wkf.id))
    if "brainspan" in what:
        wkf = files[BRAINSPAN_GENES_WKF]
        specs.append(DownloadSpec(well_known_file_url(brainspan_url, wkf.id), wkf.filename,
                                  "zip", wkf.id))
    for kind, version in (("gtex", "v8"), ("gtex-v10", "v10")):
        if kind in what:
            url = gtex_file_url(version, gtex_url)
            specs.append(DownloadSpec(url, url.rsplit("/", 1)[1], "raw"))
    if "rnaseq" in what:
        for d in donors:
            if d.id in RNASEQ_WKF:
                wkf = files[RNASEQ_WKF[d.id]]
                specs.append(DownloadSpec(well_known_file_url(base_url, wkf.id), wkf.filename,
                                          "zip", wkf.id))
    return specs


def structures_csv(rows: list[dict]) -> bytes:
    """Structure records → CSV text (lead columns first, then the rest; by graph_order)."""
    columns = [c for c in ONTOLOGY_LEAD if any(c in r for r in rows)]
    for r in rows:
        columns += [k for k in r if k not in columns]
    rows = sorted(rows, key=lambda r: (r.get("graph_order") is None, r.get("graph_order") or 0,
                                       r.get("id") or 0))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow(["" if r.get(c) is None else
                         json.dumps(r[c]) if isinstance(r.get(c), (dict, list)) else
                         ("true" if r[c] is True else "false" if r[c] is False else r[c])
                         for c in columns])
    return buf.getvalue().encode()


@fill_choices(what=WHAT_CHOICES, celltypes=list(CELLTYPES_DATASETS))
async def afetch_ahba(
    dest: str | Path,
    *,
    donors: str | Iterable[str | int] | None = "all",
    what: str | Iterable[str] | None = None,
    base_url: str | None = None,
    concurrency: int = 4,
    policy: RetryPolicy | None = None,
    quiet: bool = True,
    verify_all: bool = False,
    verify_crc: bool = True,
    pieces: int = DEFAULT_PIECES,
    piece_threshold: int = PIECE_THRESHOLD,
) -> FetchReport:
    """Download the selected Allen files into ``dest``: the coroutine behind :func:`fetch_ahba`.

    Every file is resumable and verified before it gets its final name (size, zip structure
    and CRCs, JSON, a published SHA-256 where there is one) and recorded in
    ``dest/manifest.json``; a file already recorded there, unchanged, is not downloaded again.
    A file that fails does not stop the others and does not raise: check ``report.ok`` and
    ``report.failed``.

    Parameters
    ----------
    dest : str or Path
        The folder the files are saved in (created when missing).
    donors : str, iterable of str or int, or None, default "all"
        The donors whose files are fetched (``microarray``, ``rnaseq``, ``mri``): ``"all"`` or
        None (all six), a comma-separated string of donor ids or names
        (``"9861,H0351.2002"``) or a list of them.
    what : str, iterable of str or None, default None
        The kinds of file to fetch, a comma-separated string or a list; None fetches
        ``"microarray"``, ``"ontology"`` and ``"structure-graph"``. Each item is one of
        <choices:what>; ``"all"`` (every one of them); ``"structure-graph:ID,..."`` (the
        structure graphs of those ids: 1 adult mouse, 10 human, 16/17 developing
        human/mouse); or ``"celltypes:NAME"``, a Cell Types data set, NAME one of
        <choices:celltypes>.
    base_url : str, optional
        A mirror to fetch from instead of the Allen servers (the Allen API, BrainSpan, the
        download archive, GTEx and the Cell Types bucket all come from it); default the
        configured URLs (``ATLAS_ENGINE_BASE_URL`` and the like, else the real servers).
    concurrency : int, default 4
        Files transferred at once (at least 1).
    policy : RetryPolicy, optional
        Retries, backoff and timeouts (default :class:`~atlas_engine.fetch.http.RetryPolicy`).
    quiet : bool, default True
        Show no progress bars.
    verify_all : bool, default False
        Re-hash the files already recorded in the manifest instead of trusting their size and
        modification time.
    verify_crc : bool, default True
        Inflate every zip member and check its CRC-32 before the file gets its final name.
        False checks the zip structure only and leaves the CRCs to the converter, which checks
        every member's CRC-32 as it inflates it.
    pieces : int, default 4
        Concurrent ``Range`` requests per file of at least ``piece_threshold`` bytes; 1 fetches
        every file as one stream.
    piece_threshold : int, default 512 MiB
        Size in bytes from which a file is fetched in ``pieces``.

    Returns
    -------
    FetchReport
        One :class:`~atlas_engine.fetch.download.DownloadResult` per planned file
        (``report.results``); ``report.ok``, ``report.failed``, ``report.summary()`` and
        ``report.cause()`` tell how it went.

    Raises
    ------
    ConfigError
        An unknown ``what`` kind, donor or Cell Types data set, nothing selected, or
        ``concurrency``, ``pieces`` or ``piece_threshold`` below 1.
    """
    cfg = Config.from_env()
    items = what.split(",") if isinstance(what, str) else list(what) if what is not None else None
    cell_sets: list[str] = []
    if items is not None:
        items, cell_sets = split_what(items)
    kinds = parse_what(items) if items or not cell_sets else []
    chosen = resolve_donors(donors)
    base = (base_url or cfg.base_url).rstrip("/")
    brainspan = (base_url or cfg.brainspan_base_url).rstrip("/")
    gtex = (base_url or cfg.gtex_base_url).rstrip("/")
    specs = plan_downloads(kinds, chosen, base, brainspan,
                           download_url=base_url.rstrip("/") if base_url else None,
                           gtex_url=gtex)
    policy = policy or RetryPolicy()
    dest = Path(dest)
    report = FetchReport(dest)
    async with make_session(policy) as session:
        dl = Downloader(dest, session=session, concurrency=concurrency, policy=policy,
                        quiet=quiet, verify_all=verify_all, verify_crc=verify_crc,
                        pieces=pieces, piece_threshold=piece_threshold)
        jobs = [dl.fetch(s) for s in specs]
        extra: list[Downloader] = []
        for sub, spec in plan_celltypes(cell_sets, base_url):
            if not sub:
                jobs.append(dl.fetch(spec))
                continue
            sub_dl = next((d for d in extra if d.dest == dest / sub), None)
            if sub_dl is None:
                sub_dl = Downloader(dest / sub, session=session, concurrency=concurrency,
                                    policy=policy, quiet=quiet, verify_all=verify_all,
                                    verify_crc=verify_crc, pieces=pieces,
                                    piece_threshold=piece_threshold)
                extra.append(sub_dl)
            jobs.append(sub_dl.fetch(spec))
        if "ontology" in kinds:
            rma = RmaClient(base, session=session, policy=policy)
            query = model_query("Structure", f"[graph_id$eq{HBA_STRUCTURE_GRAPH}]")
            spec = DownloadSpec(rma.url_for(query.page(0, rma.page_size, DEFAULT_ORDER)),
                                ONTOLOGY_NAME, "csv")

            async def make(part: Path) -> None:
                rows = await rma.model_rows(query, cache=False)
                if not rows:
                    raise ApiError(f"{spec.url}: no structures returned for graph "
                                   f"{HBA_STRUCTURE_GRAPH}")
                await asyncio.to_thread(atomic_write_bytes, part, structures_csv(rows))

            jobs.append(dl.produce(spec, make))
        try:
            report.results = list(await asyncio.gather(*jobs))
        finally:
            dl.total_bar.close()
            for d in extra:
                d.total_bar.close()
    return report


@fill_choices(what=WHAT_CHOICES, celltypes=list(CELLTYPES_DATASETS))
def fetch_ahba(dest: str | Path, **kwargs: object) -> FetchReport:
    """Download the selected Allen files into ``dest``: :func:`afetch_ahba`, synchronously.

    ``atlas_engine.fetch(dest, ...)`` calls this function. It runs :func:`afetch_ahba` to
    completion, also from a thread that already runs an event loop (Jupyter). Every file is
    verified before it gets its final name and recorded in ``dest/manifest.json``; a file
    already recorded there, unchanged, is not downloaded again. A file that fails does not
    stop the others and does not raise: check ``report.ok`` and ``report.failed``.

    Parameters
    ----------
    dest : str or Path
        The folder the files are saved in (created when missing).
    **kwargs
        Passed on to :func:`afetch_ahba`, which takes these keywords:

        ``donors`` : str, iterable of str or int, or None, default "all"
            The donors whose files are fetched: ``"all"`` or None (all six), donor ids or
            names as a comma-separated string (``"9861,H0351.2002"``) or a list.
        ``what`` : str, iterable of str or None, default None
            The kinds of file to fetch (comma-separated or a list; None: ``"microarray"``,
            ``"ontology"`` and ``"structure-graph"``), each one of <choices:what>;
            ``"all"``; ``"structure-graph:ID,..."`` (graphs by id); or ``"celltypes:NAME"``
            with NAME one of <choices:celltypes>.
        ``base_url`` : str, optional
            A mirror to fetch everything from; default the configured URLs (the real
            servers unless ``ATLAS_ENGINE_BASE_URL`` and the like say otherwise).
        ``concurrency`` : int, default 4
            Files transferred at once (at least 1).
        ``policy`` : RetryPolicy, optional
            Retries, backoff and timeouts (:class:`~atlas_engine.fetch.http.RetryPolicy`).
        ``quiet`` : bool, default True
            Show no progress bars.
        ``verify_all`` : bool, default False
            Re-hash the files already recorded in the manifest.
        ``verify_crc`` : bool, default True
            Inflate every zip member and check its CRC-32 before the file gets its final
            name; False checks the zip structure only, leaving the CRCs to the converter
            (which checks every member's CRC-32 as it inflates it).
        ``pieces`` : int, default 4
            Concurrent ``Range`` requests per file of at least ``piece_threshold`` bytes;
            1 fetches every file as one stream.
        ``piece_threshold`` : int, default 512 MiB
            Size in bytes from which a file is fetched in ``pieces``.

    Returns
    -------
    FetchReport
        As :func:`afetch_ahba`'s.

    Raises
    ------
    ConfigError
        As :func:`afetch_ahba`.
    """
    from .sync import run_sync

    return run_sync(afetch_ahba(dest, **kwargs))  # type: ignore[arg-type]
