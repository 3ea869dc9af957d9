"""``atlas-engine run`` (the main job) and ``atlas-engine demo`` (the same, offline)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..choices import JOB_STATS
from ..config import Config
from ..job import DEFAULT_BY
from .aggregate import GENE_COLLAPSES, _collapse
from .common import block_bytes_for, dask_options, execution


def _job_options(f):  # type: ignore[no-untyped-def]
    for opt in reversed([
        click.option("--by", default=DEFAULT_BY, show_default=True,
                     help="Regions: depth:N of the ontology, structure, broad, or named "
                          "structures."),
        click.option("--stat", default="mean", show_default=True,
                     type=click.Choice(JOB_STATS)),
        click.option("--genes", default=None, help="Gene symbols or @file (default: all)."),
        click.option("--collapse", default="gene:mean", show_default=True,
                     help=f"none or {' | '.join(GENE_COLLAPSES)}."),
        click.option("--top", default=50, show_default=True,
                     help="Genes in the heatmap (the most variable across regions)."),
        click.option("--dtype", default="float32", show_default=True,
                     type=click.Choice(["float32", "float64"])),
        click.option("--quiet", "-q", is_flag=True),
    ]):
        f = opt(f)
    return dask_options(f)


@click.command("run")
@click.option("--out", "-o", default="atlas-engine-output", show_default=True,
              type=click.Path(), help="Output folder.")
@click.option("--data-dir", default=None, type=click.Path(),
              help="Where raw/ (the downloads) and ahba.zarr (the store) live; printed at "
                   "the start (default $ATLAS_ENGINE_DATA, else ~/atlas-engine-data).")
@click.option("--base-url", default=None, help="Allen API base URL or a mirror "
              "(default https://human.brain-map.org).")
@click.option("--donors", default="all", show_default=True, help="all or ids/names.")
@click.option("--concurrency", default=4, show_default=True, help="Parallel downloads.")
@_job_options
def run_cmd(out: str, data_dir: str | None, base_url: str | None, donors: str,
            concurrency: int, **kw) -> None:  # type: ignore[no-untyped-def]
    """Fetch → convert → aggregate: region × gene means from the six AHBA donors.

    \b
    Writes into --out: regions_by_genes.csv (+ .counts/.groups/.genes.csv), heatmap.png,
    summary.md and provenance.json. Downloads and conversion are resumable and skipped when
    already complete.

    --workers/--scheduler apply to the aggregate stage only: fetch, convert and the report
    run in this process.

    \b
    Examples:
      atlas-engine run                                   # the real Allen API, all donors
      atlas-engine run --donors 9861,10021 --by depth:4 --out two-donors
      atlas-engine run --base-url http://127.0.0.1:8765  # a mirror (atlas-engine serve)
    """
    data = data_dir or Config.from_env().data_dir
    if not kw.get("quiet"):
        how = ("--data-dir" if data_dir else "$ATLAS_ENGINE_DATA"
               if os.environ.get("ATLAS_ENGINE_DATA") else "the default; --data-dir or "
               "$ATLAS_ENGINE_DATA to change")
        click.echo(f"data folder: {Path(data).expanduser()} (downloads in raw/, the store "
                   f"ahba.zarr; {how})")
    _run(out=out, data_dir=data, base_url=base_url, donors=donors, concurrency=concurrency,
         **kw)


def _run(*, demo: dict | None = None, scheduler: str | None, workers: int | None,
         memory_limit: str | None, collapse: str, **kw) -> None:  # type: ignore[no-untyped-def]
    from ..tuning import process_tuning, single_thread_blas_env

    single_thread_blas_env("OMP_NUM_THREADS")  # as convert: before numpy and scipy load
    from ..job import run_demo, run_job

    with execution(scheduler, workers, memory_limit), process_tuning():
        common = dict(collapse=_collapse(collapse), memory_limit=memory_limit,
                      block_bytes=block_bytes_for(memory_limit), **kw)
        if demo is not None:
            run_demo(**demo, **common)
        else:
            run_job(**common)


@click.command("demo")
@click.option("--out", "-o", default="demo-output", show_default=True, type=click.Path())
@click.option("--probes", default=2000, show_default=True, help="Probes to generate.")
@click.option("--samples-fraction", default=0.1, show_default=True,
              help="Fraction of each donor's real sample count to generate.")
@click.option("--seed", default=0, show_default=True)
@click.option("--flaky", is_flag=True,
              help="Make the mirror drop connections and answer 503 first (shows resume).")
@_job_options
def demo_cmd(out: str, probes: int, samples_fraction: float, seed: int, flaky: bool,
             **kw) -> None:  # type: ignore[no-untyped-def]
    """The main job offline: generate Allen-format data, serve it on loopback under the real
    URL layout, then fetch → convert → aggregate → report into --out.

    --workers/--scheduler apply to the aggregate stage only: generating the data, fetch,
    convert and the report run in this process.

    \b
    Examples:
      atlas-engine demo                                  # ~10 s, writes demo-output/
      atlas-engine demo --probes 58692 --samples-fraction 1 --out full-demo   # full size
      atlas-engine demo --flaky --workers 2
    """
    _run(demo={"out": out, "probes": probes, "samples_fraction": samples_fraction,
               "seed": seed, "flaky": flaky}, **kw)
