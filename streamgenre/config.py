"""Config (de)serialisation shared by every config dataclass: dicts from checkpoints back to dataclasses.

Owns only the rule "unknown or missing keys fail with a clear message"; knows nothing about what
any config means, so the lowest modules (frontend, windows) may use it without pulling in others.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from streamgenre.errors import InputError

ConfigT = TypeVar("ConfigT")


def config_from_dict(cls: type[ConfigT], data: dict[str, Any]) -> ConfigT:
    """Build the dataclass `cls` from `data`, so an old or foreign dict fails with a clear message.

    Raises:
        InputError: `data` has keys `cls` does not know, misses a required one, or fails validation.
    """
    known = {field.name for field in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{cls.__name__}: unknown keys {unknown}; known keys: {sorted(known)}")
    try:
        return cls(**data)
    except TypeError as exn:  # a missing required key
        raise InputError(f"{cls.__name__}: {exn}") from exn
