"""``python -m atlas_engine.cli``: the ``atlas-engine`` command."""

from . import main

main()
