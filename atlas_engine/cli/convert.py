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
@click.option("--dataset", type=click.Choice(["auto", "ahba", "brainspan"]), default="auto",
              show_default=True, help="What SRC holds (auto: donor zips/folders, else BrainSpan).")
@click.option("--memory-limit", default=None, help="Bound on working memory, e.g. 512MB; "
              "limits how many donors convert at once.")
@click.option("--jobs", type=click.IntRange(1), default=None,
              help="Donors converted in parallel (default 2 on 2+ cores); lowered if "
              "--memory-limit requires.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def convert_cmd(src: str, store: str, dtype: str, donors: str | None, dataset: str,
                memory_limit: str | None, jobs: int | None, quiet: bool) -> None:
    """Convert donor zips (or abagen folders) in SRC into the Zarr v3 STORE.

    \b
    Examples:
      atlas-engine convert raw/ ahba.zarr
      atlas-engine convert raw/ ahba64.zarr --dtype float64 --donors 9861,10021
      atlas-engine convert raw/ ahba.zarr --memory-limit 512MB
      atlas-engine convert raw/ brainspan.zarr --dataset brainspan

    Re-running skips donors already converted from unchanged sources and finishes
    interrupted ones.
    """
    from pathlib import Path

    from ..convert.donor import _DIR_RE, _ZIP_RE, convert_microarray
    from ..convert.malloc import limit_arenas

    limit_arenas()  # before the worker threads start: keeps peak RSS near the live memory

    def log(text: str) -> None:
        if not quiet:
            click.echo(text, err=True)

    if dataset == "auto":
        p = Path(src)
        has_ahba = p.is_dir() and any(_ZIP_RE.match(f.name) or _DIR_RE.match(f.name)
                                      for f in p.iterdir())
        dataset = "ahba" if has_ahba else "brainspan"
    if dataset == "brainspan":
        from ..convert.brainspan import convert_brainspan

        out = convert_brainspan(src, store, dtype=dtype)
        log(f"BrainSpan: {out['genes']} genes × {out['samples']} samples in "
            f"{out['seconds']:.1f} s → {store}")
        return
    res = convert_microarray(src, store, dtype=dtype, donors=donors.split(",") if donors else None,
                             memory_limit=memory_limit, jobs=jobs, log=log)
    mb = res.bytes_parsed / 1e6
    log(f"converted {res.converted or 'nothing'}, skipped {res.skipped or 'none'} in "
        f"{res.seconds:.1f} s ({mb:.0f} MB of CSV, {mb / max(res.seconds, 1e-9):.0f} MB/s) → {store}")
    for d, ids in res.unknown_structures.items():
        log(f"warning: donor {d}: structure ids {ids} are not in the ontology (samples kept)")


@click.command("verify")
@click.argument("store")
@click.option("--no-checksums", is_flag=True, help="Skip re-reading every chunk.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def verify_cmd(store: str, no_checksums: bool, as_json: bool) -> None:
    """Check STORE: dimensions, samples per donor, probe↔gene summary, NaN/inf, chunk checksums.

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
        click.echo(f"NaN: {s['nan']}, inf: {s['inf']}")
        for p in rep.problems:
            click.echo(f"PROBLEM: {p}")
        click.echo("OK" if rep.ok else "FAILED")
    if not rep.ok:
        sys.exit(1)
