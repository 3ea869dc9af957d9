"""The Allen ontology as a tree: ancestors, descendants, depth and roll-up via structure_id_path.

Built from the ``Ontology.csv`` table (columns ``id, acronym, name, parent_structure_id,
hemisphere, graph_order, structure_id_path, color_hex_triplet``); pure pandas/numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..errors import ConfigError

ONTOLOGY_COLUMNS = (
    "id", "acronym", "name", "parent_structure_id", "hemisphere",
    "graph_order", "structure_id_path", "color_hex_triplet",
)

#: abagen's broad classes (``samples_.py::ONTOLOGY``); the deepest one on a path wins.
BROAD_CLASSES: dict[int, str] = {
    4008: "cortex",
    4249: "subcortex/brainstem", 4275: "subcortex/brainstem", 4391: "subcortex/brainstem",
    9001: "subcortex/brainstem", 9131: "subcortex/brainstem", 9512: "subcortex/brainstem",
    4696: "cerebellum",
    9218: "white matter",
    9352: "other",
}


def parse_path(path: str) -> list[int]:
    """``"/4005/4006/4007/"`` → ``[4005, 4006, 4007]``."""
    return [int(p) for p in str(path).strip("/").split("/") if p]


class Ontology:
    """Structure tree with O(1) lookups; ``depth`` 0 is the root (brain, 4005)."""

    def __init__(self, table: pd.DataFrame) -> None:
        missing = [c for c in ("id", "parent_structure_id", "structure_id_path") if c not in table]
        if missing:
            raise ConfigError(f"ontology table lacks columns {missing}")
        t = table.copy()
        t["id"] = t["id"].astype(np.int64)
        t = t.set_index("id", drop=False)
        t.index.name = "structure_id"
        self.table = t
        self._paths: dict[int, tuple[int, ...]] = {
            int(i): tuple(parse_path(p)) for i, p in zip(t["id"], t["structure_id_path"], strict=True)
        }
        children: dict[int, list[int]] = {int(i): [] for i in t["id"]}
        for i, path in self._paths.items():
            if len(path) >= 2 and path[-2] in children:
                children[path[-2]].append(i)
        self._children = children

    # -- lookups -------------------------------------------------------------------------------
    def __contains__(self, structure_id: object) -> bool:
        try:
            return int(structure_id) in self._paths  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False

    def __len__(self) -> int:
        return len(self._paths)

    @property
    def ids(self) -> np.ndarray:
        return self.table["id"].to_numpy()

    @property
    def root(self) -> int:
        return min(self._paths, key=lambda i: len(self._paths[i]))

    def path(self, structure_id: int) -> tuple[int, ...]:
        return self._paths[int(structure_id)]

    def depth(self, structure_id: int) -> int:
        return len(self._paths[int(structure_id)]) - 1

    def ancestors(self, structure_id: int, include_self: bool = False) -> list[int]:
        """Root first, down to the parent (and the structure itself with ``include_self``)."""
        p = list(self._paths[int(structure_id)])
        return p if include_self else p[:-1]

    def children(self, structure_id: int) -> list[int]:
        return list(self._children[int(structure_id)])

    def descendants(self, structure_id: int, include_self: bool = False) -> list[int]:
        out: list[int] = [int(structure_id)] if include_self else []
        stack = list(self._children[int(structure_id)])
        while stack:
            s = stack.pop()
            out.append(s)
            stack.extend(self._children[s])
        return out

    def is_leaf(self, structure_id: int) -> bool:
        return not self._children[int(structure_id)]

    def lookup(self, key: int | str) -> int:
        """A structure by id, acronym or name (case-insensitive); acronyms shared by L/R leaves
        resolve to their common parent when it carries the same acronym, else raise."""
        try:
            sid = int(key)
            if sid in self._paths:
                return sid
        except (TypeError, ValueError):
            pass
        text = str(key).strip().lower()
        for col in ("acronym", "name"):
            hits = self.table.index[self.table[col].astype(str).str.lower() == text]
            if len(hits) == 1:
                return int(hits[0])
            if len(hits) > 1:
                raise ConfigError(
                    f"structure {key!r} is ambiguous: ids {', '.join(map(str, hits))}; give an id"
                )
        raise ConfigError(f"unknown structure {key!r} (give an id, acronym or name)")

    def broad_class(self, structure_id: int) -> str | None:
        """abagen's class: the deepest of the :data:`BROAD_CLASSES` ids on the path."""
        for sid in reversed(self._paths[int(structure_id)]):
            if sid in BROAD_CLASSES:
                return BROAD_CLASSES[sid]
        return None

    # -- roll-up -------------------------------------------------------------------------------
    def ancestor_at_depth(self, structure_ids: Iterable[int], depth: int) -> np.ndarray:
        """Each structure's ancestor at ``depth`` (itself if shallower is not possible: -1)."""
        out = []
        for s in structure_ids:
            p = self._paths.get(int(s))
            out.append(p[depth] if p is not None and len(p) > depth else -1)
        return np.asarray(out, dtype=np.int64)

    def membership(self, structure_ids: Iterable[int], groups: Iterable[int]) -> np.ndarray:
        """Boolean matrix (n_samples × n_groups): sample belongs to a group when the group is
        the sample's structure or one of its ancestors (a named structure includes its
        descendants)."""
        gids = [int(g) for g in groups]
        col = {g: j for j, g in enumerate(gids)}
        sids = list(structure_ids)
        m = np.zeros((len(sids), len(gids)), dtype=bool)
        for i, s in enumerate(sids):
            for a in self._paths.get(int(s), ()):
                j = col.get(a)
                if j is not None:
                    m[i, j] = True
        return m

    def labels_for(self, structure_ids: Iterable[int], groups: Iterable[int]) -> np.ndarray:
        """Label per sample = index into ``groups`` of the deepest group on its path, -1 if none.

        Used when groups do not nest (e.g. all structures at one depth); with nesting groups use
        :meth:`membership`.
        """
        gids = [int(g) for g in groups]
        col = {g: j for j, g in enumerate(gids)}
        out = np.full(len(list(structure_ids := list(structure_ids))), -1, dtype=np.int64)
        for i, s in enumerate(structure_ids):
            for a in reversed(self._paths.get(int(s), ())):
                if a in col:
                    out[i] = col[a]
                    break
        return out

    def at_depth(self, depth: int) -> list[int]:
        return [i for i, p in self._paths.items() if len(p) - 1 == depth]
