"""The local Allen mirror: downloads with ranges and faults, RMA queries, structure graph."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from atlas_engine.sources.donors import DONORS, get_donor
from atlas_engine.testing.server import Faults, MirrorServer, parse_range

# --------------------------------------------------------------------------------------------
# fixture data: two donors written by hand in the real layouts (shared allen_formats.md §3)
# --------------------------------------------------------------------------------------------
ONTOLOGY = [
    # id, acronym, name, parent, hemisphere, graph_order, path, color
    ("4005", "Br", "brain", "", "", "0", "/4005/", "A0A0A0"),
    ("4006", "GM", "gray matter", "4005", "", "1", "/4005/4006/", "787878"),
    ("4007", "Tel", "telencephalon", "4006", "", "2", "/4005/4006/4007/", "F2ED7C"),
    ("4008", "Cx", "cerebral cortex", "4007", "", "3", "/4005/4006/4007/4008/", "FFD966"),
    ("4009", "FL", "frontal lobe", "4008", "", "4", "/4005/4006/4007/4008/4009/", "E8BF59"),
    ("4054", "AOrG", "anterior orbital gyrus, left", "4009", "L", "5",
     "/4005/4006/4007/4008/4009/4054/", "E8BF59"),
    ("4055", "AOrG", "anterior orbital gyrus, right", "4009", "R", "6",
     "/4005/4006/4007/4008/4009/4055/", "E8BF59"),
    ("9352", "SS", "sulci & spaces", "4005", "", "7", "/4005/9352/", "DDDDDD"),
    ("9422", "cc", "central canal", "9352", "", "8", "/4005/9352/9422/", "DDDDDD"),
]
PROBES = [
    # probe_id, probe_name, gene_id, symbol, gene name, entrez, chromosome
    (1058685, "A_23_P20713", 729, "C8G", "complement component 8, gamma polypeptide", "733", "9"),
    (1058684, "CUST_15185_PI416261804", 731, "C9", "complement component 9", "735", "5"),
    (1023146, "A_23_P1", 6530, "SLC6A2", "solute carrier family 6 member 2", "6530", "16"),
    (1023147, "CUST_1_PI1", 6530, "SLC6A2", "solute carrier family 6 member 2", "6530", "16"),
    (1058683, "A_32_P885445", 1012197, "A_32_P885445",
     "AGILENT probe A_32_P885445 (non-RefSeq)", "", ""),
    (1071209, "A_24_P9", 733, "CAB39", "calcium binding protein 39", "51719", "2"),
]
SAMPLES = {  # donor -> (structure_id, well_id)
    9861: [(4054, 101), (4055, 102), (9422, 103), (4054, 104)],
    12876: [(4055, 11001), (4054, 11002), (4055, 11003)],
}
EXTRA_ID = 999  # a 3 MB binary served through index.json
EXTRA_SIZE = 3 * (1 << 20) + 12345


def _ontology_csv() -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "acronym", "name", "parent_structure_id", "hemisphere", "graph_order",
                "structure_id_path", "color_hex_triplet"])
    w.writerows(ONTOLOGY)
    return buf.getvalue()


def _probes_csv() -> str:
    lines = ["probe_id,probe_name,gene_id,gene_symbol,gene_name,entrez_id,chromosome"]
    for pid, name, gid, sym, gname, entrez, chrom in PROBES:
        lines.append(f'{pid},"{name}",{gid},"{sym}","{gname}",{entrez},{chrom}')
    return "\n".join(lines) + "\n"


def _structure(sid: int) -> tuple[str, ...]:
    return next(row for row in ONTOLOGY if int(row[0]) == sid)


def _annot_csv(donor: int) -> str:
    lines = ["structure_id,slab_num,well_id,slab_type,structure_acronym,structure_name,"
             "polygon_id,mri_voxel_x,mri_voxel_y,mri_voxel_z,mni_x,mni_y,mni_z"]
    for k, (sid, well) in enumerate(SAMPLES[donor]):
        row = _structure(sid)
        x = {"L": -20.5, "R": 20.5, "": 0.0}[row[4]]
        lines.append(f'{sid},{k + 1},{well},CX,"{row[1]}","{row[2]}",{5000 + k},'
                     f"{100 + k},{90 + k},{80 + k},{x},{-3.0 - k},{4.5}")
    return "\n".join(lines) + "\n"


def _expression(donor: int) -> dict[int, list[str]]:
    rng = random.Random(donor)
    return {pid: [repr(rng.uniform(1.4, 12.0)) for _ in SAMPLES[donor]] for pid, *_ in PROBES}


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    for donor in SAMPLES:
        expr = _expression(donor)
        matrix = "".join(f"{pid},{','.join(vals)}\n" for pid, vals in expr.items())
        pacall = "".join(f"{pid},{','.join('1' for _ in vals)}\n" for pid, vals in expr.items())
        with zipfile.ZipFile(root / get_donor(donor).zip_name, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("MicroarrayExpression.csv", matrix)
            zf.writestr("PACall.csv", pacall)
            zf.writestr("Probes.csv", _probes_csv())
            zf.writestr("SampleAnnot.csv", _annot_csv(donor))
            zf.writestr("Ontology.csv", _ontology_csv())
    (root / "extra.bin").write_bytes(random.Random(7).randbytes(EXTRA_SIZE))
    (root / "index.json").write_text(json.dumps({str(EXTRA_ID): "extra.bin"}))
    return root


@pytest.fixture(scope="module")
def server(raw_dir: Path) -> Any:
    with MirrorServer(raw_dir) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _clean_faults(request: pytest.FixtureRequest) -> Any:
    yield
    if "server" in request.fixturenames:
        srv = request.getfixturevalue("server")
        srv.faults = Faults()
        srv.reset_stats()


def _get(url: str, headers: dict[str, str] | None = None,
         method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _query(server: MirrorServer, q: str, key: str = "criteria", **extra: str) -> dict[str, Any]:
    params = urllib.parse.urlencode({key: q, **extra})
    status, _, body = _get(f"{server.url}/api/v2/data/query.json?{params}")
    data = json.loads(body)
    data["_status"] = status
    return data


def _dl(server: MirrorServer, wkf: int = EXTRA_ID) -> str:
    return f"{server.url}/api/v2/well_known_file_download/{wkf}"


# --------------------------------------------------------------------------------------------
# downloads
# --------------------------------------------------------------------------------------------
def test_full_download_headers(server: MirrorServer, raw_dir: Path) -> None:
    donor = get_donor(9861)
    status, headers, body = _get(_dl(server, donor.microarray_wkf))
    assert status == 200
    assert body == (raw_dir / donor.zip_name).read_bytes()
    assert headers["Content-Length"] == str(len(body))
    assert headers["Content-Disposition"] == f'attachment; filename="{donor.zip_name}"'
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Type"] == "application/zip"
    status, headers, body = _get(_dl(server), method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == str(EXTRA_SIZE)
    assert headers["Content-Type"] == "application/octet-stream"


def test_unknown_and_missing_ids_are_404(server: MirrorServer) -> None:
    for wkf in (12345, DONORS[1].microarray_wkf):   # unknown id; known id whose file is absent
        status, _, body = _get(_dl(server, wkf))
        assert status == 404
        data = json.loads(body)
        assert data["success"] is False and str(wkf) in data["msg"]


def test_random_ranges_match_file(server: MirrorServer, raw_dir: Path) -> None:
    blob = (raw_dir / "extra.bin").read_bytes()
    rng = random.Random(1)

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(50):
                a = rng.randrange(EXTRA_SIZE)
                b = rng.randrange(a, min(EXTRA_SIZE, a + 200_000))
                async with session.get(_dl(server), headers={"Range": f"bytes={a}-{b}"}) as r:
                    assert r.status == 206
                    assert r.headers["Content-Range"] == f"bytes {a}-{b}/{EXTRA_SIZE}"
                    assert await r.read() == blob[a:b + 1]
            # open-ended, suffix, and an end past the file
            cases = {"bytes=3000000-": (3000000, EXTRA_SIZE - 1), "bytes=-1000":
                     (EXTRA_SIZE - 1000, EXTRA_SIZE - 1), f"bytes=-{EXTRA_SIZE + 5}":
                     (0, EXTRA_SIZE - 1), f"bytes=10-{EXTRA_SIZE * 2}": (10, EXTRA_SIZE - 1)}
            for header, (a, b) in cases.items():
                async with session.get(_dl(server), headers={"Range": header}) as r:
                    assert r.status == 206, header
                    assert r.headers["Content-Range"] == f"bytes {a}-{b}/{EXTRA_SIZE}"
                    assert await r.read() == blob[a:b + 1]
            for header in (f"bytes={EXTRA_SIZE}-", "bytes=-0"):
                async with session.get(_dl(server), headers={"Range": header}) as r:
                    assert r.status == 416, header
                    assert r.headers["Content-Range"] == f"bytes */{EXTRA_SIZE}"

    asyncio.run(run())


def test_parse_range_ignores_what_it_cannot_serve() -> None:
    assert parse_range("bytes=0-1,5-6", 10) is None
    assert parse_range("items=0-1", 10) is None
    assert parse_range("bytes=5-2", 10) is None
    assert parse_range("bytes=abc", 10) is None
    assert parse_range("bytes=0-0", 10) == (0, 0)


def test_drop_after_is_a_payload_error_with_n_bytes(server: MirrorServer, raw_dir: Path) -> None:
    blob = (raw_dir / "extra.bin").read_bytes()
    server.faults = Faults(drop_after=123_457, drop_first=1)

    async def fetch(session: aiohttp.ClientSession, headers: dict[str, str]) -> tuple[bytes, bool]:
        got = bytearray()
        failed = False
        async with session.get(_dl(server), headers=headers) as r:
            try:
                async for chunk in r.content.iter_chunked(65536):
                    got += chunk
            except aiohttp.ClientPayloadError:
                failed = True
        return bytes(got), failed

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            got, failed = await fetch(session, {})
            assert failed and got == blob[:123_457]
            got2, failed2 = await fetch(session, {"Range": f"bytes={len(got)}-"})
            assert not failed2 and got + got2 == blob

    asyncio.run(run())
    drops = [r for r in server.downloads() if r.fault == "drop"]
    assert len(drops) == 1 and drops[0].bytes_sent == 123_457


def test_random_drop_offsets_are_seeded(server: MirrorServer, raw_dir: Path) -> None:
    blob = (raw_dir / "extra.bin").read_bytes()

    async def attempts(n: int) -> list[int]:
        sizes = []
        async with aiohttp.ClientSession() as session:
            for _ in range(n):
                got = bytearray()
                async with session.get(_dl(server)) as r:
                    with pytest.raises(aiohttp.ClientPayloadError):
                        async for chunk in r.content.iter_chunked(65536):
                            got += chunk
                assert bytes(got) == blob[:len(got)]
                sizes.append(len(got))
        return sizes

    server.faults = Faults(drop_seed=42)
    first = asyncio.run(attempts(4))
    expected = [random.Random(42).randrange(EXTRA_SIZE)]
    assert first[0] == expected[0]
    assert len(set(first)) == 4
    server.faults = Faults(drop_seed=42)       # a new Faults restarts the random sequence
    assert asyncio.run(attempts(4)) == first


def test_truncated_body(server: MirrorServer, raw_dir: Path) -> None:
    blob = (raw_dir / "extra.bin").read_bytes()
    server.faults = Faults(truncate_by=1000, truncate_first=1)

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            got = bytearray()
            async with session.get(_dl(server)) as r:
                assert r.headers["Content-Length"] == str(EXTRA_SIZE)
                with pytest.raises(aiohttp.ClientPayloadError):
                    async for chunk in r.content.iter_chunked(65536):
                        got += chunk
            assert bytes(got) == blob[:EXTRA_SIZE - 1000]
            async with session.get(_dl(server)) as r:       # only the first one
                assert await r.read() == blob

    asyncio.run(run())


@pytest.mark.parametrize("status", [503, 429])
def test_fail_first_with_retry_after(server: MirrorServer, status: int) -> None:
    server.faults = Faults(fail_first=2, fail_status=status, retry_after=3)
    for _ in range(2):
        code, headers, _ = _get(_dl(server))
        assert code == status and headers["Retry-After"] == "3"
    code, _, body = _get(_dl(server))
    assert code == 200 and len(body) == EXTRA_SIZE
    assert [r.status for r in server.log] == [status, status, 200]


def test_fail_scope_api_leaves_downloads_alone(server: MirrorServer) -> None:
    server.faults = Faults(fail_first=1, scope="api")
    assert _get(_dl(server), method="HEAD")[0] == 200
    assert _get(f"{server.url}/api/v2/data/query.json?q=model::Product")[0] == 503
    assert _query(server, "model::Product")["success"] is True


def test_html_first(server: MirrorServer) -> None:
    server.faults = Faults(html_first=1)
    code, headers, body = _get(_dl(server))
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert b"unavailable" in body and not body.startswith(b"PK")
    code, _, body = _get(_dl(server))
    assert code == 200 and len(body) == EXTRA_SIZE


def test_ignore_range(server: MirrorServer, raw_dir: Path) -> None:
    server.faults = Faults(ignore_range=True)
    code, headers, body = _get(_dl(server), headers={"Range": "bytes=100-"})
    assert code == 200 and "Content-Range" not in headers
    assert body == (raw_dir / "extra.bin").read_bytes()


def test_bandwidth_throttle_paces_the_body(server: MirrorServer,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The throttle asks to sleep for as long as the body takes at ``rate``, in pieces of at
    most 1/20 s: a clock that only the (recorded, not waited) sleeps advance."""
    size, rate = 400_000, 1_000_000
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(server, "clock", lambda: now[0])
    monkeypatch.setattr(server, "sleep", sleep)
    server.faults = Faults(bandwidth=rate)
    code, _, body = _get(_dl(server), headers={"Range": f"bytes=0-{size - 1}"})
    assert code == 206 and len(body) == size
    # the pause after the last piece may still be under way when the client has the body
    record = server.downloads()[-1]
    for _ in range(1000):
        if record.duration:
            break
        time.sleep(0.01)
    assert record.duration, "the request never finished"
    assert sum(slept) == pytest.approx(size / rate)
    assert len(slept) == size // (rate // 20)
    assert max(slept) == pytest.approx(1 / 20)


def test_concurrent_download_counter(server: MirrorServer) -> None:
    assert server.concurrent_downloads == 0, [(r.path, r.fault, r.status) for r in server.log]
    server.faults = Faults(delay=0.3)

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            async def one() -> int:
                async with session.get(_dl(server), headers={"Range": "bytes=0-9"}) as r:
                    await r.read()
                    return r.status
            assert await asyncio.gather(*(one() for _ in range(4))) == [206] * 4

    asyncio.run(run())
    assert server.max_concurrent_downloads == 4
    assert server.concurrent_downloads == 0
    rec = server.downloads()[-1]
    assert (rec.method, rec.range, rec.status, rec.bytes_sent) == ("GET", "bytes=0-9", 206, 10)


# --------------------------------------------------------------------------------------------
# RMA
# --------------------------------------------------------------------------------------------
def test_envelope_keys_and_default_page(server: MirrorServer) -> None:
    data = _query(server, "model::Probe")
    assert list(data)[:6] == ["success", "id", "start_row", "num_rows", "total_rows", "msg"]
    assert data["success"] is True and data["total_rows"] == len(PROBES)
    assert [p["id"] for p in data["msg"]] == [p[0] for p in PROBES]
    assert data["msg"][0] == {"gene_id": 729, "id": 1058685, "name": "A_23_P20713",
                              "probe_type": "DNA"}


def test_criteria_eq_in_li_and_associations(server: MirrorServer) -> None:
    genes = _query(server, "model::Gene,rma::criteria,[acronym$eq'SLC6A2']")["msg"]
    assert [(g["id"], g["entrez_id"], g["name"]) for g in genes] == [
        (6530, 6530, "solute carrier family 6 member 2")]
    ids = _query(server, "model::Gene,rma::criteria,[acronym$in'C8G','C9',CAB39]", "q")["msg"]
    assert sorted(g["acronym"] for g in ids) == ["C8G", "C9", "CAB39"]
    like = _query(server, "model::Gene,rma::criteria,[acronym$li'c*']")["msg"]
    assert sorted(g["acronym"] for g in like) == ["C8G", "C9", "CAB39"]
    nonref = _query(server, "model::Gene,rma::criteria,[name$li'*non-refseq*']")["msg"]
    assert [(g["id"], g["entrez_id"], g["chromosome"]) for g in nonref] == [(1012197, None, None)]
    probes = _query(server, "model::Probe,rma::criteria,[probe_type$eq'DNA'],"
                            "products[abbreviation$eq'HumanMA'],gene[acronym$eq'SLC6A2'],"
                            "rma::options[only$eq'probes.id']")["msg"]
    assert probes == [{"id": 1023146}, {"id": 1023147}]
    assert _query(server, "model::Probe,rma::criteria,products[id$eq24]")["msg"] == []
    by_gene = _query(server, "model::Gene,rma::criteria,probes[name$eq'CUST_1_PI1']")["msg"]
    assert [g["acronym"] for g in by_gene] == ["SLC6A2"]
    donors = _query(server, "model::Donor,rma::criteria,products[id$eq2],rma::include,"
                            "specimens")["msg"]
    assert [(d["id"], d["name"]) for d in donors] == [(9861, "H0351.2001"),
                                                      (12876, "H0351.1009")]
    assert [p["abbreviation"] for p in _query(
        server, "model::Product,rma::criteria,[id$eq2]")["msg"]] == ["HumanMA"]


def test_structure_model(server: MirrorServer) -> None:
    data = _query(server, "model::Structure,rma::criteria,[graph_id$in10],rma::options"
                          "[num_rows$eq'all'][order$eqstructures.graph_order+desc][count$eqfalse]")
    rows = data["msg"]
    assert [r["id"] for r in rows] == [int(r[0]) for r in reversed(ONTOLOGY)]
    assert len(rows[0]) == 21 and list(rows[0]) == sorted(rows[0])
    left = next(r for r in rows if r["id"] == 4054)
    assert left["hemisphere_id"] == 1 and left["parent_structure_id"] == 4009
    assert left["structure_id_path"] == "/4005/4006/4007/4008/4009/4054/"
    assert left["depth"] == 5 and left["graph_id"] == 10 and left["color_hex_triplet"] == "E8BF59"


def test_paging_with_order_returns_every_row_once(server: MirrorServer) -> None:
    seen: list[int] = []
    start = 0
    while True:
        data = _query(server, f"model::Probe,rma::options[num_rows$eq2][start_row$eq{start}]"
                              "[order$eq'name$desc']")
        assert data["total_rows"] == len(PROBES) and data["start_row"] == start
        seen += [p["id"] for p in data["msg"]]
        start += data["num_rows"]
        if data["num_rows"] < 2:
            break
    names = {p[0]: p[1] for p in PROBES}
    assert seen == sorted(names, key=lambda pid: names[pid], reverse=True)
    # legacy URL parameters, multi-key order, and an overstated total
    server.faults = Faults(overstate_total_rows=5)
    data = _query(server, "model::Probe,rma::options[order$eqgene_id,id]", num_rows="3",
                  start_row="1")
    oracle = sorted(PROBES, key=lambda p: (p[2], p[0]))[1:4]
    assert [p["id"] for p in data["msg"]] == [p[0] for p in oracle]
    assert (data["num_rows"], data["total_rows"]) == (3, len(PROBES) + 5)
    assert _query(server, "model::Probe", num_rows="all")["num_rows"] == len(PROBES)
    # count=false skips the count: the total is what the page holds
    data = _query(server, "model::Probe,rma::options[num_rows$eq2][count$eqfalse]"
                          "[except$eqprobe_type,gene_id]")
    assert (data["num_rows"], data["total_rows"]) == (2, 2)
    assert data["msg"] == [{"id": p[0], "name": p[1]} for p in PROBES[:2]]


def test_errors_are_envelopes(server: MirrorServer) -> None:
    for q, status in [("model::Nope", 200), ("model::Gene,rma::criteria,[bogus$eq1]", 200),
                      ("model::Gene,rma::criteria,[id$eqabc]", 200),
                      ("model::Gene,rma::criteria,[acronym$eq'x'", 400), ("", 400),
                      ("model::Gene,rma::criteria,organism[name$eq'Homo']", 200)]:
        data = _query(server, q)
        assert data["_status"] == status, q
        assert data["success"] is False and isinstance(data["msg"], str), q
        assert list(data)[:6] == ["success", "id", "start_row", "num_rows", "total_rows", "msg"]


def test_human_microarray_expression(server: MirrorServer) -> None:
    q = "service::human_microarray_expression[probes$eq1023146,1058683][donors$in9861,12876]"
    data = _query(server, q)
    assert data["success"] is True
    msg = data["msg"]
    assert [p["id"] for p in msg["probes"]] == [1023146, 1058683]
    expected = {d: _expression(d) for d in SAMPLES}
    for probe in msg["probes"]:
        tokens = expected[9861][probe["id"]] + expected[12876][probe["id"]]
        assert probe["expression_level"] == tokens          # the CSV text, as strings
        values = [float(t) for t in tokens]
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        assert [float(z) for z in probe["z-score"]] == pytest.approx(
            [(v - mean) / sd for v in values])
        assert all(isinstance(z, str) for z in probe["z-score"])
    assert msg["probes"][0]["gene-symbol"] == "SLC6A2"
    assert msg["probes"][1]["entrez-id"] is None
    samples = msg["samples"]
    assert [s["sample"]["well"] for s in samples] == [w for d in SAMPLES for _, w in SAMPLES[d]]
    first = samples[0]
    assert first["donor"]["id"] == 9861 and first["donor"]["name"] == "H0351.2001"
    assert first["sample"]["mri"] == [100, 90, 80]
    assert first["structure"]["id"] == 4054 and first["structure"]["abbreviation"] == "AOrG"
    assert first["top_level_structure"]["id"] == 4008
    # donor and structure filters (a structure includes its descendants)
    one = _query(server, "service::human_microarray_expression[probes$eq1071209]"
                         "[donors$eq12876][structures$eq4055]")["msg"]
    wells = [w for sid, w in SAMPLES[12876] if sid == 4055]
    assert [s["sample"]["well"] for s in one["samples"]] == wells
    keep = [k for k, (sid, _) in enumerate(SAMPLES[12876]) if sid == 4055]
    assert one["probes"][0]["expression_level"] == [expected[12876][1071209][k] for k in keep]
    bad = _query(server, "service::human_microarray_expression[probes$eq1]")
    assert bad["success"] is False and "1" in bad["msg"]


def test_structure_graph_built_from_ontology(server: MirrorServer) -> None:
    status, _, body = _get(f"{server.url}/api/v2/structure_graph_download/10.json")
    data = json.loads(body)
    assert status == 200 and data["success"] is True
    (root,) = data["msg"]
    assert root["id"] == 4005 and root["parent_structure_id"] is None

    def walk(node: dict[str, Any], parent: int | None) -> list[int]:
        assert set(node) >= {"id", "atlas_id", "ontology_id", "acronym", "name",
                             "color_hex_triplet", "graph_order", "st_level", "hemisphere_id",
                             "parent_structure_id", "children"}
        assert node["parent_structure_id"] == parent
        return [node["id"]] + [i for c in node["children"] for i in walk(c, node["id"])]

    assert walk(root, None) == [int(r[0]) for r in ONTOLOGY]   # depth-first = graph order here
    assert _get(f"{server.url}/api/v2/structure_graph_download/1.json")[0] == 404


def test_structure_graph_file_is_served_verbatim(raw_dir: Path, tmp_path: Path) -> None:
    for item in raw_dir.iterdir():
        (tmp_path / item.name).symlink_to(item)
    content = b'{"success": true, "id": 0, "msg": [{"id": 1}]}'
    (tmp_path / "structure_graph_10.json").write_bytes(content)

    async def run() -> None:
        async with MirrorServer(tmp_path) as srv, aiohttp.ClientSession() as session:
            async with session.get(f"{srv.url}/api/v2/structure_graph_download/10.json") as r:
                assert r.status == 200 and await r.read() == content

    asyncio.run(run())


# --------------------------------------------------------------------------------------------
# the CLI and generated data
# --------------------------------------------------------------------------------------------
def test_serve_cli_applies_fault_options(raw_dir: Path) -> None:
    import subprocess
    import sys

    code = "from atlas_engine.cli import main; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", str(raw_dir), "--port", "0", "--fail-first", "1",
         "--fail-status", "429", "--retry-after", "2", "--ignore-range"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        status, headers, _ = _get(f"{url}/api/v2/well_known_file_download/{EXTRA_ID}")
        assert (status, headers["Retry-After"]) == (429, "2")
        status, _, body = _get(f"{url}/api/v2/well_known_file_download/{EXTRA_ID}",
                               headers={"Range": "bytes=5-9"})
        assert (status, len(body)) == (200, EXTRA_SIZE)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_generated_data_round_trip(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    synth = pytest.importorskip("atlas_engine.testing.synth")
    synth.write_ahba(tmp_path, probes=60, samples_fraction=0.02, seed=3, donors="12876,15496")
    zpath = tmp_path / get_donor(15496).zip_name
    with zipfile.ZipFile(zpath) as zf:
        probes = pd.read_csv(zf.open("Probes.csv"), dtype={"entrez_id": "Int64"})
        raw = zf.read("MicroarrayExpression.csv").decode().splitlines()
        annot = pd.read_csv(zf.open("SampleAnnot.csv"))
    rows = {int(line.split(",", 1)[0]): line.split(",")[1:] for line in raw}

    async def run() -> None:
        async with MirrorServer(tmp_path) as srv, aiohttp.ClientSession() as session:
            async def q(text: str) -> dict[str, Any]:
                url = f"{srv.url}/api/v2/data/query.json"
                async with session.get(url, params={"q": text}) as r:
                    return await r.json()

            genes = await q("model::Gene,rma::options[num_rows$eq'all']")
            assert genes["total_rows"] == probes["gene_id"].nunique()
            wanted = probes["probe_id"].tolist()[::20]
            ids = ",".join(map(str, wanted))
            data = await q(f"service::human_microarray_expression[probes$eq{ids}][donors$eq15496]")
            msg = data["msg"]
            assert [p["id"] for p in msg["probes"]] == wanted
            for p in msg["probes"]:
                assert p["expression_level"] == rows[p["id"]]
            assert [s["sample"]["well"] for s in msg["samples"]] == annot["well_id"].tolist()

    asyncio.run(run())
