"""Progress bars (tqdm) that stay quiet when output is not a terminal or ``quiet`` is set.

tqdm is imported by the first bar, not with this module: commands that only ask whether bars
are on (:func:`progress_enabled`) do not pay for it."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm.auto import tqdm


def progress_enabled(quiet: bool = False) -> bool:
    return not quiet and sys.stderr.isatty()


def bar(total: float | None = None, desc: str = "", *, unit: str = "it", quiet: bool = False,
        bytes_: bool = False, **kwargs: Any) -> tqdm:
    """A tqdm bar; disabled (zero cost) unless stderr is a TTY and ``quiet`` is false."""
    from tqdm.auto import tqdm

    if bytes_:
        kwargs.update(unit="B", unit_scale=True, unit_divisor=1024)
    else:
        kwargs.setdefault("unit", unit)
    return tqdm(total=total, desc=desc, disable=not progress_enabled(quiet), leave=False,
                dynamic_ncols=True, **kwargs)
