"""``atlas-engine serve``: a local Allen mirror of a raw directory, with optional faults."""

from __future__ import annotations

import time

import click

from ..config import parse_size
from ..errors import ConfigError


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    try:
        return parse_size(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("serve")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, dir_okay=True))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (loopback unless given).")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0 = any free port).")
@click.option("--drop-after", callback=_size, metavar="BYTES",
              help="Close the connection after this many bytes of each download body.")
@click.option("--drop-first", type=click.IntRange(0), metavar="K",
              help="Drop only the first K downloads (default: every one).")
@click.option("--drop-seed", type=int, metavar="SEED",
              help="Drop each body at a random offset (below --drop-after if given).")
@click.option("--truncate-by", callback=_size, metavar="BYTES",
              help="Send each download body this many bytes short of its Content-Length.")
@click.option("--fail-first", default=0, type=click.IntRange(0), metavar="K",
              help="Answer the first K requests with --fail-status.")
@click.option("--fail-status", default=503, show_default=True, type=click.Choice(["503", "429"]),
              help="Status of the --fail-first answers.")
@click.option("--retry-after", type=click.FloatRange(0), metavar="S",
              help="Send Retry-After: S with the failures.")
@click.option("--html-first", default=0, type=click.IntRange(0), metavar="K",
              help='Answer the first K requests 200 with an HTML "site unavailable" page.')
@click.option("--scope", default="all", show_default=True,
              type=click.Choice(["all", "download", "api"]),
              help="Requests --fail-first/--html-first apply to.")
@click.option("--bandwidth", callback=_size, metavar="BYTES_PER_S",
              help="Throttle each download response (e.g. 20MB).")
@click.option("--ignore-range", is_flag=True, help="Ignore Range headers (always 200, full body).")
@click.option("--overstate-total-rows", default=0, type=click.IntRange(0), metavar="N",
              help="Add N to total_rows of RMA model queries.")
def serve_cmd(directory: str, host: str, port: int, drop_after: int | None,
              drop_first: int | None, drop_seed: int | None, truncate_by: int | None,
              fail_first: int, fail_status: str, retry_after: float | None, html_first: int,
              scope: str, bandwidth: int | None, ignore_range: bool,
              overstate_total_rows: int) -> None:
    """Serve DIRECTORY (a raw directory) under the real Allen URL layout.

    \b
    Endpoints:
      /api/v2/well_known_file_download/{id}    donor zips etc. (Range supported)
      /api/v2/data/query.json?criteria=...     RMA: Donor, Gene, Probe, Structure, Product,
                                               service::human_microarray_expression
      /api/v2/structure_graph_download/10.json

    \b
    Examples:
      atlas-engine synth raw/ && atlas-engine serve raw/ --port 8765
      atlas-engine fetch --dest copy/ --base-url http://127.0.0.1:8765
      atlas-engine serve raw/ --drop-after 1MB --drop-first 2 --fail-first 1 --retry-after 1
    """
    from ..testing.server import Faults, MirrorServer

    faults = Faults(
        fail_first=fail_first, fail_status=int(fail_status), retry_after=retry_after,
        html_first=html_first, scope=scope,  # type: ignore[arg-type]
        drop_after=drop_after, drop_first=drop_first, drop_seed=drop_seed,
        truncate_by=truncate_by, bandwidth=bandwidth, ignore_range=ignore_range,
        overstate_total_rows=overstate_total_rows,
    )
    server = MirrorServer(directory, host=host, port=port, faults=faults)
    url = server.start_in_thread()
    click.echo(url)
    try:
        files = server.data.served_files()
        for wkf, path in files.items():
            click.echo(f"  {url}/api/v2/well_known_file_download/{wkf}  {path.name}", err=True)
        if not files:
            click.echo(f"  (no well-known files found in {directory})", err=True)
        click.echo("serving; Ctrl-C to stop", err=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop_thread()
