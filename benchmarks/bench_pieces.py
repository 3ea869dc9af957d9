"""Ranged (concurrent Range pieces) against single-stream download of one large file, as whole
``atlas-engine fetch`` commands against the loopback mirror, same run.

The mirror (``atlas_engine.testing.server.MirrorServer``) runs in its own process and serves a
``human-m1`` portal folder whose ``matrix.csv`` is ``--size-mb`` MB of count-like text (the other
three files are small). Each round runs, in alternating order, with a fresh DEST::

    atlas-engine fetch --dest DEST --base-url URL --what celltypes:human-m1 -q --pieces 1
    atlas-engine fetch --dest DEST --base-url URL --what celltypes:human-m1 -q --pieces N

and checks that both give the same sha256. ``--bandwidth`` caps each response of the mirror
(bytes/s per connection, as a server or link that limits each connection would); 0 = no cap.

    python benchmarks/bench_pieces.py --size-mb 1000 --pieces 4 --repeat 2 --bandwidth 0
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SERVER = """
import sys
from atlas_engine.testing.server import Faults, MirrorServer
bw = int(sys.argv[2]) or None
srv = MirrorServer(sys.argv[1], faults=Faults(bandwidth=bw))
print(srv.start_in_thread(), flush=True)
sys.stdin.read()
srv.stop_thread()
"""


def make_mirror(root: Path, size_mb: int) -> Path:
    folder = root / "aibs_human_m1_10x"
    folder.mkdir(parents=True, exist_ok=True)
    matrix = folder / "matrix.csv"
    want = size_mb * 1_000_000
    if not matrix.is_file() or matrix.stat().st_size != want:
        import numpy as np

        rng = np.random.default_rng(0)
        line = 2_000_000
        with open(matrix, "wb") as fh:
            written = 0
            while written < want:
                digits = rng.choice(np.frombuffer(b"0000000123,,,,\n", np.uint8), line)
                block = digits.tobytes()[: want - written]
                fh.write(block)
                written += len(block)
    for name in ("metadata.csv", "trimmed_means.csv", "medians.csv"):
        (folder / name).write_text("sample_name,cluster_label\nc1,A\n")
    return matrix


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1000)
    ap.add_argument("--pieces", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--bandwidth", type=int, default=0, help="bytes/s per response (0: none)")
    ap.add_argument("--work", default="/tmp/ctfetch-bench")
    args = ap.parse_args()
    work = Path(args.work)
    matrix = make_mirror(work / "mirror", args.size_mb)
    want = sha256(matrix)
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(work / "mirror"),
                               str(args.bandwidth)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip()
    exe = Path(sys.executable).with_name("atlas-engine")
    times: dict[int, list[float]] = {1: [], args.pieces: []}
    try:
        for r in range(args.repeat):
            order = [1, args.pieces] if r % 2 == 0 else [args.pieces, 1]
            for n in order:
                dest = work / f"dest-{n}"
                shutil.rmtree(dest, ignore_errors=True)
                cmd = [str(exe), "fetch", "--dest", str(dest), "--base-url", url, "--what",
                       "celltypes:human-m1", "-q", "--pieces", str(n), "--pieces-above", "256"]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True)
                dt = time.perf_counter() - t0
                got = dest / "aibs_human_m1_10x" / "matrix.csv"
                assert sha256(got) == want, "downloaded file differs"
                times[n].append(dt)
                print(f"round {r + 1} pieces={n}: {dt:.2f} s "
                      f"({args.size_mb / dt:,.0f} MB/s) load "
                      + " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
                shutil.rmtree(dest)
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    one, many = min(times[1]), min(times[args.pieces])
    print(f"best: one stream {one:.2f} s, {args.pieces} pieces {many:.2f} s "
          f"({one / many:.2f}x); {args.size_mb} MB, bandwidth cap "
          f"{args.bandwidth or 'none'}")


if __name__ == "__main__":
    main()
