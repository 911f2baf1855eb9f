"""`paper`: the CNN of "Music Genre Classification with 2D CNN", exactly as published.

Five Conv(3x3, no padding) -> BatchNorm -> ReLU -> MaxPool(2) blocks with 8/16/32/64/128
channels turn the 3x288x432 mel image into 128 maps of 7x11, flattened to 9856 features, then
dropout and one Linear layer. 177,736 parameters for 8 genres (148,165 for 5); 0.29 GFLOPs per
window (the shared mel frontend adds an FFT and 0.03 GFLOPs of mel filtering).
"""

from __future__ import annotations

import torch
from torch import nn

from streamgenre.frontend import FrontendConfig
from streamgenre.models import register

BLOCK_CHANNELS = (8, 16, 32, 64, 128)
FLATTEN_FEATURES = 9856  # 7 * 11 * 128
IMAGE_CHANNELS = 3  # the paper's RGB PNG


@register("paper", frontend=FrontendConfig(), summary="the paper's 5-block CNN on the 3x288x432 mel image (default)")
class PaperCNN(nn.Module):
    """The paper's CNN; returns logits (the loss applies the softmax).

    Args:
        n_classes: number of genres.
        dropout: dropout probability before the Linear layer (the paper does not state it; 0.5).
        width: not used; the paper fixes the widths (must be None).
    """

    def __init__(self, n_classes: int, dropout: float = 0.5, width: int | None = None):
        super().__init__()
        blocks = []
        in_channels = IMAGE_CHANNELS
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
