"""``summary.md``: a short human account of what a job did."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_summary(path: str | Path, s: dict[str, Any], files: Sequence[Path]) -> Path:
    """Write the summary of a :func:`~atlas_engine.job.run_job` run as Markdown."""
    path = Path(path)
    t = s.get("timings_s", {})
    samples = s.get("samples_per_donor", {})
    in_regions = s.get("samples_in_regions_per_donor", samples)
    lines = [
        "# atlas-engine run",
        "",
        f"- Source: {s['base_url']}; raw files in `{s['raw']}`.",
        f"- Store: `{s['store']}` (converted now: {s['converted'] or 'none'}; already "
        f"complete: {s['skipped_conversion'] or 'none'}).",
        f"- Donors: {', '.join(map(str, s['donors']))} — samples per donor in the store "
        f"(as converted) and, after the arrow, in a region at `{s['by']}`: "
        + ", ".join(f"{d}: {n} → {in_regions.get(d, n)}" for d, n in samples.items()) + ".",
        f"- Grouping: `{s['by']}` — {s['groups']} regions, {s['groups_without_samples']} "
        f"of them without samples (kept as empty rows, listed in the groups table); "
        f"{s['unassigned_samples']} samples fall in no region at this level (their structure "
        f"lies above it in the ontology, or in no structure it has), so they are left out of "
        f"the matrix: that is why fewer samples count here than `convert` reports.",
        f"- Values: {s['stat']} per region and donor, then the mean over the donors that have "
        f"the region (abagen's default); probes collapsed to genes by {s['collapse']}: "
        f"{s['genes']} genes ({s.get('non_refseq_probes_left_out', 0)} probes without an "
        f"Entrez id left out).",
    ]
    if s.get("missing_genes"):
        lines.append(f"- Genes asked for but not in the data: {', '.join(s['missing_genes'])}.")
    if s.get("unknown_structures"):
        lines.append(f"- Samples whose structure is not in the ontology (kept): "
                     f"{s['unknown_structures']}.")
    downloads = s.get("downloads", [])
    if downloads:
        lines.append("- Downloads: " + ", ".join(
            f"{d['file']} ({d['status']}, {d['bytes'] / 1e6:.1f} MB, {d['requests']} "
            f"request{'s' if d['requests'] != 1 else ''})" for d in downloads) + ".")
    lines += [
        f"- Time: fetch {t.get('fetch', 0):.1f} s, convert {t.get('convert', 0):.1f} s, "
        f"aggregate {t.get('aggregate', 0):.1f} s, report {t.get('report', 0):.1f} s.",
        "",
        "## Files",
        "",
    ]
    lines += [f"- `{Path(f).name}`" for f in files]
    lines += [f"- `{path.name}` (this file)", ""]
    path.write_text("\n".join(lines))
    return path
