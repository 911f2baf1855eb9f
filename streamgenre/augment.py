"""Training-time augmentation that runs on the device: random gain and SpecAugment masks.

Both are torch modules inside the classifier, so they run wherever the model runs (the GPU,
when there is one) and they are the identity in eval mode: evaluate and predict never see them.
Their settings belong to the training recipe alone (`Recipe.augment`): a checkpoint's model
config does not carry them, because they do not change what the trained model computes.
Mixup mixes pairs of examples and their labels, so it lives in the training step (train.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from streamgenre.config import config_from_dict
from streamgenre.errors import InputError


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation; zeros switch it off (the default: none at all).

    `gain_db` scales each waveform by a random gain in ``[-gain_db, +gain_db]`` dB. Note that
    the frontend's peak-referenced dB and per-example normalisation cancel a gain almost
    exactly (only the -80 dB floor and silence move), so it matters only for frontends without them.
    `freq_masks` masks of up to `freq_mask_bins` mel bins and `time_masks` masks of up to
    `time_mask_frames` frames (SpecAugment, Park et al. 2019) are set to the example's mean (0
    after normalisation), on the mel before any resize.
    """

    gain_db: float = 0.0
    freq_masks: int = 0
    freq_mask_bins: int = 0
    time_masks: int = 0
    time_mask_frames: int = 0

    def __post_init__(self):
        if self.gain_db < 0:
            raise InputError(f"--gain must be >= 0 dB, got {self.gain_db}")  # the one field `train` has an option for
        for name, value in asdict(self).items():
            if value < 0:
                raise InputError(f"augmentation {name} must be >= 0, got {value}")

    @property
    def spec_augment(self) -> bool:
        """Whether any SpecAugment mask is on."""
        return self.freq_masks * self.freq_mask_bins + self.time_masks * self.time_mask_frames > 0

    def switched(self, spec_augment: bool | None = None, gain_db: float | None = None) -> AugmentConfig:
        """A copy with each augmentation switched on its own (None: left as it is).

        `spec_augment=True` keeps masks already set, else takes `SPEC_AUGMENT`'s; False removes
        the masks and nothing else, so ``--no-spec-augment`` leaves the gain alone.
        """
        config = self if gain_db is None else replace(self, gain_db=gain_db)
        if spec_augment is None or spec_augment == config.spec_augment:
            return config
        masks = SPEC_AUGMENT if spec_augment else AugmentConfig()
        return replace(
            config,
            freq_masks=masks.freq_masks,
            freq_mask_bins=masks.freq_mask_bins,
            time_masks=masks.time_masks,
            time_mask_frames=masks.time_mask_frames,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (see `from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        """Rebuild from `to_dict` output; unknown keys raise `InputError`."""
        return config_from_dict(cls, data)


# SpecAugment's strength in the modern recipe, chosen by measurement on real music (README, "Accuracy").
SPEC_AUGMENT = AugmentConfig(freq_masks=2, freq_mask_bins=16, time_masks=2, time_mask_frames=20)


class RandomGain(nn.Module):
    """Multiply each ``(batch, time)`` waveform by its own random gain, in training only."""

    def __init__(self, gain_db: float):
        super().__init__()
        self.gain_db = gain_db

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Same shape as `waveform`."""
        if not self.training or self.gain_db == 0:
            return waveform
        db = (torch.rand(waveform.shape[0], 1, device=waveform.device) * 2 - 1) * self.gain_db  # (batch, 1)
        return waveform * torch.pow(10.0, db / 20)


class SpecAugment(nn.Module):
    """Frequency and time masks on ``(batch, freq, time)`` features, in training only."""

    def __init__(self, config: AugmentConfig):
        super().__init__()
        self.config = config

    def forward(self, specgram: torch.Tensor) -> torch.Tensor:
        """Same shape as `specgram`; masked cells take 0 (the mean of normalised features)."""
        config = self.config
        if not self.training:
            return specgram
        keep = _band_keep(specgram, config.freq_masks, config.freq_mask_bins, dim=1)
        keep = keep & _band_keep(specgram, config.time_masks, config.time_mask_frames, dim=2)
        return specgram * keep


def _band_keep(specgram: torch.Tensor, masks: int, max_width: int, dim: int) -> torch.Tensor:
    """A boolean mask broadcastable to `specgram`, False inside `masks` random bands along `dim`."""
    batch, size = specgram.shape[0], specgram.shape[dim]
    shape = [batch, 1, 1]
    shape[dim] = size
    keep = torch.ones(shape, dtype=torch.bool, device=specgram.device)
    if masks == 0 or max_width == 0:
        return keep
    position = torch.arange(size, device=specgram.device).view(1, 1, size)  # (1, 1, size)
    width = torch.randint(0, min(max_width, size) + 1, (batch, masks, 1), device=specgram.device)  # (batch, masks, 1)
    start = (torch.rand(batch, masks, 1, device=specgram.device) * (size - width + 1)).long()
    inside = ((position >= start) & (position < start + width)).any(dim=1)  # (batch, size)
    return ~inside.view(shape)
