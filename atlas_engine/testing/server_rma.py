"""Parser and evaluator for the subset of Allen RMA queries the local mirror answers.

The query language (shared allen_formats.md §5.2) is a comma-separated list of stages::

    model::Probe,rma::criteria,[probe_type$eq'DNA'],gene[acronym$eq'SLC6A2'],
        rma::include,gene,rma::options[num_rows$eq'all'][order$eq'probes.id']
    service::human_microarray_expression[probes$eq1023146,1023147][donors$eq15496]

Supported here:

* ``model::Donor|Gene|Probe|Structure|Product|Specimen|CellType`` with ``rma::criteria`` filters
  ``[attr$op value]`` (``$eq $ne $li $il $gt $lt $ge $le $in``; ``*`` or ``%`` are the
  ``$li``/``$il`` wildcards, both case-insensitive), a bare ``[attr]`` (not null), and the
  associations ``gene``/``genes`` (Probe → Gene), ``probes`` (Gene → Probe) and ``products``
  (AHBA records belong to the Human Brain Microarray product, id 2; BrainSpan donors and
  specimens to the Developing Human Transcriptome, id 24), ``donor`` (Specimen → Donor) and
  ``structure`` (Specimen → its BrainSpan structure), nested as ``gene(products[id$eq2])`` or
  ``donor(products[id$eq24])``. Unknown attributes, models and associations are errors.
* ``rma::include`` is accepted and ignored (records never carry associated objects).
* ``rma::options`` ``[num_rows$eqN|'all']``, ``[start_row$eqN]``, ``[order$eqa,b+desc]``
  (table prefixes such as ``structures.`` are dropped; ``+desc``, `` desc`` or ``$desc``),
  ``[count$eqfalse]`` (``total_rows`` is then the page's own row count: the real value is
  UNCONFIRMED), ``[only$eq...]``, ``[except$eq...]``; ``tabular``, ``debug`` and any other
  option are accepted and ignored.
* ``service::human_microarray_expression`` with ``probes`` (required), ``donors`` and
  ``structures`` (a sample matches when one of the ids is on its structure_id_path).

This module is pure: it parses text and evaluates it against a :class:`Tables` provider.
The parser (:func:`parse_query` and its syntax tree) is in :mod:`.server_rma_parse`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .server_rma_parse import (
    Condition,
    Criterion,
    Query,
    RmaError,
    parse_condition,
    parse_criterion,
    parse_query,
    split_top,
    strip_table,
    unquote,
)

__all__ = [
    "DEFAULT_NUM_ROWS", "MODELS", "Condition", "Criterion", "Query", "Record", "Result",
    "RmaError", "Tables", "evaluate", "parse_condition", "parse_criterion", "parse_query",
    "split_top", "strip_table", "unquote", "zscores",
]

#: Rows returned when a query names no ``num_rows``. UNCONFIRMED on the real server (the value
#: widely assumed by clients, shared allen_formats.md §5.4).
DEFAULT_NUM_ROWS = 50


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------
Record = dict[str, Any]


class Tables(Protocol):
    """What the evaluator needs from the data layer (see ``server_data.MirrorData``)."""

    def table(self, model: str) -> list[Record]: ...
    def related(self, model: str, assoc: str, record: Record) -> tuple[str, list[Record]]: ...
    def microarray_expression(self, probes: list[int], donors: list[int] | None,
                              structures: list[int] | None) -> dict[str, list[Record]]: ...


MODELS = ("Donor", "Gene", "Probe", "Structure", "Product", "Specimen", "CellType")


def _typed(value: str, example: Any, attr: str) -> Any:
    if value.lower() == "null":
        return None
    if isinstance(example, bool):
        if value.lower() in ("true", "t", "1"):
            return True
        if value.lower() in ("false", "f", "0"):
            return False
        raise RmaError(f"attribute {attr} expects true/false, got {value!r}")
    if isinstance(example, int):
        try:
            return int(value)
        except ValueError:
            raise RmaError(f"attribute {attr} expects an integer, got {value!r}") from None
    if isinstance(example, float):
        try:
            return float(value)
        except ValueError:
            raise RmaError(f"attribute {attr} expects a number, got {value!r}") from None
    return value


def _like(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"[*%]", pattern)
    return re.compile(".*".join(re.escape(p) for p in parts), re.IGNORECASE | re.DOTALL)


def _example(records: Sequence[Record], attr: str) -> Any:
    for r in records:
        v = r.get(attr)
        if v is not None:
            return v
    return ""


def _condition_test(cond: Condition, model: str, records: Sequence[Record],
                    fields: set[str]) -> Callable[[Record], bool]:
    attr = cond.attr
    if attr not in fields:
        raise RmaError(f"unknown attribute {attr!r} for model {model} "
                       f"(known: {', '.join(sorted(fields))})")
    example = _example(records, attr)
    op = cond.op
    if op is None:
        return lambda r: r.get(attr) is not None
    if op in ("li", "il"):
        rx = _like(cond.value())
        return lambda r: r.get(attr) is not None and rx.fullmatch(str(r[attr])) is not None
    if op == "in":
        wanted = {_typed(v, example, attr) for v in cond.values()}
        return lambda r: r.get(attr) in wanted
    target = _typed(cond.value(), example, attr)
    if op == "eq":
        return lambda r: r.get(attr) == target
    if op == "ne":
        return lambda r: r.get(attr) != target
    compare = {"gt": lambda a, b: a > b, "lt": lambda a, b: a < b,
               "ge": lambda a, b: a >= b, "le": lambda a, b: a <= b}[op]
    if target is None:
        raise RmaError(f"${op} needs a value for {attr}")
    return lambda r: r.get(attr) is not None and compare(r[attr], target)


def _criterion_test(crit: Criterion, model: str, tables: Tables) -> Callable[[Record], bool]:
    if crit.assoc is None:
        records = tables.table(model)
        fields = set().union(*(r.keys() for r in records)) if records else set()
        tests = [_condition_test(c, model, records, fields) for c in crit.conditions]
        return lambda r: all(t(r) for t in tests)

    cache: dict[str, Callable[[Record], bool]] = {}

    def test(record: Record) -> bool:
        other, related = tables.related(model, crit.assoc or "", record)
        if other not in cache:
            inner = Criterion(None, crit.conditions)
            parts = [_criterion_test(inner, other, tables)]
            parts += [_criterion_test(n, other, tables) for n in crit.nested]
            cache[other] = lambda r: all(p(r) for p in parts)
        return any(cache[other](r) for r in related)

    return test


def _order_key(value: Any) -> tuple[int, Any]:
    # Nulls sort last ascending; numbers before strings so mixed columns still sort.
    if value is None:
        return (2, 0)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))


def _apply_order(rows: list[Record], spec: str, model: str) -> list[Record]:
    keys: list[tuple[str, bool]] = []
    for item in split_top(spec):
        text = unquote(item).strip()
        if not text:
            continue
        desc = False
        m = re.match(r"^(.*?)(?:[+ $](asc|desc))$", text, re.IGNORECASE)
        if m:
            text, desc = m.group(1), m.group(2).lower() == "desc"
        keys.append((strip_table(text), desc))
    fields = set().union(*(r.keys() for r in rows)) if rows else set()
    out = list(rows)
    for attr, desc in reversed(keys):
        if rows and attr not in fields:
            raise RmaError(f"cannot order {model} by unknown attribute {attr!r}")
        out.sort(key=lambda r, a=attr: _order_key(r.get(a)), reverse=desc)
    return out


def _int_option(options: dict[str, str], name: str, default: int | None) -> int | None:
    if name not in options:
        return default
    text = unquote(options[name])
    if name == "num_rows" and text.lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise RmaError(f"option {name} expects an integer{' or all' if name == 'num_rows' else ''}"
                       f", got {text!r}") from None
    if value < 0:
        raise RmaError(f"option {name} must not be negative, got {value}")
    return value


@dataclass
class Result:
    """One answer: ``rows`` is a list of records or the service's msg object."""

    msg: Any
    start_row: int
    num_rows: int
    total_rows: int


def evaluate(query: Query, tables: Tables, *, overstate_total_rows: int = 0) -> Result:
    """Run a parsed query; raises :class:`RmaError` for queries the data cannot answer."""
    if query.kind == "service":
        return _evaluate_service(query, tables)
    model = query.name
    if model not in MODELS:
        raise RmaError(f"unknown model {model!r} (served: {', '.join(MODELS)})")
    rows = tables.table(model)
    tests = [_criterion_test(c, model, tables) for c in query.criteria]
    rows = [r for r in rows if all(t(r) for t in tests)]
    if "order" in query.options:
        rows = _apply_order(rows, query.options["order"], model)
    start = _int_option(query.options, "start_row", 0) or 0
    num = _int_option(query.options, "num_rows", DEFAULT_NUM_ROWS)
    page = rows[start:] if num is None else rows[start:start + num]
    if "only" in query.options:
        keep = [strip_table(unquote(k)) for k in split_top(query.options["only"]) if k.strip()]
        page = [{k: r[k] for k in keep if k in r} for r in page]
    if "except" in query.options:
        drop = {strip_table(unquote(k)) for k in split_top(query.options["except"]) if k.strip()}
        page = [{k: v for k, v in r.items() if k not in drop} for r in page]
    if unquote(query.options.get("count", "true")).lower() == "false":
        # No count query: the total is only what this response holds (UNCONFIRMED choice).
        total = len(page)
    else:
        total = len(rows) + overstate_total_rows
    return Result(page, start, len(page), total)


def _int_list(cond: Condition) -> list[int]:
    try:
        return [int(v) for v in cond.values()]
    except ValueError:
        raise RmaError(f"parameter {cond.attr} expects integers, got {cond.raw!r}") from None


def _evaluate_service(query: Query, tables: Tables) -> Result:
    if query.name != "human_microarray_expression":
        raise RmaError(f"unknown service {query.name!r} (served: human_microarray_expression)")
    params: dict[str, Condition] = {}
    for cond in query.params:
        if cond.op not in ("eq", "in"):
            raise RmaError(f"service parameter {cond.attr} takes $eq or $in")
        params[cond.attr] = cond
    unknown = set(params) - {"probes", "donors", "structures", "start_row", "num_rows"}
    if unknown:
        raise RmaError(f"unknown parameter(s) {sorted(unknown)} for human_microarray_expression")
    if "probes" not in params:
        raise RmaError("human_microarray_expression needs [probes$eq...]")
    probes = list(dict.fromkeys(_int_list(params["probes"])))
    donors = _int_list(params["donors"]) if "donors" in params else None
    structures = _int_list(params["structures"]) if "structures" in params else None
    msg = tables.microarray_expression(probes, donors, structures)
    n = len(msg["probes"])
    return Result(msg, 0, n, n)


def zscores(values: Sequence[float]) -> list[str]:
    """Z-score of each value across ``values`` (population SD), written as ``repr`` strings.

    A constant row (SD 0) gives ``"0.0"`` for each value. The real server's exact formula is
    UNCONFIRMED; population SD is the conventional choice.
    """
    n = len(values)
    if n == 0:
        return []
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / n)
    if sd == 0 or not math.isfinite(sd):
        return ["0.0"] * n
    return [repr((v - mean) / sd) for v in values]
