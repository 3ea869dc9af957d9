"""``atlas-engine convert`` and ``atlas-engine verify``."""

from __future__ import annotations

import json
import sys

import click

from .common import dask_options, execution


@click.command("convert")
@click.argument("src", type=click.Path(exists=True))
@click.argument("store")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True, help="Stored expression precision (values are exact doubles "
              "rounded once to float32).")
@click.option("--donors", default=None, help="Donors to convert: ids or names, e.g. 9861,10021 "
              "(default: every donor found in SRC).")
@click.option("--dataset", type=click.Choice(["auto", "ahba", "ahba-rnaseq", "brainspan", "celltypes"]),
              default="auto", show_default=True,
              help="What to convert (auto: the microarray donors and their RNA-seq donors if "
              "SRC has them, only RNA-seq if it has only RNA-seq donors, a Cell Types "
              "matrix.csv or 2018 zip, else BrainSpan; ahba-rnaseq: only the RNA-seq donors). "
              "Archives are recognised by their members, whatever their names.")
@click.option("--rnaseq/--no-rnaseq", default=True, show_default=True,
              help="With the microarray donors, also convert the RNA-seq donor zips (or "
              "folders) found in SRC into rnaseq/{id}.")
@click.option("--memory-limit", default=None, help="Bound on working memory, e.g. 512MB; "
              "limits how many donors convert at once.")
@click.option("--jobs", type=click.IntRange(1), default=None,
              help="Donors converted in parallel (default 2 on 2+ cores); lowered if "
              "--memory-limit requires.")
@click.option("--force", is_flag=True, help="Reconvert the selected donors even when they are "
              "current (the repair for a donor that verify or a reader found damaged).")
@click.option("--allow-nonfinite", is_flag=True, help="Store nan/inf tokens as NaN (counted "
              "in each donor's provenance and by verify) instead of refusing them.")
@click.option("--wait", is_flag=True, help="If another convert is writing STORE, wait for it "
              "(default: stop and say which process holds the store).")
@click.option("--quiet", is_flag=True, help="No progress output.")
def convert_cmd(src: str, store: str, dtype: str, donors: str | None, dataset: str,
                rnaseq: bool, memory_limit: str | None, jobs: int | None, force: bool,
                allow_nonfinite: bool, wait: bool, quiet: bool) -> None:
    """Convert donor zips (or abagen folders) in SRC into the Zarr v3 STORE.

    SRC is a folder of zips / extracted folders, or one zip or folder. File names do not
    matter: each archive is recognised by its members and each donor identified by its
    SampleAnnot.csv well_ids; a name that contradicts the content is refused.

    \b
    Examples:
      atlas-engine convert raw/ ahba.zarr
      atlas-engine convert raw/ ahba64.zarr --dtype float64 --donors 9861,10021
      atlas-engine convert raw/ ahba.zarr --memory-limit 512MB
      atlas-engine convert raw/ brainspan.zarr --dataset brainspan
      atlas-engine convert raw/ ahba.zarr --dataset ahba-rnaseq   # RNA-seq donors only
      atlas-engine convert raw/aibs_human_m1_10x m1.zarr     # Cell Types (AnnData store)

    RNA-seq donors (rnaseq_donor9861.zip, rnaseq_donor10021.zip) go into the same store
    as rnaseq/{id} (TPM and counts); probe_selection='rnaseq' reads them. Re-running skips
    donors already converted from unchanged sources and finishes interrupted ones. One
    convert writes a store at a time; a damaged donor is rewritten with
    --donors ID --force.
    """
    from ..tuning import single_thread_blas_env

    # conversion does no linear algebra: without this, the BLAS thread pools numpy and scipy
    # start spin on the cores the inflaters need (set before numpy is first imported)
    single_thread_blas_env("OMP_NUM_THREADS")

    from ..convert.api import convert
    from ..tuning import CONVERT_SWITCH_INTERVAL, process_tuning

    def log(text: str) -> None:
        if not quiet:
            click.echo(text, err=True)

    with process_tuning(switch_interval=CONVERT_SWITCH_INTERVAL):
        out = convert(src, store, dataset=dataset, dtype=dtype, donors=donors, rnaseq=rnaseq,
                      memory_limit=memory_limit, jobs=jobs, force=force,
                      allow_nonfinite=allow_nonfinite, wait=wait, log=log)
    for line in out.messages:
        log(line)


@click.command("verify")
@click.argument("store")
@click.option("--no-checksums", is_flag=True, help="Skip re-reading every chunk.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@dask_options
def verify_cmd(store: str, no_checksums: bool, as_json: bool, workers: int | None,
               scheduler: str | None, memory_limit: str | None) -> None:
    """Check STORE: dimensions, samples per donor, probe↔gene summary, NaN/inf, and every chunk
    of every array (its CRC-32C, and the matrices' values against conversion; of the RNA-seq
    donors too). Each problem says how to repair it (re-convert that donor with --force).
    The matrices are checked as Dask tasks, a chunk row each: on this process's threads, or
    on a cluster's workers with --workers / --scheduler (they must reach the store).

    \b
    Example:
      atlas-engine verify ahba.zarr
    Exits 1 on any mismatch.
    """
    from ..store.verify import verify_store

    with execution(scheduler, workers, memory_limit):
        rep = verify_store(store, checksums=not no_checksums)
    if as_json:
        click.echo(json.dumps({"ok": rep.ok, "problems": rep.problems, "summary": rep.summary},
                              default=str, indent=1))
    elif rep.summary.get("dataset") == "brainspan":
        s = rep.summary
        click.echo(f"BrainSpan: {s['genes']} genes × {s['samples']} samples"
                   + (f" ({s['note']})" if s.get("note") else ""))
        if "donors" in s:
            click.echo(f"donors: {s['donors']}, structures: {s['structures']}, ages: {s['ages']}")
            click.echo("samples per period: " + ", ".join(f"{k} {v}"
                                                          for k, v in s["periods"].items()))
        if s.get("ages_not_in_real_data"):
            click.echo(f"ages not in the real data: {s['ages_not_in_real_data']}")
        click.echo(f"NaN: {s['nan']}, inf: {s['inf']}, negative: {s.get('negative', 'unchecked')}")
        for p in rep.problems:
            click.echo(f"PROBLEM: {p}")
        click.echo("OK" if rep.ok else "FAILED")
    else:
        s = rep.summary
        click.echo(f"donors: {s['donors']}")
        click.echo(f"samples: {s['samples']} (total {s['total_samples']})")
        click.echo(f"probes: {s['probes']}, genes: {s['genes']}, non-RefSeq probes: "
                   f"{s['non_refseq_probes']}")
        click.echo(f"probes per gene: {s['probes_per_gene']}")
        if s.get("rnaseq"):
            click.echo("RNA-seq: " + ", ".join(f"{d}: {v['genes']} genes × {v['samples']} "
                                                "samples" for d, v in s["rnaseq"].items()))
        for d, o in (s.get("sources") or {}).items():
            if o:
                sha = f", sha256 {o['sha256'][:16]}…" if o.get("sha256") else ""
                inner = f" ({o['member_prefix']})" if o.get("member_prefix") else ""
                click.echo(f"source of donor {d}: {o['file']}{inner}, {o['size']:,} bytes{sha}; "
                           f"identified by {o['identified_by']}")
        click.echo(f"NaN: {s['nan']}, inf: {s['inf']}")
        if s.get("nonfinite_accepted"):
            click.echo("non-finite values stored as NaN at conversion (--allow-nonfinite): "
                       + ", ".join(f"{d}: {k}" for d, k in s["nonfinite_accepted"].items()))
        for p in rep.problems:
            click.echo(f"PROBLEM: {p}")
        click.echo("OK" if rep.ok else "FAILED")
    if not rep.ok:
        sys.exit(1)
