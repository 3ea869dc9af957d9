"""End to end against the shipped mirror (atlas_engine.testing.server) serving generated data:
every kind of file, faults injected, CLI exit codes, paging with overstated total_rows."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from atlas_engine.fetch import HumanBrainAtlas, RetryPolicy, fetch_ahba
from atlas_engine.testing.server import Faults, MirrorServer
from atlas_engine.testing.synth import write_ahba

FAST = RetryPolicy(max_attempts=4, backoff_base=0.01, backoff_max=0.05)
DONORS = "9861,12876,15496"


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("mirror-raw")
    write_ahba(dest, probes=300, samples_fraction=0.05, seed=4, donors=DONORS)
    return dest


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_everything_through_faults(raw: Path, tmp_path: Path) -> None:
    faults = Faults(drop_after=20_000, drop_first=4, drop_seed=11, fail_first=2, retry_after=0,
                    overstate_total_rows=500)
    with MirrorServer(raw, faults=faults) as srv:
        report = fetch_ahba(tmp_path, donors=DONORS, base_url=srv.url, policy=FAST,
                            concurrency=2)
        assert report.ok, report.summary()
        assert srv.max_concurrent_downloads <= 2
        dropped = [r for r in srv.log if r.fault == "drop"]
        assert len(dropped) == 4
        assert any(r.range for r in srv.downloads())  # resumed with Range
    for name in ("normalized_microarray_donor9861.zip", "normalized_microarray_donor12876.zip",
                 "normalized_microarray_donor15496.zip"):
        assert _sha(tmp_path / name) == _sha(raw / name)
    graph = json.loads((tmp_path / "structure_graph_10.json").read_text())
    assert graph["success"] is True
    # ontology_10.csv: every structure exactly once, against the zip's Ontology.csv
    import zipfile

    with zipfile.ZipFile(raw / "normalized_microarray_donor9861.zip") as zf:
        ontology = list(csv.DictReader(zf.read("Ontology.csv").decode().splitlines()))
    rows = list(csv.DictReader((tmp_path / "ontology_10.csv").read_text().splitlines()))
    assert sorted(int(r["id"]) for r in rows) == sorted(int(r["id"]) for r in ontology)
    assert [int(r["graph_order"]) for r in rows] == sorted(int(r["graph_order"]) for r in rows)
    manifest = json.loads((tmp_path / "manifest.json").read_text())["files"]
    assert set(manifest) == {p.name for p in tmp_path.iterdir() if p.name != "manifest.json"}
    assert not list(tmp_path.glob("*.part"))


def test_cli_rerun_skips_and_missing_donor_fails(raw: Path, tmp_path: Path) -> None:
    from atlas_engine.cli import cli

    with MirrorServer(raw) as srv:
        args = ["fetch", "--dest", str(tmp_path), "--donors", "9861,15496", "--base-url",
                srv.url, "--what", "microarray", "--quiet"]
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, res.output
        n = len(srv.log)
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0 and len(srv.log) == n  # re-run: no request
        # donor 10021 is not on this mirror: reported, others finish, non-zero exit
        args[4] = "9861,H0351.2002,12876"
        res = CliRunner().invoke(cli, args)
        assert res.exit_code != 0
        assert "normalized_microarray_donor10021.zip" in str(res.exception)
        assert "1 failed" in str(res.exception)
    assert (tmp_path / "normalized_microarray_donor12876.zip").exists()
    assert not (tmp_path / "normalized_microarray_donor10021.zip").exists()


def test_html_page_from_mirror_is_rejected(raw: Path, tmp_path: Path) -> None:
    with MirrorServer(raw, faults=Faults(html_first=50, scope="download")) as srv:
        report = fetch_ahba(tmp_path, donors="12876", what="microarray", base_url=srv.url,
                            policy=FAST)
    (res,) = report.results
    assert res.status == "failed" and "HTML page" in res.error
    assert not (tmp_path / "normalized_microarray_donor12876.zip").exists()


def test_api_against_mirror(raw: Path, tmp_path: Path) -> None:
    with MirrorServer(raw, faults=Faults(overstate_total_rows=10_000)) as srv:
        atlas = HumanBrainAtlas(srv.url, cache_dir=tmp_path, policy=FAST, page_size=50)
        structures = atlas.get_structures()
        donors = atlas.get_donors()
        genes = atlas.get_genes()
        symbols = list(genes["acronym"][:2])
        expr, samples, probes = atlas.get_microarray_expression(symbols, donors=[12876])
    assert structures["id"].is_unique and len(structures) > 50  # several pages
    assert set(donors["id"]) >= {9861, 12876, 15496}
    assert set(probes["gene_symbol"]) == set(symbols)
    assert expr.shape == (len(probes), len(samples)) and (samples["donor_id"] == 12876).all()
    # oracle: the same values read straight from the donor zip
    import io
    import zipfile

    import pandas as pd

    with zipfile.ZipFile(raw / "normalized_microarray_donor12876.zip") as zf:
        matrix = pd.read_csv(io.BytesIO(zf.read("MicroarrayExpression.csv")), header=None,
                             index_col=0)
    expected = matrix.loc[list(expr.index)].to_numpy()
    assert expr.to_numpy() == pytest.approx(expected, rel=1e-12)


def test_cli_no_verify_crc_fetches_identical_files(raw: Path, tmp_path: Path) -> None:
    from atlas_engine.cli import cli

    with MirrorServer(raw, faults=Faults(drop_after=30_000, drop_first=2)) as srv:
        res = CliRunner().invoke(cli, ["fetch", "--dest", str(tmp_path), "--donors", "12876",
                                       "--base-url", srv.url, "--what", "microarray",
                                       "--no-verify-crc", "--quiet"])
    assert res.exit_code == 0, res.output
    name = "normalized_microarray_donor12876.zip"
    assert _sha(tmp_path / name) == _sha(raw / name)


def test_verified_files_are_keyed_on_name_size_and_sha256_not_url(raw: Path,
                                                                  tmp_path: Path) -> None:
    """A mirror on another port (the demo's, each run) is the same source: no request; a copy
    of the folder (new mtimes) is re-hashed, not downloaded again."""
    with MirrorServer(raw) as srv:
        assert fetch_ahba(tmp_path / "a", donors=DONORS, what="microarray", base_url=srv.url,
                          policy=FAST).ok
    with MirrorServer(raw) as srv:
        report = fetch_ahba(tmp_path / "a", donors=DONORS, what="microarray",
                            base_url=srv.url, policy=FAST)
        assert {r.status for r in report.results} == {"skipped"}
        shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copyfile)
        report = fetch_ahba(tmp_path / "b", donors=DONORS, what="microarray",
                            base_url=srv.url, policy=FAST)
        assert {r.status for r in report.results} == {"skipped"}  # new mtimes, same bytes
        assert srv.downloads() == []
        (tmp_path / "b" / "normalized_microarray_donor9861.zip").write_bytes(b"PK\x03\x04junk")
        report = fetch_ahba(tmp_path / "b", donors=DONORS, what="microarray",
                            base_url=srv.url, policy=FAST)
        assert [r.status for r in report.results] == ["downloaded", "skipped", "skipped"]
        assert len(srv.downloads()) == 1
