"""`streamgenre predict`: what genre is this song? Any audio file, the whole clip heard.

Each file is decoded once, cut into windows in memory, and windows from several files share a
forward pass; a file that cannot be decoded becomes an error result, never a crash.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from streamgenre.audio import decode_full, decode_full_native
from streamgenre.checkpoint import LoadedModel
from streamgenre.errors import DecodeError, InputError
from streamgenre.windows import WindowPlan, combine_windows

AUDIO_SUFFIXES = {".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aiff", ".aif", ".wma"}
WINDOWS_PER_FORWARD = 64


@dataclass
class FilePrediction:
    """Top genres of one file, or the reason it could not be heard."""

    path: str
    top: list[tuple[str, float]]
    windows: int
    error: str | None = None

    def to_json(self) -> dict:
        """The object printed per line by ``predict --json``."""
        if self.error:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "top": [{"genre": g, "probability": round(p, 6)} for g, p in self.top], "windows": self.windows}


def expand_inputs(arguments: Iterable[str], stdin_lines: Iterable[str] = ()) -> list[Path]:
    """Files as given, folders as the audio files under them (sorted), ``-`` as paths read from stdin."""
    paths: list[Path] = []
    for argument in arguments:
        if argument == "-":
            paths += [Path(line.strip()) for line in stdin_lines if line.strip()]
        elif Path(argument).is_dir():
            paths += sorted(p for p in Path(argument).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        else:
            paths.append(Path(argument))
    if not paths:
        raise InputError("no audio files to predict: give files, folders or - (paths on stdin)")
    return paths


def predict_files(loaded: LoadedModel, paths: list[Path], plan: WindowPlan, top: int, device: torch.device) -> Iterator[FilePrediction]:
    """Yield one prediction per path, in order; windows of consecutive files share forward passes."""
    pending: list[tuple[Path, torch.Tensor, int]] = []
    for path in paths:
        try:
            waveform, rate = _decode(path, loaded)
        except (DecodeError, OSError) as exn:
            yield from _flush(loaded, pending, plan, top, device)
            pending = []
            yield FilePrediction(str(path), [], 0, error=str(exn))
            continue
        pending.append((path, plan.cut(waveform, rate), rate))
        if sum(len(windows) for _, windows, _ in pending) >= WINDOWS_PER_FORWARD:
            yield from _flush(loaded, pending, plan, top, device)
            pending = []
    yield from _flush(loaded, pending, plan, top, device)


def _decode(path: Path, loaded: LoadedModel) -> tuple[torch.Tensor, int]:
    data = path.read_bytes()
    if loaded.spec.resample == "device":
        return decode_full_native(data)
    return decode_full(data, loaded.spec.sample_rate), loaded.spec.sample_rate


@torch.inference_mode()
def _flush(loaded: LoadedModel, pending: list[tuple[Path, torch.Tensor, int]], plan: WindowPlan, top: int, device: torch.device) -> Iterator[FilePrediction]:
    """Run the pending files' windows, one forward pass per sample rate, and combine per file."""
    probs: dict[int, torch.Tensor] = {}
    for rate in {rate for _, _, rate in pending}:
        index = [i for i, (_, _, r) in enumerate(pending) if r == rate]
        stacked = torch.cat([pending[i][1] for i in index]).to(device)  # (windows, samples)
        out = torch.softmax(loaded.model(stacked, sample_rate=rate).float(), dim=1).cpu()
        for i, part in zip(index, out.split([len(pending[i][1]) for i in index])):
            probs[i] = part
    for i, (path, windows, _) in enumerate(pending):
        clip = combine_windows(probs[i], plan.vote)
        best = torch.argsort(clip, descending=True)[:top].tolist()
        yield FilePrediction(str(path), [(loaded.labels[k], float(clip[k])) for k in best], len(windows))
