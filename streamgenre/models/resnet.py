"""`resnet`: a short-chunk ResNet after Won et al. 2020, sized for training on a CPU.

"Evaluation of CNN-based automatic music tagging models" (Won, Ferraro, Bogdanov, Serra, 2020)
found a short-chunk ResNet on a 128-bin mel of a few seconds the best from-scratch tagger. This
one keeps its recipe (the mel at its own resolution, residual 3x3 blocks with batch norm and 2x2
max-pool, global max-pool over frequency and time, dropout, linear) and narrows it for 2 CPU
cores: a stem conv and pool, then four residual blocks of width w, 2w, 2w, 4w (w = 32 by default).
Global pooling makes any window length work. With w = 32 and 5 genres: 381,413 parameters and
0.36 GFLOPs per 3-s window, beside the paper CNN's 148,165 and 0.29 (see `streamgenre models`).
"""

from __future__ import annotations

import torch
from torch import nn

from streamgenre.frontend import FrontendConfig
from streamgenre.models import register


class ResidualBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a (1x1 projected) shortcut, ReLU, then 2x2 max-pool."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = (
            nn.Identity() if in_channels == out_channels else nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        )
        self.pool = nn.MaxPool2d(2, ceil_mode=True)  # ceil: a short window still keeps one column

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, H, W)`` -> ``(B, out, ceil(H / 2), ceil(W / 2))``."""
        return self.pool(torch.relu(self.body(x) + self.shortcut(x)))


@register(
    "resnet",
    frontend=FrontendConfig(image_height=None, image_width=None, channels=1),  # the paper's mel, not resized
    default_width=32,
    summary="short-chunk ResNet (Won et al. 2020) on the 128-bin mel",
)
class ShortChunkResNet(nn.Module):
    """Mel ``(batch, 1, n_mels, frames)`` -> logits ``(batch, n_classes)``.

    Args:
        n_classes: number of genres.
        dropout: dropout probability before the Linear layer.
        width: channels of the first residual block; later blocks use 2x and 4x.
    """

    def __init__(self, n_classes: int, dropout: float = 0.5, width: int | None = 32):
        super().__init__()
        w = width or 32
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True))
        # 128 x 130 (3 s at 22050 Hz, hop 512) -> stem 64 x 65 -> 32 x 33 -> 16 x 17 -> 8 x 9 -> 4 x 5
        self.blocks = nn.Sequential(ResidualBlock(w, w), ResidualBlock(w, 2 * w), ResidualBlock(2 * w, 2 * w), ResidualBlock(2 * w, 4 * w))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * w, n_classes))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, 1, n_mels, frames)`` to ``(batch, n_classes)`` logits."""
        features = self.blocks(self.stem(mel))  # (B, 4w, n_mels / 32, frames / 32)
        return self.classifier(features.amax(dim=(2, 3)))  # global max-pool over frequency and time
