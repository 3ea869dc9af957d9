"""What a newcomer met on the command line: each case reproduced, then fixed."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from atlas_engine.cli import cli, main

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


# -- bench ------------------------------------------------------------------------------------
def test_bench_passes_script_options_after_double_dash(monkeypatch):
    """`bench --what kernels -- --scale 0.25` hands `--scale 0.25` to the script (it used to
    take `--scale` for the STORE argument)."""
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda argv: calls.append(argv) or 0)
    res = CliRunner().invoke(cli, ["bench", "--what", "kernels", "--", "--scale", "0.25"])
    assert res.exit_code == 0, res.output
    script, *args = calls[0][1:]
    assert Path(script) == ROOT / "benchmarks" / "bench_kernels.py"
    assert Path(script).is_file()
    assert args == ["--scale", "0.25"]


@pytest.mark.parametrize("what", ["kernels", "convert", "fetch", "abagen"])
@pytest.mark.parametrize("option", [["--workers", "2"], ["--scheduler", "tcp://127.0.0.1:9"]])
def test_bench_scripts_refuse_cluster_options(monkeypatch, what, option):
    """`bench --what kernels --workers 2` ran the script on threads and said nothing: the
    cluster options apply to --what aggregate only, so the other suites refuse them."""
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda argv: calls.append(argv) or 0)
    res = CliRunner().invoke(cli, ["bench", "--what", what, *option])
    assert res.exit_code == 2, res.output
    assert f"{option[0]}: only for --what aggregate" in res.output
    assert not calls


def test_bench_scripts_run_with_the_scheduler_variable_set(monkeypatch):
    """DASK_SCHEDULER_ADDRESS in the environment is not a request to the scripts: they run."""
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda argv: calls.append(argv) or 0)
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:9")
    res = CliRunner().invoke(cli, ["bench", "--what", "kernels", "--", "--scale", "0.25"])
    assert res.exit_code == 0, res.output
    assert len(calls) == 1


def test_bench_kernels_script_accepts_the_documented_options():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_kernels.py"),
                          "--help"], capture_output=True, text=True, check=True).stdout
    assert "--scale" in out


def test_bench_aggregate_needs_one_store():
    res = CliRunner().invoke(cli, ["bench"])
    assert res.exit_code == 2 and "give the STORE" in res.output


def test_make_bench_runs_what_exists():
    """Every command of the Makefile's bench recipe names a script or command that exists."""
    text = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^bench:.*\n((?:\t.*\n)+)", text, re.M)
    assert recipe, "no bench target"
    lines = [ln.strip() for ln in recipe.group(1).splitlines()]
    assert lines
    for line in lines:
        words = shlex.split(line.replace("$(BIN)/", ""))
        if words[0] == "python":
            assert (ROOT / words[1]).is_file(), line
        else:
            assert words[0] == "atlas-engine", line
            if "--what" in words:
                from atlas_engine.cli.bench import SCRIPTS

                name = SCRIPTS[words[words.index("--what") + 1]]
                assert (ROOT / "benchmarks" / name).is_file(), line
    assert re.search(r"^demo:", text, re.M)


def test_bench_kernels_runs_through_the_cli(capsys):
    """The documented command, at a tiny scale and one round."""
    code = subprocess.call([sys.executable, "-m", "atlas_engine.cli", "bench", "--what",
                            "kernels", "--", "--scale", "0.005", "--repeat", "1",
                            "--skip-pandas", "--skip-flox", "--skip-scaling"], cwd="/")
    assert code == 0


# -- --workers and a scheduler address --------------------------------------------------------
@pytest.mark.parametrize("command", ["aggregate", "expression", "bench"])
def test_workers_with_the_scheduler_variable_is_refused(monkeypatch, tmp_path, command):
    """A DASK_SCHEDULER_ADDRESS left in the environment silently won over --workers N (the
    command ran on that scheduler): both given is refused, naming the variable."""
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:9")
    args = {"aggregate": ["aggregate", "s.zarr", "--out", str(tmp_path / "x.csv")],
            "expression": ["expression", "s.zarr", "BDNF", "--out", str(tmp_path / "x.csv")],
            "bench": ["bench", "s.zarr"]}[command]
    res = CliRunner().invoke(cli, [*args, "--workers", "2"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert ("--workers 2 (a local cluster) and the environment variable "
            "DASK_SCHEDULER_ADDRESS=tcp://127.0.0.1:9") in text
    assert "unset DASK_SCHEDULER_ADDRESS" in text
    assert not (tmp_path / "x.csv").exists()


def test_workers_with_scheduler_option_is_refused(monkeypatch, tmp_path):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    res = CliRunner().invoke(cli, ["aggregate", "s.zarr", "--out", str(tmp_path / "x.csv"),
                                   "--workers", "2", "--scheduler", "tcp://127.0.0.1:9"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "--workers 2 (a local cluster) and --scheduler=tcp://127.0.0.1:9" in text
    assert "environment variable" not in text


@pytest.mark.parametrize("from_env", [True, False])
def test_get_client_refuses_workers_with_an_address(monkeypatch, from_env):
    """The library says the same, before starting or reaching any cluster."""
    from atlas_engine.aggregate.cluster import get_client
    from atlas_engine.errors import ConfigError

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    if from_env:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:9")
    with pytest.raises(ConfigError) as exc, \
            get_client(None if from_env else "tcp://127.0.0.1:9", workers=2):
        pass
    message = str(exc.value)
    assert "workers=2" in message and "\n" not in message
    want = ("the environment variable DASK_SCHEDULER_ADDRESS=tcp://127.0.0.1:9" if from_env
            else "scheduler='tcp://127.0.0.1:9'")
    assert want in message


@pytest.mark.parametrize("command", ["run", "demo"])
def test_job_help_says_the_cluster_options_cover_the_aggregate_stage(command):
    res = CliRunner().invoke(cli, [command, "--help"])
    assert res.exit_code == 0
    assert ("--workers/--scheduler apply to the aggregate stage only"
            in " ".join(res.output.split()))


# -- the data folder --------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["default", "env", "flag"])
def test_run_prints_and_honours_the_data_folder(monkeypatch, tmp_path, how):
    import atlas_engine.cli.run as run_mod

    seen = {}
    monkeypatch.setattr(run_mod, "_run", lambda **kw: seen.update(kw))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ATLAS_ENGINE_DATA", raising=False)
    args = ["run", "--out", str(tmp_path / "out")]
    want = tmp_path / "home" / "atlas-engine-data"
    if how == "env":
        want = tmp_path / "env-data"
        monkeypatch.setenv("ATLAS_ENGINE_DATA", str(want))
    elif how == "flag":
        want = tmp_path / "flag-data"
        args += ["--data-dir", str(want)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert Path(seen["data_dir"]).expanduser() == want
    assert f"data folder: {want} " in res.output
    if how == "default":
        assert "$ATLAS_ENGINE_DATA to change" in res.output


def test_human_brain_atlas_cache_folder_is_announced_and_movable(monkeypatch, tmp_path, capsys):
    from atlas_engine.fetch import api

    monkeypatch.setattr(api, "_ANNOUNCED", set())
    monkeypatch.setenv("ATLAS_ENGINE_DATA", str(tmp_path / "data"))
    atlas = api.AsyncHumanBrainAtlas(base_url="http://127.0.0.1:9")
    assert atlas.cache_dir == tmp_path / "data" / "rma-cache"
    assert str(tmp_path / "data" / "rma-cache") in capsys.readouterr().err
    api.AsyncHumanBrainAtlas(base_url="http://127.0.0.1:9")
    assert capsys.readouterr().err == ""  # once per process
    quiet = api.AsyncHumanBrainAtlas(base_url="http://127.0.0.1:9", cache=False)
    assert quiet.cache_dir is None and quiet.client.cache_dir is None
    assert not (tmp_path / "data").exists()  # nothing is created before an answer is cached


# -- errors name flags, and near misses get a suggestion ---------------------------------------
@pytest.mark.parametrize("by,hint", [("depht:5", "did you mean depth:5?"),
                                     ("strucure", "did you mean structure?"),
                                     ("brod", "did you mean broad?")])
def test_by_typo_gets_did_you_mean(synth_store, tmp_path, capsys, by, hint):
    code, _, err = _run(["aggregate", str(synth_store), "--by", by, "-o",
                         str(tmp_path / "x.csv")], capsys)
    assert code == 1 and hint in err and err.count("\n") == 1


def test_atlas_errors_name_flags_not_keywords(e2e_source, tmp_path, capsys):
    from _golden import GOLDEN

    # (generated well ids are real ones now, so corrected_mni no longer fails on them)
    code, _, err = _run(["aggregate", str(e2e_source["store"]), "--by",
                         f"atlas:{GOLDEN / 'e2e_atlas.nii.gz'}", "--region-agg", "samples",
                         "--return-donors", "-o", str(tmp_path / "dk.csv")], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "--return-donors" in err and "return_donors" not in err


def test_cli_wording():
    from atlas_engine.cli.atlas_options import cli_wording

    assert cli_wording("region_agg='samples' cannot be combined with return_donors") == \
        "--region-agg samples cannot be combined with --return-donors"
    assert cli_wording("out= with region_agg='samples' supports agg_metric='mean' only") == \
        "-o X.zarr with --region-agg samples supports --agg-metric mean only"
    assert cli_wording("use reannotated=False, sample_norm=None; see /x/return_donors.csv") == \
        "use --no-reannotated, --sample-norm none; see /x/return_donors.csv"


def test_old_donors_mode_gets_one_line_saying_what_to_use(synth_store, tmp_path, capsys):
    code, _, err = _run(["aggregate", str(synth_store), "--donors", "pooled", "-o",
                         str(tmp_path / "x.csv")], capsys)
    assert code == 1 and err.count("\n") == 1 and "--combine pooled" in err
    code, _, err = _run(["aggregate", str(synth_store), "--combine", "pooled", "--donors",
                         "9861,H0351.1009", "--by", "broad", "-o", str(tmp_path / "x.csv")],
                        capsys)
    assert code == 0, err
    counts = __import__("pandas").read_csv(tmp_path / "x.counts.csv", index_col=0)
    assert list(counts.columns) == ["9861", "12876"]  # H0351.1009 is 12876


# -- per-donor groups in xarray -----------------------------------------------------------------
def test_donor_group_coordinates_are_in_memory(synth_store):
    """`.where(..., drop=True)` and `.groupby("structure_acronym")` on a donor's group: the
    sample coordinates are loaded, the expression stays lazy."""
    import warnings

    import numpy as np
    import xarray as xr

    from atlas_engine import open_store

    st = open_store(synth_store)
    ds = st.donor(9861)
    assert ds.expression.chunks is not None
    assert all(c.chunks is None for c in ds.coords.values())
    acr = str(ds.structure_acronym.values[0])
    sub = ds.where(ds.structure_acronym == acr, drop=True)
    assert set(sub.structure_acronym.values.tolist()) == {acr}
    means = ds.expression.groupby("structure_acronym").mean()
    want = ds.expression.values[:, ds.structure_acronym.values == acr].mean(axis=1)
    np.testing.assert_allclose(means.sel(structure_acronym=acr).values, want, rtol=1e-6)
    # plain xarray, as docs/store-layout.md shows it: no warning, and chunks=None gives
    # numpy-backed coordinates too
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = xr.open_zarr(synth_store, group="donors/9861", chunks=None)
    assert plain.where(plain.structure_acronym == acr, drop=True).sizes["sample"] == \
        sub.sizes["sample"]


# -- Ctrl-C in the last moment ------------------------------------------------------------------
LATE_INTERRUPT = """
import os, signal, sys, threading, time
from atlas_engine.cli import main
threading.Thread(target=time.sleep, args=(3,)).start()   # joined at interpreter shutdown
def late():
    time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=late, daemon=True).start()
sys.argv = ["atlas-engine", "--version"]
main()
"""


def test_interrupt_during_shutdown_prints_no_traceback():
    proc = subprocess.run([sys.executable, "-c", LATE_INTERRUPT], capture_output=True,
                          text=True, timeout=60)
    assert "atlas-engine, version" in proc.stdout
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert proc.returncode == 130
