"""Parse the human units the CLI accepts (durations like ``15s``/``0:15``, sizes like ``256MB``), and count things back in words.

Parsed once at the edge, so everything below works in seconds and bytes.
"""

from __future__ import annotations

import re

from streamgenre.errors import InputError

Seconds = float

_DURATION_SUFFIXES = {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_SIZE_SUFFIXES = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_NUMBER_WITH_SUFFIX = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def parse_duration(text: str | float | int) -> Seconds:
    """Return seconds for ``15``, ``15s``, ``1500ms``, ``2m``, ``0:15`` or ``1:02:03.5``.

    Raises:
        InputError: the text is not a non-negative duration.
    """
    if isinstance(text, (int, float)):
        seconds = float(text)
    elif ":" in text:
        seconds = _parse_clock(text)
    else:
        match = _NUMBER_WITH_SUFFIX.match(text)
        suffix = match.group(2).lower() if match else None
        if suffix not in ("", *_DURATION_SUFFIXES):
            raise InputError(f"{text!r} is not a duration; use e.g. 15s, 0:15, 1500ms or 15")
        seconds = float(match.group(1)) * _DURATION_SUFFIXES.get(suffix, 1.0)
    if seconds < 0:
        raise InputError(f"{text!r} is negative; a duration must be >= 0")
    return seconds


def _parse_clock(text: str) -> Seconds:
    parts = text.strip().split(":")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if not 2 <= len(parts) <= 3 or len(values) != len(parts) or any(v < 0 for v in values):
        raise InputError(f"{text!r} is not a clock time; use m:ss or h:mm:ss, e.g. 0:15")
    seconds = 0.0
    for value in values:
        seconds = seconds * 60 + value
    return seconds


def parse_size(text: str | int) -> int:
    """Return bytes for ``256MB``, ``1GiB``, ``500k`` or a bare number of bytes.

    Raises:
        InputError: the text is not a positive size.
    """
    if isinstance(text, int):
        size = text
    else:
        match = _NUMBER_WITH_SUFFIX.match(text)
        suffix = match.group(2).lower() if match else None
        if suffix not in _SIZE_SUFFIXES:
            raise InputError(f"{text!r} is not a size; use e.g. 256MB, 1GiB or 1000000")
        size = int(float(match.group(1)) * _SIZE_SUFFIXES[suffix])
    if size <= 0:
        raise InputError(f"{text!r}: a size must be > 0")
    return size


def count_of(number: int, noun: str) -> str:
    """``1 file``, ``2 files``: what the command line prints reads right for one of a thing too."""
    return f"{number} {noun}" + ("" if number == 1 else "s")
