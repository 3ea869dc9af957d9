"""Conversion benchmark: ``atlas-engine convert`` vs pandas.read_csv, and store read paths.

Reports in one run: wall time, CPU time and peak RSS of ``atlas-engine convert`` from the donor
zips (default and ``--memory-limit 512MB``; inflating the members is part of the time), the
pandas C-engine baseline over the extracted CSVs (float32 values), CSV MB/s and the ratio to the
baseline, pyarrow.csv.read_csv (multithreaded, float32) on the largest donor's CSVs, and the
time to read one gene (all its probes × all samples) and one structure (all probes × its samples)
from the store, for each chunk shape given with ``--chunks``. Every figure carries the 1-minute
load average measured just before it (the machine may be shared). ``--repeat`` runs the timed
part several times.

Usage::

    atlas-engine synth bench-data/full            # once, full size (~4 GB of CSV)
    python benchmarks/bench_convert.py --data bench-data/full --repeat 2 --chunks 4096x256
    python benchmarks/bench_convert.py --data /tmp/small --chunks 2048x128,1024x64,4096x256
    python benchmarks/bench_convert.py --extracted bench-data/full-extracted --repeat 3

``--extracted DIR`` (extracted donor folders) times only ``atlas-engine convert DIR`` against
the fastest Python reader of the same files, polars ``read_csv`` with a schema (float32
values, int8 calls; both the expression and the PA-call files), alternated round by round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from installed import compile_package


def _reader(imports: str, float_kind: str, int_kind: str, body: str) -> str:
    """A baseline script: for each CSV path in argv, ``body`` reads it with ``kind`` (the
    float type for expression files, the 8-bit integer type for PA calls) and ``ncols``."""
    return (f"import sys\n{imports}\nfor f in sys.argv[1:]:\n"
            "    name = f.rsplit('/', 1)[-1]\n"
            f"    kind = {float_kind} if name.startswith('Microarray') else {int_kind}\n"
            "    with open(f) as fh:\n"
            "        ncols = fh.readline().count(',') + 1\n" + body)


PANDAS_CODE = _reader("import pandas as pd, numpy as np", "np.float32", "np.int8", """\
    dtype = {i: kind for i in range(1, ncols)}
    dtype[0] = np.int64
    pd.read_csv(f, header=None, index_col=0, dtype=dtype, engine='c')
""")

POLARS_CODE = _reader("import polars as pl", "pl.Float32", "pl.Int8", """\
    schema = {f"c{i}": (pl.Int64 if i == 0 else kind) for i in range(ncols)}
    pl.read_csv(f, has_header=False, schema=schema)
""")

PYARROW_CODE = _reader("import pyarrow as pa, pyarrow.csv as pc", "pa.float32()", "pa.int8()", """\
    names = [f"c{i}" for i in range(ncols)]
    types = {n: kind for n in names[1:]}
    types[names[0]] = pa.int64()
    pc.read_csv(f, read_options=pc.ReadOptions(column_names=names, block_size=16 << 20),
                convert_options=pc.ConvertOptions(column_types=types))
""")


def load() -> float:
    return round(os.getloadavg()[0], 2)


def run_measured(cmd: list[str]) -> dict[str, float]:
    """Run ``cmd``; wall seconds, CPU seconds (user+sys) and peak RSS MB of that child alone,
    and the load average just before. Dirty pages left by earlier steps (a store just written
    or deleted) are flushed first, so that their write-back is not charged to this step."""
    os.sync()
    time.sleep(1.0)
    before = load()
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024), "load_before": before}


def csv_bytes(data: Path) -> int:
    total = 0
    for z in sorted(data.glob("normalized_microarray_donor*.zip")):
        with zipfile.ZipFile(z) as zf:
            total += sum(zf.getinfo(m).file_size
                         for m in ("MicroarrayExpression.csv", "PACall.csv"))
    return total


def read_paths(store: Path, repeat: int = 3) -> dict[str, float]:
    from atlas_engine import open_store

    st = open_store(store)
    probes = st.probes
    counts = probes["gene_id"].value_counts()
    gene = counts.index[0]
    rows = (probes["gene_id"] == gene).to_numpy().nonzero()[0]
    sid = st.samples["structure_id"].value_counts().index[0]
    cols = (st.samples["structure_id"] == sid).to_numpy().nonzero()[0]
    expr = st.expression
    out = {}
    for name, sel in (("one_gene_s", (rows, slice(None))), ("one_structure_s",
                                                           (slice(None), cols))):
        best = 1e9
        for _ in range(repeat):
            t = time.perf_counter()
            expr[sel].values  # noqa: B018 - the read is the measurement
            best = min(best, time.perf_counter() - t)
        out[name] = round(best, 4)
    out["gene_probes"] = int(len(rows))
    out["structure_samples"] = int(len(cols))
    return out


def rate(m: dict[str, float], nbytes: int) -> dict[str, float]:
    return {**m, "csv_mb_per_s": round(nbytes / 1e6 / m["wall_s"], 1)}


def extract(data: Path, ext: Path) -> dict[str, list[str]]:
    """Extract the two matrices of every donor (once); ``{zip stem: [csv paths]}``."""
    out = {}
    for z in sorted(data.glob("normalized_microarray_donor*.zip")):
        d = ext / z.stem
        with zipfile.ZipFile(z) as zf:
            for m in ("MicroarrayExpression.csv", "PACall.csv"):
                if not (d / m).exists():
                    zf.extract(m, d)
        out[z.stem] = [str(d / m) for m in ("MicroarrayExpression.csv", "PACall.csv")]
    return out


def fetched_copy(data: Path, dest: Path) -> Path:
    """``dest`` as ``atlas-engine fetch`` leaves a download folder: the zips (symlinked here)
    and a manifest.json recording each one's sha256 (computed now, untimed). ``convert`` then
    takes the archives' sha256 from the manifest instead of hashing them again; this is the
    documented fetch → convert workflow, where the hash is computed once, during download."""
    from atlas_engine.fetch.manifest import Manifest, sha256_file

    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    manifest = Manifest(dest)
    for z in sorted(data.glob("normalized_microarray_donor*.zip")):
        link = dest / z.name
        link.symlink_to(z.resolve())
        manifest.record(link, url=f"file://{z.resolve()}", sha256=sha256_file(z))
    manifest.save()
    return dest


def against_polars(extracted: Path, work: Path, repeat: int) -> dict[str, object]:
    """``atlas-engine convert`` of extracted donor folders against polars reading the same
    expression and PA-call files, alternated; wall, CPU and peak RSS of each whole process."""
    exe = [str(Path(sys.executable).with_name("atlas-engine"))]
    files = sorted(str(p) for p in extracted.glob("*/MicroarrayExpression.csv")) + \
        sorted(str(p) for p in extracted.glob("*/PACall.csv"))
    nbytes = sum(os.path.getsize(f) for f in files)
    store = work / "extracted.zarr"
    rounds = []
    for r in range(repeat):
        shutil.rmtree(store, ignore_errors=True)
        os.sync()
        one: dict[str, object] = {
            "convert": rate(run_measured([*exe, "convert", str(extracted), str(store),
                                          "--quiet"]), nbytes)}
        shutil.rmtree(store, ignore_errors=True)
        os.sync()
        one["polars_read_csv"] = rate(run_measured([sys.executable, "-c", POLARS_CODE,
                                                    *files]), nbytes)
        one["speedup_vs_polars"] = round(one["polars_read_csv"]["wall_s"]
                                         / one["convert"]["wall_s"], 2)
        print(json.dumps({"round": r + 1, **one}), file=sys.stderr)
        rounds.append(one)
    return {"extracted": str(extracted), "csv_mb": round(nbytes / 1e6, 1), "rounds": rounds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, help="directory of donor zips")
    ap.add_argument("--extracted", type=Path, default=None,
                    help="extracted donor folders: time convert against polars only")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch (default: temp dir)")
    ap.add_argument("--chunks", default="", help="extra chunk shapes to time reads, e.g. "
                    "1024x64,4096x256 (probes x samples)")
    ap.add_argument("--repeat", type=int, default=1, help="timed rounds (default 1)")
    ap.add_argument("--skip-pandas", action="store_true")
    args = ap.parse_args()
    compile_package()  # as an installed copy: see installed.py
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_convert_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.extracted is not None:
        print(json.dumps(against_polars(args.extracted, work, args.repeat), indent=1))
        return
    if args.data is None:
        ap.error("--data (donor zips) or --extracted (donor folders) is required")
    exe = [str(Path(sys.executable).with_name("atlas-engine"))]
    results: dict[str, object] = {"data": str(args.data), "cpus": os.cpu_count()}
    nbytes = csv_bytes(args.data)
    results["csv_mb"] = round(nbytes / 1e6, 1)
    files = {} if args.skip_pandas else extract(args.data, work / "extracted")
    store = work / "store.zarr"
    rounds = []
    for r in range(args.repeat):
        one: dict[str, object] = {}
        shutil.rmtree(store, ignore_errors=True)
        one["convert"] = rate(run_measured([*exe, "convert", str(args.data), str(store),
                                            "--quiet"]), nbytes)
        one["rerun_skip_s"] = run_measured([*exe, "convert", str(args.data), str(store),
                                            "--quiet"])["wall_s"]
        if r == 0:
            fetched = fetched_copy(args.data, work / "fetched")
        shutil.rmtree(store, ignore_errors=True)
        one["convert_fetched"] = rate(run_measured([*exe, "convert", str(fetched), str(store),
                                                    "--quiet"]), nbytes)
        store2 = work / "store512.zarr"
        shutil.rmtree(store2, ignore_errors=True)
        one["convert_512MB"] = rate(run_measured([*exe, "convert", str(args.data), str(store2),
                                                  "--quiet", "--memory-limit", "512MB"]), nbytes)
        shutil.rmtree(store2, ignore_errors=True)
        if files:
            every = [f for pair in files.values() for f in pair]
            one["pandas_read_csv"] = rate(run_measured([sys.executable, "-c", PANDAS_CODE,
                                                        *every]), nbytes)
            one["speedup_vs_pandas"] = round(one["pandas_read_csv"]["wall_s"]
                                             / one["convert"]["wall_s"], 2)
            one["speedup_fetched_vs_pandas"] = round(one["pandas_read_csv"]["wall_s"]
                                                     / one["convert_fetched"]["wall_s"], 2)
            big = max(files.values(), key=lambda p: sum(os.path.getsize(f) for f in p))
            big_bytes = sum(os.path.getsize(f) for f in big)
            one["one_donor_mb"] = round(big_bytes / 1e6, 1)
            one["pyarrow_one_donor"] = rate(run_measured([sys.executable, "-c", PYARROW_CODE,
                                                          *big]), big_bytes)
            one["pandas_one_donor"] = rate(run_measured([sys.executable, "-c", PANDAS_CODE,
                                                         *big]), big_bytes)
        print(json.dumps({"round": r + 1, **one}), file=sys.stderr)
        rounds.append(one)
    results["rounds"] = rounds
    results["reads"] = {"default": read_paths(store)}
    for spec in filter(None, args.chunks.split(",")):
        from atlas_engine.convert.donor import convert_microarray

        pc, sc = (int(x) for x in spec.lower().split("x"))
        other = work / f"store_{pc}x{sc}.zarr"
        shutil.rmtree(other, ignore_errors=True)
        convert_microarray(args.data, other, probe_chunk=pc, sample_chunk=sc)
        results["reads"][spec] = read_paths(other)
        shutil.rmtree(other, ignore_errors=True)
    results["reads"]["load_before"] = load()
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(work / "extracted", ignore_errors=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
