"""``atlas-engine query``: one Allen RMA model or service query, paged, as JSON or CSV."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError


def _split(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _records_csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow(["" if r.get(c) is None else
                         json.dumps(r[c]) if isinstance(r.get(c), (dict, list)) else r[c]
                         for c in columns])
    return buf.getvalue()


def _expression_csv(msg: dict[str, Any]) -> str:
    """human_microarray_expression → one row per probe, one column per sample."""
    samples = msg["samples"]
    labels = [f"{(s.get('donor') or {}).get('id', '')}:{(s.get('sample') or {}).get('well', i)}"
              for i, s in enumerate(samples)]
    rows = []
    for p in msg["probes"]:
        row = {"probe_id": p.get("id"), "probe_name": p.get("name"),
               "gene_symbol": p.get("gene-symbol")}
        row.update(zip(labels, p.get("expression_level", []), strict=False))
        rows.append(row)
    return _records_csv(rows)


#: parameters of service::human_microarray_expression (the Allen API's, same names)
EXPRESSION_PARAMS = ("probes", "donors", "structures")
_BRACKET = re.compile(r"\[([A-Za-z_]+)\$(eq|in)([^\]]*)\]")
_OPTION_KEYS = {"only": "only", "except": "except_", "order": "order", "tabular": "tabular",
                "num_rows": "num_rows", "start_row": "start_row", "debug": "debug",
                "count": "count"}


def _brackets(text: str, where: str) -> dict[str, str]:
    """``[a$eq1][b$in2,3]`` → ``{"a": "1", "b": "2,3"}`` (quotes around a value dropped)."""
    found = _BRACKET.findall(text)
    if "".join(f"[{k}${op}{v}]" for k, op, v in found) != text:
        raise ConfigError(f"{where}: cannot read {text!r} (expected [name$eqvalue]...)")
    return {k: v.strip("'\"") for k, _, v in found}


def parse_target(target: str) -> dict[str, Any]:
    """Read TARGET in any of the forms the Allen API documents: ``Gene``, ``model::Gene``,
    a whole stage string ``model::Donor,rma::criteria,[id$eq9861],rma::include,...,
    rma::options[only$eq'id,name']``, ``service::NAME`` or ``service::NAME[k$eqV][...]``.
    Returns ``{"kind": "model"|"service", "name", "criteria", "include", "options"
    (model) | "params" (service)}``."""
    text = target.strip()
    if text.startswith("service::"):
        name, _, rest = text[len("service::"):].partition("[")
        params = _brackets("[" + rest, target) if rest else {}
        return {"kind": "service", "name": name.strip(), "params": params}
    if text.startswith("model::"):
        text = text[len("model::"):]
    head, *stages = re.split(r",\s*rma::", text)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", head.strip()):
        raise ConfigError(f"query {target!r}: expected a model name (Gene, model::Probe), a "
                          "stage string (model::Donor,rma::criteria,[id$eq9861]) or "
                          "service::NAME")
    out: dict[str, Any] = {"kind": "model", "name": head.strip(), "criteria": [],
                           "include": [], "options": {}}
    for stage in stages:
        kind, _, body = stage.partition(",") if not stage.startswith("options") else (
            "options", "", stage[len("options"):])
        if kind in ("criteria", "include"):
            out[kind].append(body.strip())
        elif kind == "options":
            for key, value in _brackets(body.strip(), target).items():
                if key not in _OPTION_KEYS:
                    raise ConfigError(f"query {target!r}: unknown rma::options {key!r} "
                                      f"(valid: {', '.join(_OPTION_KEYS)})")
                out["options"][_OPTION_KEYS[key]] = (value.split(",") if key in (
                    "only", "except", "order", "tabular") else value)
        else:
            raise ConfigError(f"query {target!r}: unknown stage rma::{kind} (expected "
                              "rma::criteria, rma::include or rma::options)")
    return out


@click.command("query")
@click.argument("target")
@click.option("--criteria", multiple=True, help="RMA criteria, e.g. \"[acronym$in'BDNF']\".")
@click.option("--include", multiple=True, help="Associations to include (model queries).")
@click.option("--only", multiple=True, help="Fields to keep (comma-separated).")
@click.option("--except", "except_", multiple=True, help="Fields to drop (comma-separated).")
@click.option("--order", multiple=True, help="Sort fields (default: 'id', for stable paging).")
@click.option("--page-size", default=2000, show_default=True, type=click.IntRange(1, 25000),
              help="Rows per request.")
@click.option("--probes", help="service::human_microarray_expression: probe ids (a,b,...).")
@click.option("--donors", help="service::human_microarray_expression: donor ids.")
@click.option("--structures", help="service::human_microarray_expression: structure ids.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Other service parameters.")
@click.option("--base-url", default=None, help="API server (default: the Allen API).")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Write here instead of stdout.")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Cache responses here (by URL); default: no cache.")
def query_cmd(target: str, criteria: tuple[str, ...], include: tuple[str, ...],
              only: tuple[str, ...], except_: tuple[str, ...], order: tuple[str, ...],
              page_size: int, probes: str | None, donors: str | None, structures: str | None,
              params: tuple[str, ...], base_url: str | None, fmt: str, out: str | None,
              cache_dir: str | None) -> None:
    """Run an RMA query against the Allen API: TARGET is a model (Gene, model::Probe,
    CellType) or a
    service (service::human_microarray_expression). Model queries are paged until done.

    TARGET may also be a whole RMA stage string as the Allen documentation writes them,
    e.g. "model::Donor,rma::criteria,products[id\\$eq2]" or
    "service::human_microarray_expression[probes\\$eq1023146][donors\\$eq15496]".

    \b
    Examples:
      atlas-engine query Gene --criteria "[acronym\\$in'BDNF','COMT']"
      atlas-engine query Structure --criteria "[graph_id\\$eq10]" --format csv --out s.csv
      atlas-engine query CellType --criteria "[data_set\\$eq'human-m1']" --format csv
      atlas-engine query service::human_microarray_expression --probes 1023146 --donors 15496
    """
    from ..config import Config
    from ..fetch.rma import RmaClient
    from ..fetch.sync import run_sync
    from ..sources.rma import model_query, service_query

    base = base_url or Config.from_env().base_url

    parsed = parse_target(target)
    if parsed["kind"] == "service":
        name = parsed["name"]
        raw: dict[str, str] = dict(parsed["params"])
        for key, value in (("probes", probes), ("donors", donors), ("structures", structures)):
            if value:
                raw[key] = value
        for p in params:
            if "=" not in p:
                raise ConfigError(f"--param {p!r}: expected NAME=VALUE")
            k, v = p.split("=", 1)
            raw[k.strip()] = v.strip()
        kw: dict[str, object] = {}
        if name == "human_microarray_expression":
            unknown = [k for k in raw if k not in EXPRESSION_PARAMS]
            if unknown:
                raise ConfigError(
                    f"service::human_microarray_expression has no parameter {unknown[0]!r}: it "
                    "takes probes (probe ids, required), donors and structures, e.g. --probes "
                    "1023146 --donors 15496; the probes of a gene: atlas-engine query Probe "
                    "--criteria \"[gene_id\\$eq18339]\"")
            for key, value in raw.items():
                try:
                    kw[key] = [int(v) for v in _split((value,))]
                except ValueError:
                    raise ConfigError(f"human_microarray_expression {key}: expected ids "
                                      f"separated by commas, got {value!r}") from None
            if "probes" not in kw:
                raise ConfigError("human_microarray_expression needs --probes (probe ids)")
        else:
            kw.update(raw)
    else:
        criteria = tuple(parsed["criteria"]) + criteria
        include = tuple(parsed["include"]) + include
        opts = parsed["options"]
        if "num_rows" in opts or "start_row" in opts:
            raise ConfigError(f"query {target!r}: paging (num_rows, start_row) is done for you; "
                              "leave them out")
        only = tuple(opts.get("only", ())) + only
        except_ = tuple(opts.get("except_", ())) + except_
        order = tuple(opts.get("order", ())) + order

    async def go() -> tuple[Any, str]:
        async with RmaClient(base, cache_dir=cache_dir, page_size=page_size) as client:
            if parsed["kind"] == "service":
                if name == "human_microarray_expression":
                    msg = await client.human_microarray_expression(
                        kw.pop("probes"), kw.pop("donors", None),  # type: ignore[arg-type]
                        kw.pop("structures", None))  # type: ignore[arg-type]
                    return msg, "expression"
                return await client.service(service_query(name, **kw)), "service"
            query = model_query(parsed["name"], list(criteria), list(include), only=_split(only),
                                except_=_split(except_), order=_split(order))
            return await client.model_rows(query, cache=cache_dir is not None), "rows"

    result, shape = run_sync(go())
    if fmt == "json":
        text = json.dumps(result, indent=1) + "\n"
    elif shape == "expression":
        text = _expression_csv(result)
    elif isinstance(result, list) and all(isinstance(r, dict) for r in result):
        text = _records_csv(result)
    else:
        raise ConfigError(f"{target}: the answer is not a table; use --format json")
    if out:
        from ..atomic import atomic_write_bytes

        atomic_write_bytes(Path(out), text.encode())
        n = len(result) if isinstance(result, list) else len(result.get("probes", []))
        click.echo(f"{out}: {n} records", err=True)
    else:
        sys.stdout.write(text)
