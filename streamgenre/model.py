"""The paper's 2D CNN, and the classifier that puts the mel frontend in front of it.

Owns the architecture and its config; knows nothing about data loading, training loops or
checkpoint files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from streamgenre.errors import InputError
from streamgenre.frontend import FrontendConfig, MelFrontend, config_from_dict

# The paper ("Music Genre Classification with 2D CNN", FMA small): five conv blocks with these
# widths turn a 3x288x432 image into 128 maps of 7x11, flattened to 7 * 11 * 128 = 9856 features.
BLOCK_CHANNELS = (8, 16, 32, 64, 128)
FLATTEN_FEATURES = 9856


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a `GenreClassifier`, frontend settings included.

    `dropout` is the probability before the last Linear layer: the paper uses dropout there
    without stating p, so this takes PyTorch's default, 0.5. The frontend must produce the
    paper's 3x288x432 image, the only size the CNN's Linear(9856, n_classes) fits.
    """

    n_classes: int
    dropout: float = 0.5
    frontend: FrontendConfig = field(default_factory=FrontendConfig)

    def __post_init__(self):
        if self.n_classes < 2:
            raise InputError(f"a genre classifier needs at least 2 classes, got n_classes={self.n_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {self.dropout}")
        paper_shape = FrontendConfig().image_shape
        if self.frontend.image_shape != paper_shape:
            raise InputError(
                f"the paper's CNN takes {paper_shape} images (channels, height, width), "
                f"but the frontend makes {self.frontend.image_shape}; keep the frontend's image defaults"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the frontend config nested (see `from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild from `to_dict` output; unknown keys, here or in `frontend`, raise `InputError`."""
        frontend = FrontendConfig.from_dict(data.get("frontend", {}))
        return config_from_dict(cls, {**data, "frontend": frontend})


class PaperCNN(nn.Module):
    """The paper's CNN: five Conv(3x3, no padding) -> BatchNorm -> ReLU -> MaxPool(2) blocks.

    Then flatten, dropout and one Linear layer. Returns logits (the loss applies the softmax);
    use `GenreClassifier.predict_proba` for probabilities.

    Args:
        n_classes: number of genres.
        dropout: dropout probability before the Linear layer.
    """

    def __init__(self, n_classes: int, dropout: float = 0.5):
        super().__init__()
        blocks = []
        in_channels = FrontendConfig().channels
        for out_channels in BLOCK_CHANNELS:
            blocks += [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=0),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            in_channels = out_channels
        # (B, 3, 288, 432) -> (B, 8, 143, 215) -> (B, 16, 70, 106) -> (B, 32, 34, 52)
        # -> (B, 64, 16, 25) -> (B, 128, 7, 11): each block is -2 (conv), then //2 (pool).
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (B, 9856)
            nn.Dropout(dropout),
            nn.Linear(FLATTEN_FEATURES, n_classes),  # (B, n_classes)
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, 3, 288, 432)`` images to ``(batch, n_classes)`` logits."""
        return self.classifier(self.features(image))


class GenreClassifier(nn.Module):
    """Waveforms in, genre logits out: `MelFrontend` then `PaperCNN`, all on one device.

    Because the frontend is part of the model, `.to(device)` moves the whole feature pipeline
    and the data loader only decodes audio. Its fixed filters are not in the `state_dict`.

    Args:
        config: the architecture; kept as `self.config` so checkpoints can rebuild it.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.frontend = MelFrontend(config.frontend)
        self.cnn = PaperCNN(config.n_classes, config.dropout)

    def forward(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Map ``(batch, time)`` waveforms to ``(batch, n_classes)`` logits.

        Args:
            waveform: ``(batch, time)`` audio in [-1, 1].
            sample_rate: rate of `waveform`; see `MelFrontend.spectrogram` (None: the config's).
        """
        return self.cnn(self.frontend(waveform, sample_rate))  # (B, 3, 288, 432) -> (B, n_classes)

    def predict_proba(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Softmax probabilities ``(batch, n_classes)`` in float32; rows sum to 1.

        Call `eval()` first (and use `torch.inference_mode()`): in training mode dropout and
        batch statistics make the answer random and batch-dependent.
        """
        return torch.softmax(self.forward(waveform, sample_rate).float(), dim=1)
