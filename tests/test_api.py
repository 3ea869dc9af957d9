"""The top-level Python API: ``import atlas_engine as ae`` and the whole job, lazily imported,
with process state left as the caller had it."""

from __future__ import annotations

import gc
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import atlas_engine as ae


def test_import_is_cheap_and_names_resolve():
    code = ("import sys, atlas_engine as ae; "
            "heavy = [m for m in ('dask', 'zarr', 'pandas', 'numba', 'xarray') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""
    for name in ae.__all__:
        obj = getattr(ae, name)
        if name != "__version__":
            assert callable(obj), name
            assert obj.__doc__, f"{name} has no docstring"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ae.nope  # noqa: B018


def test_convert_aggregate_through_the_api_leave_process_state_alone(synth_small, tmp_path):
    switch = sys.getswitchinterval()
    gc_enabled = gc.isenabled()
    store = tmp_path / "s.zarr"
    summary = ae.convert(synth_small.dest, store, donors="9861,10021", rnaseq=False)
    assert summary.dataset == "ahba"
    assert sorted(summary.microarray.converted) == [9861, 10021]
    assert sys.getswitchinterval() == switch
    assert gc.isenabled() == gc_enabled

    res = ae.aggregate(store, by="structure", combine="pooled")
    # the pooled mean of each structure's samples, by pandas from the opened store
    opened = ae.open_store(store)
    expr = opened.expression.compute()
    samples = opened.samples
    frame = pd.DataFrame(expr.values.T, columns=expr["probe_id"].values)
    want = frame.groupby(samples["structure_id"].to_numpy()).mean()
    got = pd.DataFrame(res.values, index=res.groups["structure_id"].to_numpy(),
                       columns=[int(x) for x in res.feature_names]).loc[want.index]
    np.testing.assert_allclose(got.to_numpy(), want[got.columns].to_numpy(), rtol=1e-6)
    assert sys.getswitchinterval() == switch
    assert gc.isenabled() == gc_enabled


def test_convert_refuses_an_unknown_dataset(tmp_path):
    from atlas_engine.errors import ConfigError

    with pytest.raises(ConfigError, match="dataset 'genome'"):
        ae.convert(tmp_path, tmp_path / "s.zarr", dataset="genome")  # type: ignore[arg-type]


def test_errors_are_also_the_builtin_kinds(tmp_path):
    from atlas_engine.errors import FetchError, StoreError

    with pytest.raises(FileNotFoundError) as info:
        ae.open_store(tmp_path / "nowhere.zarr")
    assert isinstance(info.value, StoreError)
    assert "nowhere.zarr: no such store" in str(info.value)
    assert issubclass(FetchError, OSError)


def test_get_expression_data_documents_every_parameter_and_its_valid_values():
    """numpydoc for every parameter; the valid values listed are the registries' own."""
    import inspect

    from atlas_engine.pipeline import expression, matching, normalize, probes, regions, samples
    from atlas_engine.pipeline.params import MISSING

    fn = ae.get_expression_data
    doc = fn.__doc__
    assert "<choices:" not in doc
    documented = set()
    for line in doc.splitlines():
        head = line.strip()
        if line.startswith("    ") and not line.startswith("     ") and " : " in head:
            documented.update(n.strip() for n in head.split(" : ")[0].split(","))
    assert documented == set(inspect.signature(fn).parameters)
    for names in (probes.SELECTION_METHODS.names(aliases=True), probes.DONOR_PROBES,
                  samples.MIRROR_MODES, MISSING, regions.REGION_AGG, regions.AGG_METRICS,
                  matching.MATCH_RULES, [m for m in normalize.METHODS if m != "batch"]):
        for name in names:
            assert f'``"{name}"``' in doc, name
    assert expression.get_expression_data is fn
