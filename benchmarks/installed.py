"""The package as an installed copy has it, before any command is timed.

``pip install`` writes every module's bytecode (``__pycache__``) when it installs a package;
an editable install (``make``'s) writes it on the first import — unless the environment sets
``PYTHONDONTWRITEBYTECODE``, as some containers do. Then every command compiles the
package's ~90 modules again (measured: 84 modules, ~0.17 s of a second-atlas command), a cost
no installed copy pays and the baselines (installed libraries) never pay. The benchmarks that
time whole commands call :func:`compile_package` first, so both sides start as installed.
"""

from __future__ import annotations

import compileall
import sys
from pathlib import Path


def compile_package() -> None:
    """Write the bytecode of every module of ``atlas_engine`` for this interpreter (as pip
    does at install; modules whose bytecode is current are left alone)."""
    import atlas_engine

    ok = compileall.compile_dir(Path(atlas_engine.__file__).parent, quiet=1)
    if not ok:
        sys.exit("could not compile the atlas_engine package")
