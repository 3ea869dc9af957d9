"""``atlas-engine convert`` and ``atlas-engine verify``."""

from __future__ import annotations

import json
import sys

import click


@click.command("convert")
@click.argument("src", type=click.Path(exists=True))
@click.argument("store")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True, help="Stored expression precision (values are exact doubles "
              "rounded once to float32).")
@click.option("--donors", default=None, help="Donors to convert: ids or names, e.g. 9861,10021 "
              "(default: every donor found in SRC).")
@click.option("--dataset", type=click.Choice(["auto", "ahba", "ahba-rnaseq", "brainspan"]),
              default="auto", show_default=True,
              help="What to convert (auto: the microarray donors and their RNA-seq zips if "
              "SRC has them, only RNA-seq if it has only rnaseq_donor*.zip, else BrainSpan; "
              "ahba-rnaseq: only the RNA-seq donors).")
@click.option("--rnaseq/--no-rnaseq", default=True, show_default=True,
              help="With the microarray donors, also convert rnaseq_donor{id}.zip (or abagen's "
              "rnaseq_donor{id}/ folders) found in SRC into rnaseq/{id}.")
@click.option("--memory-limit", default=None, help="Bound on working memory, e.g. 512MB; "
              "limits how many donors convert at once.")
@click.option("--jobs", type=click.IntRange(1), default=None,
              help="Donors converted in parallel (default 2 on 2+ cores); lowered if "
              "--memory-limit requires.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def convert_cmd(src: str, store: str, dtype: str, donors: str | None, dataset: str,
                rnaseq: bool, memory_limit: str | None, jobs: int | None, quiet: bool) -> None:
    """Convert donor zips (or abagen folders) in SRC into the Zarr v3 STORE.

    \b
    Examples:
      atlas-engine convert raw/ ahba.zarr
      atlas-engine convert raw/ ahba64.zarr --dtype float64 --donors 9861,10021
      atlas-engine convert raw/ ahba.zarr --memory-limit 512MB
      atlas-engine convert raw/ brainspan.zarr --dataset brainspan
      atlas-engine convert raw/ ahba.zarr --dataset ahba-rnaseq   # RNA-seq donors only

    RNA-seq donors (rnaseq_donor9861.zip, rnaseq_donor10021.zip) go into the same store
    as rnaseq/{id} (TPM and counts); probe_selection='rnaseq' reads them. Re-running skips
    donors already converted from unchanged sources and finishes interrupted ones.
    """
    import os
    from pathlib import Path

    # conversion does no linear algebra: without this, the BLAS thread pools numpy and scipy
    # start spin on the cores the inflaters need (set before numpy is first imported)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(var, "1")

    from ..convert.donor import _DIR_RE, _ZIP_RE, convert_microarray
    from ..convert.malloc import limit_arenas
    from ..convert.rnaseq import _ZIP_RE as _RNA_ZIP_RE
    from ..convert.rnaseq import convert_rnaseq, find_rnaseq

    limit_arenas()  # before the worker threads start: keeps peak RSS near the live memory

    def log(text: str) -> None:
        if not quiet:
            click.echo(text, err=True)

    donor_list = donors.split(",") if donors else None
    if dataset == "auto":
        p = Path(src)
        names = [f.name for f in p.iterdir()] if p.is_dir() else []
        has_ahba = any(_ZIP_RE.match(n) or _DIR_RE.match(n) for n in names)
        has_rna = any(_RNA_ZIP_RE.match(n) for n in names)
        dataset = "ahba" if has_ahba else "ahba-rnaseq" if has_rna else "brainspan"

    def rna() -> None:
        out = convert_rnaseq(src, store, dtype=dtype, donors=donor_list, log=log)
        log(f"RNA-seq: converted {out.converted or 'nothing'}, skipped {out.skipped or 'none'} "
            f"in {out.seconds:.1f} s → {store}")

    if dataset == "ahba-rnaseq":
        rna()
        return
    if dataset == "brainspan":
        from ..convert.brainspan import convert_brainspan

        out = convert_brainspan(src, store, dtype=dtype)
        log(f"BrainSpan: {out['genes']} genes × {out['samples']} samples in "
            f"{out['seconds']:.1f} s → {store}")
        return
    res = convert_microarray(src, store, dtype=dtype, donors=donor_list,
                             memory_limit=memory_limit, jobs=jobs, log=log)
    mb = res.bytes_parsed / 1e6
    log(f"converted {res.converted or 'nothing'}, skipped {res.skipped or 'none'} in "
        f"{res.seconds:.1f} s ({mb:.0f} MB of CSV, {mb / max(res.seconds, 1e-9):.0f} MB/s) → {store}")
    for d, ids in res.unknown_structures.items():
        log(f"warning: donor {d}: structure ids {ids} are not in the ontology (samples kept)")
    if rnaseq and find_rnaseq(src, donor_list):
        rna()


@click.command("verify")
@click.argument("store")
@click.option("--no-checksums", is_flag=True, help="Skip re-reading every chunk.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def verify_cmd(store: str, no_checksums: bool, as_json: bool) -> None:
    """Check STORE: dimensions, samples per donor, probe↔gene summary, NaN/inf, chunk checksums
    (of the RNA-seq donors too).

    \b
    Example:
      atlas-engine verify ahba.zarr
    Exits 1 on any mismatch.
    """
    from ..store.verify import verify_store

    rep = verify_store(store, checksums=not no_checksums)
    if as_json:
        click.echo(json.dumps({"ok": rep.ok, "problems": rep.problems, "summary": rep.summary},
                              default=str, indent=1))
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
        click.echo(f"NaN: {s['nan']}, inf: {s['inf']}")
        for p in rep.problems:
            click.echo(f"PROBLEM: {p}")
        click.echo("OK" if rep.ok else "FAILED")
    if not rep.ok:
        sys.exit(1)
