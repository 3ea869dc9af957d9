"""abagen.get_expression_data vs atlas-engine's store pipeline on full-size generated data.

One run measures (each step in its own process under ``/usr/bin/time -v`` for wall time and
peak RSS):

* abagen 0.1.3 ``get_expression_data`` (defaults except corrected_mni=False,
  reannotated=False) on the CSVs in abagen's data-dir layout, in the abagen virtualenv;
* ``atlas-engine convert`` of the six donor zips to a float64 store (once);
* ``get_expression_data`` from the store: cold (cache cleared), then a second atlas (the
  cached selection is reused);
* the same two runs as the command a user types (``atlas-engine aggregate STORE --by
  atlas:IMAGE --atlas-info CSV --out X.csv``: process start, the pipeline, and writing the
  matrix and its explanation tables), cache cleared first; with ``--rounds N`` child and
  command runs alternate N times;
* the two atlases twice each in one Python session, cache warm (each call timed: the
  notebook way of trying atlases, where the imports are paid once);
* optionally a voxel-level atlas (every voxel of the first atlas its own region);
* with ``--abagen-again``, abagen once more after the engine's rounds, the ratios then taken
  against the mean of its two runs (this machine's speed drifts within minutes).

The outputs of abagen and atlas-engine on the first atlas are compared (max abs difference).

    .venv/bin/python benchmarks/bench_abagen.py --raw /tmp/full --work /tmp/bench_abagen

(regenerate the raw data with ``atlas-engine synth /tmp/full --quiet`` if missing).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from installed import compile_package

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
ABAGEN_PY = "/tmp/abagen-venv/bin/python"


def timed(cmd: list[str], log: Path) -> dict[str, float]:
    """Run ``cmd`` under /usr/bin/time -v; wall seconds and peak RSS (MiB)."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    text = log.read_text()
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{text[-3000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(rss / 1024, 1)}


def _loadavg() -> list[float]:
    """1, 5 and 15 minute load averages (what ``uptime`` shows)."""
    return [round(float(v), 2) for v in Path("/proc/loadavg").read_text().split()[:3]]


def prepare(raw: Path, work: Path, regions: int) -> dict[str, Path]:
    sys.path.insert(0, str(HERE / "abagen_oracle"))
    from make_e2e_golden import extract
    from synth_atlas import make_atlas, voxel_atlas, write_atlas

    data = work / "data"
    marker = data / ".complete"
    if not marker.exists():
        shutil.rmtree(data, ignore_errors=True)
        annot = extract(raw, data)
        marker.write_text("ok")
    else:
        annot = pd.concat([pd.read_csv(p) for p in sorted(
            (data / "microarray").glob("*/SampleAnnot.csv"))], ignore_index=True)
        from make_e2e_golden import broad_class
        classes = []
        for p in sorted((data / "microarray").glob("*/SampleAnnot.csv")):
            onto = pd.read_csv(p.parent / "Ontology.csv").set_index("id")
            a = pd.read_csv(p)
            classes += [broad_class(onto.loc[s, "structure_id_path"]) for s in a["structure_id"]]
        annot["class"] = classes
    xyz = annot[["mni_x", "mni_y", "mni_z"]].to_numpy()
    out = {"data": data}
    for name, seed in (("atlas1", 1), ("atlas2", 2)):
        vol, aff, info = make_atlas(xyz, annot["class"].to_numpy(), regions, seed=seed)
        write_atlas(work / f"{name}.nii.gz", vol, aff)
        info.to_csv(work / f"{name}.csv", index=False)
        out[name] = work / f"{name}.nii.gz"
        if name == "atlas1":
            write_atlas(work / "voxels.nii.gz", voxel_atlas(vol), aff)
            out["voxels"] = work / "voxels.nii.gz"
    return out


# ---- child steps ----------------------------------------------------------------------------
# Both children save the regions × genes table the same way (values as .npy, labels and
# genes as JSON): a CSV of 84 × 18k floats takes ~1.5 s to format, which would be a fifth
# of the cached pipeline's wall time.
ABAGEN_CHILD = """
import json, sys, warnings; warnings.simplefilter('ignore')
import numpy as np
import abagen
atlas, info, data, out = sys.argv[1:5]
df = abagen.get_expression_data(atlas, info, data_dir=data, corrected_mni=False,
                                reannotated=False, verbose=0)
np.save(out + ".npy", df.to_numpy())
with open(out + ".labels.json", "w") as fh:
    json.dump({"index": [int(v) for v in df.index], "columns": [str(c) for c in df.columns]}, fh)
"""


def save_table(df: pd.DataFrame, out: str) -> None:
    np.save(out + ".npy", df.to_numpy())
    Path(out + ".labels.json").write_text(json.dumps(
        {"index": [int(v) for v in df.index], "columns": [str(c) for c in df.columns]}))


def load_table(out: Path) -> pd.DataFrame:
    labels = json.loads(Path(str(out) + ".labels.json").read_text())
    return pd.DataFrame(np.load(str(out) + ".npy"), index=labels["index"],
                        columns=labels["columns"])


def engine_child(store: str, atlas: str, info: str | None, out: str,
                 missing: str | None = None, workers: int = 0) -> None:
    """One pipeline run; ``out`` ending in ``.zarr``: streamed there (voxel-level atlas).
    ``workers``: on a local cluster of that many single-threaded worker processes (started
    before the clock of ``pipeline`` starts; its start is in the whole-command time)."""
    import contextlib

    t0 = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    from atlas_engine.aggregate.cluster import get_client
    from atlas_engine.pipeline.expression import get_expression_data

    t1 = time.perf_counter()
    streamed = out.endswith(".zarr")
    with contextlib.ExitStack() as stack:
        t_cluster = time.perf_counter()
        if workers:
            stack.enter_context(get_client(workers=workers))
        cluster_s = time.perf_counter() - t_cluster
        t1 += cluster_s
        res = get_expression_data(store, atlas, info, corrected_mni=False, reannotated=False,
                                  missing=missing, out=out if streamed else None)
        t2 = time.perf_counter()
    if streamed:
        out = out[:-len(".zarr")]
    else:
        save_table(res.expression, out)
    Path(out + ".json").write_text(json.dumps({
        "computed": res.computed, "timings": res.timings,
        "child_s": {"import": round(t1 - t0, 2), "pipeline": round(t2 - t1, 2),
                    "cluster_start": round(cluster_s, 2),
                    "save": round(time.perf_counter() - t2, 2)},
        "shape": list(res.expression.shape)}))


def session_child(store: str, pairs: list[str], out: str) -> None:
    """Several atlases in one Python session (the notebook way): ``pairs`` is ATLAS INFO …;
    each ``get_expression_data`` call is timed on its own, with the imports before the first
    timed apart. Written to ``out`` as JSON."""
    t0 = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    from atlas_engine.pipeline.expression import get_expression_data

    calls = []
    t_import = time.perf_counter() - t0
    for atlas, info in zip(pairs[::2], pairs[1::2], strict=True):
        t = time.perf_counter()
        res = get_expression_data(store, atlas, None if info == "-" else info,
                                  corrected_mni=False, reannotated=False)
        calls.append({"atlas": Path(atlas).name, "seconds": round(time.perf_counter() - t, 3),
                      "computed": res.computed})
    Path(out).write_text(json.dumps({"import_s": round(t_import, 2), "calls": calls}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", default="/tmp/full")
    ap.add_argument("--work", default="/tmp/bench_abagen")
    ap.add_argument("--regions", type=int, default=83)
    ap.add_argument("--skip-abagen", action="store_true")
    ap.add_argument("--abagen-again", action="store_true",
                    help="run abagen a second time after the engine's rounds; the ratios use "
                         "the mean of the two (a machine whose speed drifts during the run)")
    ap.add_argument("--skip-convert", action="store_true",
                    help="reuse the converted store of a previous run (cache cleared)")
    ap.add_argument("--voxels", action="store_true", help="also run the voxel-level atlas")
    ap.add_argument("--child", nargs=4, metavar=("STORE", "ATLAS", "INFO", "OUT"))
    ap.add_argument("--child-missing", default=None)
    ap.add_argument("--session-child", nargs="+", metavar="ARG",
                    help="STORE OUT ATLAS INFO [ATLAS INFO ...]: atlases in one process")
    ap.add_argument("--cluster-workers", type=int, default=0,
                    help="also run cold and second atlas on a local cluster of N workers")
    ap.add_argument("--child-workers", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate the in-process child and the command this many times")
    args = ap.parse_args()
    if not (args.child or args.session_child):
        compile_package()  # as an installed copy: see installed.py
    if args.session_child:
        store, out, *pairs = args.session_child
        session_child(store, pairs, out)
        return
    if args.child:
        store, atlas, info, out = args.child
        engine_child(store, atlas, None if info == "-" else info, out, args.child_missing,
                     args.child_workers)
        return
    raw, work = Path(args.raw), Path(args.work)
    if not (raw / "normalized_microarray_donor9861.zip").exists():
        raise SystemExit(f"{raw}: no generated data (run: atlas-engine synth {raw} --quiet)")
    work.mkdir(parents=True, exist_ok=True)
    load_start = _loadavg()
    t0 = time.perf_counter()
    paths = prepare(raw, work, args.regions)
    print(f"prepared data dir and atlases in {time.perf_counter() - t0:.1f} s", flush=True)
    figures: dict[str, dict] = {}

    previous = work / "figures.json"
    if args.skip_abagen and previous.exists() and "abagen" in json.loads(previous.read_text()):
        figures["abagen"] = {**json.loads(previous.read_text())["abagen"],
                             "note": "reused from the previous run"}
    if not args.skip_abagen:
        child = work / "abagen_child.py"
        child.write_text(ABAGEN_CHILD)
        figures["abagen"] = timed([ABAGEN_PY, str(child), str(paths["atlas1"]),
                                   str(work / "atlas1.csv"), str(paths["data"]),
                                   str(work / "abagen_atlas1")], work / "abagen.log")
        print("abagen", figures["abagen"], flush=True)

    store = work / "store.zarr"
    if args.skip_convert and (store / "zarr.json").exists():
        shutil.rmtree(store / "cache", ignore_errors=True)
        if "convert" in json.loads(previous.read_text()):
            figures["convert"] = {**json.loads(previous.read_text())["convert"],
                                  "note": "reused from the previous run"}
    else:
        shutil.rmtree(store, ignore_errors=True)
        figures["convert"] = timed([str(Path(PY).parent / "atlas-engine"), "convert", str(raw), str(store),
                                   "--dtype", "float64", "--quiet"], work / "convert.log")
        print("convert", figures["convert"], flush=True)

    me = [PY, __file__, "--child", str(store)]
    cli = [str(Path(PY).parent / "atlas-engine"), "aggregate", str(store), "--no-corrected-mni",
           "--no-reannotated", "-q"]
    rounds: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        shutil.rmtree(store / "cache", ignore_errors=True)
        runs = {
            "engine_cold": me + [str(paths["atlas1"]), str(work / "atlas1.csv"),
                                 str(work / "engine_atlas1")],
            "engine_cached_atlas2": me + [str(paths["atlas2"]), str(work / "atlas2.csv"),
                                          str(work / "engine_atlas2")],
            "command_cold": cli + ["--by", f"atlas:{paths['atlas1']}", "--atlas-info",
                                   str(work / "atlas1.csv"), "--out",
                                   str(work / "command_atlas1.csv")],
            "command_cached_atlas2": cli + ["--by", f"atlas:{paths['atlas2']}", "--atlas-info",
                                            str(work / "atlas2.csv"), "--out",
                                            str(work / "command_atlas2.csv")],
        }
        for key, cmd in runs.items():
            if key == "command_cold":
                shutil.rmtree(store / "cache", ignore_errors=True)
            fig = timed(cmd, work / f"{key}.log")
            rounds.setdefault(key, []).append(fig)
            print(f"round {r + 1}: {key}", fig, flush=True)
    for key, figs in rounds.items():
        figures[key] = dict(figs[0])
        if len(figs) > 1:
            figures[key]["rounds_wall_s"] = [f["wall_s"] for f in figs]
            figures[key]["rounds_peak_rss_mib"] = [f["peak_rss_mib"] for f in figs]
    for k, f in (("engine_cold", "engine_atlas1"), ("engine_cached_atlas2", "engine_atlas2")):
        figures[k].update(json.loads((work / (f + ".json")).read_text()))
    if args.abagen_again and not args.skip_abagen:
        figures["abagen_after"] = timed([ABAGEN_PY, str(work / "abagen_child.py"),
                                         str(paths["atlas1"]), str(work / "atlas1.csv"),
                                         str(paths["data"]), str(work / "abagen_atlas1_after")],
                                        work / "abagen_after.log")
        print("abagen again", figures["abagen_after"], flush=True)
    # the notebook way: one Python session, cache warm, the two atlases twice each
    session = [str(paths["atlas2"]), str(work / "atlas2.csv"), str(paths["atlas1"]),
               str(work / "atlas1.csv")] * 2
    figures["engine_session"] = timed([PY, __file__, "--session-child", str(store),
                                       str(work / "session.json"), *session],
                                      work / "session.log")
    figures["engine_session"].update(json.loads((work / "session.json").read_text()))
    print("engine_session", figures["engine_session"], flush=True)
    if args.cluster_workers:
        # the same two runs on a local cluster (cache cleared first), against the threads
        # runs above of the same invocation
        shutil.rmtree(store / "cache", ignore_errors=True)
        cl = ["--child-workers", str(args.cluster_workers)]
        for key, atlas, name in (("engine_cold_cluster", "atlas1", "cluster_atlas1"),
                                 ("engine_cached_atlas2_cluster", "atlas2", "cluster_atlas2")):
            figures[key] = timed(me + [str(paths[atlas]), str(work / f"{atlas}.csv"),
                                       str(work / name)] + cl, work / f"{name}.log")
            figures[key].update(json.loads((work / (name + ".json")).read_text()))
            figures[key]["workers"] = args.cluster_workers
            print(key, figures[key], flush=True)
        same = load_table(work / "cluster_atlas1").equals(load_table(work / "engine_atlas1"))
        figures["cluster_vs_threads"] = {
            "same_table_atlas1": bool(same),
            "cold_wall_ratio": round(figures["engine_cold_cluster"]["wall_s"]
                                     / figures["engine_cold"]["wall_s"], 2),
            "cold_pipeline_ratio": round(figures["engine_cold_cluster"]["child_s"]["pipeline"]
                                         / figures["engine_cold"]["child_s"]["pipeline"], 2),
            "cached_wall_ratio": round(figures["engine_cached_atlas2_cluster"]["wall_s"]
                                       / figures["engine_cached_atlas2"]["wall_s"], 2),
        }
    if args.voxels:
        # every voxel of atlas1 its own region, streamed to a Zarr store (cache warm);
        # missing=None (NaN rows for voxels without a sample) and 'interpolate'
        for name, missing in (("engine_voxels", None), ("engine_voxels_interpolate",
                                                        "interpolate")):
            dest = work / f"{name}.zarr"
            cmd = me + [str(paths["voxels"]), "-", str(dest)]
            figures[name] = timed(cmd + (["--child-missing", missing] if missing else []),
                                  work / f"{name}.log")
            figures[name].update(json.loads((work / f"{name}.json").read_text()))
            figures[name]["output_bytes"] = sum(p.stat().st_size for p in dest.rglob("*")
                                                if p.is_file())
            print(name, figures[name], flush=True)

    if "abagen" in figures:
        a = load_table(work / "abagen_atlas1")
        e = load_table(work / "engine_atlas1")
        same = list(a.columns) == list(e.columns) and list(a.index) == list(e.index)
        diff = float(np.nanmax(np.abs(a.to_numpy() - e.to_numpy()))) if same else None
        figures["parity"] = {"same_shape_labels_genes": same, "max_abs_diff": diff,
                             "shape": list(a.shape)}
        c = pd.read_csv(work / "command_atlas1.csv", index_col="label",
                        float_precision="round_trip")
        same_c = list(a.columns) == list(c.columns) and list(a.index) == list(c.index)
        figures["parity"]["command_max_abs_diff"] = float(np.nanmax(np.abs(
            a.to_numpy() - c.to_numpy()))) if same_c else None
        ab, cold = dict(figures["abagen"]), figures["engine_cold"]
        if "abagen_after" in figures:   # the ratios against the mean of the two runs
            walls = [figures["abagen"]["wall_s"], figures["abagen_after"]["wall_s"]]
            ab["wall_s"] = round(sum(walls) / 2, 2)
            figures["abagen_mean_wall_s"] = ab["wall_s"]
        cached = figures["engine_cached_atlas2"]
        cmd_cold, cmd_cached = figures["command_cold"], figures["command_cached_atlas2"]
        figures["ratios"] = {
            "speedup_cold": round(ab["wall_s"] / cold["wall_s"], 1),
            "speedup_cold_with_convert": round(
                ab["wall_s"] / (cold["wall_s"] + figures["convert"]["wall_s"]), 1)
            if "convert" in figures else None,
            "speedup_cached": round(ab["wall_s"] / cached["wall_s"], 1),
            "rss_fraction_cold": round(cold["peak_rss_mib"] / ab["peak_rss_mib"], 3),
            "rss_fraction_cached": round(cached["peak_rss_mib"] / ab["peak_rss_mib"], 3),
            "command_speedup_cold": [round(ab["wall_s"] / w, 1) for w in
                                     cmd_cold.get("rounds_wall_s", [cmd_cold["wall_s"]])],
            "command_speedup_cached": [round(ab["wall_s"] / w, 1) for w in cmd_cached.get(
                "rounds_wall_s", [cmd_cached["wall_s"]])],
            "command_rss_fraction_cold": round(cmd_cold["peak_rss_mib"] / ab["peak_rss_mib"], 3),
        }
    figures["load_average"] = {"start": load_start, "end": _loadavg()}
    (work / "figures.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
