"""Named dispatch tables: look a method up by name, or fail with the list of valid names."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from ..errors import ConfigError

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """A mapping ``name -> function`` whose lookup error lists every valid name.

    Parameters
    ----------
    kind : str
        What the names denote (used in error messages), e.g. ``"normalisation"``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._funcs: dict[str, F] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *aliases: str) -> Callable[[F], F]:
        def deco(func: F) -> F:
            self._funcs[name] = func
            for a in aliases:
                self._aliases[a] = name
            return func

        return deco

    def canonical(self, name: str) -> str:
        """The canonical name of ``name`` (resolving aliases)."""
        key = str(name)
        key = self._aliases.get(key, key)
        if key not in self._funcs:
            raise ConfigError(
                f"unknown {self.kind} method {name!r}; valid: {', '.join(self.names())}"
            )
        return key

    def get(self, name: str) -> F:
        return self._funcs[self.canonical(name)]

    def names(self, aliases: bool = False) -> list[str]:
        out = list(self._funcs)
        if aliases:
            out += list(self._aliases)
        return out

    def __contains__(self, name: object) -> bool:
        return name in self._funcs or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._funcs)


def check_choice(kind: str, value: object, choices: tuple | list) -> None:
    """Raise :class:`ConfigError` naming the valid choices when ``value`` is not one."""
    if value not in choices:
        raise ConfigError(f"unknown {kind} {value!r}; valid: {', '.join(map(str, choices))}")


def fill_choices(**names: Sequence[str | None]) -> Callable[[F], F]:
    """Write each parameter's valid values into the decorated function's docstring: every
    ``<choices:NAME>`` becomes the names listed for ``NAME`` (quoted, comma-separated), so the
    documentation lists what the registries and constants accept and cannot drift from them."""

    def deco(func: F) -> F:
        doc = func.__doc__ or ""
        for key, values in names.items():
            text = ", ".join("None" if v is None else f'``"{v}"``' for v in values)
            doc = doc.replace(f"<choices:{key}>", text)
        func.__doc__ = doc
        return func

    return deco
