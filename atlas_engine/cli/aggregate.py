"""``atlas-engine aggregate`` and ``atlas-engine expression``."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..choices import AGGREGATE_STATS, CELL_STATS, COLLAPSE_METHODS, DONOR_MODES
from ..errors import AtlasEngineError, ConfigError
from .atlas_options import ABAGEN_OPTION_NAMES, abagen_options, cli_wording, run_atlas_aggregate
from .common import block_bytes_for, dask_options, execution

#: the gene collapses of --collapse, as the help and the errors list them
GENE_COLLAPSES = tuple(f"gene:{m}" for m in COLLAPSE_METHODS)


def _collapse(value: str) -> str | None:
    text = value.strip().lower()
    if text == "auto":
        return "auto"
    if text in ("", "none", "probe", "probes"):
        return None
    if text.startswith("gene:"):
        return text.split(":", 1)[1]
    if text == "gene":
        return "mean"
    raise ConfigError(f"--collapse {value!r}: expected auto, none or gene:<method> "
                      f"({', '.join(GENE_COLLAPSES)})")


def _cell_store(store: str) -> bool:
    from ..celltypes.store import is_cell_store

    return is_cell_store(store)


@click.command("aggregate")
@click.argument("store", type=click.Path())
@click.option("--by", "by", default="structure", show_default=True,
              help="structure | depth:N | broad | ids/acronyms/names (comma-separated; each "
                   "with its descendants) | atlas:IMAGE.nii.gz or atlas:desikan-killiany (shipped) "
                   "(abagen-grade pipeline).")
@click.option("--stat", default="mean", show_default=True,
              help=f"{' | '.join(AGGREGATE_STATS)}. Cell Types stores: comma-separated from "
                   f"{', '.join(CELL_STATS)} (trimmed_mean and median: Allen's, of "
                   "log2(CPM+1)) or all.")
@click.option("--genes", default=None, help="Gene symbols (BDNF,COMT) or @file; default all.")
@click.option("--combine", default="combined", show_default=True,
              type=click.Choice(DONOR_MODES),
              help="How donors are combined. combined: mean of donor means (abagen); pooled: "
                   "all samples together; each: one result per donor.")
@click.option("--donors", default=None, help="Restrict to these donors (ids or names, "
              "e.g. 9861,10021; default all).")
@click.option("--collapse", default="auto", show_default=True,
              help="auto (gene columns when --genes is given, else probes), none (probes) or "
                   f"{' | '.join(GENE_COLLAPSES)}.")
@click.option("--keep-non-refseq", is_flag=True, help="With a gene collapse, keep probes "
              "without an Entrez id (by default they are left out and counted).")
@click.option("--drop-empty", is_flag=True, help="Leave groups without samples out of the "
              "matrix (they are still listed in <out>.groups.csv).")
@click.option("--atlas-info", default=None,
              help="With --by atlas:...: abagen's atlas_info CSV (id, hemisphere, structure), "
                   "or the name of a shipped atlas (desikan-killiany).")
@click.option("--transform", default="none", show_default=True,
              type=click.Choice(["none", "log2"]),
              help="BrainSpan stores: log2 = statistics of log2(RPKM + 1).")
@click.option("--out", "-o", required=True, type=click.Path(),
              help="Output: .csv | .parquet (table) or .zarr | .nc (cube).")
@click.option("--layout", default="wide", show_default=True, type=click.Choice(["wide", "long"]),
              help="Tables: wide (a row per group, a column per gene or probe) or long (a row "
                   "per group and gene or probe).")
@click.option("--spill-dir", default=None, type=click.Path(file_okay=False),
              help="Cell Types stores: where trimmed_mean / median spill the counts (4-12 "
                   "bytes per stored count, removed at the end); default the temporary "
                   "directory ($TMPDIR). On a cluster of several machines: a shared directory.")
@click.option("--quiet", "-q", is_flag=True)
@dask_options
@abagen_options
def aggregate_cmd(store: str, by: str, stat: str, genes: str | None, combine: str,
                  donors: str | None, collapse: str, keep_non_refseq: bool,
                  drop_empty: bool, atlas_info: str | None, transform: str, out: str,
                  layout: str, spill_dir: str | None, quiet: bool,
                  workers: int | None,
                  scheduler: str | None, memory_limit: str | None, **abagen: object) -> None:
    """Aggregate STORE into a region × gene (or probe) matrix.

    \b
    Examples:
      atlas-engine aggregate ahba.zarr --by depth:5 --collapse gene:mean --out regions.csv
      atlas-engine aggregate ahba.zarr --by "cerebral cortex,4249" --genes BDNF,COMT,DRD2 \\
          --combine each --out psych.parquet
      atlas-engine aggregate ahba.zarr --by broad --donors 9861,10021 --out two.csv
      atlas-engine aggregate ahba.zarr --by structure --stat std --out cube.nc --workers 2
      atlas-engine aggregate ahba.zarr --by atlas:dk.nii.gz --atlas-info dk.csv --out dk.csv
      atlas-engine aggregate ahba.zarr --by atlas:desikan-killiany \\
          --atlas-info desikan-killiany --out dk.csv
      atlas-engine aggregate m1.zarr --by cluster --stat trimmed_mean,median --out m1.csv
      atlas-engine aggregate brainspan.zarr --by period,region --genes BDNF --transform log2 \\
          --out periods.csv

    \b
    Cell Types stores (see docs/celltypes.md): --by any obs column(s) (cluster, subclass,
    class, donor, region; comma-separated for combinations), several --stat at once.

    \b
    On a BrainSpan store (convert --dataset brainspan) --by takes period, age, structure,
    region, donor, gender or a combination (period,structure); see docs/brainspan.md.

    \b
    With --by atlas:IMAGE (a volumetric parcellation in MNI space) the abagen-grade pipeline
    runs: intensity filter, probe selection, sample-to-region matching, normalisation and
    aggregation, with abagen's options under the same names (--ibf-threshold,
    --probe-selection, ...; they apply only to atlas runs). See docs/abagen-pipeline.md.
    """
    if by.startswith("atlas:"):
        from ..tuning import single_thread_blas_env

        # before numpy and scipy load: the pipeline runs BLAS on one thread (process_tuning)
        single_thread_blas_env()
    from ..aggregate.api import aggregate
    from ..report.tables import write_result
    from ..sources.donors import resolve_donors
    from ..store.brainspan import store_format
    from ..store.layout import FORMAT_BRAINSPAN, FORMAT_MICROARRAY

    t0 = time.perf_counter()
    kind = store_format(store)  # an AHBA store needs no Cell Types check (scipy's import)
    if kind != FORMAT_MICROARRAY and _cell_store(store):
        from .celltypes import run_cell_aggregate

        # no process_tuning: with the pooled read buffers it changed neither time nor peak
        # memory of the command (benchmarks/RESULTS.md, Cell Types)
        with execution(scheduler, workers, memory_limit, quiet):
            run_cell_aggregate(store, by, stat, genes, out, quiet, spill_dir=spill_dir)
        return
    if kind == FORMAT_BRAINSPAN:
        from .brainspan import run_brainspan_aggregate

        with execution(scheduler, workers, memory_limit, quiet):
            run_brainspan_aggregate(store, by=by, stat=stat, genes=genes, combine=combine,
                                    donors=donors, transform=transform,
                                    collapse=collapse, out=out, quiet=quiet, layout=layout)
        return
    if stat not in AGGREGATE_STATS:
        raise ConfigError(f"--stat {stat!r}: expected one of {', '.join(AGGREGATE_STATS)}")
    ids = [d.id for d in resolve_donors(donors)] if donors else None
    if by.startswith("atlas:"):
        opts = {k: abagen[k] for k in ABAGEN_OPTION_NAMES if k in abagen}
        from ..tuning import process_tuning

        try:
            # the pipeline's passes are Dask tasks: threads, --workers or --scheduler
            with process_tuning(), execution(scheduler, workers, memory_limit, quiet=True):
                summary = run_atlas_aggregate(store, by[len("atlas:"):], atlas_info, out,
                                              donors=",".join(map(str, ids)) if ids else "all",
                                              quiet=quiet, **opts)
        except AtlasEngineError as exc:  # the library names its keywords; say the flags
            exc.args = (cli_wording(str(exc)),) + exc.args[1:]
            raise
        if not quiet:
            for key, value in summary.items():
                if key != "files":
                    click.echo(f"{key}: {value}")
            for p in summary.get("files", []):
                click.echo(f"wrote {p}")
        return
    with execution(scheduler, workers, memory_limit, quiet):
        result = aggregate(store, by=by, stat=stat, genes=genes, combine=combine,
                           collapse=_collapse(collapse), donors=ids,
                           block_bytes=block_bytes_for(memory_limit),
                           keep_non_refseq=keep_non_refseq)
    paths = write_result(result, Path(out), drop_empty=drop_empty, layout=layout)
    if not quiet:
        g = result.groups
        empty = int((g.n_samples == 0).sum())
        click.echo(f"{len(g)} groups ({empty} without samples), {len(result.features)} "
                   f"{'genes' if result.params['collapse'] else 'probes'}, "
                   f"{len(result.donors)} donors, {stat} ({combine}) "
                   f"in {time.perf_counter() - t0:.1f} s")
        if result.params.get("non_refseq_probes_left_out"):
            click.echo(f"{result.params['non_refseq_probes_left_out']} probes without an Entrez "
                       "id left out of the gene collapse (--keep-non-refseq keeps them)")
        if result.missing_genes:
            click.echo(f"not in the store: {', '.join(result.missing_genes)}")
        if result.unassigned_samples:
            click.echo(f"{result.unassigned_samples} samples fall in no group")
        for p in paths:
            click.echo(f"wrote {p}")


@click.command("expression")
@click.argument("store", type=click.Path())
@click.argument("genes", nargs=-1, required=True)
@click.option("--donors", default=None, help="Restrict to these donors (ids or names).")
@click.option("--layout", default="long", show_default=True, type=click.Choice(["long", "wide"]),
              help="long: one row per probe and sample; wide: probes × samples.")
@click.option("--out", "-o", required=True, type=click.Path(), help="Output .csv or .parquet.")
@click.option("--quiet", "-q", is_flag=True)
@dask_options
def expression_cmd(store: str, genes: tuple[str, ...], donors: str | None, layout: str,
                   out: str, quiet: bool, workers: int | None, scheduler: str | None,
                   memory_limit: str | None) -> None:
    """Every probe of GENE... in every sample, annotated (no aggregation).

    \b
    Examples:
      atlas-engine expression ahba.zarr BDNF DISC1 NRG1 COMT DRD2 SLC6A4 --out psych.csv
      atlas-engine expression ahba.zarr @genes.txt --layout wide --out genes.parquet
    """
    from ..aggregate.extract import extract_expression
    from ..report.tablewrite import write_frame
    from ..sources.donors import resolve_donors

    path = Path(out)
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"--out {out}: use .csv or .parquet")
    ids = [d.id for d in resolve_donors(donors)] if donors else None
    with execution(scheduler, workers, memory_limit, quiet=True):
        table, missing = extract_expression(store, list(genes), donors=ids, layout=layout)
    write_frame(table, path)
    if not quiet:
        if missing:
            click.echo(f"not in the store: {', '.join(missing)}")
        click.echo(f"wrote {path} ({len(table):,} rows)")
