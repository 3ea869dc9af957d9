"""``atlas-engine --help`` and every command's ``--help`` start without the heavy libraries:
they are imported where a command uses them (a whole process, as a user runs it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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


def _blas_threads_after(*args: str) -> list[int]:
    """OpenBLAS thread counts (numpy's, and scipy's if loaded) at the exit of the console
    script run with ``args`` in a fresh process without ``OPENBLAS_NUM_THREADS``."""
    code = ("import atexit, sys\n"
            "def report():\n"
            "    from threadpoolctl import threadpool_info\n"
            "    assert 'numpy' in sys.modules\n"
            "    print('BLAS:' + ','.join(str(i['num_threads']) for i in threadpool_info()\n"
            "                             if i['internal_api'] == 'openblas'), flush=True)\n"
            "atexit.register(report)\n")
    script = (f"import sys\n{code}\nsys.argv = ['atlas-engine', *{list(args)!r}]\n"
              "from atlas_engine.cli import main\nmain()\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env)
    line = [s for s in proc.stdout.splitlines() if s.startswith("BLAS:")]
    assert line, proc.stdout + proc.stderr
    return [int(n) for n in line[-1][len("BLAS:"):].split(",") if n]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS has one thread anyway")
def test_the_atlas_pipeline_loads_blas_with_one_thread(tmp_path):
    """``aggregate --by atlas:`` asks for one BLAS thread before numpy loads (its idle
    threads would spin on the cores the imports need); other aggregations are left as they
    were, which is what shows the check can fail."""
    missing = str(tmp_path / "none.zarr")
    other = _blas_threads_after("aggregate", missing, "--by", "structure", "--out",
                                str(tmp_path / "o.csv"))
    if not other:
        pytest.skip("numpy here is not built with OpenBLAS")
    atlas = _blas_threads_after("aggregate", missing, "--by", "atlas:x.nii.gz", "--out",
                                str(tmp_path / "o.csv"))
    assert max(other) > 1
    assert atlas and set(atlas) == {1}
