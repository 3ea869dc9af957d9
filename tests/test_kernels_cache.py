"""The kernels' on-disk cache is renewed when a module they call changes (kernels/_cache.py).

numba's own cache checks only the cached function's file: a kernel embedding a jitted function
from another module kept running the other module's old code after an edit."""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from numba.core.dispatcher import Dispatcher

import atlas_engine.kernels as kernels_pkg
from atlas_engine.kernels import _jit
from atlas_engine.kernels._cache import KernelsCache, cached_njit, sources_digest

CALLER = """\
from atlas_engine.kernels._cache import cached_njit
from helper import step


@cached_njit(nogil=True)
def f(x):
    return step(x)
"""


def _helper(increment: str) -> str:
    return f"from numba import njit\n\n\n@njit\ndef step(x):\n    return x + {increment}\n"


def _run(code: Path, env: dict[str, str]) -> tuple[float, int]:
    """``caller.f(1.0)`` in a new process, and how many of its signatures came from the
    on-disk cache."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(code)!r})
        import caller
        value = caller.f(1.0)
        print(value, sum(caller.f.stats.cache_hits.values()))
    """)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    return float(out[0]), int(out[1])


@pytest.mark.parametrize("where", ["in-tree", "NUMBA_CACHE_DIR"])
def test_cached_kernel_follows_an_edit_of_a_module_it_calls(tmp_path: Path, where: str) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "caller.py").write_text(CALLER)
    (code / "helper.py").write_text(_helper("1.0"))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if where == "NUMBA_CACHE_DIR":
        env["NUMBA_CACHE_DIR"] = str(tmp_path / "numba-cache")

    assert _run(code, env) == (2.0, 0)          # compiled, then saved
    assert _run(code, env) == (2.0, 1)          # loaded from the cache
    (code / "helper.py").write_text(_helper("20.0"))
    # plain numba.njit(cache=True) on the caller would load 2.0 again here
    assert _run(code, env) == (21.0, 0)
    assert _run(code, env) == (21.0, 1)
    if where == "NUMBA_CACHE_DIR":
        assert not (code / "__pycache__").exists()
        assert any((tmp_path / "numba-cache").rglob("caller.f-*.nbi"))
    else:
        assert any((code / "__pycache__").glob("caller.f-*.nbi"))


def test_sources_digest_covers_every_module_of_the_directory(tmp_path: Path) -> None:
    dirs = []
    for i, extra in enumerate(["x = 1\n", "x = 2\n", None]):
        d = tmp_path / f"d{i}"
        d.mkdir()
        (d / "a.py").write_text("a = 0\n")
        if extra is not None:
            (d / "b.py").write_text(extra)
        (d / "notes.txt").write_text(f"not a module {i}")
        dirs.append(d)
    digests = [sources_digest(d) for d in dirs]
    assert len(set(digests)) == 3
    same = tmp_path / "same"
    same.mkdir()
    (same / "a.py").write_text("a = 0\n")
    (same / "b.py").write_text("x = 1\n")
    assert sources_digest(same) == digests[0]       # contents and names, not paths or times


def test_every_cached_kernel_uses_the_kernels_stamp() -> None:
    found = []
    for info in pkgutil.iter_modules(kernels_pkg.__path__):
        mod = importlib.import_module(f"atlas_engine.kernels.{info.name}")
        text = Path(mod.__file__).read_text()
        assert re.search(r"(?<![`\w.])(numba\.)?njit\([^)]*cache=True", text) is None, info.name
        found += [v for v in vars(mod).values() if isinstance(v, Dispatcher)
                  and type(v._cache).__name__ != "NullCache"]
    found += list(_jit.SERIAL.values()) + list(_jit.PARALLEL.values())
    assert len(found) > 50
    assert all(isinstance(d._cache, KernelsCache) for d in found)


def test_cached_njit_refuses_a_cache_option() -> None:
    with pytest.raises(TypeError, match="always caches"):
        cached_njit(cache=False)
