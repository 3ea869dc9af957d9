"""Parser of the RMA query subset the local mirror answers: :class:`RmaError`, the syntax tree
(:class:`Condition`, :class:`Criterion`, :class:`Query`), the quote- and bracket-aware lexing
helpers and :func:`parse_query`.

The query language is described in :mod:`.server_rma`, which evaluates the parsed queries.
Pure: text in, syntax tree out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import AtlasEngineError

_OPS = ("eq", "ne", "li", "il", "gt", "lt", "ge", "le", "in")


class RmaError(AtlasEngineError, ValueError):
    """A query the mirror cannot answer (bad model, attribute, value, ...).

    ``parse`` is true when the text could not even be parsed (the server answers HTTP 400);
    otherwise the server answers HTTP 200 with ``success: false``.
    """

    def __init__(self, message: str, *, parse: bool = False) -> None:
        super().__init__(message)
        self.parse = parse


# --------------------------------------------------------------------------------------------
# syntax tree
# --------------------------------------------------------------------------------------------
@dataclass
class Condition:
    """One ``[attr$op value]`` filter; ``op`` is ``None`` for the existence test ``[attr]``."""

    attr: str
    op: str | None
    raw: str = ""

    def values(self) -> list[str]:
        """The value list (``$in``, service lists): top-level commas split, quotes removed."""
        return [unquote(v) for v in split_top(self.raw) if v.strip() != ""]

    def value(self) -> str:
        return unquote(self.raw)


@dataclass
class Criterion:
    """Conditions on the record itself (``assoc is None``) or on an association."""

    assoc: str | None
    conditions: list[Condition] = field(default_factory=list)
    nested: list[Criterion] = field(default_factory=list)


@dataclass
class Query:
    kind: str                     # "model" | "service"
    name: str
    criteria: list[Criterion] = field(default_factory=list)
    params: list[Condition] = field(default_factory=list)      # service parameters
    options: dict[str, str] = field(default_factory=dict)      # option name -> raw value
    include: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# lexing helpers
# --------------------------------------------------------------------------------------------
def split_top(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside ``[]``, ``()`` and single/double quotes."""
    out: list[str] = []
    depth = 0
    quote: str | None = None
    start = 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
            if depth < 0:
                raise RmaError(f"unbalanced {ch!r} at character {i + 1} of {text!r}", parse=True)
        elif ch == sep and depth == 0:
            out.append(text[start:i])
            start = i + 1
    if quote:
        raise RmaError(f"unterminated quote in {text!r}", parse=True)
    if depth:
        raise RmaError(f"unbalanced brackets in {text!r}", parse=True)
    out.append(text[start:])
    return out


def unquote(text: str) -> str:
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    return t


def _match_close(text: str, start: int) -> int:
    """Index of the bracket closing the one at ``start`` (quote-aware)."""
    opener = text[start]
    closer = "]" if opener == "[" else ")"
    depth = 0
    quote: str | None = None
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == opener:
            depth += 1
        elif ch == closer:
            depth -= 1
            if depth == 0:
                return i
    raise RmaError(f"no closing {closer!r} for {opener!r} at character {start + 1} of {text!r}",
                   parse=True)


def _blocks(text: str, pos: int) -> tuple[list[str], int]:
    """Consecutive ``[...]`` blocks starting at ``pos``; returns their inner texts and the end."""
    out: list[str] = []
    while pos < len(text) and text[pos] == "[":
        end = _match_close(text, pos)
        out.append(text[pos + 1:end])
        pos = end + 1
    return out, pos


def strip_table(name: str) -> str:
    """``"structures.graph_order"`` → ``"graph_order"``."""
    return name.strip().rsplit(".", 1)[-1]


def parse_condition(inner: str) -> Condition:
    inner = inner.strip()
    if "$" not in inner:
        if not re.fullmatch(r"[A-Za-z_][\w.]*", inner):
            raise RmaError(f"cannot read filter [{inner}] (expected [attr$op value])", parse=True)
        return Condition(strip_table(inner), None)
    attr, rest = inner.split("$", 1)
    op = rest[:2].lower()
    if op not in _OPS or not re.fullmatch(r"[A-Za-z_][\w.]*", attr.strip()):
        raise RmaError(
            f"cannot read filter [{inner}] (expected [attr$op value] with op one of "
            f"{', '.join('$' + o for o in _OPS)})", parse=True)
    return Condition(strip_table(attr), op, rest[2:])


_NAME_RE = re.compile(r"[A-Za-z_]\w*")


def parse_criterion(text: str) -> Criterion:
    """``[a$eq1][b$eq2]``, ``gene[acronym$eq'X']`` or ``gene(products[id$eq2])``."""
    text = text.strip()
    pos = 0
    assoc = None
    m = _NAME_RE.match(text)
    if m:
        assoc = m.group(0)
        pos = m.end()
    blocks, pos = _blocks(text, pos)
    crit = Criterion(assoc, [parse_condition(b) for b in blocks])
    if pos < len(text) and text[pos] == "(":
        end = _match_close(text, pos)
        if assoc is None:
            raise RmaError(f"nested criteria need an association name: {text!r}", parse=True)
        crit.nested = [parse_criterion(t) for t in split_top(text[pos + 1:end]) if t.strip()]
        pos = end + 1
    if pos != len(text) or (assoc is None and not blocks):
        raise RmaError(f"cannot read criteria {text!r}", parse=True)
    return crit


def parse_query(text: str) -> Query:
    """Parse a ``criteria=``/``q=`` value into a :class:`Query`."""
    if not text or not text.strip():
        raise RmaError("empty query (expected model::Name or service::name)", parse=True)
    query: Query | None = None
    section = None
    for token in (t.strip() for t in split_top(text.strip())):
        if not token:
            continue
        if token.startswith(("model::", "service::")):
            if query is not None:
                raise RmaError("only one model:: or service:: stage per query is served",
                               parse=True)
            kind, rest = token.split("::", 1)
            m = _NAME_RE.match(rest)
            if not m:
                raise RmaError(f"cannot read stage {token!r}", parse=True)
            query = Query(kind, m.group(0))
            tail = rest[m.end():]
            if kind == "service":
                blocks, end = _blocks(tail, 0)
                if end != len(tail):
                    raise RmaError(f"cannot read service parameters in {token!r}", parse=True)
                query.params = [parse_condition(b) for b in blocks]
                section = "service"
            else:
                if tail:
                    query.criteria.append(parse_criterion(tail))
                section = "criteria"
            continue
        if query is None:
            raise RmaError(f"query must start with model:: or service::, got {token!r}",
                           parse=True)
        if token.startswith("rma::"):
            stage = _NAME_RE.match(token[5:])
            stage_name = stage.group(0) if stage else ""
            tail = token[5 + len(stage_name):]
            if stage_name == "criteria":
                section = "criteria"
                if tail:
                    query.criteria.append(parse_criterion(tail))
            elif stage_name == "include":
                section = "include"
                if tail:
                    query.include.append(tail)
            elif stage_name == "options":
                section = "options"
                blocks, end = _blocks(tail, 0)
                if end != len(tail):
                    raise RmaError(f"cannot read options {token!r}", parse=True)
                for b in blocks:
                    cond = parse_condition(b)
                    query.options[cond.attr.lower()] = cond.raw if cond.op else "true"
            else:
                raise RmaError(f"unsupported stage rma::{stage_name}", parse=True)
            continue
        if "::" in token.split("[", 1)[0]:
            raise RmaError(f"unsupported stage {token.split('[', 1)[0]!r}", parse=True)
        if section == "criteria" and query.kind == "model":
            query.criteria.append(parse_criterion(token))
        elif section == "include":
            query.include.append(token)
        else:
            raise RmaError(f"unexpected {token!r} after a {section} stage", parse=True)
    assert query is not None
    return query
