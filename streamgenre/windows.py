"""Which windows of a clip the model hears: random windows for training, planned ones for inference.

Training draws `k` windows per clip per epoch, stratified over the clip and reproducible from the
seed, the epoch and the clip's key alone (so neither worker count nor shard order changes them).
Inference follows a `WindowPlan` (N evenly spaced windows, or one every hop), cut in fixed-size
chunks so memory never grows with the number of windows, and combines window probabilities.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from streamgenre.errors import InputError
from streamgenre.units import Seconds

# The finest --hop: 100 ms already gives 300 windows of a 30-s clip (a shorter window may hop by itself).
MIN_HOP_S = 0.1
VOTES = ("mean", "majority")
Owner = TypeVar("Owner")


def check_windows_per_clip(count: int, offset_s: Seconds | None) -> None:
    """How many training windows a clip may give: at least one, and more only at random offsets.

    Raises:
        InputError: `count` < 1, or > 1 with a fixed offset (which is one window).
    """
    if count < 1:
        raise InputError(f"--windows-per-clip must be >= 1, got {count}")
    if count > 1 and offset_s is not None:
        raise InputError(f"--windows-per-clip {count} needs --offset random (a fixed offset gives one window)")


def random_offsets(key: str, seed: int, epoch: int, count: int, clip_s: Seconds, window_s: Seconds) -> list[Seconds]:
    """`count` window starts for clip `key` in `epoch`: one uniform draw in each of `count` equal strata.

    Stratifying spreads the windows over the whole clip and keeps them distinct (unless the
    clip is no longer than a window, when every start is 0). Sorted, so a decoder seeks forward.
    """
    rng = random.Random(zlib.crc32(key.encode()) ^ (seed * 1_000_003 + epoch * 7919))
    span = max(0.0, clip_s - window_s)
    return [span * (i + rng.random()) / count for i in range(count)]


def window_starts(length: int, window: int, windows: int | None = None, hop: int | None = None) -> list[int]:
    """Start samples of the windows that cover a clip of `length` samples.

    `windows` spreads that many windows evenly from the start to the last full window; `hop`
    steps by that many samples instead, plus the last full window so the end is heard too. A
    clip shorter than one window gives one start, 0.
    """
    last = max(0, length - window)
    if windows is not None:
        return [round(last * i / (windows - 1)) for i in range(windows)] if windows > 1 else [last // 2]
    starts = list(range(0, last + 1, hop)) if hop else [0]
    return starts if starts[-1] == last else [*starts, last]


def slice_windows(waveform: torch.Tensor, window: int, starts: list[int]) -> torch.Tensor:
    """Cut ``(samples,)`` into ``(len(starts), window)``, zero-padding a short clip."""
    if waveform.shape[-1] < window:
        waveform = torch.nn.functional.pad(waveform, (0, window - waveform.shape[-1]))
    return torch.stack([waveform[start : start + window] for start in starts])  # (windows, window)


def combine_windows(probs: torch.Tensor, vote: str) -> torch.Tensor:
    """One clip's ``(windows, classes)`` probabilities -> ``(classes,)``: mean, or majority share."""
    if vote == "majority":
        return torch.bincount(probs.argmax(dim=1), minlength=probs.shape[1]).float() / probs.shape[0]
    return probs.mean(dim=0)


@dataclass(frozen=True)
class WindowPlan:
    """How a whole clip is heard: windows of `duration_s`, either `windows` of them or one every `hop_s`.

    With neither, the clip is one window long already (the loader cut it) and is heard as it is.
    A hop may be as short as `MIN_HOP_S` or the window itself: ``predict`` and ``tag`` hop by the
    run's window when no --hop is given, and a run trained on shorter windows must not be refused.
    """

    duration_s: Seconds
    windows: int | None = None
    hop_s: Seconds | None = None
    vote: str = "mean"

    def __post_init__(self):
        if self.windows is not None and self.hop_s is not None:
            raise InputError("give --windows or --hop, not both")
        if self.windows is not None and self.windows < 1:
            raise InputError(f"--windows must be >= 1, got {self.windows}")
        finest = min(MIN_HOP_S, self.duration_s)
        if self.hop_s is not None and self.hop_s < finest:
            raise InputError(f"--hop must be at least {finest:g} s, got {self.hop_s:g} s")
        if self.vote not in VOTES:
            raise InputError(f"--vote must be {' or '.join(VOTES)}, got {self.vote!r}")

    def starts(self, length: int, sample_rate: int) -> list[int]:
        """Start samples of the planned windows in a clip of `length` samples."""
        window = round(self.duration_s * sample_rate)
        hop = round(self.hop_s * sample_rate) if self.hop_s else None
        windows = self.windows if self.windows is not None or hop else 1
        return window_starts(length, window, windows, hop)

    def chunks(self, waveform: torch.Tensor, sample_rate: int, size: int) -> Iterator[torch.Tensor]:
        """``(samples,)`` -> ``(<= size, window_samples)`` pieces of the planned windows, in order."""
        window = round(self.duration_s * sample_rate)
        starts = self.starts(waveform.shape[-1], sample_rate)
        for first in range(0, len(starts), size):
            yield slice_windows(waveform, window, starts[first : first + size])

    def cut(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """``(samples,)`` -> all planned windows ``(windows, window_samples)`` at once."""
        return torch.cat(list(self.chunks(waveform, sample_rate, size=len(self.starts(waveform.shape[-1], sample_rate)))))


# Windows per forward pass at inference: bounds memory whatever the plan or file length
# (a window's activations in the paper's CNN are ~4 MB at 3x288x432).
WINDOWS_PER_FORWARD = 64


def softmax_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """``(batch, classes)`` logits -> float32 probabilities that sum to 1 per row (one genre per clip)."""
    return torch.softmax(logits.float(), dim=1)


class WindowBatcher(Generic[Owner]):
    """Windows of many clips waiting for the model: one forward pass per `size` windows of one rate.

    The one window batcher of `evaluate`, `predict`, `tag` and training's whole-clip validation.
    `add` queues an owner's ``(n, samples)`` windows; a full queue, or a change of rate, runs the
    model once and hands each owner its ``(n, classes)`` probabilities through `deliver`, in the
    order they were added. A forward that raises leaves the queue empty (no window is delivered
    twice), so the caller can flush what follows and re-raise.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        deliver: Callable[[Owner, torch.Tensor], None],
        size: int | None = None,
        probabilities: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.model, self.device, self.deliver = model, device, deliver
        self.probabilities = probabilities or softmax_probabilities  # a tagger's are sigmoids (`LoadedModel.probabilities`)
        self.size = WINDOWS_PER_FORWARD if size is None else size
        self.queue: list[tuple[Owner, torch.Tensor]] = []
        self.queued = 0
        self.rate: int | None = None

    def add(self, owner: Owner, windows: torch.Tensor, rate: int) -> None:
        """Queue ``(n, samples)`` windows at `rate` (n <= `size`), running the model when a forward's worth waits."""
        if self.rate != rate or self.queued + len(windows) > self.size:
            self.flush()
        self.rate = rate
        self.queue.append((owner, windows))
        self.queued += len(windows)
        if self.queued >= self.size:
            self.flush()

    @torch.inference_mode()
    def flush(self) -> None:
        """Score the queued windows in one forward pass and deliver their probabilities."""
        queue, self.queue, self.queued = self.queue, [], 0
        if not queue:
            return
        windows = torch.cat([chunk for _, chunk in queue]).to(self.device, non_blocking=True)  # (windows, samples)
        probs = self.probabilities(self.model(windows, sample_rate=self.rate)).cpu()  # (windows, classes)
        for (owner, _), part in zip(queue, probs.split([len(chunk) for _, chunk in queue]), strict=True):
            self.deliver(owner, part)
