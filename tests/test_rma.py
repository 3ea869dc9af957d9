"""RMA query building (byte-for-byte with AllenSDK's documented URLs), paging, envelope checks,
caching and the typed helpers / HumanBrainAtlas against a loopback RMA server."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from _aiohttp_thread import ThreadedApp
from aiohttp import web
from click.testing import CliRunner

from atlas_engine.errors import ApiError
from atlas_engine.fetch import HumanBrainAtlas, RetryPolicy, RmaClient
from atlas_engine.fetch.api import AsyncHumanBrainAtlas
from atlas_engine.sources.rma import model_query, options_clause, service_query
from atlas_engine.sources.urls import quote_rma_url, rma_query_url

FAST = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.02)
SDK = "http://api.brain-map.org"


# -- pure builder ----------------------------------------------------------------------------
def test_hemisphere_except_matches_allensdk_test() -> None:
    url = rma_query_url(SDK, model_query("Hemisphere", except_="symbol").stages())
    assert url == SDK + "/api/v2/data/query.json?q=model::Hemisphere,rma::options%5Bexcept$eqsymbol%5D"


def test_isi_experiment_url_matches_allensdk_test() -> None:
    q = model_query("IsiExperiment", "[id$in503316697]",
                    "experiment_container(ophys_experiments,targeted_structure)",
                    num_rows="all", count=False)
    expected = ("model::IsiExperiment,rma::criteria,[id$in503316697],rma::include,"
                "experiment_container(ophys_experiments,targeted_structure),"
                "rma::options[num_rows$eq'all'][count$eqfalse]")
    assert q.stages() == expected
    assert rma_query_url(SDK, str(q)) == (
        SDK + "/api/v2/data/query.json?q=" + expected.replace("[", "%5B").replace("]", "%5D")
        .replace("'", "%27").replace("(", "%28").replace(")", "%29"))


def test_structure_and_probe_examples() -> None:
    q = model_query("Structure", "[graph_id$in10]", num_rows="all",
                    order="structures.graph_order", count=False)
    assert str(q) == ("model::Structure,rma::criteria,[graph_id$in10],rma::options"
                      "[num_rows$eq'all'][order$eqstructures.graph_order][count$eqfalse]")
    q = model_query("Probe", ["[probe_type$eq'DNA']", "products[abbreviation$eq'HumanMA']",
                              "gene[acronym$eq'SLC6A2']"], only="'probes.id'")
    assert str(q) == ("model::Probe,rma::criteria,[probe_type$eq'DNA'],products[abbreviation"
                      "$eq'HumanMA'],gene[acronym$eq'SLC6A2'],rma::options[only$eq'probes.id']")


def test_options_in_allensdk_order() -> None:
    text = options_clause(count=True, debug="preview", order=["a", "b+desc"], start_row=10,
                          num_rows=5, tabular=["x"], except_=["y"], only=["z", "w"])
    assert text == ("rma::options[only$eqz,w][except$eqy][tabular$eqx][num_rows$eq5]"
                    "[start_row$eq10][order$eqa,b+desc][debug$eqpreview][count$eqtrue]")
    assert options_clause() == ""


def test_service_params_sorted_and_joined() -> None:
    q = service_query("human_microarray_expression", probes=[1023146, 1023147], donors=[15496])
    assert str(q) == ("service::human_microarray_expression"
                      "[donors$eq15496][probes$eq1023146,1023147]")
    url = rma_query_url(SDK, str(q))
    assert url.endswith("q=service::human_microarray_expression"
                        "%5Bdonors$eq15496%5D%5Bprobes$eq1023146,1023147%5D")


def test_quote_keeps_allensdk_safe_set() -> None:
    assert quote_rma_url("a;/?:@&=+$,b") == "a;/?:@&=+$,b"
    assert quote_rma_url("[x y']") == "%5Bx%20y%27%5D"


# -- loopback RMA server ----------------------------------------------------------------------
class RmaServer(ThreadedApp):
    """Answers ``model::Thing`` pages from a row list, and human_microarray_expression."""

    def __init__(self, rows: list[dict], *, overstate: int = 0, fail_first: int = 0) -> None:
        self.rows = rows
        self.overstate = overstate
        self.fail_first = fail_first
        self.log: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        q = parse_qs(urlsplit(str(request.url)).query)["q"][0]
        self.log.append(q)
        if len(self.log) <= self.fail_first:
            return web.Response(status=503, headers={"Retry-After": "0"})
        if q.startswith("service::human_microarray_expression"):
            return web.json_response(self.expression(q))
        m = re.match(r"model::(\w+)", q)
        if m.group(1) == "Broken":
            return web.json_response({"success": False, "msg": "Unknown model Broken"})
        start = int(re.search(r"\[start_row\$eq(\d+)\]", q).group(1))
        num = int(re.search(r"\[num_rows\$eq(\d+)\]", q).group(1))
        assert "[order$eq'id']" in q
        rows = sorted(self.rows, key=lambda r: r["id"])
        crit = re.search(r"\[acronym\$in([^\]]*)\]", q)
        if crit and m.group(1) == "Gene":
            wanted = {s.strip("'") for s in crit.group(1).split(",")}
            rows = [r for r in rows if r.get("acronym") in wanted]
        page = rows[start:start + num]
        return web.json_response({"success": True, "id": 0, "start_row": start,
                                  "num_rows": len(page), "total_rows": len(rows) + self.overstate,
                                  "msg": page})

    def expression(self, q: str) -> dict:
        probes = [int(p) for p in re.search(r"\[probes\$eq([\d,]+)\]", q).group(1).split(",")]
        donor = int(re.search(r"\[donors\$eq(\d+)\]", q).group(1))
        n = 3 if donor == 15496 else 2
        samples = [{"donor": {"id": donor, "name": f"D{donor}"},
                    "sample": {"well": donor * 10 + i, "mri": [i, i + 1, i + 2]},
                    "structure": {"id": 4000 + i, "acronym": f"S{i}"},
                    "top_level_structure": {"name": "brain"}} for i in range(n)]
        return {"success": True, "id": 0, "start_row": 0, "num_rows": 0, "total_rows": 0,
                "msg": {"samples": samples, "probes": [
                    {"id": p, "name": f"P{p}", "gene-symbol": "G",
                     "expression_level": [str(p / 1000 + donor + i / 10) for i in range(n)],
                     "z-score": ["0.5"] * n} for p in probes]}}

    def __enter__(self) -> RmaServer:
        app = web.Application()
        app.router.add_get("/api/v2/data/query.json", self.handle)
        self.start(app)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _rows(n: int) -> list[dict]:
    ids = np.random.default_rng(3).permutation(np.arange(100, 100 + n))
    return [{"id": int(i), "acronym": f"G{i}", "name": f"gene {i}"} for i in ids]


async def _all(url: str, page_size: int, **kw) -> tuple[list[dict], RmaClient]:
    async with RmaClient(url, page_size=page_size, policy=FAST, **kw) as client:
        return await client.model_rows(model_query("Gene")), client


@pytest.mark.parametrize("n,page,overstate", [(23, 5, 0), (25, 5, 0), (25, 5, 1000), (0, 5, 7),
                                              (7, 2000, 0)])
def test_paging_returns_every_row_once(n: int, page: int, overstate: int) -> None:
    rows = _rows(n)
    with RmaServer(rows, overstate=overstate) as srv:
        got, _ = asyncio.run(_all(srv.url, page))
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in rows)
    assert len(got) == n
    # n // page full pages, then one short or empty page ends the loop
    assert len(srv.log) == n // page + 1
    assert all("[count$eqfalse]" in q for q in srv.log)


def test_success_false_raises_api_error() -> None:
    async def go(url: str) -> None:
        async with RmaClient(url, policy=FAST) as client:
            await client.model_rows(model_query("Broken"))
    with RmaServer([]) as srv, pytest.raises(ApiError, match="Unknown model Broken"):
        asyncio.run(go(srv.url))


def test_retries_and_cache(tmp_path: Path) -> None:
    rows = _rows(12)
    with RmaServer(rows, fail_first=2) as srv:
        got, client = asyncio.run(_all(srv.url, 5, cache_dir=tmp_path))
        assert len(got) == 12 and len(srv.log) == 2 + 3
        cached = sorted(tmp_path.glob("*.json"))
        assert len(cached) == 3
        again, client2 = asyncio.run(_all(srv.url, 5, cache_dir=tmp_path))
        assert again == got and client2.requests == [] and len(srv.log) == 5

        async def bypass() -> list[dict]:
            async with RmaClient(srv.url, page_size=5, cache_dir=tmp_path) as c:
                return await c.model_rows(model_query("Gene"), cache=False)
        assert asyncio.run(bypass()) == got and len(srv.log) == 8


def test_microarray_expression_strings_become_floats() -> None:
    rows = [{"id": 1, "acronym": "BDNF"}, {"id": 2, "acronym": "COMT"}]

    async def go(url: str) -> dict:
        async with RmaClient(url, policy=FAST) as client:
            return await client.human_microarray_expression([1023146, 7], donors=[15496])
    with RmaServer(rows) as srv:
        msg = asyncio.run(go(srv.url))
    assert srv.log[0] == "service::human_microarray_expression[donors$eq15496][probes$eq1023146,7]"
    assert msg["probes"][0]["expression_level"] == [1023.146 + 15496 + i / 10 for i in range(3)]
    assert all(isinstance(v, float) for p in msg["probes"] for v in p["z-score"])


def test_human_brain_atlas_expression(tmp_path: Path) -> None:
    genes = [{"id": 11, "acronym": "BDNF"}, {"id": 12, "acronym": "COMT"}]
    probes = [{"id": 501, "gene_id": 11, "name": "p1"}, {"id": 502, "gene_id": 12, "name": "p2"},
              {"id": 503, "gene_id": 12, "name": "p3"}]

    class Srv(RmaServer):
        async def handle(self, request):  # genes and probes from two tables
            q = parse_qs(urlsplit(str(request.url)).query)["q"][0]
            self.rows = probes if q.startswith("model::Probe") else genes
            return await super().handle(request)

    with Srv([]) as srv:
        atlas = HumanBrainAtlas(srv.url, cache_dir=tmp_path, policy=FAST)
        expr, samples, probe_table = atlas.get_microarray_expression(
            ["BDNF", "COMT"], donors=["H0351.1015", 15697])
        genes_df = atlas.get_genes(["COMT"])

    assert list(probe_table["gene_symbol"]) == ["BDNF", "COMT", "COMT"]
    assert expr.shape == (3, 5) and expr.dtypes.unique().tolist() == [np.float64]
    assert list(samples["donor_id"]) == [15496] * 3 + [15697] * 2
    assert list(samples["mri_voxel_y"]) == [1, 2, 3, 1, 2]
    expected = np.array([[pid / 1000 + d + i / 10 for d, n in ((15496, 3), (15697, 2))
                          for i in range(n)] for pid in (501, 502, 503)])
    np.testing.assert_allclose(expr.to_numpy(), expected)
    assert list(genes_df["acronym"]) == ["COMT"]

    async def inside_loop() -> tuple:  # the sync face also works under a running loop
        return HumanBrainAtlas(srv_url, cache_dir=tmp_path, policy=FAST).get_genes(["COMT"])
    srv_url = srv.url  # the server is stopped: this must come from the cache
    assert list(asyncio.run(inside_loop())["acronym"]) == ["COMT"]
    assert AsyncHumanBrainAtlas  # the async core is exported too


def test_query_cli(tmp_path: Path) -> None:
    from atlas_engine.cli.query import query_cmd

    rows = _rows(9)
    with RmaServer(rows) as srv:
        res = CliRunner().invoke(query_cmd, ["Gene", "--criteria", "[acronym$in'G100','G101']",
                                             "--base-url", srv.url, "--page-size", "4"])
        assert res.exit_code == 0, res.output
        assert sorted(r["acronym"] for r in json.loads(res.output)) == ["G100", "G101"]
        out = tmp_path / "g.csv"
        res = CliRunner().invoke(query_cmd, ["model::Gene", "--base-url", srv.url,
                                             "--format", "csv", "--out", str(out)])
        assert res.exit_code == 0, res.output
        lines = out.read_text().splitlines()
        assert lines[0] == "id,acronym,name" and len(lines) == 10
        res = CliRunner().invoke(query_cmd, ["service::human_microarray_expression", "--probes",
                                             "5,6", "--donors", "15496", "--base-url", srv.url,
                                             "--format", "csv"])
        assert res.exit_code == 0, res.output
        header, first, _ = res.output.splitlines()
        assert header == "probe_id,probe_name,gene_symbol,15496:154960,15496:154961,15496:154962"
        assert first.split(",")[3] == str(0.005 + 15496)


def test_query_accepts_the_allen_stage_strings(capsys) -> None:
    """TARGET as the Allen documentation writes it gives the same request as the options;
    a parameter the service does not have is explained in one line, without a traceback."""
    from atlas_engine.cli import main

    def run(args: list[str]) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main([*args, "--base-url", srv.url])
            raise SystemExit(0)
        out = capsys.readouterr()
        return int(exc.value.code or 0), out.out, out.err

    with RmaServer(_rows(9)) as srv:
        code, flags, _ = run(["query", "Gene", "--criteria", "[acronym$in'G100','G101']",
                              "--only", "id,acronym"])
        assert code == 0
        code, stages, _ = run(["query", "model::Gene,rma::criteria,[acronym$in'G100','G101'],"
                               "rma::options[only$eq'id,acronym']"])
        assert code == 0
        assert srv.log[-1] == srv.log[-2] and stages == flags
        code, flags, _ = run(["query", "service::human_microarray_expression", "--probes", "5,6",
                              "--donors", "15496"])
        code2, stages, _ = run(["query",
                                "service::human_microarray_expression[probes$in5,6][donors$eq15496]"])
        assert code == code2 == 0 and stages == flags and srv.log[-1] == srv.log[-2]
        n = len(srv.log)
        code, out, err = run(["query", "service::human_microarray_expression[gene_ids$eq18339]"])
        assert code == 1 and len(srv.log) == n  # refused before any request
        assert err.count("\n") == 1 and "Traceback" not in err
        assert "no parameter 'gene_ids'" in err and "probes" in err
        code, out, err = run(["query", "model::Donor,rma::frobnicate,[id$eq1]"])
        assert code == 1 and "rma::frobnicate" in err and err.count("\n") == 1
