"""Which samples form which group: structures, ontology levels, named structures, broad classes.

Aggregation runs in two stages. Stage 1 reduces every donor's samples by their own
``structure_id`` (one label per sample, the fast kernel path). Stage 2 rolls those per-structure
intermediates up to the requested groups with a 0/1 matrix ``rollup`` (n_structures × n_groups):
a sample belongs to a group when the group is its structure or one of its ancestors, so a named
structure includes its descendants. This module builds the labels and the roll-up matrix; it
does no arithmetic on expression values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..store.ontology import BROAD_CLASSES, Ontology

_DEPTH_RE = re.compile(r"^(?:depth|level)[:=]?(\d+)$", re.IGNORECASE)


@dataclass
class Grouping:
    """The result of resolving a ``--by`` specification against a sample table."""

    spec: str
    structures: np.ndarray        # int64 (n_structures,): distinct sample structure ids (stage 1)
    labels: np.ndarray            # int64 (n_samples,): index into ``structures``, -1 = no group
    groups: pd.DataFrame          # one row per output group: id, acronym, name, (class)
    rollup: np.ndarray            # bool (n_structures, n_groups)
    unassigned: np.ndarray        # bool (n_samples,): samples in no group

    @property
    def n_groups(self) -> int:
        return len(self.groups)


def _structure_labels(structure_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    structures, labels = np.unique(np.asarray(structure_ids, dtype=np.int64), return_inverse=True)
    return structures, labels.astype(np.int64)


def _group_table(ontology: Ontology, ids: Sequence[int]) -> pd.DataFrame:
    t = ontology.table
    rows = []
    for g in ids:
        if g in ontology:
            r = t.loc[int(g)]
            rows.append((int(g), r.get("acronym", ""), r.get("name", "")))
        else:
            rows.append((int(g), "", ""))
    return pd.DataFrame(rows, columns=["structure_id", "acronym", "name"])


def _suggest(key: str, ontology: Ontology) -> str:
    """``" (did you mean depth:5?)"`` for a near miss of a --by keyword, an acronym or a
    name; ``""`` when nothing is close."""
    import difflib

    head, sep, tail = key.partition(":")
    if sep and tail.strip().isdigit():
        hit = difflib.get_close_matches(head.strip().lower(), ["depth", "level", "atlas"],
                                        n=1, cutoff=0.6)
        if hit:
            return f" (did you mean {hit[0]}:{tail.strip()}?)"
    if sep and head.strip().lower() in ("atlases", "atlass", "altas", "atals"):
        return f" (did you mean atlas:{tail.strip()}?)"
    words = ["structure", "broad", "depth:N"]
    hit = difflib.get_close_matches(key.lower(), words, n=1, cutoff=0.7)
    if hit:
        return f" (did you mean {hit[0]}?)"
    t = ontology.table
    names = t["acronym"].astype(str).tolist() + t["name"].astype(str).tolist()
    lower = {n.lower(): n for n in names}
    hits = difflib.get_close_matches(key.lower(), list(lower), n=3, cutoff=0.75)
    if hits:
        return " (did you mean " + " or ".join(repr(lower[h]) for h in hits) + "?)"
    return ""


def _lookup(ontology: Ontology, key: str) -> int:
    try:
        return ontology.lookup(key)
    except ConfigError as exc:
        if not str(exc).startswith("unknown structure"):
            raise
        raise ConfigError(f"--by: unknown structure {key!r}{_suggest(key, ontology)}; give "
                          "structure, depth:N, broad, atlas:IMAGE or structure ids, acronyms "
                          "or names") from None


def resolve_grouping(
    spec: str | Sequence[int | str],
    sample_structure_ids: np.ndarray,
    ontology: Ontology,
) -> Grouping:
    """Resolve ``spec`` into a :class:`Grouping`.

    ``spec`` is one of:

    - ``"structure"``: every structure that has samples, plus every ontology leaf without
      samples (reported as empty groups);
    - ``"depth:N"`` / ``"level:N"``: the ancestors at depth N (root = 0); every ontology
      structure at that depth is a group, with or without samples;
    - ``"broad"``: abagen's broad classes (cortex, subcortex/brainstem, cerebellum, white
      matter, other) — a sample goes to the deepest class on its path;
    - a comma-separated string or list of structure ids / acronyms / names: each named
      structure with its descendants (groups may nest; a sample can count in several).
    """
    sids = np.asarray(sample_structure_ids, dtype=np.int64)
    structures, labels = _structure_labels(sids)
    text = spec if isinstance(spec, str) else None

    if text is not None and text.strip().lower() == "structure":
        leaves = [s for s in ontology.ids if ontology.is_leaf(int(s))]
        gids = sorted(set(structures.tolist()) | {int(s) for s in leaves})
        col = {g: j for j, g in enumerate(gids)}
        rollup = np.zeros((len(structures), len(gids)), dtype=bool)
        for i, s in enumerate(structures):
            rollup[i, col[int(s)]] = True
        groups = _group_table(ontology, gids)
    elif text is not None and _DEPTH_RE.match(text.strip()):
        depth = int(_DEPTH_RE.match(text.strip()).group(1))  # type: ignore[union-attr]
        gids = sorted(ontology.at_depth(depth))
        if not gids:
            raise ConfigError(f"the ontology has no structures at depth {depth} "
                              f"(deepest is {max(ontology.depth(s) for s in ontology.ids)})")
        rollup = ontology.membership(structures, gids)
        groups = _group_table(ontology, gids)
    elif text is not None and text.strip().lower() == "broad":
        names = list(dict.fromkeys(BROAD_CLASSES.values()))
        rollup = np.zeros((len(structures), len(names)), dtype=bool)
        for i, s in enumerate(structures):
            cls = ontology.broad_class(int(s)) if int(s) in ontology else None
            if cls is not None:
                rollup[i, names.index(cls)] = True
        groups = pd.DataFrame({"structure_id": [-1] * len(names), "acronym": names,
                               "name": names})
    else:
        items = [p for p in (text.split(",") if text is not None else list(spec)) if str(p).strip()]
        if not items:
            raise ConfigError("empty --by: give 'structure', 'depth:N', 'broad' or structure ids")
        gids = [_lookup(ontology, str(p).strip()) for p in items]
        rollup = ontology.membership(structures, gids)
        groups = _group_table(ontology, gids)

    unassigned = ~rollup[labels].any(axis=1) if len(labels) else np.zeros(0, dtype=bool)
    return Grouping(
        spec=str(spec), structures=structures, labels=labels, groups=groups,
        rollup=rollup, unassigned=unassigned,
    )
