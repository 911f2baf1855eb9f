"""What every bench stage shares: the configuration, the rows it reports, the clips, and the timing helpers."""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from tqdm import tqdm

from streamgenre.audio import Window, decode
from streamgenre.dist import check_device_name
from streamgenre.errors import DecodeError, InputError, ShardFormatError
from streamgenre.models import model_spec
from streamgenre.paper import DEFAULT_OFFSET_S, PAPER_BATCH_SIZE, PAPER_WINDOW_S
from streamgenre.progress import progress_bar
from streamgenre.recipes import default_recipe, recipe_named
from streamgenre.shards import AUDIO_MEMBER, META_MEMBER, SPLITS, SampleMeta, is_remote, read_index, shard_urls
from streamgenre.stream import Batch, SplitSource, StreamConfig, read_shards
from streamgenre.units import Seconds

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

DEMO_SHARDS = "demo/shards"  # where `streamgenre demo` packs its corpus
QUICK_CLIPS = 8
MB = 1e6


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and how much of it; the window and batch are the paper's by default.

    `clips` is rounded up to whole shards so every stage sees exactly the clips the loader
    reads. `quick` shrinks everything (a few clips, the first worker count, one timed step):
    every stage still runs, so it is a smoke test of the bench, not a benchmark.

    The train step runs `recipe` (training's default) for every registered model, on batches
    of `step_batch_size` windows (None: the recipe's batch). `long_file_s` is the length of
    the one long file `predict` is timed on. `time_to_accuracy` (minutes: opt-in) trains each
    ``(recipe, model)`` of `accuracy_runs` on the whole packed directory for `budget_s` and
    records when whole-clip validation accuracy first reaches `target`.
    """

    shards: str = DEMO_SHARDS
    out: Path = Path("bench")
    clips: int = 128
    workers: tuple[int, ...] = (1, 2)
    device: str = "auto"
    quick: bool = False
    offset_s: Seconds = DEFAULT_OFFSET_S  # the window at 0:15, as `train` uses by default
    duration_s: Seconds = PAPER_WINDOW_S
    batch_size: int = PAPER_BATCH_SIZE
    timed_steps: int = 3
    loader_min_clips: int = 512
    rss_scale: int = 4
    progress: bool = True
    recipe: str = default_recipe(pretrained=False).name  # models pretrained elsewhere are timed with their own default
    step_batch_size: int | None = None
    long_file_s: Seconds = 600.0
    time_to_accuracy: bool = False
    budget_s: Seconds = 300.0
    target: float = 0.8
    accuracy_runs: tuple[tuple[str, str], ...] = (("modern", "resnet"), ("modern", "paper"), ("paper", "paper"))

    def __post_init__(self):
        if self.clips < 1:
            raise InputError(f"--clips must be >= 1, got {self.clips}")
        if not self.workers or min(self.workers) < 0:
            raise InputError(f"--workers must list worker counts >= 0, e.g. 1,2; got {self.workers}")
        check_device_name(self.device)
        if self.loader_min_clips < 0:
            raise InputError(f"bench loader_min_clips must be >= 0, got {self.loader_min_clips}")
        for name in ("batch_size", "timed_steps", "rss_scale"):
            if getattr(self, name) < 1:
                raise InputError(f"bench {name} must be >= 1, got {getattr(self, name)}")
        if self.step_batch_size is not None and self.step_batch_size < 1:
            raise InputError(f"bench step_batch_size must be >= 1, got {self.step_batch_size}")
        if not self.long_file_s >= self.duration_s:
            raise InputError(f"bench long_file_s must be at least one window ({self.duration_s} s), got {self.long_file_s}")
        if not (math.isfinite(self.budget_s) and self.budget_s > 0):
            raise InputError(f"--budget must be a time > 0, got {self.budget_s} s")
        if not 0 < self.target <= 1:
            raise InputError(f"--target must be an accuracy within 0..1 (above 0), got {self.target}")
        recipe_named(self.recipe)
        for recipe, model in self.accuracy_runs:
            recipe_named(recipe), model_spec(model)


@dataclass(frozen=True)
class StageRow:
    """One stage's throughput; `clips_per_s` is None when the stage was skipped (`detail` says why)."""

    stage: str
    name: str
    clips: int
    seconds: float
    clips_per_s: float | None
    per_core: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class Comparison:
    """One streaming-vs-paper figure in `unit` ("bytes" or "s"); None where not measured."""

    name: str
    streaming: float | None
    paper: float | None
    unit: str


@dataclass(frozen=True)
class Target:
    """A measured figure against the goal it is reported against (a report, not a test)."""

    name: str
    value: float | None
    goal: str
    met: bool | None


@dataclass(frozen=True)
class AccuracyRun:
    """One time-to-accuracy run: how soon whole-clip validation accuracy reached the target, and how high it got.

    `seconds_to_target` is the run's wall time (validation included) at the end of the first
    epoch that reached `target` (past the budget if the last epoch did), None if none did; `accuracy` is the best
    whole-clip validation accuracy of the epochs that ended within the budget (None: not one did).
    """

    recipe: str
    model: str
    budget_s: float
    target: float
    epochs: int
    seconds: float  # wall time at the end of the last epoch run
    train_windows: int
    train_seconds: float
    seconds_to_target: float | None
    accuracy: float | None
    final_accuracy: float | None  # of the last epoch run, which may end past the budget


@dataclass(frozen=True)
class Clip:
    """One clip held in memory, with the window offset every stage uses for it."""

    key: str
    genre: str
    data: bytes
    offset_s: Seconds
    duration_s: Seconds | None = None  # the clip's length, as its json member records it


@dataclass(frozen=True)
class ClipSet:
    """The whole shards that hold the first `clips` clips of a packed directory."""

    urls: list[str]
    labels: list[str]
    count: int
    size_bytes: int
    counts: list[int] = field(default_factory=list)  # samples per shard, from index.json

    def source(self, scale: int = 1) -> SplitSource:
        """The loader's view of these shards, the list repeated `scale` times."""
        return SplitSource(self.urls * scale, self.labels, self.count * scale, self.counts * scale)


def select_clips(directory: str, clips: int) -> ClipSet:
    """The first shards (train, then val, then test, each in name order) holding >= `clips` clips.

    Raises:
        InputError: `directory` is a local path that does not exist.
        ShardFormatError: it has no readable index.json or no shards.
    """
    if not is_remote(directory) and not Path(directory).exists():
        raise InputError(f"{directory} does not exist: run `streamgenre demo` first to make the demo corpus, or pass a packed DIR")
    index = read_index(directory)
    urls, counts, size = [], [], 0
    for split in SPLITS:
        for url, entry in zip(shard_urls(directory, index, split), index.split_shards(split), strict=True):
            if sum(counts) >= clips:
                break
            urls.append(url)
            counts.append(entry.count)
            size += entry.size_bytes
    if not urls:
        raise ShardFormatError(f"{directory}/index.json lists no shards; re-pack it with `streamgenre pack`")
    return ClipSet(urls, list(index.labels), sum(counts), size, counts)


def check_out(out: Path) -> None:
    """Make the output folder before minutes of measuring, so a bad --out fails at once, in one line.

    Raises:
        InputError: `out` is a file, or cannot be created or written.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; pass a folder for bench.json, bench.md and bench.png")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exn:
        raise InputError(f"cannot create --out {out}: {exn.strerror or exn}") from None
    if not os.access(out, os.W_OK):
        raise InputError(f"cannot write to --out {out}: permission denied")


def load_clips(clip_set: ClipSet, config: BenchConfig, dropped: list[str]) -> list[Clip]:
    """Read every clip of `clip_set` into memory (untimed; it also warms the page cache for stage 2).

    A sample that cannot be read is left out and noted in `dropped` (see `read_clips`).
    """
    with stage_bar("reading the clips", clip_set.count, config.progress) as bar:
        clips = []
        for clip in read_clips(clip_set, config, dropped):
            clips.append(clip)
            bar.update(1)
    return clips


def read_clips(clip_set: ClipSet, config: BenchConfig, dropped: list[str]) -> Iterable[Clip]:
    """The clips of the shards in order, each with the offset a window decode would use (the last full window if short).

    A sample without both members or with a garbage json member is left out and noted in `dropped`.

    Raises:
        ShardFormatError: a shard cannot be read, or holds fewer samples than index.json lists.
    """
    expected = dict(zip(clip_set.urls, clip_set.counts, strict=True))
    for sample in read_shards(({"url": url} for url in clip_set.urls), expected=expected):
        if not isinstance(sample, dict):  # a shard that could not be read, or ended early
            raise ShardFormatError(sample.message)
        key = sample["__key__"]
        if META_MEMBER not in sample or AUDIO_MEMBER not in sample:
            dropped.append(f"{key}: no {META_MEMBER} or {AUDIO_MEMBER} member")
            continue
        try:
            meta = SampleMeta.from_json(sample[META_MEMBER])
        except ShardFormatError as exn:
            dropped.append(f"{key}: {exn}")
            continue
        clip_s = math.inf if meta.duration_s is None else meta.duration_s
        last_start = max(0.0, clip_s - config.duration_s)
        yield Clip(key, meta.genre, sample[AUDIO_MEMBER], min(config.offset_s, last_start), meta.duration_s)


def decodable_clips(clips: list[Clip], config: BenchConfig, dropped: list[str]) -> tuple[list[Clip], Counter]:
    """The clips whose window decodes, and how many have each ``(sample_rate, channels)``.

    A clip that does not decode would crash the raw-PyAV stages; it is left out and noted in `dropped`.

    Raises:
        ShardFormatError: not one clip decodes.
    """
    formats: Counter = Counter()
    usable = []
    for clip in clips:
        try:
            audio = decode(clip.data, Window(clip.offset_s, config.duration_s), mono=False)
            waveform, rate = audio.samples, audio.sample_rate
        except DecodeError as exn:
            dropped.append(f"{clip.key}: {exn}")
            continue
        formats[(rate, waveform.shape[0])] += 1
        usable.append(clip)
    if not usable:
        raise ShardFormatError(f"none of the {len(clips)} clips of the measured shards decodes: " + "; ".join(dropped[:3]))
    return usable, formats


def most_common_format(formats: Counter) -> tuple[int, int]:
    """The ``(sample_rate, channels)`` most of the clips have."""
    (rate, channels), _count = formats.most_common(1)[0]
    return rate, channels


@contextmanager
def stage_bar(desc: str, total: int, progress: bool) -> Iterator[tqdm]:
    """One stage's bar, counted in clips; it ends full (at the count actually reached) and stays on screen.

    Only on a terminal (see `progress_bar`). Each stage's bar is closed before the next one
    opens, so they appear one under another in stage order.
    """
    bar = progress_bar(total=total, desc=desc, unit="clip", enabled=progress, leave=True)
    try:
        yield bar
        bar.total = bar.n  # an estimate that was off still ends at 100 %
        bar.refresh()
    finally:
        bar.close()


def timed_map(
    function: Callable[[ItemT], ResultT],
    items: Sequence[ItemT],
    desc: str,
    progress: bool,
    device: torch.device | None = None,
    clips_per_item: int = 1,
) -> tuple[list[ResultT], float]:
    """Apply `function` to every item after one untimed warm-up call; returns the results and seconds.

    The warm-up keeps one-off costs (imports, numba compilation, first-touch allocations)
    out of the rate, as nanoGPT's burn-in does; on CUDA each clock read waits for the device.
    The bar counts clips (`clips_per_item` per item: a batch holds several).
    """
    with stage_bar(desc, len(items) * clips_per_item, progress) as bar:
        function(items[0])
        synchronize(device)
        started = time.perf_counter()
        results = []
        for item in items:
            results.append(function(item))
            bar.update(clips_per_item)
        synchronize(device)
        seconds = time.perf_counter() - started
    return results, seconds


def synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def stream_config(config: BenchConfig, resample: str) -> StreamConfig:
    """The training loader's settings (shuffle buffer included) with the bench's window and batch."""
    return StreamConfig(offset_s=config.offset_s, duration_s=config.duration_s, batch_size=config.batch_size, resample=resample)


@dataclass(frozen=True)
class Pass:
    """One pass over a loader: clips seen, seconds in all, and seconds until the first batch."""

    clips: int
    seconds: float
    first_batch_s: float


def drain(batches: Iterable[Batch], total: int, desc: str, progress: bool, step: Callable[[Batch], None] | None = None) -> Pass:
    """Pull every batch, calling `step` on each if given (time starts before the workers do)."""
    clips, first_batch_s = 0, math.nan
    started = time.perf_counter()
    with stage_bar(desc, total, progress) as bar:
        for batch in batches:
            if clips == 0:
                first_batch_s = time.perf_counter() - started
            if step is not None:
                step(batch)
            clips += len(batch)
            bar.update(len(batch))
    return Pass(clips, time.perf_counter() - started, first_batch_s)


def noise(batch: int, samples: int, device: torch.device) -> torch.Tensor:
    """Seeded noise ``(batch, samples)`` at a music-like level, leaving the global RNG alone."""
    generator = torch.Generator().manual_seed(0)
    return (0.1 * torch.randn(batch, samples, generator=generator)).to(device)


def optimizer_step(optimizer: torch.optim.Optimizer, logits: torch.Tensor, labels: torch.Tensor) -> None:
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
