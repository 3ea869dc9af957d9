"""Cost of the per-chunk CRC-32C check on the direct read path (``store/blockread.py``).

Reads every chunk row of every donor's ``expression`` with
:func:`atlas_engine.store.blockread.read_chunk_row` (what the abagen pipeline does), once with
the check and once with it replaced by a no-op, alternating; prints the best CPU time of each.

Usage::

    python benchmarks/bench_checksum.py STORE [--reps 15] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from atlas_engine.store import blockread, chunkio


def _read_all(store: str, paths: list[str], reps: int) -> tuple[float, int]:
    best, nbytes = float("inf"), 0
    for _ in range(reps):
        t, nbytes = time.process_time(), 0
        for p in paths:
            (n, m), (cr, cc), dt = blockread.array_shape(store, p)
            out = np.empty((-(-m // cc), cr, cc), dt)
            for i in range(-(-n // cr)):
                blockread.read_chunk_row(store, p, i, out=out)
                nbytes += out.nbytes
        best = min(best, time.process_time() - t)
    return best, nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("store")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    root = json.loads((Path(args.store) / "zarr.json").read_text())["attributes"]["atlas_engine"]
    paths = [f"donors/{d}/expression" for d in root["donors"]]
    stored = sum(f.stat().st_size for p in paths for f in (Path(args.store) / p / "c").rglob("*")
                 if f.is_file())
    real = chunkio.check_chunk
    for _ in range(args.rounds):
        chunkio.check_chunk = real
        checked, nbytes = _read_all(args.store, paths, args.reps)
        chunkio.check_chunk = lambda raw, *a: len(raw) - 4   # type: ignore[assignment]
        unchecked, _ = _read_all(args.store, paths, args.reps)
        chunkio.check_chunk = real
        print(f"{nbytes / 1e6:.0f} MB decoded from {stored / 1e6:.0f} MB of chunk files: "
              f"checked {checked:.3f} CPU-s, unchecked {unchecked:.3f} CPU-s "
              f"({100 * (checked - unchecked) / unchecked:+.0f}%)")


if __name__ == "__main__":
    main()
