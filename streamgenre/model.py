"""The genre classifier: mel frontend -> (training-only augmentation) -> a registered backbone.

Owns the classifier's config (which backbone, its width and dropout, the frontend) and how the
pieces connect; the architectures live in `streamgenre.models`. Augmentation is given by the
training recipe, not configured here. Knows nothing about data loading, training loops or checkpoint files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from streamgenre.augment import AugmentConfig, RandomGain, SpecAugment
from streamgenre.config import config_from_dict
from streamgenre.errors import InputError
from streamgenre.frontend import FrontendConfig, MelFrontend, is_exporting
from streamgenre.models import model_spec

DEFAULT_MODEL = "paper"


def default_frontend(model: str) -> FrontendConfig:
    """The frontend a backbone declares (`streamgenre.models.register`)."""
    return model_spec(model).frontend


def model_width(model: str, width: int | None) -> int | None:
    """The width model `model` is built with when `width` is asked for (None: its default); a width it cannot take raises `InputError`.

    Training and model configs both resolve it here, so that a run's saved settings name the
    head it trained and `--resume` rebuilds that one even after the default changes.
    """
    spec = model_spec(model)
    if width is None:
        return spec.default_width
    if spec.default_width is None or width < spec.min_width:
        needs = "has no width setting" if spec.default_width is None else f"needs a width >= {spec.min_width}"
        raise InputError(f"--width {width}: model {model!r} {needs}")
    return width


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a `GenreClassifier`; checkpoints store it.

    `name` picks the backbone (`streamgenre.models`); `width` is its width knob (None: the
    model's default, written into the config so that a checkpoint keeps what it was built
    with). `dropout` is the probability before the last Linear layer: the paper uses dropout
    there without stating p, so this takes PyTorch's default, 0.5. `frontend=None`
    means the backbone's own (`default_frontend`). Old checkpoints, which lack `name`, are `paper`;
    older ones also stored the recipe's augmentation here, which `from_dict` drops.
    """

    n_classes: int
    name: str = DEFAULT_MODEL
    dropout: float = 0.5
    width: int | None = None
    frontend: FrontendConfig | None = None

    def __post_init__(self):
        spec = model_spec(self.name)
        if self.n_classes < 2:
            raise InputError(f"a genre classifier needs at least 2 classes, got n_classes={self.n_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {self.dropout}")
        object.__setattr__(self, "width", model_width(self.name, self.width))
        if self.frontend is None:
            object.__setattr__(self, "frontend", default_frontend(self.name))
        declared = default_frontend(self.name)
        if self.frontend.image_shape != declared.image_shape:
            raise InputError(
                f"model {self.name!r} takes {declared.image_shape} inputs (channels, height, width; None: not resized), "
                f"but the frontend makes {self.frontend.image_shape}; keep the frontend's image defaults"
            )
        if spec.pretrained and replace(self.frontend, input_sample_rate=None) != declared:
            raise InputError(f"model {self.name!r} was pretrained on its own frontend ({declared}); it cannot take another")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the frontend config nested (see `from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild from `to_dict` output; unknown keys, here or nested, raise `InputError`."""
        frontend = FrontendConfig.from_dict(data["frontend"]) if data.get("frontend") is not None else None
        current = {name: value for name, value in data.items() if name != _LEGACY_AUGMENT}
        if current.get("width") is None:  # saved before widths were written out: what that version built
            current["width"] = model_spec(current.get("name", DEFAULT_MODEL)).legacy_width
        return config_from_dict(cls, {**current, "frontend": frontend})


# Older checkpoints stored the recipe's augmentation in the model config as well; it is the recipe's alone now.
_LEGACY_AUGMENT = "augment"


class GenreClassifier(nn.Module):
    """Waveforms in, genre logits out: gain -> `MelFrontend` -> SpecAugment -> backbone, on one device.

    Because the frontend is part of the model, `.to(device)` moves the whole feature pipeline
    and the data loader only decodes audio. Its fixed filters are not in the `state_dict`, and
    the augmentations are the identity in eval mode. The backbone is stored as `cnn` (so
    checkpoints of every version share key names) and runs in channels-last memory format,
    which measured faster for these convolutions on CPU.

    Args:
        config: the architecture; kept as `self.config` so checkpoints can rebuild it.
        augment: the training recipe's augmentation (None: none); not part of `config`, because
            it changes only training, never what the trained model computes.
    """

    def __init__(self, config: ModelConfig, augment: AugmentConfig | None = None):
        super().__init__()
        self.config = config
        spec = model_spec(config.name)
        augment = augment or AugmentConfig()
        self.gain = RandomGain(augment.gain_db)
        self.frontend = MelFrontend(config.frontend)
        self.spec_augment = SpecAugment(augment)
        self.cnn = spec.build(config.n_classes, config.dropout, config.width)
        self.cnn.to(memory_format=torch.channels_last)

    def forward(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Map ``(batch, time)`` waveforms to ``(batch, n_classes)`` logits.

        Args:
            waveform: ``(batch, time)`` audio in [-1, 1].
            sample_rate: rate of `waveform`; see `MelFrontend.spectrogram` (None: the config's).
        """
        if self.serves_cached_embeddings(waveform.device) and not self._augmenting():
            return self.cnn.head(self.cached_embedding(waveform, sample_rate))
        features = self.spec_augment(self.frontend.features(self.gain(waveform), sample_rate))  # (B, n_mels, frames)
        return self.cnn(self.frontend.shape_for_model(features).contiguous(memory_format=torch.channels_last))  # reads (B, C, H, W)

    def _input(self, waveform: torch.Tensor, sample_rate: int | None) -> torch.Tensor:
        """What the backbone reads, with no augmentation: ``(B, C, H, W)`` in channels-last."""
        return self.frontend(waveform, sample_rate).contiguous(memory_format=torch.channels_last)

    def serves_cached_embeddings(self, device: torch.device) -> bool:
        """True when a frozen pretrained backbone's embeddings of windows on `device` can come from its cache.

        The cache (`models.musicnn.EmbeddingCache`) lives on the CPU, and an export must trace
        the whole network.
        """
        return getattr(self.cnn, "cache", None) is not None and device.type == "cpu" and not is_exporting()

    def cached_embedding(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """The frozen backbone's ``(batch, embedding)`` of un-augmented windows, computed only for windows not heard before."""
        return self.cnn.cache.embed(waveform, sample_rate, lambda part: self.cnn.embed(self._input(part, sample_rate)))

    @property
    def augments(self) -> bool:
        """True when the recipe's gain or SpecAugment is on (they act in training mode only)."""
        return self.gain.gain_db > 0 or self.spec_augment.config != type(self.spec_augment.config)()

    def _augmenting(self) -> bool:
        """True when a training-mode augmentation would change this forward pass."""
        return self.training and self.augments

    def predict_proba(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Softmax probabilities ``(batch, n_classes)`` in float32; rows sum to 1.

        Call `eval()` first (and use `torch.inference_mode()`): in training mode dropout,
        augmentation and batch statistics make the answer random and batch-dependent.
        """
        return torch.softmax(self.forward(waveform, sample_rate).float(), dim=1)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of `model`."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass(frozen=True)
class ModelFacts:
    """Size and cost of a classifier, as `streamgenre models` prints them."""

    parameters: int
    backbone_gflops: float  # per window of the model's own length, the frontend not counted
    frontend_gflops: float


def describe_model(config: ModelConfig) -> ModelFacts:
    """Count parameters and FLOPs (torch's FlopCounterMode) of one window of the model's own length."""
    from torch.utils.flop_counter import FlopCounterMode

    model = GenreClassifier(config).eval()
    waveform = torch.zeros(1, config.frontend.window_samples)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as frontend_flops:
            image = model.frontend(waveform)
        with FlopCounterMode(display=False) as backbone_flops:
            model.cnn(image.contiguous(memory_format=torch.channels_last))
    return ModelFacts(count_parameters(model), backbone_flops.get_total_flops() / 1e9, frontend_flops.get_total_flops() / 1e9)
