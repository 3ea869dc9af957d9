"""What a newcomer met on the command line: each case reproduced, then fixed."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from atlas_engine.cli import cli, main

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


# -- bench ------------------------------------------------------------------------------------
def test_bench_passes_script_options_after_double_dash(monkeypatch):
    """`bench --what kernels -- --scale 0.25` hands `--scale 0.25` to the script (it used to
    take `--scale` for the STORE argument)."""
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda argv: calls.append(argv) or 0)
    res = CliRunner().invoke(cli, ["bench", "--what", "kernels", "--", "--scale", "0.25"])
    assert res.exit_code == 0, res.output
    script, *args = calls[0][1:]
    assert Path(script) == ROOT / "benchmarks" / "bench_kernels.py"
    assert Path(script).is_file()
    assert args == ["--scale", "0.25"]


def test_bench_kernels_script_accepts_the_documented_options():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_kernels.py"),
                          "--help"], capture_output=True, text=True, check=True).stdout
    assert "--scale" in out


def test_bench_aggregate_needs_one_store():
    res = CliRunner().invoke(cli, ["bench"])
    assert res.exit_code == 2 and "give the STORE" in res.output


def test_make_bench_runs_what_exists():
    """Every command of the Makefile's bench recipe names a script or command that exists."""
    text = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^bench:.*\n((?:\t.*\n)+)", text, re.M)
    assert recipe, "no bench target"
    lines = [ln.strip() for ln in recipe.group(1).splitlines()]
    assert lines
    for line in lines:
        words = shlex.split(line.replace("$(BIN)/", ""))
        if words[0] == "python":
            assert (ROOT / words[1]).is_file(), line
        else:
            assert words[0] == "atlas-engine", line
            if "--what" in words:
                from atlas_engine.cli.bench import SCRIPTS

                name = SCRIPTS[words[words.index("--what") + 1]]
                assert (ROOT / "benchmarks" / name).is_file(), line
    assert re.search(r"^demo:", text, re.M)


def test_bench_kernels_runs_through_the_cli(capsys):
    """The documented command, at a tiny scale and one round."""
    code = subprocess.call([sys.executable, "-m", "atlas_engine.cli", "bench", "--what",
                            "kernels", "--", "--scale", "0.005", "--repeat", "1",
                            "--skip-pandas", "--skip-flox", "--skip-scaling"], cwd="/")
    assert code == 0
