"""``atlas-engine query``: one Allen RMA model or service query, paged, as JSON or CSV."""

from __future__ import annotations

import json
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
    """Run an RMA query against the Allen API: TARGET is a model (Gene, model::Probe) or a
    service (service::human_microarray_expression). Model queries are paged until done.

    \b
    Examples:
      atlas-engine query Gene --criteria "[acronym\\$in'BDNF','COMT']"
      atlas-engine query Structure --criteria "[graph_id\\$eq10]" --format csv --out s.csv
      atlas-engine query service::human_microarray_expression --probes 1023146 --donors 15496
    """
    from ..config import Config
    from ..fetch.rma import RmaClient
    from ..fetch.sync import run_sync
    from ..sources.rma import model_query, service_query

    base = base_url or Config.from_env().base_url

    async def go() -> tuple[Any, str]:
        async with RmaClient(base, cache_dir=cache_dir, page_size=page_size) as client:
            if target.startswith("service::"):
                name = target[len("service::"):]
                kw: dict[str, object] = {}
                for key, value in (("probes", probes), ("donors", donors),
                                   ("structures", structures)):
                    if value:
                        kw[key] = [int(v) for v in _split((value,))]
                for p in params:
                    if "=" not in p:
                        raise ConfigError(f"--param {p!r}: expected NAME=VALUE")
                    k, v = p.split("=", 1)
                    kw[k.strip()] = v.strip()
                if name == "human_microarray_expression":
                    if "probes" not in kw:
                        raise ConfigError("human_microarray_expression needs --probes")
                    msg = await client.human_microarray_expression(
                        kw.pop("probes"), kw.pop("donors", None),  # type: ignore[arg-type]
                        kw.pop("structures", None))  # type: ignore[arg-type]
                    return msg, "expression"
                return await client.service(service_query(name, **kw)), "service"
            model = target[len("model::"):] if target.startswith("model::") else target
            query = model_query(model, list(criteria), list(include), only=_split(only),
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
        from ..fetch.manifest import atomic_write_bytes

        atomic_write_bytes(Path(out), text.encode())
        n = len(result) if isinstance(result, list) else len(result.get("probes", []))
        click.echo(f"{out}: {n} records", err=True)
    else:
        sys.stdout.write(text)
