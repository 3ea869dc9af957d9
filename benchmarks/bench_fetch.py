"""Fetch throughput: atlas-engine's downloader against curl, same files, same run.

The donor zips are generated (or reused with ``--data DIR``) and served by the loopback mirror
(``atlas_engine.testing.server.MirrorServer``) in a separate process, so the server's CPU does
not share the fetching event loop. Each round fetches every zip:

* ``curl`` - one ``curl -sS -f -o`` per file, ``--concurrency`` at once
* ``atlas (CRC every member)`` - :func:`atlas_engine.fetch.download_files` as by default:
  stream to ``.part``, sha256 while streaming, Content-Length check, zip CRC check of every
  member (ISA-L, worker processes), atomic rename, manifest
* ``atlas (transfer+sha256)`` - the files fetched as ``raw`` (no zip check at all)
* ``atlas (structure check)`` - ``verify_crc=False``: the zip structure checked without
  inflating; member CRCs left to the converter

Reported: MB/s (best of ``--repeat``), the ratio to curl, and the CPU time (user+sys) of the
fetching process and its children, including the CRC worker processes (curl: its child
processes), with the load average at the end.

    python benchmarks/bench_fetch.py --probes 20000 --samples-fraction 0.5 --concurrency 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SERVER = """
import sys, threading
from atlas_engine.testing.server import MirrorServer
srv = MirrorServer(sys.argv[1])
print(srv.start_in_thread(), flush=True)
sys.stdin.read()
srv.stop_thread()
"""


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_curl(urls: dict[str, str], dest: Path, concurrency: int) -> tuple[float, float]:
    def one(item: tuple[str, str]) -> None:
        name, url = item
        subprocess.run(["curl", "-sS", "-f", "-o", str(dest / name), url], check=True)

    c0, t0 = cpu_children(), time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, urls.items()))
    return time.perf_counter() - t0, cpu_children() - c0


def _pool_cpu() -> float:
    """CPU seconds of the verification worker processes (children of the forkserver, so
    ``RUSAGE_CHILDREN`` does not see them); the pool is shut down afterwards."""
    from atlas_engine.fetch import verify_worker

    pool = verify_worker._POOL
    if pool is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in list(getattr(pool, "_processes", {}) or {}):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    pool.shutdown()
    verify_worker._POOL = None
    return total


def run_atlas(urls: dict[str, str], dest: Path, concurrency: int, kind: str,
              verify_crc: bool = True) -> tuple[float, float]:
    from atlas_engine.fetch import DownloadSpec, download_files

    specs = [DownloadSpec(url, name, kind) for name, url in urls.items()]
    c0, t0 = cpu_self() + cpu_children(), time.perf_counter()
    results = asyncio.run(download_files(specs, dest, concurrency=concurrency,
                                         verify_crc=verify_crc))
    elapsed = time.perf_counter() - t0
    cpu = cpu_self() + cpu_children() - c0 + _pool_cpu()
    bad = [r for r in results if not r.ok]
    if bad:
        raise SystemExit(f"atlas-engine fetch failed: {bad[0].error}")
    return elapsed, cpu


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="reuse donor zips in this directory")
    ap.add_argument("--probes", type=int, default=20000)
    ap.add_argument("--samples-fraction", type=float, default=0.5)
    ap.add_argument("--concurrency", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--skip-crc", action="store_true", help="leave out the CRC-pass variant")
    args = ap.parse_args(argv)
    if shutil.which("curl") is None:
        raise SystemExit("curl is not installed")

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-fetch-"))
    work.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        data = work / "raw"
        if not any(data.glob("normalized_microarray_donor*.zip")):
            from atlas_engine.testing.synth import write_ahba

            t = time.perf_counter()
            write_ahba(data, probes=args.probes, samples_fraction=args.samples_fraction, seed=0)
            print(f"generated donor zips in {time.perf_counter() - t:.1f} s")
    zips = sorted(data.glob("normalized_microarray_donor*.zip"))
    if not zips:
        raise SystemExit(f"no normalized_microarray_donor*.zip in {data}")
    from atlas_engine.sources.donors import DONORS
    from atlas_engine.sources.urls import well_known_file_url

    by_name = {d.zip_name: d for d in DONORS}
    total = sum(p.stat().st_size for p in zips)
    print(f"{len(zips)} zips, {total / 1e6:,.1f} MB, concurrency {args.concurrency}, "
          f"best of {args.repeat}")

    server = subprocess.Popen([sys.executable, "-c", SERVER, str(data)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        base = server.stdout.readline().strip()
        urls = {p.name: well_known_file_url(base, by_name[p.name].microarray_wkf) for p in zips}
        runners = {
            "curl": lambda d: run_curl(urls, d, args.concurrency),
            "atlas (transfer+sha256)": lambda d: run_atlas(urls, d, args.concurrency, "raw"),
            "atlas (structure check)": lambda d: run_atlas(urls, d, args.concurrency, "zip",
                                                           verify_crc=False),
            "atlas (CRC every member)": lambda d: run_atlas(urls, d, args.concurrency, "zip"),
        }
        if args.skip_crc:
            del runners["atlas (CRC every member)"]
        best: dict[str, tuple[float, float]] = {}
        warm = work / "warm"
        warm.mkdir(exist_ok=True)
        run_curl(urls, warm, args.concurrency)  # page cache warm for every contender
        shutil.rmtree(warm)
        for _ in range(args.repeat):
            for name, fn in runners.items():
                dest = work / "out"
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir()
                elapsed, cpu = fn(dest)
                for p in zips:
                    if (dest / p.name).stat().st_size != p.stat().st_size:
                        raise SystemExit(f"{name}: {p.name} has the wrong size")
                if name not in best or elapsed < best[name][0]:
                    best[name] = (elapsed, cpu)
        shutil.rmtree(work / "out", ignore_errors=True)
    finally:
        server.stdin.close()
        server.wait(30)

    curl_rate = total / best["curl"][0] / 1e6
    print(f"\n{load()}\n")
    print("| tool | seconds | MB/s | ÷ curl | CPU s (process + children) |")
    print("|---|---:|---:|---:|---:|")
    for name, (elapsed, cpu) in best.items():
        rate = total / elapsed / 1e6
        print(f"| {name} | {elapsed:.2f} | {rate:.1f} | {rate / curl_rate:.2f} | {cpu:.2f} |")
    if args.workdir is None and args.data is None:
        shutil.rmtree(work, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
