"""The names in :mod:`atlas_engine.choices` are the ones the library accepts and the command
line offers: the registries filled by ``register(...)`` calls hold exactly them, in order; the
other modules' constants are them; the CLI's ``click.Choice`` lists are built from them."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import click
import pytest

from atlas_engine import choices
from atlas_engine.aggregate import api, brainspan, engine
from atlas_engine.celltypes import aggregate as cell_aggregate
from atlas_engine.cli.aggregate import aggregate_cmd
from atlas_engine.cli.run import demo_cmd, run_cmd
from atlas_engine.pipeline import matching, normalize, params, probes, regions, samples


def test_choices_imports_only_the_standard_library():
    """The command line reads choices.py for ``--help``, which must import nothing heavy."""
    tree = ast.parse(Path(choices.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports in choices.py"
            imported.add((node.module or "").split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_probe_selection_registry_is_the_tuple():
    assert probes.SELECTION_METHODS.names(aliases=True) == list(choices.PROBE_SELECTIONS)


def test_normalisation_registry_is_the_tuple():
    assert normalize.NORMALIZERS.names() == list(choices.NORMALIZER_NAMES)
    assert normalize.METHODS == (*choices.NORMALIZER_NAMES, "batch") == choices.NORM_METHODS


@pytest.mark.parametrize("module,name,tuple_name", [
    (probes, "DONOR_PROBES", "DONOR_PROBES"),
    (samples, "MIRROR_MODES", "MIRROR_MODES"),
    (regions, "REGION_AGG", "REGION_AGG"),
    (regions, "AGG_METRICS", "AGG_METRICS"),
    (matching, "MATCH_RULES", "MATCH_RULES"),
    (normalize, "METHODS", "NORM_METHODS"),
])
def test_pipeline_constants_are_the_tuples(module, name, tuple_name):
    assert getattr(module, name) is getattr(choices, tuple_name)


@pytest.mark.parametrize("value,tuple_name", [
    # modules that still spell the names themselves: equal, until they import them
    pytest.param(api.STATS, "AGGREGATE_STATS", id="api.STATS"),
    pytest.param(brainspan.STATS, "AGGREGATE_STATS", id="brainspan.STATS"),
    pytest.param(api.COLLAPSE_METHODS, "COLLAPSE_METHODS", id="api.COLLAPSE_METHODS"),
    pytest.param(engine.DONOR_MODES, "DONOR_MODES", id="engine.DONOR_MODES"),
    pytest.param(cell_aggregate.STATS, "CELL_STATS", id="celltypes.aggregate.STATS"),
    pytest.param(params.MISSING, "MISSING", id="params.MISSING"),
])
def test_other_constants_equal_the_tuples(value, tuple_name):
    assert tuple(value) == getattr(choices, tuple_name)


def test_job_stats_are_aggregate_stats():
    assert set(choices.JOB_STATS) <= set(choices.AGGREGATE_STATS)


def _choices(command: click.Command, name: str) -> tuple[str, ...]:
    param = next(p for p in command.params if p.name == name)
    assert isinstance(param.type, click.Choice), name
    return tuple(param.type.choices)


@pytest.mark.parametrize("option,want", [
    ("probe_selection", choices.PROBE_SELECTIONS),
    ("donor_probes", choices.DONOR_PROBES),
    ("lr_mirror", choices.MIRROR_MODES),
    ("missing", choices.MISSING),
    ("sample_norm", (*choices.NORM_METHODS, "none")),
    ("gene_norm", (*choices.NORM_METHODS, "none")),
    ("region_agg", choices.REGION_AGG),
    ("agg_metric", choices.AGG_METRICS),
    ("match_rule", choices.MATCH_RULES),
    ("combine", choices.DONOR_MODES),
])
def test_aggregate_command_offers_the_tuples(option, want):
    assert _choices(aggregate_cmd, option) == want


def test_cli_accepts_the_same_names_as_before():
    """The probe selections and normalisations the command line accepted when it listed
    them itself: the same set now that it takes them from the registries' tuples."""
    assert set(_choices(aggregate_cmd, "probe_selection")) == {
        "diff_stability", "max_intensity", "max_variance", "pc_loading", "corr_intensity",
        "corr_variance", "average", "mean", "rnaseq"}
    assert set(_choices(aggregate_cmd, "sample_norm")) == {
        "srs", "rs", "sig", "scaled_sig", "scaled_sig_qnt", "mixed_sig", "zscore", "center",
        "minmax", "batch", "none"}


@pytest.mark.parametrize("command", [run_cmd, demo_cmd])
def test_job_commands_offer_the_tuples(command):
    assert _choices(command, "stat") == choices.JOB_STATS
    help_text = " ".join(command.get_help(click.Context(command)).split())
    for method in choices.COLLAPSE_METHODS:
        assert f"gene:{method}" in help_text


def test_aggregate_help_lists_the_tuples():
    help_text = " ".join(aggregate_cmd.get_help(click.Context(aggregate_cmd)).split())
    assert " | ".join(choices.AGGREGATE_STATS) in help_text
    assert ", ".join(choices.CELL_STATS) in help_text
    assert " | ".join(f"gene:{m}" for m in choices.COLLAPSE_METHODS) in help_text
