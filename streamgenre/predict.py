"""`streamgenre predict`: what genre is this song? Any audio file, the whole clip heard.

Each file is decoded as a stream, block by block, and cut into windows as the blocks arrive;
windows (from one file or several) go through the model `windows.WINDOWS_PER_FORWARD` at a time. A file
that cannot be decoded becomes an error result, never a crash.

Memory is bounded whatever the file's length: at most `windows.WINDOWS_PER_FORWARD` windows and the
model's activations for them, plus about one window and one hop of decoded audio and the block
being decoded. Only the window probabilities (windows x classes floats: 1200 x 8 x 4 bytes for
an hour heard in 3-s windows) grow with the file. With ``--windows N`` the file is decoded twice:
once to measure its length, once to cut the N windows (so is a plan with neither N nor a hop,
whose one window is the clip's middle). Measured on a CPU with the paper's CNN
and 44.1 kHz stereo MP3s: peak RSS 1.36 GB for 10 minutes and 1.41 GB for 60 (0.57 GB for one
30-s clip; before streaming, 3.6 GB for 10 minutes), nearly all of it the model's activations
for 64 windows.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from streamgenre.audio import decode_blocks
from streamgenre.checkpoint import LoadedModel
from streamgenre.errors import DecodeError, InputError
from streamgenre.files import is_temporary
from streamgenre.windows import WindowBatcher, WindowPlan, combine_windows

log = logging.getLogger(__name__)
AUDIO_SUFFIXES = {".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aiff", ".aif", ".wma"}


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
    """Files as given, folders as the audio files under them (sorted), ``-`` as paths read from stdin.

    A broken link with an audio suffix is kept, so that it gets an error line instead of vanishing.
    """
    paths: list[Path] = []
    for argument in arguments:
        if argument == "-":
            paths += [Path(line.strip()) for line in stdin_lines if line.strip()]
        elif Path(argument).is_dir():
            paths += sorted(p for p in Path(argument).rglob("*") if _is_audio_name(p) and (p.is_file() or p.is_symlink()))
        else:
            paths.append(Path(argument))
    if not paths:
        raise InputError("no audio files to predict: give files, folders or - (paths on stdin)")
    return paths


def _is_audio_name(path: Path) -> bool:
    """An audio suffix, and not the temporary file of a write in progress (or killed) such as `tag --write`'s."""
    return path.suffix.lower() in AUDIO_SUFFIXES and not is_temporary(path)


@dataclass(eq=False)
class _File:
    """One input on its way through: its windows' probabilities arrive as the forward passes run."""

    path: Path
    probs: list[torch.Tensor] = field(default_factory=list)  # (classes,) per window, in order
    pending: int = 0  # windows queued for a forward pass
    decoded: bool = False
    error: str | None = None


def predict_files(loaded: LoadedModel, paths: list[Path], plan: WindowPlan, top: int, device: torch.device) -> Iterator[FilePrediction]:
    """Yield one prediction per path, in order; windows of consecutive files share forward passes.

    A file that fails in any way is one error result and costs no other file anything. If the
    run itself stops (Ctrl-C, a failing forward pass), what is queued is still scored and yielded
    first, so nothing already heard is lost.
    """
    if top < 1:
        raise InputError(f"--top must be >= 1, got {top}")
    if loaded.multi_label and plan.vote != "mean":
        raise InputError(f"--vote {plan.vote}: a tagger's tags are independent, not one choice per window; use --vote mean")
    batcher = WindowBatcher(loaded.model, device, _deliver, probabilities=loaded.probabilities)
    waiting: deque[_File] = deque()
    try:
        for path in paths:
            item = _File(path)
            waiting.append(item)
            _queue_windows(item, batcher, loaded, plan)
            yield from _finished(waiting, loaded, plan, top)
    except GeneratorExit:
        raise
    except BaseException:
        batcher.flush()
        yield from _finished(waiting, loaded, plan, top)
        raise
    batcher.flush()
    yield from _finished(waiting, loaded, plan, top)


def _queue_windows(item: _File, batcher: WindowBatcher[_File], loaded: LoadedModel, plan: WindowPlan) -> None:
    """Decode one file into the batcher; any failure of the file becomes its error (never the run's)."""
    try:
        for window, rate in stream_windows(item.path, loaded, plan):
            item.pending += 1
            batcher.add(item, window[None], rate)
    except (DecodeError, OSError) as exn:
        item.error = str(exn)
    except Exception as exn:  # noqa: BLE001 (one odd file must not cost the others their predictions)
        log.debug("unexpected failure on %s", item.path, exc_info=True)
        item.error = f"cannot decode it: unexpected {type(exn).__name__}: {exn}"
    item.decoded = True


def _deliver(item: _File, probs: torch.Tensor) -> None:
    item.probs.extend(probs)
    item.pending -= len(probs)


def _finished(waiting: deque[_File], loaded: LoadedModel, plan: WindowPlan, top: int) -> Iterator[FilePrediction]:
    """The predictions of the leading files whose windows have all been heard (in input order)."""
    while waiting and waiting[0].decoded and (waiting[0].error or not waiting[0].pending):
        item = waiting.popleft()
        if item.error:
            yield FilePrediction(str(item.path), [], 0, error=item.error)
            continue
        clip = combine_windows(torch.stack(item.probs), plan.vote)
        best = torch.argsort(clip, descending=True)[:top].tolist()
        yield FilePrediction(str(item.path), [(loaded.labels[k], float(clip[k])) for k in best], len(item.probs))


def stream_windows(path: Path, loaded: LoadedModel, plan: WindowPlan) -> Iterator[tuple[torch.Tensor, int]]:
    """The windows `plan.cut` would cut from the whole decoded file, cut from a stream instead.

    With ``plan.hop_s`` the starts are `windows.window_starts`'s hop starts, found without the
    length (each as soon as its window is decoded, the last full window at the end); otherwise
    `plan.starts` places them once a first decode has measured the length.

    Yields ``(window, rate)`` with window ``(round(plan.duration_s * rate),)`` float32: at the
    file's rate, or at the model's when the checkpoint resamples on the CPU.

    Raises:
        DecodeError: the file is not audio, or is damaged part-way.
        OSError: the file cannot be read.
    """
    target = None if loaded.spec.resample == "device" else loaded.spec.sample_rate
    rate, blocks = decode_blocks(path, target)
    window = round(plan.duration_s * rate)
    if plan.hop_s is not None:  # every hop from the start, then the last full window so the end is heard too
        cut = _cut(blocks, window, itertools.count(0, round(plan.hop_s * rate)), then_last=True)
    else:  # windows placed by the clip's length (`plan.starts`): it must be known first
        length = sum(len(block) for block in blocks)
        _, blocks = decode_blocks(path, target)
        cut = _cut(blocks, window, iter(plan.starts(length, rate)), then_last=False)
    for samples in cut:
        yield torch.from_numpy(samples), rate


def _cut(blocks: Iterator[np.ndarray], window: int, starts: Iterator[int], then_last: bool) -> Iterator[np.ndarray]:
    """Windows of `window` samples at `starts` (ascending) from a stream of blocks.

    Keeps only the decoded samples a coming window needs (and, with `then_last`, the last
    `window` samples, for the window that ends the clip). A window running past the end is
    zero-padded, as `slice_windows` pads a short clip.
    """
    held: deque[np.ndarray] = deque()  # the blocks covering [first, end)
    first = end = 0
    start = next(starts, None)
    emitted = None
    for block in blocks:
        held.append(block)
        end += len(block)
        if start is not None and start + window <= end:
            merged = np.concatenate(held)
            while start is not None and start + window <= end:
                yield merged[start - first : start - first + window].copy()
                emitted, start = start, next(starts, None)
            held = deque([merged])
        if start is None and not then_last:
            return  # every window is out: the rest of the file need not be decoded
        keep = max(first, end - window if start is None else min(start, end - window))
        while held and first + len(held[0]) <= keep:  # drop what no window will need
            first += len(held.popleft())
        if held and first < keep:
            held[0] = held[0][keep - first :]
            first = keep
    tail = np.concatenate(held) if held else np.zeros(0, np.float32)
    if then_last:
        last = max(0, end - window)
        if emitted != last:
            yield _padded(tail[last - first :], window)
        return
    while start is not None:
        yield _padded(tail[max(0, start - first) :], window)
        start = next(starts, None)


def _padded(samples: np.ndarray, window: int) -> np.ndarray:
    out = np.zeros(window, np.float32)
    out[: min(window, len(samples))] = samples[:window]
    return out
