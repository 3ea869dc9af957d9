"""Reference volumes at CCF sizes: generate, count voxels per structure, write a map.

Each step runs in its own process so that its peak resident memory (``ru_maxrss``) is its own:

* ``generate`` — a CCFv3-sized annotation (uint32 ids of the generated mouse ontology), written
  slab by slab as a gzip NRRD (:func:`atlas_engine.volumes.nrrd.write_nrrd`);
* ``counts`` — :func:`atlas_engine.volumes.counts.voxel_counts` streaming the gzip NRRD (own and
  rolled-up voxels of every structure), through the engine's grouped kernels;
* ``counts-lazy`` — the same on a raw-encoded copy as Dask tasks (25 µm only);
* ``oracle`` — numpy ``np.unique`` over the whole volume read by pynrrd, compared with
  ``counts`` (25 µm only: it needs the volume in memory);
* ``map`` — :func:`atlas_engine.maps.write_maps` of one gene (a value per depth-3 structure)
  onto the annotation, written as a float32 gzip NRRD.

Usage::

    python benchmarks/bench_volumes.py --size 25 --workdir /tmp/vbench
    python benchmarks/bench_volumes.py --size 10 --workdir /tmp/vbench   # 1320 × 800 × 1140
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step(name: str, size: int, work: Path) -> dict:
    from atlas_engine.sources.volumes import CCF_SHAPES
    from atlas_engine.store.ontology import Ontology
    from atlas_engine.testing.synth_mouse import build_mouse_ontology
    from atlas_engine.testing.synth_ontology import leaf_mask
    from atlas_engine.testing.synth_volumes import MOUSE_COARSE, coarse_labels, label_slabs
    from atlas_engine.volumes import open_volume
    from atlas_engine.volumes.counts import voxel_counts
    from atlas_engine.volumes.nrrd import write_nrrd

    shape = CCF_SHAPES[size]
    table = build_mouse_ontology()
    onto = Ontology(table)
    gz = work / f"annotation_{size}.nrrd"
    raw = work / f"annotation_{size}_raw.nrrd"
    t0 = time.perf_counter()
    out: dict = {"step": name, "size": size, "shape": list(shape)}
    if name == "generate":
        leaves = table.loc[leaf_mask(table), "id"].to_numpy(np.int64)
        coarse = coarse_labels(MOUSE_COARSE, leaves, 0)
        write_nrrd(gz, label_slabs(coarse, shape), shape, np.uint32, (size,) * 3)
        out["bytes"] = gz.stat().st_size
        if size == 25:
            write_nrrd(raw, label_slabs(coarse, shape), shape, np.uint32, (size,) * 3,
                       encoding="raw")
    elif name in ("counts", "counts-lazy"):
        vol = open_volume(gz if name == "counts" else raw)
        res = voxel_counts(vol, onto, lazy=name == "counts-lazy")
        res.to_csv(work / f"counts_{size}_{name}.csv")
        out["in_brain_voxels"] = int(res.loc[997, "voxels"])
    elif name == "oracle":
        import nrrd

        data, _ = nrrd.read(str(gz))
        u, c = np.unique(data, return_counts=True)
        got = __import__("pandas").read_csv(work / f"counts_{size}_counts.csv", index_col=0)
        own = dict(zip(u.tolist(), c.tolist(), strict=True))
        ok = all(int(got.loc[s, "voxels_self"]) == own.get(int(s), 0) for s in onto.ids)
        out["matches_numpy"] = bool(ok)
    elif name == "map":
        import pandas as pd

        from atlas_engine.maps import write_maps

        ids = onto.at_depth(3)
        vals = pd.DataFrame({"GENE": np.linspace(0, 1, len(ids))},
                            index=pd.Index(ids, name="structure_id"))
        f = write_maps(vals.reset_index(), open_volume(gz), work / f"map_{size}.nrrd",
                       ontology=onto)[0]
        out["bytes"] = f.stat().st_size
    else:
        raise SystemExit(f"unknown step {name}")
    out["seconds"] = round(time.perf_counter() - t0, 2)
    out["peak_rss_mib"] = round(_rss_mib(), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, choices=(10, 25, 50, 100), default=25)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/vbench"))
    ap.add_argument("--step", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--keep", action="store_true", help="Keep the generated files.")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.step:
        print(json.dumps(step(args.step, args.size, args.workdir)))
        return
    steps = ["generate", "counts", "map"]
    if args.size == 25:
        steps[2:2] = ["counts-lazy", "oracle"]
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for name in steps:
        res = subprocess.run([sys.executable, __file__, "--size", str(args.size),
                              "--workdir", str(args.workdir), "--step", name],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| step | seconds | peak RSS (MiB) | notes |\n|---|---|---|---|")
    for r in rows:
        notes = ", ".join(f"{k}={v}" for k, v in r.items()
                          if k not in ("step", "size", "shape", "seconds", "peak_rss_mib"))
        print(f"| {r['step']} | {r['seconds']} | {r['peak_rss_mib']} | {notes} |")
    if not args.keep:
        for p in args.workdir.glob(f"*_{args.size}*"):
            p.unlink()


if __name__ == "__main__":
    main()
