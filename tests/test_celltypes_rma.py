"""``model::CellType`` on the mirror: records consistent with the generated data sets, paged,
through the RMA client and ``atlas-engine query``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from atlas_engine.cli.query import query_cmd
from atlas_engine.fetch import RmaClient
from atlas_engine.fetch.sync import run_sync
from atlas_engine.sources.rma import model_query
from atlas_engine.testing.server import serving
from atlas_engine.testing.synth_celltypes import CellTypeWorldSpec, write_dataset

SPEC = CellTypeWorldSpec(n_cells=240, n_genes=60, n_clusters=9, seed=5)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("ctrma")
    worlds = {name: write_dataset(root, name, SPEC)[0] for name in ("human-m1", "human-mtg")}
    return root, worlds


def test_cell_types_match_the_generated_sets_and_page(mirror) -> None:
    root, worlds = mirror

    async def go(url: str) -> tuple[list, list, list, int]:
        async with RmaClient(url, page_size=4) as client:
            m1 = await client.cell_types("human-m1")
            mtg = await client.cell_types("human-mtg")
            every = await client.model_rows(model_query("CellType"))
            return m1, mtg, every, len(client.requests)

    with serving(root) as server:
        m1, mtg, every, n_requests = run_sync(go(server.url))
    for name, rows in (("human-m1", m1), ("human-mtg", mtg)):
        world = worlds[name]
        counts = np.bincount(world.cell_cluster, minlength=len(world.clusters))
        truth = {c: int(counts[i]) for i, c in enumerate(world.clusters["cluster"]) if counts[i]}
        assert {r["name"]: r["cell_count"] for r in rows} == truth
        assert sum(r["cell_count"] for r in rows) == SPEC.n_cells
        assert all(r["data_set"] == name and r["species"] == "human" for r in rows)
        cls = dict(zip(world.clusters["cluster"], world.clusters["class"], strict=True))
        for r in rows:  # M1 spells Non-Neuronal with a capital N (more_datasets.md 1.3)
            assert r["class"].lower() == cls[r["name"]].lower()
    tax = worlds["human-m1"].clusters
    sub = dict(zip(tax["cluster"], tax["subclass"], strict=True))
    assert all(r["subclass"] == sub[r["name"]] and r["color_hex_triplet"] for r in m1)
    assert all(r["subclass"] is None and r["color_hex_triplet"] is None for r in mtg)
    ids = [r["id"] for r in every]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) == len(m1) + len(mtg)
    # pages of 4: every call above needed ceil(n / 4) (+1 for an exact multiple) requests
    assert n_requests >= -(-len(m1) // 4) + -(-len(mtg) // 4) + -(-len(every) // 4)


def test_cell_type_envelope_pages(mirror) -> None:
    import urllib.request

    root, _ = mirror
    with serving(root) as server:
        url = (server.url + "/api/v2/data/query.json?criteria=model::CellType,rma::options"
               "%5Bstart_row$eq3%5D%5Bnum_rows$eq5%5D%5Border$eq'id'%5D")
        with urllib.request.urlopen(url) as resp:
            doc = json.loads(resp.read())
    assert doc["success"] and doc["start_row"] == 3 and doc["num_rows"] == 5
    assert doc["total_rows"] == sum(len(set(w.cell_cluster)) for w in mirror[1].values())
    assert len(doc["msg"]) == 5


def test_query_cell_type_cli(mirror, tmp_path: Path) -> None:
    root, worlds = mirror
    out = tmp_path / "ct.csv"
    with serving(root) as server:
        res = CliRunner().invoke(query_cmd, [
            "CellType", "--criteria", "[data_set$eq'human-m1'][cell_count$ge10]",
            "--base-url", server.url, "--page-size", "3", "--format", "csv", "--out", str(out)])
        assert res.exit_code == 0, res.output
        bad = CliRunner().invoke(query_cmd, ["CellType", "--criteria", "[colour$eq'x']",
                                             "--base-url", server.url])
    import pandas as pd

    table = pd.read_csv(out)
    world = worlds["human-m1"]
    counts = np.bincount(world.cell_cluster, minlength=len(world.clusters))
    want = {c for i, c in enumerate(world.clusters["cluster"]) if counts[i] >= 10}
    assert set(table["name"]) == want and (table["cell_count"] >= 10).all()
    assert bad.exit_code != 0 and "unknown attribute 'colour' for model CellType" in str(
        bad.exception or bad.output)
