"""The model registry: `--model NAME` picks a backbone, and a new architecture is one file here.

A backbone maps the frontend's normalised mel features to logits. Each registers itself with
`register`, saying whether it wants the paper's 3x288x432 image (`image=True`) or the mel at its
own resolution, ``(batch, 1, n_mels, frames)``. Importing this package imports every model file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from streamgenre.errors import look_up


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of the package needs to know about one registered backbone."""

    name: str
    build: Callable[..., nn.Module]  # (n_classes, dropout, width) -> module
    image: bool  # True: feed the paper's resized 3x288x432 image; False: the mel as it is
    default_width: int | None  # None: the architecture has no width knob
    summary: str


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, *, image: bool, summary: str, default_width: int | None = None) -> Callable[[type], type]:
    """Class decorator that adds a backbone to the registry under `name`."""

    def add(cls: type) -> type:
        _REGISTRY[name] = ModelSpec(name, cls, image, default_width, summary)
        return cls

    return add


def model_spec(name: str) -> ModelSpec:
    """The registered backbone called `name`.

    Raises:
        InputError: no model of that name.
    """
    return look_up("--model", name, _REGISTRY)


def model_names() -> list[str]:
    """Registered model names, in registration order (the default first)."""
    return list(_REGISTRY)


from streamgenre.models import paper, resnet  # noqa: E402,F401  (each file registers itself)
