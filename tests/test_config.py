"""The shared config rules: rebuilding from dicts, and the one --resume rule each field declares."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from streamgenre.config import KEPT, MACHINE, MAY_CHANGE, config_from_dict, kept_changes, resume_field, resume_rule, resumed
from streamgenre.errors import InputError


@dataclass(frozen=True)
class Inner:
    steps: int = resume_field(MAY_CHANGE, default=1)
    rate: float = 0.1


@dataclass(frozen=True)
class Outer:
    folder: str = resume_field(MACHINE, default="here")
    seed: int = 0
    inner: Inner = field(default_factory=Inner)


def test_unknown_keys_are_refused_by_name():
    with pytest.raises(InputError, match=r"Inner: unknown keys \['speed'\]"):
        config_from_dict(Inner, {"steps": 1, "speed": 2})


def test_resume_takes_machine_and_given_fields_from_now_and_the_rest_from_the_run():
    saved, now = Outer("there", 1, Inner(5, 0.5)), Outer("here", 2, Inner(9, 0.9))
    assert resumed(saved, now, given=()) == Outer("here", 1, Inner(5, 0.5))  # nothing typed: the run's own, on this machine
    assert resumed(saved, now, given={"inner.steps", "seed"}) == Outer("here", 2, Inner(9, 0.5))
    assert resumed(saved, now, given={"inner"}) == Outer("here", 1, Inner(9, 0.9))


def test_only_kept_fields_that_differ_are_reported():
    saved = Outer("there", 1, Inner(5, 0.5))
    assert kept_changes(saved, Outer("here", 1, Inner(9, 0.5))) == []  # machine and may-change fields
    assert kept_changes(saved, Outer("there", 2, Inner(5, 0.7))) == ["seed 1 -> 2", "inner.rate 0.5 -> 0.7"]


def test_every_train_and_recipe_field_has_a_known_rule():
    from dataclasses import fields

    from streamgenre.recipes import Recipe
    from streamgenre.train import TrainConfig

    rules = {f.name: resume_rule(f) for cls in (TrainConfig, Recipe) for f in fields(cls)}
    assert set(rules.values()) == {KEPT, MAY_CHANGE, MACHINE}
    assert rules["epochs"] == rules["amp"] == MAY_CHANGE and rules["lr"] == rules["model"] == KEPT and rules["device"] == MACHINE
