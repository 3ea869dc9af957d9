"""Start-up of small commands: wall seconds of the whole process and the import time it spends.

Each command runs as a user runs it (the ``atlas-engine`` console script), alternately from
this checkout and, with ``--before``, from another checkout of the package (its folder is put
first on ``PYTHONPATH``), so that both see the same machine::

    atlas-engine synth /tmp/small --probes 300 --samples-fraction 0.03 --no-brainspan --quiet
    atlas-engine convert /tmp/small /tmp/small.zarr --quiet
    python benchmarks/bench_startup.py --store /tmp/small.zarr --before ../main --repeat 5

Import time is the sum of the top-level entries of ``python -X importtime`` (median of as many
runs), with the heavy libraries each command imported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from installed import compile_package

ROOT = Path(__file__).resolve().parents[1]


def commands(store: str) -> list[list[str]]:
    return [["--help"], ["query", "--help"], ["aggregate", "--help"], ["verify", store]]


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def wall(tree: Path, args: list[str]) -> float:
    exe = str(Path(sys.executable).with_name("atlas-engine"))
    t0 = time.perf_counter()
    subprocess.run([exe, *args], env=_env(tree), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


HEAVY = ("dask", "distributed", "zarr", "numba", "pandas", "polars", "pyarrow", "matplotlib",
         "aiohttp", "xarray", "scipy")


def imports(tree: Path, args: list[str]) -> tuple[float, list[str]]:
    """Seconds of importing (the top-level entries of ``-X importtime``, so each import counts
    once) and which of the heavy libraries were imported."""
    code = "import sys; from atlas_engine.cli import main; sys.argv[0] = 'atlas-engine'; main()"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *args],
                          env=_env(tree), cwd=tree, capture_output=True, text=True)
    total, heavy = 0, []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        _, cumulative, name = line.split("|")
        if not cumulative.strip().isdigit():
            continue
        if name.startswith(" ") and not name.startswith("  "):
            total += int(cumulative)
        if name.strip() in HEAVY:
            heavy.append(name.strip())
    return total / 1e6, sorted(heavy)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="a small converted store (for verify)")
    ap.add_argument("--before", type=Path, default=None,
                    help="another checkout of the package to compare with")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    compile_package()  # as an installed copy: see installed.py
    trees = {"this": ROOT}
    if args.before is not None:
        trees = {"before": args.before.resolve(), **trees}
    cmds = commands(args.store)
    walls: dict[tuple[str, str], list[float]] = {}
    secs: dict[tuple[str, str], list[float]] = {}
    heavy: dict[tuple[str, str], list[str]] = {}
    for _ in range(args.repeat):
        for cmd in cmds:
            for name, tree in trees.items():
                key = (" ".join(cmd), name)
                walls.setdefault(key, []).append(wall(tree, cmd))
                seconds, heavy[key] = imports(tree, cmd)
                secs.setdefault(key, []).append(seconds)
    head = " | ".join(f"{n}: wall s / imports s (medians) | {n}: heavy imports" for n in trees)
    print(f"| command | {head} |")
    print("|---" * (1 + 2 * len(trees)) + "|")
    for cmd in cmds:
        cells = []
        for n in trees:
            key = (" ".join(cmd), n)
            cells.append(f"{statistics.median(walls[key]):.2f} / "
                         f"{statistics.median(secs[key]):.2f} | {', '.join(heavy[key]) or '—'}")
        print(f"| `atlas-engine {' '.join(cmd)}` | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
