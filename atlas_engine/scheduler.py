"""Which Dask scheduler a computation runs on when its caller named none.

Dask decides by itself (a ``dask.config`` scheduler, else an active ``distributed.Client``, else
the collection's default), but its check for a client imports :mod:`distributed` (~0.3 s). No
client can exist before that import, so the engine names Dask's threaded scheduler itself
then, and leaves the choice to Dask otherwise.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

__all__ = ["client_active", "scheduler_for_compute"]


def client_active() -> bool:
    """Whether a ``distributed.Client`` is active (tasks then run on its workers).

    A client can only exist once :mod:`distributed` has been imported, so this never imports
    it (that import alone takes ~0.3 s)."""
    if "distributed" not in sys.modules:
        return False
    from distributed import get_client as current

    try:
        current()
    except ValueError:
        return False
    return True


def scheduler_for_compute() -> Callable[..., Any] | None:
    """The ``scheduler=`` to give ``dask.compute``: Dask's threaded scheduler when neither a
    Dask config nor a distributed client names one, else ``None`` (Dask's own choice, which
    honours both).

    The scheduler Dask would pick by itself, given as the function: Dask's own resolution (and
    a scheduler given by name) checks for a distributed client by importing
    :mod:`distributed`."""
    import dask

    if dask.config.get("scheduler", None) is None and not client_active():
        from dask.threaded import get

        return get
    return None
