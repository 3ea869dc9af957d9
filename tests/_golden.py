"""The abagen golden outputs (tests/data/abagen_golden) and the comparison the parity tests use."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

GOLDEN = Path(__file__).parent / "data" / "abagen_golden"


def load_golden(stem: str) -> dict[str, np.ndarray]:
    """Every array of ``{stem}.npz``."""
    with np.load(GOLDEN / f"{stem}.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def check_frame(frame: pd.DataFrame, golden: dict, key: str) -> None:
    """``frame`` has abagen's labels and genes for ``key``, and its values within 1e-6."""
    assert list(frame.index) == golden[f"{key}|labels"].tolist()
    assert list(frame.columns) == golden[f"{key}|genes"].tolist()
    np.testing.assert_allclose(frame.to_numpy(), golden[f"{key}|values"], rtol=0, atol=1e-6,
                               equal_nan=True)


def store_copy(source: dict, dest: Path) -> Path:
    """A private copy of the ``e2e_source`` fixture's store at ``dest`` (the store is small)."""
    shutil.copytree(source["store"], dest)
    return dest
