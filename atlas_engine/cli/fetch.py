"""``atlas-engine fetch``: download AHBA files (resumable, verified, recorded in a manifest)."""

from __future__ import annotations

import click

from ..errors import FetchError


@click.command("fetch")
@click.option("--dest", default="raw", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the files and manifest.json.")
@click.option("--donors", default="all", show_default=True,
              help="all, or donor ids / names separated by commas (9861,H0351.2002).")
@click.option("--base-url", default=None,
              help="Server to fetch from for everything (a mirror, e.g. atlas-engine serve). "
                   "Default: the Allen API (human.brain-map.org; BrainSpan from brainspan.org).")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Files downloaded at once.")
@click.option("--what", default="microarray,ontology,structure-graph", show_default=True,
              help="Comma-separated: microarray, ontology, structure-graph (graph 10) or "
                   "structure-graph:1,10 (any graph ids), brainspan, rnaseq, mouse-ccf, "
                   "mouse-p56, human-atlas, mri, gtex (GTEx v8 median TPM), gtex-v10, all, or "
                   "celltypes:<dataset> (human-m1, "
                   "human-mca, mouse-ctx-hpf-10x, mouse-ctx-hpf-smartseq, human-mtg, mouse-visp).")
@click.option("--verify-all", is_flag=True,
              help="Re-hash files already in the manifest instead of trusting size + mtime.")
@click.option("--verify-crc/--no-verify-crc", default=True, show_default=True,
              help="Inflate every zip member and check its CRC before accepting the file. "
                   "--no-verify-crc checks the zip structure only (several times faster) and "
                   "leaves the CRCs to `convert`, which checks each member as it inflates it.")
@click.option("--retries", default=8, show_default=True, type=click.IntRange(1, 100),
              help="Attempts in a row without progress before a file is given up.")
@click.option("--pieces", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Concurrent Range pieces for each file of at least --pieces-above MiB "
                   "(1: every file as one stream).")
@click.option("--pieces-above", default=512, show_default=True, type=click.IntRange(1),
              metavar="MIB", help="Files at least this large (MiB) download in pieces.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def fetch_cmd(dest: str, donors: str, base_url: str | None, concurrency: int, what: str,
              verify_all: bool, verify_crc: bool, retries: int, pieces: int, pieces_above: int,
              quiet: bool) -> None:
    """Download the AHBA donor zips, ontology and structure graph into DEST.

    Each file streams to NAME.part, resumes with HTTP Range after a dropped connection or
    a killed run (only from the same version of the server's file: If-Range with its ETag,
    recorded in NAME.part.json), is checked (length, not HTML, zip CRCs) and only then
    renamed to NAME; a re-run skips files recorded in DEST/manifest.json (by name, size and
    sha256). A file that fails - a full disk included - is reported in one line and the
    others still finish; the exit code is then 1. An unreachable server fails within
    seconds, saying why. Files of at least --pieces-above MiB come as --pieces concurrent
    Range pieces, each resumed from its own offset (recorded in NAME.part.json); a server
    that ignores Range gets one stream. See docs/reliability.md.

    \b
    Examples:
      atlas-engine fetch --dest raw/
      atlas-engine fetch --dest raw/ --donors 9861,H0351.1015 --what microarray
      atlas-engine fetch --dest raw/ --base-url http://127.0.0.1:8765 --concurrency 6
      atlas-engine fetch --dest atlases/ --what structure-graph:1,10,mouse-ccf,human-atlas
      atlas-engine fetch --dest raw/ --what celltypes:human-m1,celltypes:human-mtg
      atlas-engine fetch --dest raw/ --what celltypes:human-m1 --pieces 8 --pieces-above 256
      atlas-engine fetch --dest raw/ --what brainspan,gtex
    """
    from ..fetch.ahba import fetch_ahba
    from ..fetch.http import RetryPolicy

    report = fetch_ahba(dest, donors=donors, what=what, base_url=base_url,
                        concurrency=concurrency, policy=RetryPolicy(max_attempts=retries),
                        quiet=quiet, verify_all=verify_all, verify_crc=verify_crc,
                        pieces=pieces, piece_threshold=pieces_above << 20)
    for r in report.results:
        if r.status == "failed":
            click.echo(f"failed: {r.spec.name}: {r.error}", err=True)
        elif not quiet:
            click.echo(f"{r.status}: {r.spec.name} ({r.size:,} bytes, sha256 "
                       f"{(r.sha256 or '')[:12]})", err=True)
    line = f"fetch {report.dest}: {report.summary()}"
    if not report.ok:
        raise FetchError(line)
    if not quiet:
        click.echo(line)
