"""Progress bars that stay out of logs: live on a terminal, silent when stderr is a file or pipe.

A tqdm bar redraws itself with carriage returns; written to a file (``2> train.log``, CI) that
is tens of kilobytes of half-lines with the real log lines lost among them. Every bar in the
package comes from `progress_bar`, which shows one only when stderr is a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def stderr_is_terminal() -> bool:
    """Whether stderr is an interactive terminal (where a live bar belongs)."""
    stream = sys.stderr
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: float | None = None,
    desc: str,
    unit: str = "it",
    enabled: bool = True,
    leave: bool = False,
) -> tqdm:
    """A tqdm bar over `iterable` (or updated by hand), disabled unless `enabled` and stderr is a terminal.

    A disabled bar still iterates and accepts `update`/`set_postfix`, so callers need no branch.
    Bars are cleared when done (`leave=False`) so the lines printed after them stay readable.
    """
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, disable=not (enabled and stderr_is_terminal()), dynamic_ncols=True)
