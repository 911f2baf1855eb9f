"""The on-device frontend: waveform batches in, the features a model was built for out.

Owns the mel spectrogram (torch.stft + nnAudio's mel filters) and the two compressions the
models use: the paper's peak-referenced dB with per-example normalisation (and the resize that
stands in for its PNG), and musicnn's ``log10(1 + 10000 * mel)``. Every registered model
declares its `FrontendConfig` (rate, FFT, hop, bands, compression, resize, window length), and
that one declaration is what the loader, checkpoints, evaluate, predict, tag, export and bench
read. Works on tensors already on the device; knows nothing about files, decoding or labels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import julius
import torch
import torch.nn.functional as F
from nnAudio.utils import get_mel
from torch import nn

from streamgenre.config import config_from_dict
from streamgenre.errors import InputError
from streamgenre.paper import PAPER_SAMPLE_RATE, PAPER_WINDOW_S

# librosa.power_to_db's floor on power; silence maps to 10*log10(AMIN) before the reference.
AMIN = 1e-10
# Guards the division in `normalize_per_example` for constant inputs (silence).
NORM_EPS = 1e-5
# The compressions a frontend can apply to the mel power: "db" is the paper's (peak-referenced dB,
# then per-example normalisation); "log10" is musicnn's log10(1 + LOG_SCALE * mel).
COMPRESSIONS = ("db", "log10")
LOG_SCALE = 10000.0


@dataclass(frozen=True)
class FrontendConfig:
    """How a waveform becomes a model's input, and how long a window the model hears.

    The defaults are the paper's ("Music Genre Classification with 2D CNN", FMA small):
    `librosa.feature.melspectrogram` defaults at 22050 Hz, `power_to_db(ref=np.max)` with
    top_db 80, drawn as a 288x432 RGB PNG, 3-s windows. `f_max=None` means `sample_rate / 2`.
    `compression` is one of `COMPRESSIONS` (`top_db` only applies to "db").
    `input_sample_rate=None` means waveforms already arrive at `sample_rate`; an int (e.g.
    44100) makes the frontend resample on the device first, so the CPU only decodes.
    """

    sample_rate: int = PAPER_SAMPLE_RATE  # the paper: librosa's default rate
    n_fft: int = 2048  # the paper: librosa's default STFT size
    hop_length: int = 512  # the paper: librosa's default hop
    n_mels: int = 128  # the paper: librosa's default mel bands
    f_min: float = 0.0
    f_max: float | None = None
    top_db: float = 80.0  # the paper: librosa.power_to_db's default floor
    image_height: int | None = 288  # the paper: a 288x432 PNG ... (None: no resize, the mel as it is)
    image_width: int | None = 432
    channels: int = 3  # ... in RGB (1 without a resize)
    compression: str = "db"
    window_s: float = PAPER_WINDOW_S  # the paper: 3-s examples
    input_sample_rate: int | None = None

    def __post_init__(self):
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "channels"):
            _check_positive(name, getattr(self, name))
        if (self.image_height is None) != (self.image_width is None):
            raise InputError("frontend image_height and image_width are both set (resize) or both None (no resize)")
        if self.image_height is not None:
            _check_positive("image_height", self.image_height)
            _check_positive("image_width", self.image_width)
        elif self.channels != 1:
            raise InputError(f"a frontend without a resize gives 1 channel, got channels={self.channels}")
        if self.input_sample_rate is not None:
            _check_positive("input_sample_rate", self.input_sample_rate)
        nyquist = self.sample_rate / 2
        f_max = nyquist if self.f_max is None else self.f_max
        if not 0.0 <= self.f_min < f_max <= nyquist:
            raise InputError(f"frontend needs 0 <= f_min < f_max <= sample_rate / 2 = {nyquist}; got f_min={self.f_min}, f_max={self.f_max}")
        if self.top_db <= 0:
            raise InputError(f"frontend top_db must be > 0 dB, got {self.top_db}")
        if self.compression not in COMPRESSIONS:
            raise InputError(f"frontend compression must be one of {COMPRESSIONS}, got {self.compression!r}")
        if not self.window_s > 0:
            raise InputError(f"frontend window_s must be > 0 seconds, got {self.window_s}")

    @property
    def shortest_samples(self) -> int:
        """The fewest samples (at `sample_rate`) the frontend takes: its STFT's reflect padding needs more than ``n_fft // 2``."""
        return self.n_fft // 2 + 1

    @property
    def window_samples(self) -> int:
        """Samples of one window at `sample_rate`."""
        return round(self.window_s * self.sample_rate)

    @property
    def image_shape(self) -> tuple[int, int | None, int | None]:
        """The output image of one example, ``(channels, image_height, image_width)`` (None: not resized)."""
        return (self.channels, self.image_height, self.image_width)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (see `from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontendConfig:
        """Rebuild from `to_dict` output; unknown keys raise `InputError`."""
        return config_from_dict(cls, data)


def power_to_db(specgram: torch.Tensor, top_db: float) -> torch.Tensor:
    """Power to decibels relative to each example's own peak, like ``librosa.power_to_db(S, ref=np.max)``.

    The reference is per example, not per batch (torchaudio's `AmplitudeToDB` takes one over
    the whole tensor), so an example's dB values do not depend on what else is in the batch.
    As in librosa, a clip and a snippet of it get different values (different peaks).

    Args:
        specgram: power spectrogram ``(batch, freq, time)``.
        top_db: floor below each example's peak; every example ends in ``[-top_db, 0]``.

    Returns:
        dB spectrogram ``(batch, freq, time)``; silence is all zeros.
    """
    db = 10.0 * torch.log10(specgram.clamp_min(AMIN))  # (batch, freq, time)
    peak = db.amax(dim=(-2, -1), keepdim=True)  # (batch, 1, 1): the ref=np.max of each example
    return (db - peak).clamp_min(-top_db)


def log_compress(specgram: torch.Tensor) -> torch.Tensor:
    """musicnn's compression, ``log10(1 + LOG_SCALE * mel)``, always in float32.

    In float16 ``10000 * mel`` overflows for loud bins and silently changes the tags, so the
    input is promoted whatever autocast would do.
    """
    return torch.log10(1.0 + LOG_SCALE * specgram.float())


def normalize_per_example(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit standard deviation per example, over all non-batch dims.

    Why: the paper's PNG mapped each clip's own dB range onto the colour scale, so loudness
    never reached the CNN; this does the same without the colour map. Constant input (silence)
    stays finite: its spread is floored at `NORM_EPS`, giving all zeros.

    Args:
        x: ``(batch, ...)``, e.g. a dB spectrogram ``(batch, freq, time)``.

    Returns:
        Same shape as `x`.
    """
    dims = tuple(range(1, x.dim()))
    std, mean = torch.std_mean(x, dim=dims, keepdim=True, correction=0)  # (batch, 1, ...)
    return (x - mean) / std.clamp_min(NORM_EPS)


def to_image(specgram: torch.Tensor, height: int, width: int, channels: int) -> torch.Tensor:
    """Resize a spectrogram to the CNN's input image, like saving it as a fixed-size picture.

    The mel axis becomes the image height (bin 0 on row 0), time the width. Any clip length
    maps to the same size, so short windows work (with coarser time detail). Channels are
    copies: the paper's RGB came from a colour map, not from extra information.

    Args:
        specgram: ``(batch, freq, time)``.
        height: output rows.
        width: output columns.
        channels: copies stacked as channels.

    Returns:
        ``(batch, channels, height, width)``, an expanded view (the copies share memory).
    """
    image = F.interpolate(specgram.unsqueeze(1), size=(height, width), mode="bilinear", align_corners=False)  # (batch, 1, H, W)
    return image.expand(-1, channels, -1, -1)  # (batch, channels, H, W)


class MelFrontend(nn.Module):
    """Waveforms to normalised mel images on whatever device the module sits on.

    Resample (julius, only if the input rate differs), mel power spectrogram, `power_to_db`,
    `normalize_per_example`, `to_image`. The window and mel filters are fixed buffers built
    once, so `.to(device)` moves them; they are not saved in the `state_dict` (they follow from
    the config, which checkpoints carry). The mel runs in float32 even under autocast: float16
    power spectra overflow.

    Set up like librosa: centred frames with reflect padding (librosa's default before 0.10,
    which the paper used; 0.10 switched to zero padding), periodic Hann window, Slaney mel scale
    and area-normalised filters (nnAudio's `get_mel`, librosa's formula). The STFT is
    `torch.stft` (an FFT): nnAudio's `MelSpectrogram` computes the same power with a 2048-tap
    convolution, which measured 5.4x slower on the CPU (the same values within 2e-6 relative)
    and kept 16 MB of kernels on the device.

    Example:
        >>> MelFrontend(FrontendConfig())(torch.zeros(2, 66150)).shape
        torch.Size([2, 3, 288, 432])
    """

    def __init__(self, config: FrontendConfig):
        super().__init__()
        self.config = config
        self.input_sample_rate = config.input_sample_rate or config.sample_rate
        # julius's ResampleFrac is the identity (and holds no kernel) when the rates are equal.
        self.resample = julius.ResampleFrac(self.input_sample_rate, config.sample_rate)
        mel_basis = get_mel(config.sample_rate, config.n_fft, config.n_mels, config.f_min, config.f_max, htk=False, norm=1)
        self.register_buffer("mel_basis", torch.as_tensor(mel_basis, dtype=torch.float32), persistent=False)  # (n_mels, n_fft // 2 + 1)
        self.register_buffer("window", torch.hann_window(config.n_fft, periodic=True), persistent=False)
        for module in self.modules():  # keep the fixed filters out of checkpoints (see above)
            for name, buffer in list(module.named_buffers(recurse=False)):
                module.register_buffer(name, buffer, persistent=False)
        self._other_resamplers: dict[tuple[int, str], nn.Module] = {}  # built on first use, not saved

    def mel_power(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(batch, time)`` at `config.sample_rate` -> mel power ``(batch, n_mels, frames)``."""
        config = self.config
        exporting = is_exporting()
        spec = torch.stft(
            waveform, config.n_fft, config.hop_length, window=self.window, center=True, pad_mode="reflect", return_complex=not exporting
        )  # (batch, freq, frames), complex; (..., 2) real pairs when exporting (exporters take no complex tensors)
        power = spec.pow(2).sum(-1) if exporting else spec.real.square() + spec.imag.square()
        return torch.matmul(self.mel_basis, power)

    def spectrogram(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Mel power spectrogram at `config.sample_rate`, resampling first if needed.

        Args:
            waveform: ``(batch, time)`` audio in [-1, 1].
            sample_rate: rate of `waveform`; None means `config.input_sample_rate` (or
                `config.sample_rate` when that is None). Another rate builds its resampling
                kernel on first use and keeps it.

        Returns:
            float32 power ``(batch, n_mels, frames)``, ``frames = 1 + time' // hop_length``
            where ``time'`` is the length after resampling.

        Raises:
            InputError: `waveform` is not 2-D, or is shorter than ``n_fft // 2 + 1`` samples
                after resampling (reflect padding needs that many).
        """
        if waveform.dim() != 2:
            raise InputError(f"the frontend takes (batch, time) waveforms, got shape {tuple(waveform.shape)}")
        rate = self.input_sample_rate if sample_rate is None else sample_rate
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            waveform = waveform.float()
            waveform = self._resampler(rate, waveform.device)(waveform)
            if waveform.shape[-1] < self.config.shortest_samples:
                raise InputError(
                    f"a waveform of {waveform.shape[-1]} samples at {self.config.sample_rate} Hz is too short for "
                    f"n_fft={self.config.n_fft}; give at least {self.config.shortest_samples} samples"
                )
            return self.mel_power(waveform)  # (batch, n_mels, frames)

    def _resampler(self, rate: int, device: torch.device) -> nn.Module:
        """julius's resampler from `rate`, its kernel built once per input rate and device."""
        if rate == self.input_sample_rate:
            return self.resample
        key = (rate, str(device))
        if key not in self._other_resamplers:
            self._other_resamplers[key] = julius.ResampleFrac(rate, self.config.sample_rate).to(device)
        return self._other_resamplers[key]

    def features(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Compressed mel ``(batch, n_mels, frames)`` in float32; `sample_rate` as in `spectrogram`.

        "db": normalised peak-referenced dB; "log10": ``log10(1 + 10000 * mel)``.
        """
        # Stays float32 under autocast: autocast lowers only matmul/conv-like ops, none of which follow.
        power = self.spectrogram(waveform, sample_rate)
        if self.config.compression == "log10":
            return log_compress(power)
        return normalize_per_example(power_to_db(power, self.config.top_db))

    def shape_for_model(self, features: torch.Tensor) -> torch.Tensor:
        """``(batch, n_mels, frames)`` features -> the CNN's input: the resized image, or ``(batch, 1, n_mels, frames)``."""
        config = self.config
        if config.image_height is None:
            return features.unsqueeze(1)
        return to_image(features, config.image_height, config.image_width, config.channels)

    def forward(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Map ``(batch, time)`` waveforms to the CNN's float32 input (see `shape_for_model`).

        `sample_rate` is as in `spectrogram`.
        """
        return self.shape_for_model(self.features(waveform, sample_rate))


def is_exporting() -> bool:
    """True while torch.jit traces or torch.onnx exports: exporters take no complex tensors and no Python-side caches."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _check_positive(name: str, value: int) -> None:
    if value <= 0:
        raise InputError(f"frontend {name} must be > 0, got {value}")
