"""One donor group: SampleAnnot validated, both matrices streamed at once into a staged group,
the donor's attributes and checksums written, then published."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from .. import __version__
from ..sources.donors import DONORS
from ..store import layout as L
from . import writer
from .memplan import StreamPlan
from .params import ConvertOptions
from .sources import DonorSource, manifest_sha256, sha256_file
from .staging import Staged
from .stream import Cancelled, stream_matrix

if TYPE_CHECKING:
    import pandas as pd

    from .metadata import Table

_KNOWN = {d.id: d for d in DONORS}


def samples_dataset(probes: Table, samples: pd.DataFrame) -> dict[str, Any]:
    """The columns of a donor group's tables (:func:`.writer.write_dataset`'s ``coords``):
    the probe and sample indexes and every SampleAnnot column along ``sample``."""
    n = len(samples)
    coords: dict[str, Any] = {
        L.PROBE_DIM: (L.PROBE_DIM, probes.frame["probe_id"].to_numpy()),
        L.SAMPLE_DIM: (L.SAMPLE_DIM, np.arange(1, n + 1, dtype=np.int64)),
    }
    for c in samples.columns:
        col = samples[c]
        values = col.to_numpy(dtype=object) if col.dtype == object or str(col.dtype) in (
            "str", "string") else col.to_numpy()
        if values.dtype == object:
            values = values.astype(str).astype(object)
        coords[c] = (L.SAMPLE_DIM, values)
    return coords


def convert_donor(store_url: str, ds: DonorSource, probes: Table, ontology_ids: set[int],
                  opts: ConvertOptions, cancel: threading.Event | None = None,
                  plans: tuple[StreamPlan, StreamPlan] = (StreamPlan(), StreamPlan()),
                  inline: bool = False,
                  publish: Callable[[Staged, dict[str, Any]], None] | None = None
                  ) -> dict[str, Any]:
    """Stage, fill and publish one donor group; returns a summary for the root attributes.

    ``publish(staged, info)`` moves the finished group into place (and lists it); by default
    the group is only moved (``staged.publish()``)."""
    from .metadata import read_samples

    cancel = cancel or threading.Event()
    t0 = time.perf_counter()
    samples = read_samples(ds.member("SampleAnnot.csv"))
    frame = samples.frame
    unknown = sorted({int(s) for s in frame["structure_id"] if int(s) not in ontology_ids})
    if unknown:
        warnings.warn(f"{samples.source}: structure_id(s) {unknown} are not in the ontology; "
                      "the samples are kept", stacklevel=2)
    ncols = len(frame)
    n = len(probes.frame)
    probe_ids = probes.frame["probe_id"].to_numpy()
    staged = Staged.begin(store_url, L.donor_path(ds.donor_id))
    sha_box: dict[str, str | None] = {"sha256": manifest_sha256(ds.path) if ds.is_zip else None}
    hasher = None
    if ds.is_zip and sha_box["sha256"] is None:
        def _hash() -> None:
            sha_box["sha256"] = sha256_file(ds.path)
        hasher = threading.Thread(target=_hash, daemon=True)
        hasher.start()
    try:
        # the matrices first, so that their streams start at once; the sample table is
        # written beside them (into the same new group)
        writer.new_group(staged.url)
        chunks = (min(opts.probe_chunk, n), min(opts.sample_chunk, ncols))
        dims = (L.PROBE_DIM, L.SAMPLE_DIM)
        expr = writer.create_matrix(staged.url, L.EXPRESSION, (n, ncols), chunks, opts.dtype, dims,
                                    {"long_name": "normalized expression (log2)"})
        pac = writer.create_matrix(staged.url, L.PACALL, (n, ncols), chunks, bool, dims,
                                   {"long_name": "present/absent call"})
        with ThreadPoolExecutor(3, thread_name_prefix=f"donor{ds.donor_id}") as pool:
            fe = pool.submit(stream_matrix, ds.member("MicroarrayExpression.csv"), expr,
                             "float", probe_ids, ncols, opts, plans[0], None, cancel, inline)
            fp = pool.submit(stream_matrix, ds.member("PACall.csv"), pac, "bool", probe_ids,
                             ncols, opts, plans[1], "MicroarrayExpression.csv", cancel, inline)
            ft = pool.submit(writer.write_dataset, staged.url, samples_dataset(probes, frame),
                             mode="a")
            done, _ = wait([fe, fp, ft], return_when=FIRST_EXCEPTION)
            if any(f.exception() is not None for f in done):
                cancel.set()
            wait([fe, fp, ft])
            errors = [f.exception() for f in (fe, fp, ft) if f.exception() is not None]
            real = [e for e in errors if not isinstance(e, Cancelled)]
            if errors:
                raise (real or errors)[0]
            crc_e, st_e = fe.result()
            crc_p, st_p = fp.result()
        if hasher is not None:
            hasher.join()
        known = _KNOWN.get(ds.donor_id)
        info = {
            "donor_id": ds.donor_id,
            "name": known.name if known else None,
            "age": known.age if known else None,
            "sex": known.sex if known else None,
            "n_samples": ncols,
            "unknown_structures": unknown,
        }
        provenance = {
            "source": ds.fingerprint(),
            "sha256": sha_box["sha256"],
            "origin": ds.origin(sha_box["sha256"]),
            "members": {
                "MicroarrayExpression.csv": st_e.bytes, "PACall.csv": st_p.bytes,
                "SampleAnnot.csv": samples.sha256,
            },
            "probes_sha256": probes.sha256,
            "nonfinite_values": st_e.nonfinite,
            "converter": f"atlas-engine {__version__}",
            "options": opts.record(),
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        g = zarr.open_group(staged.url, mode="a", zarr_format=3)
        g.attrs.update({
            "donor": info, "provenance": provenance,
            "checksums": {"algorithm": "crc32", "chunks": list(chunks),
                          L.EXPRESSION: crc_e, L.PACALL: crc_p},
            "slow_tokens": st_e.slow_tokens,
            "nonfinite": st_e.nonfinite,
        })
        g.attrs["complete"] = True   # last: the completion marker for non-local stores
        if publish is None:
            staged.publish()
        else:
            publish(staged, dict(info))
        info["bytes"] = st_e.bytes + st_p.bytes
        info["slow_tokens"] = st_e.slow_tokens
        info["nonfinite"] = st_e.nonfinite
        return info
    except BaseException:
        staged.abort()
        raise
