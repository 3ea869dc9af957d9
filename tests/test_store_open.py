"""open_store over fsspec URLs and its error cases."""

from __future__ import annotations

import numpy as np
import pytest

from atlas_engine import open_store
from atlas_engine.convert.donor import convert_microarray
from atlas_engine.errors import StoreError


def test_memory_url_store_matches_local(synth_small, tmp_path):
    local = tmp_path / "s.zarr"
    convert_microarray(synth_small.dest, local, donors=[12876, 15496])
    url = f"memory://store-{tmp_path.name}.zarr"
    convert_microarray(synth_small.dest, url, donors=[12876, 15496])
    a, b = open_store(local), open_store(url)
    assert a.donors == b.donors == [12876, 15496]
    assert np.array_equal(a.expression.values, b.expression.values)
    assert a.samples.equals(b.samples)
    assert b.donor(15496).attrs["complete"] is True


def test_missing_and_unknown(synth_small, tmp_path):
    with pytest.raises(StoreError):
        open_store(tmp_path / "nothing.zarr")
    store = tmp_path / "s.zarr"
    convert_microarray(synth_small.dest, store, donors=[12876])
    st = open_store(f"file://{store}")
    with pytest.raises(StoreError, match="9861"):
        st.donor(9861)
    assert st.probes.index.name == "probe" and st.probes.index.is_unique
    assert list(st.samples.columns[:3]) == ["donor", "sample_id", "structure_id"]
