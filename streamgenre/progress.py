"""Progress bars that show only where a person watches: live on a terminal, silent in logs."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True) -> tqdm:
    """A tqdm bar on stderr, disabled when `enabled` is False or stderr is not a terminal."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, disable=not (enabled and sys.stderr.isatty()))
