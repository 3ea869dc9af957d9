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
