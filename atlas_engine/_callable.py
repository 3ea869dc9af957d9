"""Subpackages that can be called: ``ae.convert(...)`` next to ``atlas_engine.convert.donor``.

``fetch``, ``convert`` and ``aggregate`` are both subpackages and the package's verbs. Python
binds a subpackage to its parent's attribute of the same name when it is imported, so a plain
function there would be replaced by the module; instead the module itself becomes callable and
forwards to the verb (imported on the first call).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
from typing import Any


class _VerbModule(types.ModuleType):
    """A module whose call forwards to ``__verb__`` (``"module:function"``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__dict__["_verb_target"]()(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:  # for help() and IDEs
        return inspect.signature(self.__dict__["_verb_target"]())


def make_callable(module_name: str, target: str) -> None:
    """Make the module ``module_name`` callable as ``target`` (``"pkg.module:function"``)."""
    mod_name, func_name = target.split(":")

    def resolve() -> Any:
        return getattr(importlib.import_module(mod_name), func_name)

    module = sys.modules[module_name]
    module.__dict__["_verb_target"] = resolve
    module.__class__ = _VerbModule
