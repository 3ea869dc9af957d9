"""``atlas-engine bench``: aggregation throughput against baselines, in one run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from .common import dask_options, scheduler_from_env

SCRIPTS = {"kernels": "bench_kernels.py", "convert": "bench_convert.py", "fetch": "bench_fetch.py",
           "abagen": "bench_abagen.py"}


@click.command("bench", context_settings={"ignore_unknown_options": True})
@click.option("--what", default="aggregate", show_default=True,
              help="aggregate (from STORE), or kernels, convert, fetch, abagen (the scripts in "
                   "the repository's benchmarks/ folder, run from a checkout).")
@click.option("--variant", "variants", multiple=True,
              help="Only these aggregate variants (repeatable), e.g. structure, gene, pandas.")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Also append the markdown table to this file.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@dask_options
def bench_cmd(what: str, variants: tuple[str, ...], out: str | None,
              args: tuple[str, ...], workers: int | None, scheduler: str | None,
              memory_limit: str | None) -> None:
    """Measure throughput against baselines in the same run (these machines are noisy:
    compare ratios, not absolute seconds).

    \b
    ARGS: the STORE for --what aggregate; for the other suites, the script's own options
    (after --).

    \b
    --workers/--scheduler choose the cluster of the *-cluster variants (structure-cluster,
    gene-cluster; default a local cluster of 2 workers); the other variants measure this
    machine's threads and the baselines, by definition. The other suites run their script
    and refuse --workers/--scheduler.

    \b
    Examples:
      atlas-engine bench ahba.zarr                       # per-structure / per-gene from the store
      atlas-engine bench ahba.zarr --variant structure --variant pandas
      atlas-engine bench ahba.zarr --variant structure-cluster --scheduler tcp://host:8786
      atlas-engine bench --what kernels -- --scale 0.25  # benchmarks/bench_kernels.py
    """
    if what == "aggregate":
        if len(args) != 1 or args[0].startswith("-"):
            raise click.UsageError("give the STORE to benchmark (atlas-engine convert makes one)"
                                   if not args else f"--what aggregate takes one STORE, got "
                                   f"{' '.join(args)}")
        store = args[0]
        from ..bench.aggregate import run_all, table

        click.echo(f"load before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        cluster = {"scheduler": scheduler, "workers": workers, "memory_limit": memory_limit}
        text = table(run_all(store, list(variants) or None, cluster=cluster))
        click.echo(text)
        click.echo(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if out:
            with open(out, "a") as fh:
                fh.write(text + "\n")
        return
    if what not in SCRIPTS:
        raise click.UsageError(f"--what {what!r}: valid are aggregate, {', '.join(SCRIPTS)}")
    given = [name for name, value in (("--workers", workers), ("--scheduler", scheduler))
             if value is not None and not (name == "--scheduler" and scheduler_from_env())]
    if given:
        raise click.UsageError(f"{' and '.join(given)}: only for --what aggregate; --what "
                               f"{what} runs its script, whose own options go after --")
    script = benchmarks_dir() / SCRIPTS[what]
    if not script.is_file():
        raise click.UsageError(f"{script} not found: run from a checkout of the repository")
    sys.exit(subprocess.call([sys.executable, str(script), *args]))


def benchmarks_dir() -> Path:
    """The repository's ``benchmarks/`` folder: beside the installed package when it was
    installed from a checkout (``pip install -e .``), else under the current directory."""
    beside = Path(__file__).resolve().parents[2] / "benchmarks"
    return beside if beside.is_dir() else Path.cwd() / "benchmarks"
