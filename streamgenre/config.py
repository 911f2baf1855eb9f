"""Rules shared by every config dataclass: rebuilding one from a checkpoint's dict, and what `--resume` may change.

Owns the rule "unknown or missing keys fail with a clear message" and the vocabulary of resume
rules each field declares (kept, may change, machine-only); knows nothing about what any config
means, so the lowest modules (frontend, windows) may use it without pulling in others.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import Field, field, fields, is_dataclass, replace
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


# How `train --resume` treats each config field, declared on the field with `resume_field`:
KEPT = "kept"  # the run's own value; a different one given now is refused (every field not declared otherwise)
MAY_CHANGE = "may change"  # the run's own value unless one is given now, which is then taken
MACHINE = "machine"  # where and how this process runs, not what the run computes: always the value given now


def resume_field(rule: str, **options: Any) -> Any:
    """A dataclass field (`dataclasses.field` `options`) that declares its `--resume` rule."""
    return field(metadata={"resume": rule}, **options)


def resume_rule(config_field: Field) -> str:
    """The `--resume` rule of a dataclass field: KEPT unless declared with `resume_field`."""
    return config_field.metadata.get("resume", KEPT)


def resumed(saved: ConfigT, now: ConfigT, given: Collection[str], prefix: str = "") -> ConfigT:
    """The config a resumed run continues with: `saved`, except machine fields and the `given` ones, from `now`.

    Nested configs are merged field by field. `given` holds dotted field paths (``recipe.epochs``;
    ``recipe`` for a whole nested config): what the user typed on the command line.
    """
    changes = {}
    for config_field in fields(saved):
        path = prefix + config_field.name
        before, after = getattr(saved, config_field.name), getattr(now, config_field.name)
        if path in given or resume_rule(config_field) == MACHINE:
            changes[config_field.name] = after
        elif is_dataclass(before):
            changes[config_field.name] = resumed(before, after, given, path + ".")
    return replace(saved, **changes)


def kept_changes(saved: Any, now: Any, prefix: str = "") -> list[str]:
    """``"recipe.lr 0.0005 -> 0.1"`` for each KEPT field (nested ones included) whose value differs."""
    changes = []
    for config_field in fields(saved):
        path = prefix + config_field.name
        before, after = getattr(saved, config_field.name), getattr(now, config_field.name)
        if is_dataclass(before) and is_dataclass(after):
            changes += kept_changes(before, after, path + ".")
        elif resume_rule(config_field) == KEPT and before != after:
            changes.append(f"{path} {before!r} -> {after!r}")
    return changes
