"""Fetch throughput: atlas-engine's downloader against curl, same files, same run.

The donor zips are generated (or reused with ``--data DIR``) and served by the loopback mirror
(``atlas_engine.testing.server.MirrorServer``) in a separate process, so the server's CPU does
not share the fetching event loop. Each round fetches every zip:

* ``curl``            - one ``curl -sS -f -o`` per file, ``--concurrency`` at once
* ``atlas-engine``    - :func:`atlas_engine.fetch.download_files`: stream to ``.part``, sha256
                        while streaming, Content-Length check, zip CRC check of every member
                        (ISA-L), atomic rename, manifest
* ``atlas (no zip check)`` - the same with the member CRC pass off (transfer + sha256 only)

Reported: MB/s (best of ``--repeat``), the ratio to curl, and the CPU time (user+sys) of the
fetching process (curl: its child processes).

    python benchmarks/bench_fetch.py --probes 20000 --samples-fraction 0.5 --concurrency 3
"""

from __future__ import annotations

import argparse
import asyncio
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


def run_atlas(urls: dict[str, str], dest: Path, concurrency: int, kind: str) -> tuple[float, float]:
    from atlas_engine.fetch import DownloadSpec, download_files

    specs = [DownloadSpec(url, name, kind) for name, url in urls.items()]
    c0, t0 = cpu_self(), time.perf_counter()
    results = asyncio.run(download_files(specs, dest, concurrency=concurrency))
    elapsed, cpu = time.perf_counter() - t0, cpu_self() - c0
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
            "atlas-engine": lambda d: run_atlas(urls, d, args.concurrency, "zip"),
            "atlas (no zip check)": lambda d: run_atlas(urls, d, args.concurrency, "raw"),
        }
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
    print(f"{'tool':<22} {'seconds':>8} {'MB/s':>9} {'vs curl':>8} {'CPU s':>7}")
    for name, (elapsed, cpu) in best.items():
        rate = total / elapsed / 1e6
        print(f"{name:<22} {elapsed:8.2f} {rate:9.1f} {rate / curl_rate:8.2f} {cpu:7.2f}")
    if args.workdir is None and args.data is None:
        shutil.rmtree(work, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
