"""Modules a reader can hold: no module of the package grows past :data:`MAX_LINES` lines, and
every numba kernel of the engine lives in ``atlas_engine/kernels``."""

from __future__ import annotations

import ast
from pathlib import Path

import atlas_engine

PACKAGE = Path(atlas_engine.__file__).parent
#: the most lines a module of the package may have
MAX_LINES = 500


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_is_longer_than_a_reader_can_hold():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these modules (over {MAX_LINES} lines): {long}"


def _numba_decorated(tree: ast.AST) -> list[str]:
    """Names of the functions in ``tree`` decorated with numba's ``njit`` / ``jit``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                name = target.attr if isinstance(target, ast.Attribute) else getattr(
                    target, "id", "")
                if name in ("njit", "jit", "vectorize", "guvectorize"):
                    found.append(node.name)
    return found


def test_numba_kernels_live_in_kernels():
    outside = {}
    for p in _modules():
        rel = p.relative_to(PACKAGE)
        if rel.parts[0] == "kernels":
            continue
        names = _numba_decorated(ast.parse(p.read_text(encoding="utf-8")))
        if names:
            outside[str(rel)] = names
    assert not outside, f"numba kernels outside atlas_engine/kernels: {outside}"


def test_the_kernel_check_sees_a_kernel():
    code = ("import numba\nfrom numba import njit\n@njit(cache=True)\ndef a(x):\n    return x\n"
            "@numba.njit\ndef b(x):\n    return x\ndef c(x):\n    return x\n")
    assert _numba_decorated(ast.parse(code)) == ["a", "b"]
