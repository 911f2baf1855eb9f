"""Training recipes: how many windows, which optimiser, schedule, regularisers and augmentation.

`paper` is the study's loop exactly (Adam 5e-4 constant, the 3-s window at 0:15 once per clip
per epoch, batch 25, 20 epochs, nothing else). `modern` is the default: many random windows per
clip per epoch, AdamW with warm-up and cosine decay, label smoothing, gradient clipping, mixup
and SpecAugment. `probe` and `finetune` are for pretrained models (`--model musicnn`): the
probe trains only the head on a frozen backbone; finetune trains everything, the backbone at
a tenth of the head's rate. Their values were chosen by measurement on real music (README, "Accuracy").
The learning rate is a pure function of the step, so `--resume` continues the same curve.
`--resume --epochs N` extends a run: the schedule is replanned for N epochs (see `learning_rate`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from streamgenre.augment import SPEC_AUGMENT, AugmentConfig
from streamgenre.config import MAY_CHANGE, config_from_dict, resume_field
from streamgenre.errors import InputError, look_up
from streamgenre.paper import DEFAULT_OFFSET_S, PAPER_BATCH_SIZE, PAPER_EPOCHS, PAPER_LR
from streamgenre.windows import check_windows_per_clip

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class Recipe:
    """Everything about *how* a model is trained (not what it is, nor which data).

    `offset_s=None` draws `windows_per_clip` random windows per clip per epoch; a number takes
    the one window there. `val_windows` evenly spaced windows per clip, probabilities averaged,
    score validation and the final test (whole-clip accuracy chooses best.pt, unless
    `pick_best` is False: then best.pt is the last epoch). Every field but
    `epochs` is kept by `--resume`; more epochs extend a run.
    """

    name: str
    epochs: int = resume_field(MAY_CHANGE)
    batch_size: int
    lr: float
    optimizer: str = "adam"
    weight_decay: float = 0.0
    warmup_fraction: float = 0.0
    schedule: str = "constant"
    label_smoothing: float = 0.0
    clip_grad_norm: float | None = None
    mixup_alpha: float = 0.0
    windows_per_clip: int = 1
    offset_s: float | None = DEFAULT_OFFSET_S
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    val_windows: int = 10
    backbone_lr_scale: float = 1.0  # a pretrained backbone's rate relative to `lr`; 0 freezes it (eval mode, no gradients)
    fresh_windows: bool = True  # new random windows each epoch; False keeps each clip's first draw (a frozen backbone's cache hits)
    pick_best: bool = True  # best.pt = the epoch of best whole-clip validation accuracy; False: the last epoch

    @property
    def needs_pretrained(self) -> bool:
        """True when the recipe treats the backbone apart from the head, which only a pretrained model has."""
        return self.backbone_lr_scale != 1.0

    def __post_init__(self):
        if self.epochs < 1:
            raise InputError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"--lr must be a finite number > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS or self.schedule not in SCHEDULES:
            raise InputError(f"recipe optimizer must be one of {OPTIMIZERS} and schedule one of {SCHEDULES}")
        for name in ("weight_decay", "warmup_fraction", "label_smoothing", "mixup_alpha", "backbone_lr_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"{_OPTION_OF.get(name, f'recipe {name}')} must be a finite number >= 0, got {value}")
        if self.warmup_fraction >= 1 or self.label_smoothing >= 1:
            raise InputError("recipe warmup_fraction and label_smoothing must be below 1")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise InputError(f"recipe clip_grad_norm must be > 0, got {self.clip_grad_norm}")
        check_windows_per_clip(self.windows_per_clip, self.offset_s)
        if self.val_windows < 1:
            raise InputError(f"--val-windows must be >= 1, got {self.val_windows}")

    def with_options(self, **options: Any) -> Recipe:
        """A copy with the options that are not None replaced (the command line's overrides)."""
        return replace(self, **{name: value for name, value in options.items() if value is not None})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (see `from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Rebuild from `to_dict` output; unknown keys raise `InputError`."""
        return config_from_dict(cls, {**data, "augment": AugmentConfig.from_dict(data.get("augment", {}))})


# The option that sets a checked recipe field under another name; the others have no option, so
# their messages name the recipe field (a --warmup-fraction there would send the user looking for it).
_OPTION_OF = {"mixup_alpha": "--mixup"}


def learning_rate(recipe: Recipe, step: int, total_steps: int) -> float:
    """The learning rate for optimizer step `step` (0-based) of `total_steps`.

    Linear warm-up over the first `warmup_fraction` of the steps, then constant or a cosine
    decay to zero. Steps past `total_steps` (an epoch may run a batch longer than planned) stay
    at the final value. A run extended to more epochs (`--resume --epochs N`) takes from then on
    the rate a run planned for N epochs from the start would have: the constant rate simply
    continues; the cosine rises back to that longer curve and decays to zero at epoch N.
    """
    progress = min(1.0, step / max(1, total_steps))
    if progress < recipe.warmup_fraction:
        return recipe.lr * (step + 1) / max(1.0, recipe.warmup_fraction * total_steps)
    if recipe.schedule == "constant":
        return recipe.lr
    decay = (progress - recipe.warmup_fraction) / (1 - recipe.warmup_fraction)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * decay))


PAPER = Recipe("paper", epochs=PAPER_EPOCHS, batch_size=PAPER_BATCH_SIZE, lr=PAPER_LR)
MODERN = Recipe(
    "modern",
    epochs=15,
    batch_size=32,
    lr=2e-3,
    optimizer="adamw",
    weight_decay=1e-2,
    warmup_fraction=0.1,
    schedule="cosine",
    label_smoothing=0.1,
    clip_grad_norm=5.0,
    mixup_alpha=0.2,
    windows_per_clip=8,
    offset_s=None,
    augment=SPEC_AUGMENT,
)
PROBE = Recipe(
    "probe",
    epochs=20,
    batch_size=32,
    lr=1e-3,
    optimizer="adamw",
    weight_decay=1e-2,
    warmup_fraction=0.1,
    schedule="cosine",
    label_smoothing=0.1,
    windows_per_clip=8,
    offset_s=None,
    backbone_lr_scale=0.0,
    fresh_windows=False,
    pick_best=False,  # the cosine schedule ends at rate 0; picking on a small validation split chose worse epochs (README)
)
FINETUNE = replace(PROBE, name="finetune", epochs=10, clip_grad_norm=5.0, mixup_alpha=0.2, backbone_lr_scale=0.1, fresh_windows=True)
RECIPES = {recipe.name: recipe for recipe in (MODERN, PAPER, PROBE, FINETUNE)}


def default_recipe(pretrained: bool) -> Recipe:
    """The recipe `train` uses when none is named: `probe` for a pretrained model, else `modern`.

    Why: `modern`'s rate and SpecAugment would overwrite what a pretrained backbone knows in the
    first epoch, and `probe` is the measured best on the small sets people bring.
    """
    return PROBE if pretrained else MODERN


def recipe_named(name: str) -> Recipe:
    """The built-in recipe called `name`.

    Raises:
        InputError: no recipe of that name.
    """
    return look_up("--recipe", name, RECIPES)
