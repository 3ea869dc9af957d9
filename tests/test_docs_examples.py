"""Every example in README.md and docs/*.md runs as written on the demo data.

The ```bash and ```python blocks of each document are run in order, in one working folder per
document prepared as the README assumes: the folder where ``atlas-engine demo --out
demo-output`` ran (the demo is made once per session, at a small scale). Bash blocks run with
``bash -e``; the Python blocks of a document share one interpreter, like a user following
the page in a console. ``atlas-engine`` and ``python`` are this checkout's.

The Allen servers are not reachable from tests: the session serves the demo's mirror (with
BrainSpan and GTEx files) on loopback and points ``ATLAS_ENGINE_BASE_URL`` /
``ATLAS_ENGINE_BRAINSPAN_URL`` / ``ATLAS_ENGINE_GTEX_URL`` at it — the documented way to use a mirror — so examples that name the real API run against
the mirror. The one change made to a block is the port of ``atlas-engine serve`` examples
(8765 becomes a free port). ``HOME`` is a folder of the test, so nothing lands in the real one.

A block that cannot run offline by nature carries ``<!-- not-run: REASON -->`` on the line
before it; the reason must be given. Everything else runs, and every failure is reported
(with the document and line), not only the first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: the demo's scale here (the README's own `make demo` is larger; the examples do not care)
DEMO = {"probes": 400, "samples_fraction": 0.1}
RUN = ("bash", "python")
BLOCK_TIMEOUT = 300
FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
NOT_RUN = re.compile(r"^<!--\s*not-run:(.*?)-->\s*$")
MIRROR_PORT = re.compile(r"\b8765\b")


@dataclass
class Block:
    path: Path
    line: int          # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the marker's reason ("" when the marker has none)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def extract_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the not-run marker before each."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    i, prev = 0, ""
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            if lines[i].strip():
                prev = lines[i].strip()
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        mark = NOT_RUN.match(prev)
        blocks.append(Block(path, start + 1, m.group(1).lower(), "\n".join(body) + "\n",
                            mark.group(1).strip() if mark else None))
        i += 1
        prev = ""
    return blocks


ALL_BLOCKS = [b for p in DOCS for b in extract_blocks(p)]


def test_not_run_markers_give_a_reason():
    marked = [b for b in ALL_BLOCKS if b.not_run is not None]
    assert marked, "expected the blocks that need the network or a cluster to be marked"
    for b in marked:
        assert len(b.not_run) >= 10, f"{b.where}: <!-- not-run: ... --> needs a reason"
        assert b.lang in RUN, f"{b.where}: not-run marks a block that would not run anyway"


def test_commands_are_in_runnable_blocks():
    """A command in a block without a language would escape this test: refuse it."""
    for b in ALL_BLOCKS:
        if b.lang in RUN:
            continue
        first = next((ln.strip() for ln in b.code.splitlines() if ln.strip()), "")
        assert not re.match(r"(atlas-engine|python3?|make|pip|dask|from|import)\b", first), \
            f"{b.where}: a command in a ```{b.lang} block; use ```bash or ```python"


# --------------------------------------------------------------------------------------------
# the session: demo data, a mirror serving it, a working folder per document
# --------------------------------------------------------------------------------------------
def _env(home: Path, bin_dir: Path, url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "HOME": str(home),
        "MPLBACKEND": "Agg",
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("ATLAS_ENGINE_DATA", None)
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    if url:
        env["ATLAS_ENGINE_BASE_URL"] = url
        env["ATLAS_ENGINE_BRAINSPAN_URL"] = url
        env["ATLAS_ENGINE_GTEX_URL"] = url
    return env


def _bin_dir(where: Path) -> Path:
    """``atlas-engine`` and ``python`` commands that run this checkout with this interpreter."""
    where.mkdir(parents=True, exist_ok=True)
    for name, line in (("atlas-engine", f'exec "{sys.executable}" -m atlas_engine.cli "$@"'),
                       ("python", f'exec "{sys.executable}" "$@"'),
                       ("python3", f'exec "{sys.executable}" "$@"')):
        p = where / name
        p.write_text(f"#!/bin/sh\n{line}\n")
        p.chmod(0o755)
    return where


@pytest.fixture(scope="session")
def docs_demo(tmp_path_factory):
    """``atlas-engine demo --out demo-output`` (small), run once; its mirror (with BrainSpan
    and GTEx files) served on loopback for the session."""
    from atlas_engine.testing.server import MirrorServer

    root = tmp_path_factory.mktemp("docs_demo")
    bin_dir = _bin_dir(root / "bin")
    subprocess.run(["atlas-engine", "demo", "--out", "demo-output", "--probes",
                    str(DEMO["probes"]), "--samples-fraction", str(DEMO["samples_fraction"]),
                    "--quiet"], cwd=root, env=_env(root, bin_dir, None), check=True,
                   timeout=600)
    mirror = root / "demo-output" / "mirror"   # the demo writes BrainSpan and GTEx files too
    server = MirrorServer(mirror)
    url = server.start_in_thread()
    try:
        yield {"root": root, "url": url}
    finally:
        server.stop_thread()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PythonSession:
    """One interpreter for the Python blocks of a document (they build on each other)."""

    DRIVER = r"""
import contextlib, json, sys, traceback
ns = {"__name__": "__main__"}
out = sys.stdout
sys.stdout = sys.stderr
for line in sys.stdin:
    name, path = json.loads(line)
    try:
        exec(compile(open(path).read(), name, "exec"), ns)
        out.write(json.dumps({"ok": True}) + "\n")
    except BaseException:
        out.write(json.dumps({"ok": False, "error": traceback.format_exc()}) + "\n")
    out.flush()
"""

    def __init__(self, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.cwd = cwd
        self.log = open(log, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([sys.executable, "-c", self.DRIVER], cwd=cwd, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)

    def run(self, block: Block, n: int) -> str | None:
        path = self.cwd / f".doc-block-{n}.py"
        path.write_text(block.code)
        timer = threading.Timer(BLOCK_TIMEOUT, self.proc.kill)
        timer.start()
        try:
            self.proc.stdin.write(json.dumps([block.where, str(path)]) + "\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline()
        finally:
            timer.cancel()
        if not answer:
            return f"the interpreter died (timeout {BLOCK_TIMEOUT} s?); see {self.log.name}"
        result = json.loads(answer)
        return None if result["ok"] else result["error"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _run_bash(block: Block, cwd: Path, env: dict[str, str], n: int) -> str | None:
    code = MIRROR_PORT.sub(str(_free_port()), block.code)
    script = cwd / f".doc-block-{n}.sh"
    # background jobs a block starts (a mirror) end with it
    script.write_text("set -eo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
                      + code)
    try:
        proc = subprocess.run(["bash", str(script)], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"timed out after {BLOCK_TIMEOUT} s"
    if proc.returncode != 0:
        tail = (proc.stdout[-1500:] + "\n" + proc.stderr[-3000:]).strip()
        return f"exit {proc.returncode}\n{tail}"
    return None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_examples_run_as_written(doc, docs_demo, tmp_path):
    blocks = [b for b in extract_blocks(doc) if b.lang in RUN and b.not_run is None]
    if not blocks:
        pytest.skip(f"{doc.name} has no runnable examples")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(docs_demo["root"] / "demo-output", work / "demo-output", symlinks=True)
    env = _env(tmp_path / "home", _bin_dir(tmp_path / "bin"), docs_demo["url"])
    (tmp_path / "home").mkdir()
    failures: list[str] = []
    py: PythonSession | None = None
    try:
        for n, block in enumerate(blocks):
            t0 = time.perf_counter()
            if block.lang == "bash":
                error = _run_bash(block, work, env, n)
            else:
                if py is None:
                    py = PythonSession(work, env, tmp_path / "python-blocks.log")
                error = py.run(block, n)
            print(f"{block.where}: {time.perf_counter() - t0:.1f} s{' FAILED' if error else ''}")
            if error:
                failures.append(f"--- {block.where} ({block.lang})\n{block.code}>>> {error}")
    finally:
        if py is not None:
            py.close()
    assert not failures, (f"{len(failures)} of {len(blocks)} examples in {doc.name} fail:\n\n"
                          + "\n\n".join(failures))
