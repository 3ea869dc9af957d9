"""abagen's options as click options, and the atlas run behind
``atlas-engine aggregate STORE --by atlas:ATLAS.nii.gz``.

``abagen_options`` adds every ``abagen.get_expression_data`` option under the same name with
dashes; the decorated command receives them as keyword arguments with abagen's names, ready
for :func:`run_atlas_aggregate`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..choices import (
    AGG_METRICS,
    DONOR_PROBES,
    MATCH_RULES,
    MIRROR_MODES,
    MISSING,
    NORM_METHODS,
    PROBE_SELECTIONS,
    REGION_AGG,
)
from ..errors import ConfigError

#: --sample-norm / --gene-norm: the pipeline's methods, and ``none`` to skip the step
NORMS = (*NORM_METHODS, "none")

#: abagen option name -> (click declaration, keyword arguments)
_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--ibf-threshold",), dict(type=click.FloatRange(0, 1), default=0.5, show_default=True,
                                help="Intensity filter: keep probes above background in at "
                                     "least this share of samples.")),
    (("--probe-selection",), dict(type=click.Choice(PROBE_SELECTIONS), default="diff_stability",
                                  show_default=True, help="How one probe is chosen per gene.")),
    (("--donor-probes",), dict(type=click.Choice(DONOR_PROBES),
                               default="aggregate", show_default=True,
                               help="Select probes on pooled donors, per donor, or the most "
                                    "common per-donor choice.")),
    (("--sim-threshold",), dict(type=float, default=None,
                                help="Drop samples whose summed correlation is below mean - "
                                     "T·std (per donor).")),
    (("--lr-mirror",), dict(type=click.Choice(MIRROR_MODES),
                            default=None, help="Mirror samples across hemispheres.")),
    (("--missing",), dict(type=click.Choice(MISSING), default=None,
                          help="Fill regions without samples: centroids (regions no donor "
                               "has a sample in, from the samples nearest their centroid) or "
                               "interpolate (per donor, inverse-distance weighted nearest "
                               "samples of the region's voxels).")),
    (("--tolerance",), dict(type=float, default=2, show_default=True,
                            help="Matching distance in mm.")),
    (("--sample-norm",), dict(type=click.Choice(NORMS), default="srs", show_default=True,
                              help="Per-sample normalisation across genes ('none' to skip).")),
    (("--gene-norm",), dict(type=click.Choice(NORMS), default="srs", show_default=True,
                            help="Per-gene normalisation across samples ('none' to skip).")),
    (("--norm-matched/--no-norm-matched",), dict(default=True, show_default=True,
                                                 help="Normalise only matched samples.")),
    (("--norm-structures/--no-norm-structures",), dict(default=False, show_default=True,
                                                       help="Normalise genes per structural "
                                                            "class.")),
    (("--region-agg",), dict(type=click.Choice(REGION_AGG), default="donors",
                             show_default=True, help="Average within donors first, or pool "
                                                     "samples.")),
    (("--agg-metric",), dict(type=click.Choice(AGG_METRICS), default="mean",
                             show_default=True, help="Aggregation statistic.")),
    (("--corrected-mni/--no-corrected-mni",), dict(default=True, show_default=True,
                                                   help="Use the corrected (non-linear) MNI "
                                                        "sample coordinates.")),
    (("--reannotated/--no-reannotated",), dict(default=True, show_default=True,
                                               help="Use the probe reannotation of "
                                                    "Arnatkevičiūtė et al. 2019.")),
    (("--return-donors",), dict(is_flag=True, default=False,
                                help="Also write one regions × genes table per donor.")),
    (("--return-counts",), dict(is_flag=True, default=False,
                                help="Also write the number of samples per region and donor.")),
    (("--match-rule",), dict(type=click.Choice(MATCH_RULES), default="abagen",
                             show_default=True,
                             help="Not abagen's: with --atlas-info, several allowed regions near "
                                  "a sample go to the nearest centroid (abagen 0.1.3) or to "
                                  "the region with most voxels (majority).")),
]

ABAGEN_OPTION_NAMES = ("ibf_threshold", "probe_selection", "donor_probes", "sim_threshold",
                       "lr_mirror", "missing", "tolerance", "sample_norm", "gene_norm",
                       "norm_matched", "norm_structures", "region_agg", "agg_metric",
                       "corrected_mni", "reannotated", "return_donors", "return_counts",
                       "match_rule")


_KEYWORD = re.compile(r"\b(" + "|".join(ABAGEN_OPTION_NAMES + ("donors", "atlas_info", "out"))
                      + r")=(?:'([^']*)'|\"([^\"]*)\"|(\w[\w.\-]*)?)")
_BARE = re.compile(r"(?<![\w\-=/.])(" + "|".join(ABAGEN_OPTION_NAMES) + r")\b(?!=)")
_SWITCHES = {decls[0].split("/")[0][2:].replace("-", "_"): decls[0]
             for decls, _ in _OPTIONS if "/" in decls[0]}


def _flag(name: str, value: str | None) -> str:
    """``corrected_mni=False`` → ``--no-corrected-mni``, ``region_agg='samples'`` →
    ``--region-agg samples``, ``out=`` → ``-o X.zarr``."""
    if name == "out":
        return "-o X.zarr"
    if name == "atlas_info":
        return "--atlas-info" + (f" {value}" if value else "")
    dashed = "--" + name.replace("_", "-")
    if name in _SWITCHES:
        on, off = _SWITCHES[name].split("/")
        return off if value == "False" else on
    if value in ("True", None, ""):
        return dashed
    return f"{dashed} {'none' if value == 'None' else value}"


def cli_wording(message: str) -> str:
    """Rewrite the Python keywords of a library error (``corrected_mni=False``,
    ``region_agg='samples'``, ``return_donors``) as the command line's flags."""
    def keyword(m: re.Match) -> str:
        value = next((g for g in m.groups()[1:] if g is not None), None)
        if value is None and m.group(1) != "out":
            return m.group(0)  # not a simple value (a list, an expression): leave it
        return _flag(m.group(1), value)

    message = _KEYWORD.sub(keyword, message)
    return _BARE.sub(lambda m: "--" + m.group(1).replace("_", "-"), message)


def abagen_options(func: Callable) -> Callable:
    """Click decorator adding abagen's ``get_expression_data`` options."""
    for decls, kw in reversed(_OPTIONS):
        func = click.option(*decls, **kw)(func)
    return func


def _norm(value: str | None) -> str | None:
    return None if value in (None, "none") else value


def _write_csv(frame: Any, path: Path, index: bool = True) -> None:
    """An explanation table, written by polars (pandas' ``to_csv`` took ~0.4 s for the probe
    table alone)."""
    from ..report.tablewrite import write_frame

    write_frame(frame.reset_index() if index else frame, path)


def _write_matrix(frame: Any, path: Path) -> None:
    """A regions × genes matrix (index ``label``): the wide table writer, same text as pandas."""
    from ..report.tablewrite import write_table

    write_table(frame.reset_index(), path)


def _write_text(text: str, path: Path) -> None:
    from ..atomic import atomic_write_text

    atomic_write_text(path, text)


def run_atlas_aggregate(store: str, atlas: str, atlas_info: str | None, out: str,
                        donors: str = "all", quiet: bool = True,
                        **abagen_opts: Any) -> dict[str, Any]:
    """Run :func:`~atlas_engine.pipeline.expression.get_expression_data` and write the
    results.

    Writes ``out`` (regions × genes CSV, index ``label``; or, when ``out`` ends in
    ``.zarr``, a Zarr v3 group streamed block by block, for atlases too large to hold — see
    :mod:`atlas_engine.pipeline.output`) and next to it
    ``<stem>.probes.csv``, ``.genes.csv``, ``.samples.csv``, ``.methods.txt``,
    ``.provenance.json``; ``.counts.csv`` with ``return_counts``; ``.donor<ID>.csv`` per donor
    with ``return_donors``. Returns a summary: regions, genes, dropped counts, timings, files.
    """
    from ..pipeline.expression import get_expression_data

    unknown = set(abagen_opts) - set(ABAGEN_OPTION_NAMES)
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(sorted(unknown))}")
    opts = dict(abagen_opts)
    for k in ("sample_norm", "gene_norm"):
        if k in opts:
            opts[k] = _norm(opts[k])
    if donors in (None, "", "all"):
        use: Any = "all"
    else:
        try:
            use = [int(d) for d in str(donors).split(",") if d.strip()]
        except ValueError:
            raise ConfigError(f"--donors expects 'all' or comma-separated donor ids, got "
                              f"{donors!r}") from None
    t0 = time.perf_counter()
    out_path = Path(out)
    streamed = out_path.suffix == ".zarr"
    res = get_expression_data(store, atlas, atlas_info, donors=use,
                              out=out_path if streamed else None, **opts)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    stem = out_path.with_suffix("") if out_path.suffix in (".csv", ".zarr") else out_path
    files = [out_path]
    if not streamed:
        _write_matrix(res.expression, out_path)
    for name, table in (("probes", res.probes), ("genes", res.genes),
                        ("samples", res.samples)):
        p = Path(f"{stem}.{name}.csv")
        _write_csv(table, p, index=False)
        files.append(p)
    if res.counts is not None:
        p = Path(f"{stem}.counts.csv")
        _write_csv(res.counts, p)
        files.append(p)
    if res.donors is not None:
        for d, frame in res.donors.items():
            p = Path(f"{stem}.donor{d}.csv")
            _write_matrix(frame, p)
            files.append(p)
    methods = Path(f"{stem}.methods.txt")
    _write_text(res.methods() + "\n", methods)
    prov = Path(f"{stem}.provenance.json")
    _write_text(json.dumps(res.provenance(), indent=1, default=str) + "\n", prov)
    files += [methods, prov]
    summary = {
        "regions": int(res.expression.shape[0]),
        "genes": int(res.expression.shape[1]),
        "genes_dropped": int((res.genes["status"] == "dropped").sum()),
        "probes_ibf_dropped": int((~res.probes["ibf_kept"]).sum()),
        "samples_matched": int((res.samples["status"] == "matched").sum()),
        "samples_unmatched": int((res.samples["status"] == "unmatched").sum()),
        "samples_dropped": int((res.samples["status"] == "dropped").sum()),
        "computed": res.computed,
        "timings": {**{k: round(v, 3) for k, v in res.timings.items()},
                    "with_writing": round(time.perf_counter() - t0, 3)},
        "files": [str(f) for f in files],
    }
    if not quiet:
        click.echo(f"{summary['regions']} regions × {summary['genes']} genes -> {out_path} "
                   f"({summary['genes_dropped']} genes dropped, "
                   f"{summary['samples_matched']} samples matched) in "
                   f"{summary['timings']['with_writing']:.1f} s", err=True)
    return summary
