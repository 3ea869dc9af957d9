"""Shared fixtures.

``synth_small``: one small generated Allen dataset for the whole session (all six donor zips with
300 probes and 3% of the real sample counts, ``structure_graph_10.json`` and a small BrainSpan
zip), written once into a session temporary directory. Tests must treat it as read-only; copy
files elsewhere before modifying them.
"""

from __future__ import annotations

import pytest

from atlas_engine.testing.synth import SynthResult, write_all

SYNTH_SMALL = {"probes": 300, "samples_fraction": 0.03, "seed": 0,
               "brainspan_genes": 200, "brainspan_samples": 40}


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    """A small generated raw directory (see module docstring); returns its SynthResult."""
    dest = tmp_path_factory.mktemp("synth_small")
    return write_all(dest, quiet=True, **SYNTH_SMALL)
