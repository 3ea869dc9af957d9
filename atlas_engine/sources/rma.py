"""A pure builder for Allen RMA (RESTful Model Access) query strings.

Stages are joined by ``,`` exactly as AllenSDK's ``RmaApi`` joins them::

    model::Structure,rma::criteria,[graph_id$in10],rma::options[num_rows$eq'all'][count$eqfalse]
    service::human_microarray_expression[donors$eq15496][probes$eq1023146,1023147]

Options are emitted in AllenSDK's order: only, except, tabular, num_rows, start_row, order,
debug, count. Nothing here performs I/O; :mod:`atlas_engine.fetch.rma` sends the queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ..errors import ConfigError

Scalar = str | int | float | bool


def _as_list(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _format_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_format_value(v) for v in value)
    return str(value)


def options_clause(
    *,
    only: str | Iterable[str] | None = None,
    except_: str | Iterable[str] | None = None,
    tabular: str | Iterable[str] | None = None,
    num_rows: int | str | None = None,
    start_row: int | None = None,
    order: str | Iterable[str] | None = None,
    debug: bool | str | None = None,
    count: bool | None = None,
) -> str:
    """``rma::options[...]...`` or ``""`` when no option is set (AllenSDK's order)."""
    parts: list[str] = []
    for key, value in (("only", only), ("except", except_), ("tabular", tabular)):
        items = _as_list(value)
        if items:
            parts.append(f"[{key}$eq{','.join(items)}]")
    if num_rows is not None:
        if isinstance(num_rows, str):
            if num_rows.strip("'") != "all":
                raise ConfigError(f"num_rows {num_rows!r}: expected an int or 'all'")
            parts.append("[num_rows$eq'all']")
        else:
            parts.append(f"[num_rows$eq{int(num_rows)}]")
    if start_row is not None:
        parts.append(f"[start_row$eq{int(start_row)}]")
    orders = _as_list(order)
    if orders:
        parts.append(f"[order$eq{','.join(orders)}]")
    if debug is not None:
        parts.append(f"[debug$eq{debug if isinstance(debug, str) else _format_value(debug)}]")
    if count is not None:
        parts.append(f"[count$eq{_format_value(count)}]")
    return "rma::options" + "".join(parts) if parts else ""


def in_filter(attribute: str, values: Iterable[Scalar], *, quote: bool = True) -> str:
    """``[attr$in'a','b']`` (strings quoted) or ``[attr$in1,2]``."""
    items = [f"'{v}'" if quote and isinstance(v, str) else _format_value(v) for v in values]
    if not items:
        raise ConfigError(f"{attribute}: empty value list; expected at least one value")
    return f"[{attribute}$in{','.join(items)}]"


def eq_filter(attribute: str, value: Scalar) -> str:
    """``[attr$eq'v']`` for strings, ``[attr$eq3]`` for numbers."""
    text = f"'{value}'" if isinstance(value, str) else _format_value(value)
    return f"[{attribute}$eq{text}]"


@dataclass(frozen=True)
class ModelQuery:
    """One ``model::`` stage with its criteria, include and options.

    ``criteria`` and ``include`` are RMA text (several criteria are joined by ``,``).
    """

    model: str
    criteria: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    except_: tuple[str, ...] = ()
    tabular: tuple[str, ...] = ()
    num_rows: int | str | None = None
    start_row: int | None = None
    order: tuple[str, ...] = ()
    debug: bool | str | None = None
    count: bool | None = None

    def page(self, start_row: int, num_rows: int, order: Sequence[str] | None = None,
             ) -> ModelQuery:
        """The same query restricted to one page (``count=false``; ``order`` kept or set)."""
        return replace(self, start_row=start_row, num_rows=num_rows,
                       order=tuple(order) if order is not None and not self.order else self.order,
                       count=False)

    def stages(self) -> str:
        out = f"model::{self.model}"
        if self.criteria:
            out += ",rma::criteria," + ",".join(self.criteria)
        if self.include:
            out += ",rma::include," + ",".join(self.include)
        opts = options_clause(only=self.only, except_=self.except_, tabular=self.tabular,
                              num_rows=self.num_rows, start_row=self.start_row,
                              order=self.order, debug=self.debug, count=self.count)
        if opts:
            out += "," + opts
        return out

    __str__ = stages


def model_query(
    model: str,
    criteria: str | Iterable[str] | None = None,
    include: str | Iterable[str] | None = None,
    **options: object,
) -> ModelQuery:
    """Build a :class:`ModelQuery`; options as in :func:`options_clause`."""
    if not model or "::" in model:
        raise ConfigError(f"model {model!r}: expected a model name such as 'Gene' "
                          "(not empty, no '::')")
    kwargs: dict[str, object] = {}
    for key in ("only", "except_", "tabular", "order"):
        if key in options:
            kwargs[key] = tuple(_as_list(options.pop(key)))  # type: ignore[arg-type]
    for key in ("num_rows", "start_row", "debug", "count"):
        if key in options:
            kwargs[key] = options.pop(key)
    if options:
        raise ConfigError(f"unknown RMA options {sorted(options)}: expected only "
                          "only, except_, tabular, order, num_rows, start_row, debug, count")
    return ModelQuery(model, tuple(_as_list(criteria)), tuple(_as_list(include)),
                      **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ServiceQuery:
    """One ``service::`` stage; parameters are emitted sorted by name, lists joined by ``,``."""

    name: str
    params: Mapping[str, object] = field(default_factory=dict)

    def stages(self) -> str:
        filters = "".join(
            f"[{key}$eq{_format_value(self.params[key])}]"
            for key in sorted(self.params) if self.params[key] is not None
        )
        return f"service::{self.name}{filters}"

    __str__ = stages


def service_query(name: str, **params: object) -> ServiceQuery:
    """``service::name[a$eq..][b$eq..]`` with parameters sorted by name (AllenSDK's rule)."""
    if not name or "::" in name:
        raise ConfigError(f"service {name!r}: expected a service name such as "
                          "'human_microarray_expression' (not empty, no '::')")
    return ServiceQuery(name, dict(params))
