"""Stage 7: the paper's pipeline on the same clips (window -> WAV -> librosa mel -> PNG -> tensors -> CNN).

librosa and Pillow (the ``[bench]`` extra) are imported only here, inside the functions; without
them the stage is skipped and reported as such.
"""

from __future__ import annotations

import importlib.util
import wave
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from streamgenre.audio import Window, decode
from streamgenre.bench.core import MB, BenchConfig, Clip, StageRow, optimizer_step, timed_map
from streamgenre.models.paper import PaperCNN
from streamgenre.paper import (
    PAPER_COLORMAP,
    PAPER_FIGURE_DPI,
    PAPER_FIGURE_INCHES,
    PAPER_LR,
    PAPER_SAMPLE_RATE,
)
from streamgenre.units import Seconds


@dataclass
class PaperRun:
    """What the paper pipeline produced and cost (stage 7), for stages 8 and 9."""

    pngs: list[Path]
    prepare_s: float
    load_s: float
    epoch_s: float
    disk_bytes: int
    tensor_bytes: int


def missing_paper_extras() -> list[str]:
    """The ``[bench]`` extras the paper pipeline needs that are not installed."""
    return [name for name in ("librosa", "PIL") if importlib.util.find_spec(name) is None]


def paper_stages(clips: list[Clip], labels: list[str], config: BenchConfig, device: torch.device, scratch: Path) -> PaperRun | None:
    """Stage 7 and the paper half of stage 9: WAV + PNG per clip, PNGs into tensors, one epoch; None without the extras."""
    if missing_paper_extras():
        return None
    folder = scratch / "paper"
    folder.mkdir()
    prepare = partial(prepare_paper_clip, duration_s=config.duration_s, folder=folder)
    pngs, prepare_s = timed_map(prepare, clips, "7 paper: WAV + mel + PNG", config.progress)
    images, load_s = timed_map(load_paper_png, pngs, "7 paper: PNG -> tensor", config.progress)
    disk_bytes = sum(path.stat().st_size for path in folder.iterdir())
    targets = torch.tensor([labels.index(clip.genre) for clip in clips])
    epoch_s = _paper_epoch(images, targets, len(labels), config, device)
    return PaperRun(pngs, prepare_s, load_s, epoch_s, disk_bytes, sum(image.nbytes for image in images))


def prepare_paper_clip(clip: Clip, duration_s: Seconds, folder: Path) -> Path:
    """The paper's preparation of one clip: window -> WAV file -> librosa mel + dB -> 432x288 PNG.

    The MP3's window is decoded with `audio.decode` (faster than the paper's decoder, which favours
    the paper); the mel settings are librosa's defaults, as in the paper.
    """
    import librosa

    wav = folder / f"{clip.key}.wav"
    write_wav(wav, decode(clip.data, Window(clip.offset_s, duration_s), PAPER_SAMPLE_RATE).samples.numpy(), PAPER_SAMPLE_RATE)
    waveform, rate = librosa.load(wav, sr=None)
    db = librosa.power_to_db(librosa.feature.melspectrogram(y=waveform, sr=rate), ref=np.max)  # (n_mels, frames)
    png = folder / f"{clip.key}.png"
    save_spectrogram_png(db, png)
    return png


def write_wav(path: Path, waveform: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono WAV with the stdlib `wave` module (the paper's intermediate file)."""
    pcm = (np.clip(waveform, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as stream:
        stream.setnchannels(1)
        stream.setsampwidth(2)
        stream.setframerate(sample_rate)
        stream.writeframes(pcm.tobytes())


def save_spectrogram_png(db: np.ndarray, path: Path) -> None:
    """A colour-mapped dB spectrogram as a borderless 432x288 PNG, as a notebook would save it."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=PAPER_FIGURE_INCHES, dpi=PAPER_FIGURE_DPI)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.set_axis_off()
    axes.imshow(db, origin="lower", aspect="auto", cmap=PAPER_COLORMAP)
    figure.savefig(path, dpi=PAPER_FIGURE_DPI)


def load_paper_png(path: Path) -> torch.Tensor:
    """Load a PNG like torchvision's ToTensor: float32 ``(3, 288, 432)`` in [0, 1]."""
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.array(image.convert("RGB"))  # (288, 432, 3) uint8, writable
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous().float().div_(255)  # (3, 288, 432)


def _paper_epoch(images: list[torch.Tensor], targets: torch.Tensor, n_classes: int, config: BenchConfig, device: torch.device) -> float:
    """Seconds for one shuffled epoch of the paper's CNN on the held tensors (after one warm-up step)."""
    model = PaperCNN(max(2, n_classes)).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=PAPER_LR)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0)).tolist()
    batches = [order[start : start + config.batch_size] for start in range(0, len(order), config.batch_size)]
    step = partial(_image_step, model, optimizer, images, targets, device)
    return timed_map(step, batches, "7 paper: epoch on tensors", config.progress, device, config.batch_size)[1]


def _image_step(model, optimizer, images: list[torch.Tensor], targets: torch.Tensor, device: torch.device, batch: list[int]) -> None:
    inputs = torch.stack([images[i] for i in batch]).to(device)  # (batch, 3, 288, 432)
    optimizer_step(optimizer, model(inputs), targets[batch].to(device))


def paper_rows(paper: PaperRun | None, clips: int) -> list[StageRow]:
    names = ("paper: prepare (WAV + librosa mel + PNG)", "paper: load PNGs into tensors", "paper: epoch on the held tensors")
    if paper is None:
        return [StageRow("7", name, 0, 0.0, None, detail="skipped: librosa/Pillow missing") for name in names]
    return [
        StageRow(
            "7",
            names[0],
            clips,
            paper.prepare_s,
            clips / paper.prepare_s,
            clips / paper.prepare_s,
            f"{paper.disk_bytes / clips / 1e3:,.0f} kB written per clip",
        ),
        StageRow("7", names[1], clips, paper.load_s, clips / paper.load_s, clips / paper.load_s, f"{paper.tensor_bytes / clips / MB:.2f} MB of RAM per clip"),
        StageRow("7", names[2], clips, paper.epoch_s, clips / paper.epoch_s, None, "the paper's CNN alone"),
    ]
