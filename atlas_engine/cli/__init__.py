"""``atlas-engine`` command line: one sub-command per stage, loaded lazily.

Each command lives in its own module of this package and is imported only when it runs, so that
``atlas-engine --help`` starts instantly (no dask/numba/zarr import).
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any

import click

from .. import __version__
from ..errors import AtlasEngineError

#: command name -> "module:attribute" (modules relative to this package)
COMMANDS: dict[str, tuple[str, str]] = {
    "fetch": ("fetch", "fetch_cmd"),
    "convert": ("convert", "convert_cmd"),
    "verify": ("convert", "verify_cmd"),
    "aggregate": ("aggregate", "aggregate_cmd"),
    "expression": ("aggregate", "expression_cmd"),
    "markers": ("celltypes", "markers_cmd"),
    "query": ("query", "query_cmd"),
    "serve": ("serve", "serve_cmd"),
    "synth": ("synth", "synth_cmd"),
    "run": ("run", "run_cmd"),
    "demo": ("run", "demo_cmd"),
    "bench": ("bench", "bench_cmd"),
    "maps": ("maps", "maps_cmd"),
    "voxels": ("maps", "voxels_cmd"),
    "trajectory": ("brainspan", "trajectory_cmd"),
    "crossref": ("crossref", "crossref_cmd"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        module = COMMANDS[name][0]
        return importlib.util.find_spec(f"{__name__}.{module}") is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not self._available(name):
            return None
        module, attr = COMMANDS[name]
        mod = importlib.import_module(f"{__name__}.{module}")
        return getattr(mod, attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="atlas-engine")
@click.option("--verbose", "-v", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Fetch, convert and aggregate Allen Human Brain Atlas gene expression, out of core.

    \b
    Quick start (offline, generated data):
      atlas-engine demo --out demo-output
    Real data:
      atlas-engine fetch --dest raw/
      atlas-engine convert raw/ ahba.zarr
      atlas-engine aggregate ahba.zarr --by structure --out regions.csv
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    from ..malloc import tune_allocator

    # before any worker thread starts: few malloc arenas keep resident memory near live
    # memory, and block-sized buffers are reused instead of page-faulted anew
    tune_allocator()


def _exit_quietly_on_interrupt() -> None:
    """From now on Ctrl-C ends the process at once with status 130: the command is over, and
    an interrupt while the interpreter shuts down (joining worker threads, atexit hooks)
    would otherwise print an "Exception ignored in ..." traceback."""
    import os
    import signal

    def handler(signum: int, frame: object) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(130)

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        pass


def _status(exc: SystemExit) -> int:
    """The exit status ``raise SystemExit(code)`` gives (a message is printed, status 1)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _exit_now(status: int) -> None:
    """End the process without the interpreter's teardown of every imported module (0.2–0.3 s
    once numba, pandas and dask are loaded, for nothing: the command is over). What that
    teardown does that matters is done first, in the same order: other threads finished,
    ``atexit`` handlers run (temporary folders, logging), standard streams flushed."""
    import atexit
    import os
    import threading

    shutdown = getattr(threading, "_shutdown", None)  # what the interpreter calls at exit
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: errors become one line on stderr and exit code 1."""
    if argv is not None:  # a caller embedding the CLI: an ordinary call
        _main(argv)
        return
    try:
        _main(argv)
        status = 0
    except SystemExit as exc:
        status = _status(exc)
    finally:
        _exit_quietly_on_interrupt()
    _exit_now(status)


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, file: Any = None, line: str | None = None) -> None:
    """A warning as the command's other messages: one line, ``warning: ...``, on stderr."""
    print(f"warning: {message}", file=file or sys.stderr)


def _main(argv: list[str] | None) -> None:
    verbose = "--verbose" in (argv or sys.argv) or "-v" in (argv or sys.argv)
    with warnings.catch_warnings():
        if not verbose:   # with --verbose, Python's form (where the warning was raised)
            warnings.showwarning = _one_line_warning
        _run(argv, verbose)


def _run(argv: list[str] | None, verbose: bool) -> None:
    try:
        cli.main(args=argv, prog_name="atlas-engine", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except AtlasEngineError as exc:
        if verbose:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
