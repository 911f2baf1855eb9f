"""The model registry: `--model NAME` picks a backbone, and a new architecture is one file here.

A backbone maps its frontend's features to logits. Each registers itself with `register`,
declaring the `FrontendConfig` it was built for (rate, FFT, hop, mel bands, compression, the
paper's 3x288x432 image or the mel as it is, window length): that declaration is the one place
a model's input is stated. Importing this package imports every model file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from streamgenre.errors import look_up
from streamgenre.frontend import FrontendConfig


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of the package needs to know about one registered backbone."""

    name: str
    build: Callable[..., nn.Module]  # (n_classes, dropout, width) -> module
    frontend: FrontendConfig  # the input the model was built for
    default_width: int | None  # None: the architecture has no width knob
    summary: str
    pretrained: bool  # True: `build` loads weights learnt elsewhere; the module has a `backbone` to freeze or fine-tune
    min_width: int = 1
    legacy_width: int | None = None  # what a checkpoint that saved no width was built with, when not `default_width`


_REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str,
    *,
    frontend: FrontendConfig,
    summary: str,
    default_width: int | None = None,
    pretrained: bool = False,
    min_width: int = 1,
    legacy_width: int | None = None,
) -> Callable[[type], type]:
    """Class decorator that adds a backbone to the registry under `name`.

    `legacy_width` is for a model whose default changed: checkpoints saved before widths were
    stored explicitly rebuild with it instead of today's `default_width`.
    """

    def add(cls: type) -> type:
        _REGISTRY[name] = ModelSpec(name, cls, frontend, default_width, summary, pretrained, min_width, legacy_width)
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


# Each file registers itself; the order is `streamgenre models`' order, the default first.
from streamgenre.models import paper, resnet  # noqa: E402,F401  # isort: skip
from streamgenre.models import musicnn  # noqa: E402,F401  # isort: skip
