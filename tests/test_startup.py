"""``atlas-engine --help`` and every command's ``--help`` start without the heavy libraries:
they are imported where a command uses them (a whole process, as a user runs it)."""

from __future__ import annotations

import subprocess
import sys

from atlas_engine.cli import COMMANDS

HEAVY = ("dask", "distributed", "zarr", "numba", "pandas", "polars", "pyarrow", "matplotlib",
         "aiohttp", "xarray", "scipy", "anndata", "nibabel")

CHECK = """
import sys
from atlas_engine.cli import _main
for args in {runs!r}:
    try:
        _main(args)
    except SystemExit as exc:
        assert not exc.code, (args, exc.code)
print("HEAVY:" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def _heavy_after(runs: list[list[str]]) -> tuple[str, str]:
    proc = subprocess.run([sys.executable, "-c", CHECK.format(runs=runs, heavy=HEAVY)],
                          capture_output=True, text=True, check=True)
    last = proc.stdout.rstrip("\n").rsplit("\n", 1)[-1]
    assert last.startswith("HEAVY:"), proc.stdout[-500:]
    return last[len("HEAVY:"):], proc.stdout


def test_top_level_help_imports_no_heavy_library():
    heavy, out = _heavy_after([["--help"]])
    assert "Commands:" in out
    assert heavy == ""


def test_every_command_help_imports_no_heavy_library():
    heavy, out = _heavy_after([[name, "--help"] for name in COMMANDS])
    assert out.count("Usage: atlas-engine") == len(COMMANDS)
    assert heavy == ""


def test_the_check_sees_a_heavy_import():
    """The check above can fail: a command that does import them is seen."""
    proc = subprocess.run([sys.executable, "-c", "import sys, pandas; "
                           f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"],
                          capture_output=True, text=True, check=True)
    assert "pandas" in proc.stdout


def _console(code: str, *args: str) -> subprocess.CompletedProcess:
    """``code`` then the console script's ``main()`` with ``args``, in a fresh process."""
    script = (f"import sys\n{code}\nsys.argv = ['atlas-engine', *{list(args)!r}]\n"
              "from atlas_engine.cli import main\nmain()\n")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)


def test_console_script_exit_keeps_status_output_threads_and_atexit():
    """The console script leaves without the interpreter's module teardown, but only after
    what a normal exit does: other threads finish, atexit handlers run, streams flushed."""
    code = ("import atexit, threading, time\n"
            "atexit.register(lambda: print('atexit ran', flush=True))\n"
            "threading.Thread(target=lambda: (time.sleep(0.2), print('thread done'))).start()")
    ok = _console(code, "--version")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0].startswith("atlas-engine, version")
    assert "thread done" in ok.stdout and ok.stdout.rstrip().endswith("atexit ran")
    bad = _console("", "verify", "/nonexistent/store.zarr")
    assert bad.returncode == 1 and "no such store" in bad.stderr
    usage = _console("", "aggregate")
    assert usage.returncode == 2 and "Missing argument" in usage.stderr


def test_recognising_an_ahba_source_imports_no_heavy_library(synth_small):
    """Recognising the AHBA donors (the first step of every ``convert``) needs neither the
    Cell Types converter nor the libraries it brings; a Cell Types source still is one."""
    code = ("import sys\nfrom atlas_engine.convert.api import detect_dataset\n"
            f"print(detect_dataset({str(synth_small.dest)!r}))\n"
            f"print(','.join(m for m in {HEAVY!r} + ('atlas_engine.celltypes.convert',) "
            "if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.split("\n")[:2] == ["ahba", ""], proc.stdout
