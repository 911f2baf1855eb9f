"""`streamgenre bench`: where the time and memory go, stage by stage, against the paper's pipeline.

Times each stage alone on the same clips (shard read, window decode, loader, frontend, training
step), then end to end, and runs the paper's WAV -> PNG -> tensors pipeline on those clips for
comparison. Returns a `BenchResult` and writes bench.json/md/png; never prints. librosa and
Pillow (the ``[bench]`` extra) are imported only by the paper stages, which skip without them.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import wave
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import av
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from streamgenre.audio import PAPER_SAMPLE_RATE, decode_window, decode_window_native
from streamgenre.dist import check_device_name, resolve_device
from streamgenre.errors import DecodeError, InputError, ShardFormatError
from streamgenre.frontend import FrontendConfig, MelFrontend
from streamgenre.model import GenreClassifier, ModelConfig
from streamgenre.models.paper import PaperCNN
from streamgenre.pack import PackConfig, pack
from streamgenre.paper import PAPER_LR
from streamgenre.plots import plot_bars
from streamgenre.shards import (
    AUDIO_MEMBER,
    META_MEMBER,
    SPLITS,
    SampleMeta,
    atomic_write,
    is_remote,
    read_index,
    shard_urls,
)
from streamgenre.stream import (
    Batch,
    SplitSource,
    StreamConfig,
    default_workers,
    iterate_epoch,
    make_loader,
    read_shards,
)
from streamgenre.units import Seconds

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

DEMO_SHARDS = "demo/shards"  # where `streamgenre demo` packs its corpus
FMA_SMALL_CLIPS = 8000  # FMA small, the paper's dataset: 8 genres x 1000 clips
# IPython's inline backend draws 6x4-inch figures at 72 dpi: the paper's 432x288 PNGs.
PAPER_FIGURE_INCHES = (6.0, 4.0)
PAPER_FIGURE_DPI = 72
PAPER_COLORMAP = "magma"  # librosa.display.specshow's map for dB data
_QUICK_CLIPS = 8
_MB = 1e6


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and how much of it; the window and batch are the paper's by default.

    `clips` is rounded up to whole shards so every stage sees exactly the clips the loader
    reads. `quick` shrinks everything (a few clips, the first worker count, one timed step)
    so a run takes under a minute; its numbers are a smoke test, not a benchmark.
    """

    shards: str = DEMO_SHARDS
    out: Path = Path("bench")
    clips: int = 128
    workers: tuple[int, ...] = (1, 2)
    device: str = "auto"
    quick: bool = False
    offset_s: Seconds = 15.0  # the window at 0:15, as `train` uses by default
    duration_s: Seconds = 3.0  # the paper's window
    batch_size: int = 25  # the paper's batch
    timed_steps: int = 3
    loader_min_clips: int = 512
    rss_scale: int = 4
    progress: bool = True

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


@dataclass
class BenchResult:
    """Everything one run measured, in the order of the issue's stages; the CLI prints `markdown`."""

    config: dict[str, Any]
    machine: dict[str, Any]
    clip_set: dict[str, Any]
    rows: list[StageRow]
    comparisons: list[Comparison]
    targets: list[Target]
    notes: list[str]
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def markdown(self) -> str:
        """The report as Markdown (what bench.md holds)."""
        return format_markdown(self)


@dataclass(frozen=True)
class _Clip:
    """One clip held in memory, with the window offset every stage uses for it."""

    key: str
    genre: str
    data: bytes
    offset_s: Seconds


@dataclass(frozen=True)
class _ClipSet:
    """The whole shards that hold the first `clips` clips of a packed directory."""

    urls: list[str]
    labels: list[str]
    count: int
    size_bytes: int
    counts: list[int] = field(default_factory=list)  # samples per shard, from index.json

    def source(self, scale: int = 1) -> SplitSource:
        """The loader's view of these shards, the list repeated `scale` times."""
        return SplitSource(self.urls * scale, self.labels, self.count * scale, self.counts * scale)


@dataclass
class _Paper:
    """What the paper pipeline produced and cost (stage 7), for stages 8 and 9."""

    pngs: list[Path]
    prepare_s: float
    load_s: float
    epoch_s: float
    disk_bytes: int
    tensor_bytes: int


def run_bench(config: BenchConfig) -> BenchResult:
    """Measure every stage on the same clips and write bench.json, bench.md and bench.png to `config.out`.

    Raises:
        InputError: DIR does not exist (run `streamgenre demo` first) or bad options.
        ShardFormatError: DIR is not a packed directory.
    """
    config = _quick(config) if config.quick else config
    _check_out(config.out)
    device = resolve_device(config.device)
    clip_set = select_clips(config.shards, config.clips)
    dropped: list[str] = []
    read_row, clips = _measure_read(clip_set, config, dropped)
    clips, formats = _decodable_clips(clips, config, dropped)
    decode_rows = _decode_rows(clips, config)
    loader_rows, loader_targets = _loader_rows(clip_set, config, decode_rows[0])
    frontend_rows = _frontend_rows(device, config)
    step_row, epoch_row = _training_rows(clip_set, config, device, native_rate=_most_common_rate(formats))
    with tempfile.TemporaryDirectory(prefix="streamgenre-bench-") as scratch:
        paper = _paper_stages(clips, clip_set.labels, config, device, Path(scratch))
        memory = _memory_comparisons(clip_set, paper, config)
        pack_s = _time_packing(clips, Path(scratch), config)
    disk, first_epoch = _disk_comparisons(clip_set, paper), _first_epoch_comparisons(pack_s, epoch_row, paper)
    rows = [decode_rows[0], read_row, *decode_rows[1:], *loader_rows, *frontend_rows, step_row, epoch_row, *_paper_rows(paper, len(clips))]
    result = BenchResult(
        config=_config_dict(config),
        machine=describe_machine(device),
        clip_set=_clip_set_dict(config.shards, clip_set, formats),
        rows=rows,
        comparisons=disk + memory + first_epoch,
        targets=loader_targets + _other_targets(frontend_rows, disk, memory, first_epoch),
        notes=_format_notes(formats, clip_set, config, dropped),
    )
    write_outputs(result, config.out)
    return result


def _check_out(out: Path) -> None:
    """Make the output folder before minutes of measuring, so a bad --out fails at once, in one line."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; pass a folder for bench.json, bench.md and bench.png")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exn:
        raise InputError(f"cannot create --out {out}: {exn.strerror or exn}") from None
    if not os.access(out, os.W_OK):
        raise InputError(f"cannot write to --out {out}: permission denied")


def _quick(config: BenchConfig) -> BenchConfig:
    return replace(config, clips=min(config.clips, _QUICK_CLIPS), workers=config.workers[:1], batch_size=min(config.batch_size, 4), timed_steps=1, loader_min_clips=0)


# -- clips -----------------------------------------------------------------------------------
def select_clips(directory: str, clips: int) -> _ClipSet:
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
    return _ClipSet(urls, list(index.labels), sum(counts), size, counts)


def _measure_read(clip_set: _ClipSet, config: BenchConfig, dropped: list[str]) -> tuple[StageRow, list[_Clip]]:
    """Stage 2: read the shards once to warm the page cache and keep the clips, then time a second read."""
    clips = list(_read_clips(clip_set, config, dropped))
    started = time.perf_counter()
    reread = _read_clips(clip_set, config, [])
    count = sum(1 for _ in tqdm(reread, desc="2 shard read", total=clip_set.count, disable=not config.progress, leave=False))
    seconds = time.perf_counter() - started
    detail = f"{clip_set.size_bytes / _MB / seconds:,.1f} MB/s over {len(clip_set.urls)} shards"
    return StageRow("2", "shard read (tar -> samples)", count, seconds, count / seconds, count / seconds, detail), clips


def _read_clips(clip_set: _ClipSet, config: BenchConfig, dropped: list[str]) -> Iterable[_Clip]:
    """The clips of the shards in order, each with the offset `decode_window` would use (the last full window if short).

    A sample without both members or with a garbage json member is left out and noted in `dropped`.
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
        yield _Clip(key, meta.genre, sample[AUDIO_MEMBER], min(config.offset_s, last_start))


def _decodable_clips(clips: list[_Clip], config: BenchConfig, dropped: list[str]) -> tuple[list[_Clip], Counter]:
    """The clips whose window decodes, and how many have each ``(sample_rate, channels)``.

    A clip that does not decode would crash the raw-PyAV stages; it is left out and noted.
    """
    formats: Counter = Counter()
    usable = []
    for clip in clips:
        try:
            waveform, rate = decode_window_native(clip.data, clip.offset_s, config.duration_s, mono=False)
        except DecodeError as exn:
            dropped.append(f"{clip.key}: {exn}")
            continue
        formats[(rate, waveform.shape[0])] += 1
        usable.append(clip)
    if not usable:
        raise ShardFormatError(f"none of the {len(clips)} clips of the measured shards decodes: " + "; ".join(dropped[:3]))
    return usable, formats


def _most_common_rate(formats: Counter) -> int:
    (rate, _channels), _count = formats.most_common(1)[0]
    return rate


# -- stages 1 and 3: decoding ----------------------------------------------------------------
def decode_ceiling(data: bytes, offset_s: Seconds, duration_s: Seconds, sample_rate: int) -> np.ndarray:
    """The simplest window decode raw PyAV allows: seek, decode, down-mix and resample in swresample.

    The ceiling the loader is measured against: no margin, no exact-grid alignment, no checks.

    Returns:
        float32 ``(round(duration_s * sample_rate),)`` mono samples (fewer past the end).
    """
    wanted = round(duration_s * sample_rate)
    chunks, count = [], 0
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        container.seek(int(offset_s / stream.time_base), stream=stream)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray()[0])  # packed mono: (1, samples) -> (samples,)
                count += out.samples
            if count >= wanted:
                break
    return np.concatenate(chunks)[:wanted]


def _decode_rows(clips: list[_Clip], config: BenchConfig) -> list[StageRow]:
    """Stages 1 and 3: one process, clips already in memory."""
    decoders = [
        ("1", "ceiling: raw PyAV decode + AudioResampler", partial(decode_ceiling, sample_rate=PAPER_SAMPLE_RATE)),
        ("3", "decode_window (resampled on the CPU)", partial(decode_window, sample_rate=PAPER_SAMPLE_RATE)),
        ("3", "decode_window_native (file's rate, down-mixed)", decode_window_native),
    ]
    rows = []
    for stage, name, decoder in decoders:
        decode = partial(_decode_clip, decoder=decoder, duration_s=config.duration_s)
        _, seconds = timed_map(decode, clips, f"{stage} {name}", config.progress)
        rows.append(StageRow(stage, name, len(clips), seconds, len(clips) / seconds, len(clips) / seconds, "1 process"))
    return rows


def _decode_clip(clip: _Clip, decoder: Callable, duration_s: Seconds) -> Any:
    return decoder(clip.data, clip.offset_s, duration_s)


def timed_map(
    function: Callable[[ItemT], ResultT], items: Sequence[ItemT], desc: str, progress: bool, device: torch.device | None = None
) -> tuple[list[ResultT], float]:
    """Apply `function` to every item after one untimed warm-up call; returns the results and seconds.

    The warm-up keeps one-off costs (imports, numba compilation, first-touch allocations)
    out of the rate, as nanoGPT's burn-in does; on CUDA each clock read waits for the device.
    """
    function(items[0])
    _synchronize(device)
    started = time.perf_counter()
    results = [function(item) for item in tqdm(items, desc=desc, disable=not progress, leave=False)]
    _synchronize(device)
    return results, time.perf_counter() - started


def _synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


# -- stage 4: the streaming loader -------------------------------------------------------------
def _loader_rows(clip_set: _ClipSet, config: BenchConfig, ceiling: StageRow) -> tuple[list[StageRow], list[Target]]:
    """Stage 4 (and issue 8): both resampling paths at each worker count, against the ceiling."""
    rows, targets = [], []
    for workers in config.workers:
        per_core = {}
        for resample in ("cpu", "device"):
            row = _loader_row(clip_set, config, resample, workers)
            ratio = row.per_core / ceiling.clips_per_s
            rows.append(replace(row, detail=f"{row.detail}; {ratio:.2f} x ceiling per worker"))
            targets.append(Target(f"loader resample={resample}, {workers} worker(s): clips/s per worker / ceiling", ratio, ">= 0.90", ratio >= 0.9))
            per_core[resample] = row.per_core
        speedup = per_core["device"] / per_core["cpu"]
        targets.append(Target(f"loader resample=device / resample=cpu, clips/s per core, {workers} worker(s)", speedup, ">= 1.8 (44.1 kHz stereo)", speedup >= 1.8))
    return rows, targets


def _loader_row(clip_set: _ClipSet, config: BenchConfig, resample: str, workers: int) -> StageRow:
    """One loader pass over the clips, repeated to at least `loader_min_clips`.

    As in an epoch of a real corpus, the workers' start-up (paid once per epoch) is then
    amortised instead of dominating a pass over a handful of clips.
    """
    repeats = max(1, math.ceil(config.loader_min_clips / clip_set.count))
    loader = make_loader(clip_set.source(repeats), _stream_config(config, resample), workers, split_nodes=False)
    run = _drain(iterate_epoch(loader, 0), clip_set.count * repeats, f"4 loader {resample} x{loader.num_workers}", config.progress)
    name = f"streaming loader, resample={resample}, {loader.num_workers} worker(s)"
    detail = f"{repeats}x the clips; first batch after {run.first_batch_s:.2f} s"
    return StageRow("4", name, run.clips, run.seconds, run.clips / run.seconds, run.clips / run.seconds / max(1, loader.num_workers), detail)


def _stream_config(config: BenchConfig, resample: str) -> StreamConfig:
    """The training loader's settings (shuffle buffer included) with the bench's window and batch."""
    return StreamConfig(offset_s=config.offset_s, duration_s=config.duration_s, batch_size=config.batch_size, resample=resample)


@dataclass(frozen=True)
class _Pass:
    """One pass over a loader: clips seen, seconds in all, and seconds until the first batch."""

    clips: int
    seconds: float
    first_batch_s: float


def _drain(batches: Iterable[Batch], total: int, desc: str, progress: bool, step: Callable[[Batch], None] | None = None) -> _Pass:
    """Pull every batch, calling `step` on each if given (time starts before the workers do)."""
    clips, first_batch_s = 0, math.nan
    started = time.perf_counter()
    with tqdm(total=total, desc=desc, unit="clip", disable=not progress, leave=False) as bar:
        for batch in batches:
            if clips == 0:
                first_batch_s = time.perf_counter() - started
            if step is not None:
                step(batch)
            clips += len(batch)
            bar.update(len(batch))
    return _Pass(clips, time.perf_counter() - started, first_batch_s)


# -- stages 5 and 6: the device ----------------------------------------------------------------
def _frontend_rows(device: torch.device, config: BenchConfig) -> list[StageRow]:
    """Stage 5 on synthetic waveforms (nanoGPT's real_data=False): compute alone, no I/O."""
    frontend = MelFrontend(FrontendConfig()).to(device)
    rows = []
    for rate, name in ((PAPER_SAMPLE_RATE, "22.05 kHz input"), (44100, "44.1 kHz input, resampled on the device")):
        batches = [_noise(config.batch_size, round(config.duration_s * rate), device)] * config.timed_steps  # (batch, time)
        with torch.inference_mode():
            _, seconds = timed_map(partial(frontend, sample_rate=rate), batches, f"5 frontend {rate} Hz", config.progress, device)
        clips = config.batch_size * config.timed_steps
        rows.append(StageRow("5", f"frontend (mel + dB + resize), {name}", clips, seconds, clips / seconds, None, f"on {device.type}, batch {config.batch_size}"))
    return rows


def _training_rows(clip_set: _ClipSet, config: BenchConfig, device: torch.device, native_rate: int) -> tuple[StageRow, StageRow]:
    """Stage 6: steps on a synthetic in-memory batch (compute alone), then an epoch fed by the loader."""
    model = GenreClassifier(ModelConfig(n_classes=max(2, len(clip_set.labels)))).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=PAPER_LR)
    waveform = _noise(config.batch_size, round(config.duration_s * native_rate), device)  # (batch, time)
    labels = torch.arange(config.batch_size, device=device) % model.config.n_classes
    batches = [(waveform, labels, native_rate)] * config.timed_steps
    _, seconds = timed_map(partial(_waveform_step, model, optimizer), batches, "6 train step", config.progress, device)
    clips = config.batch_size * config.timed_steps
    step_row = StageRow("6", "train step (forward + backward + Adam), in-memory batch", clips, seconds, clips / seconds, None, f"on {device.type}, {native_rate} Hz input")
    loader = make_loader(clip_set.source(), _stream_config(config, "device"), max(config.workers), split_nodes=False)
    run = _drain(iterate_epoch(loader, 0), clip_set.count, "6 epoch", config.progress, partial(_loader_step, model, optimizer, device))
    _synchronize(device)  # the last step's clock read is late by at most one step
    name = f"epoch end to end (loader x{loader.num_workers} + steps)"
    epoch_row = StageRow("6", name, run.clips, run.seconds, run.clips / run.seconds, None, f"resample=device; first batch after {run.first_batch_s:.2f} s")
    return step_row, epoch_row


def _waveform_step(model: GenreClassifier, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor, int]) -> None:
    waveform, labels, sample_rate = batch  # (batch, time), (batch,), Hz
    _optimizer_step(optimizer, model(waveform, sample_rate=sample_rate), labels)


def _loader_step(model: GenreClassifier, optimizer: torch.optim.Optimizer, device: torch.device, batch: Batch) -> None:
    _waveform_step(model, optimizer, (batch.waveforms.to(device), batch.labels.to(device), batch.sample_rate))


def _optimizer_step(optimizer: torch.optim.Optimizer, logits: torch.Tensor, labels: torch.Tensor) -> None:
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _noise(batch: int, samples: int, device: torch.device) -> torch.Tensor:
    """Seeded noise ``(batch, samples)`` at a music-like level, leaving the global RNG alone."""
    generator = torch.Generator().manual_seed(0)
    return (0.1 * torch.randn(batch, samples, generator=generator)).to(device)


# -- stage 7: the paper's pipeline -------------------------------------------------------------
def _missing_paper_extras() -> list[str]:
    """The ``[bench]`` extras the paper pipeline needs that are not installed."""
    return [name for name in ("librosa", "PIL") if importlib.util.find_spec(name) is None]


def _paper_stages(clips: list[_Clip], labels: list[str], config: BenchConfig, device: torch.device, scratch: Path) -> _Paper | None:
    """Stage 7 and the paper half of stage 9: WAV + PNG per clip, PNGs into tensors, one epoch; None without the extras."""
    if _missing_paper_extras():
        return None
    folder = scratch / "paper"
    folder.mkdir()
    prepare = partial(prepare_paper_clip, duration_s=config.duration_s, folder=folder)
    pngs, prepare_s = timed_map(prepare, clips, "7 paper: WAV + mel + PNG", config.progress)
    images, load_s = timed_map(load_paper_png, pngs, "7 paper: PNG -> tensor", config.progress)
    disk_bytes = sum(path.stat().st_size for path in folder.iterdir())
    targets = torch.tensor([labels.index(clip.genre) for clip in clips])
    epoch_s = _paper_epoch(images, targets, len(labels), config, device)
    return _Paper(pngs, prepare_s, load_s, epoch_s, disk_bytes, sum(image.nbytes for image in images))


def prepare_paper_clip(clip: _Clip, duration_s: Seconds, folder: Path) -> Path:
    """The paper's preparation of one clip: window -> WAV file -> librosa mel + dB -> 432x288 PNG.

    The MP3 is decoded with `decode_window` (faster than the paper's decoder, which favours
    the paper); the mel settings are librosa's defaults, as in the paper.
    """
    import librosa

    wav = folder / f"{clip.key}.wav"
    write_wav(wav, decode_window(clip.data, clip.offset_s, duration_s, PAPER_SAMPLE_RATE).numpy(), PAPER_SAMPLE_RATE)
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
    return timed_map(step, batches, "7 paper: epoch on tensors", config.progress, device)[1]


def _image_step(model, optimizer, images: list[torch.Tensor], targets: torch.Tensor, device: torch.device, batch: list[int]) -> None:
    inputs = torch.stack([images[i] for i in batch]).to(device)  # (batch, 3, 288, 432)
    _optimizer_step(optimizer, model(inputs), targets[batch].to(device))


def _paper_rows(paper: _Paper | None, clips: int) -> list[StageRow]:
    names = ("paper: prepare (WAV + librosa mel + PNG)", "paper: load PNGs into tensors", "paper: epoch on the held tensors")
    if paper is None:
        return [StageRow("7", name, 0, 0.0, None, detail="skipped: librosa/Pillow missing") for name in names]
    return [
        StageRow("7", names[0], clips, paper.prepare_s, clips / paper.prepare_s, clips / paper.prepare_s, f"{paper.disk_bytes / clips / 1e3:,.0f} kB written per clip"),
        StageRow("7", names[1], clips, paper.load_s, clips / paper.load_s, clips / paper.load_s, f"{paper.tensor_bytes / clips / _MB:.2f} MB of RAM per clip"),
        StageRow("7", names[2], clips, paper.epoch_s, clips / paper.epoch_s, None, "the paper's CNN alone"),
    ]


# -- stage 8: memory ---------------------------------------------------------------------------
# Runs one function of this module in a fresh interpreter, so the peak RSS it reports is its own.
_CHILD = "import json, sys\nfrom streamgenre import bench\njson.dump(getattr(bench, sys.argv[1])(json.loads(sys.argv[2])), sys.stdout)\n"


def _memory_comparisons(clip_set: _ClipSet, paper: _Paper | None, config: BenchConfig) -> list[Comparison]:
    """Stage 8: peak RSS of a streaming epoch and of the paper's held tensors, at 1x and `rss_scale` x the clips."""
    comparisons = []
    scales = (1, config.rss_scale)
    with tqdm(total=2 * len(scales), desc="8 peak RSS (subprocesses)", disable=not config.progress, leave=False) as bar:
        for scale in scales:
            stream_request = {"source": asdict(clip_set.source(scale)), "workers": max(config.workers), "stream": asdict(_stream_config(config, "device"))}
            streaming = _in_subprocess("stream_epoch_rss", stream_request)["peak_bytes"]
            bar.update(1)
            held = None if paper is None else _in_subprocess("paper_tensors_rss", {"pngs": [str(p) for p in paper.pngs] * scale})["peak_bytes"]
            bar.update(1)
            comparisons.append(Comparison(f"peak RSS, {scale}x the clips ({scale * clip_set.count})", streaming, held, "bytes"))
    return comparisons


def stream_epoch_rss(request: dict[str, Any]) -> dict[str, int]:
    """One loader epoch over `source` (a `SplitSource` as a dict); run by `_in_subprocess`.

    `peak_bytes` is the main process's peak RSS plus the largest loader worker's times the
    worker count: pages shared after fork count once per process, so it errs high.
    """
    loader = make_loader(SplitSource(**request["source"]), StreamConfig(**request["stream"]), request["workers"], split_nodes=False)
    clips = sum(len(batch) for batch in iterate_epoch(loader, 0))  # the workers exit (and are reaped) at the end
    main, worker = _own_peak_rss_bytes(), _rusage_peak_bytes(resource.RUSAGE_CHILDREN)  # workers: forked, not exec'd
    return {"clips": clips, "main_bytes": main, "worker_bytes": worker, "workers": loader.num_workers, "peak_bytes": main + loader.num_workers * worker}


def paper_tensors_rss(request: dict[str, Any]) -> dict[str, int]:
    """Hold the listed PNGs as tensors, as the paper's notebook did; run by `_in_subprocess`."""
    images = [load_paper_png(Path(path)) for path in request["pngs"]]
    return {"clips": len(images), "peak_bytes": _own_peak_rss_bytes()}


def _in_subprocess(function: str, request: dict[str, Any]) -> dict[str, int]:
    completed = subprocess.run([sys.executable, "-c", _CHILD, function, json.dumps(request)], capture_output=True, text=True, check=False)
    if completed.returncode:
        raise RuntimeError(f"bench subprocess {function} failed with exit code {completed.returncode}:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout)


def _own_peak_rss_bytes() -> int:
    """This process's peak RSS: VmHWM where Linux has it, because ru_maxrss keeps the parent's peak across exec."""
    try:
        status = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        status = []
    peaks = [int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:")]  # kB
    return peaks[0] if peaks else _rusage_peak_bytes(resource.RUSAGE_SELF)


def _rusage_peak_bytes(who: int) -> int:
    return resource.getrusage(who).ru_maxrss * (1 if sys.platform == "darwin" else 1024)  # KiB on Linux



# -- stage 9: from a folder of MP3s to the end of the first epoch --------------------------------
def _time_packing(clips: list[_Clip], scratch: Path, config: BenchConfig) -> float:
    """The streaming half of stage 9: seconds for `streamgenre pack` from a folder of MP3s (one per genre) to shards."""
    folder = scratch / "mp3"
    for clip in clips:
        (folder / clip.genre).mkdir(parents=True, exist_ok=True)
        (folder / clip.genre / f"{clip.key}.mp3").write_bytes(clip.data)
    started = time.perf_counter()
    pack(PackConfig(source=folder, out=scratch / "packed", workers=max(1, *config.workers)), progress=config.progress)
    return time.perf_counter() - started


def _first_epoch_comparisons(pack_s: float, epoch: StageRow, paper: _Paper | None) -> list[Comparison]:
    paper_times = (None, None, None) if paper is None else (paper.prepare_s, paper.load_s, paper.epoch_s)
    comparisons = [
        Comparison("MP3 folder -> training input (pack / WAV + mel + PNG)", pack_s, paper_times[0], "s"),
        Comparison("load the dataset into RAM", 0.0, paper_times[1], "s"),
        Comparison("first epoch (loader + steps / steps on held tensors)", epoch.seconds, paper_times[2], "s"),
    ]
    total_paper = None if paper is None else sum(paper_times)
    return comparisons + [Comparison("MP3 folder -> end of the first epoch", pack_s + epoch.seconds, total_paper, "s")]


def _disk_comparisons(clip_set: _ClipSet, paper: _Paper | None) -> list[Comparison]:
    """Stage 7's footprint per clip and extrapolated to FMA small; streaming derives no files and holds no dataset."""
    disk = None if paper is None else paper.disk_bytes / clip_set.count
    held = None if paper is None else paper.tensor_bytes / clip_set.count
    return [
        Comparison("files derived from the audio, per clip (WAV + PNG)", 0, disk, "bytes"),
        Comparison(f"files derived from the audio, FMA small ({FMA_SMALL_CLIPS} clips)", 0, _times(disk, FMA_SMALL_CLIPS), "bytes"),
        Comparison("RAM to hold the dataset as 3x288x432 tensors, per clip", 0, held, "bytes"),
        Comparison(f"RAM to hold the dataset, FMA small ({FMA_SMALL_CLIPS} clips)", 0, _times(held, FMA_SMALL_CLIPS), "bytes"),
    ]


def _other_targets(frontend: list[StageRow], disk: list[Comparison], memory: list[Comparison], first_epoch: list[Comparison]) -> list[Target]:
    sooner = _ratio(first_epoch[-1].paper, first_epoch[-1].streaming)
    stream_growth = _ratio(memory[-1].streaming, memory[0].streaming)
    paper_growth = _ratio(memory[-1].paper, memory[0].paper)
    return [
        Target("frontend clips/s, 44.1 kHz input (device resampling) / 22.05 kHz input", _ratio(frontend[1].clips_per_s, frontend[0].clips_per_s), "(report)", None),
        Target("first epoch: paper pipeline seconds / streaming seconds", sooner, ">= 20", None if sooner is None else sooner >= 20),
        Target("bytes of intermediate files written by streaming", disk[0].streaming, "0", disk[0].streaming == 0),
        Target("streaming peak RSS, 4x / 1x the clips", stream_growth, "<= 1.10", None if stream_growth is None else stream_growth <= 1.1),
        Target("paper peak RSS, 4x / 1x the clips", paper_growth, "(report)", None),
    ]


def _times(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


# -- the report ----------------------------------------------------------------------------------
def _format_notes(formats: Counter, clip_set: _ClipSet, config: BenchConfig, dropped: list[str]) -> list[str]:
    notes = []
    if dropped:
        shown = "; ".join(dropped[:5]) + (f"; and {len(dropped) - 5} more" if len(dropped) > 5 else "")
        notes.append(f"{len(dropped)} of the {clip_set.count} clips could not be read or decoded and were left out of the per-clip stages: {shown}")
    missing = _missing_paper_extras()
    if missing:
        notes.append(f"{' and '.join(missing)} not installed: the paper pipeline (stages 7-9) was skipped; pip install 'streamgenre[bench]'")
    if all(rate == PAPER_SAMPLE_RATE for rate, _ in formats):
        notes.append(
            f"the clips are already {PAPER_SAMPLE_RATE} Hz, so resample=cpu and resample=device do the same work and their "
            "loader rates differ only by noise; the device path pays off on 44.1 kHz stereo clips such as FMA's"
        )
    workers = min(max(config.workers), len(clip_set.urls))
    if max(config.workers) > workers:
        notes.append(f"only {len(clip_set.urls)} shard(s) hold the clips, so at most that many loader workers ran; re-pack with a smaller --max-count for more")
    buffer = _stream_config(config, "device").shuffle_buffer
    if clip_set.count < buffer * max(1, workers):
        full_mb = buffer * clip_set.size_bytes / clip_set.count / _MB
        notes.append(
            f"peak RSS: each loader worker's shuffle buffer holds up to {buffer} whole MP3s (~{full_mb:,.0f} MB when full); at 1x the "
            f"{max(1, workers)} worker(s) see only {clip_set.count} clips, so part of the streaming 4x/1x growth is that buffer filling "
            "up: it stops growing once full, whatever the corpus size"
        )
    if config.quick:
        notes.append("--quick: a handful of clips and one timed step; a smoke test, not a benchmark")
    notes.append(
        "loader rows include each epoch's worker start-up and the training loader's shuffle buffer; the frontend and "
        "train-step rows use synthetic in-memory input, so they time compute alone"
    )
    return notes


def describe_machine(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, GPU and library versions, so a table is never read without its machine."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": default_workers(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "device": str(device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "av": av.__version__,
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return models[0] if models else platform.processor() or "unknown"


def _clip_set_dict(directory: str, clip_set: _ClipSet, formats: Counter) -> dict[str, Any]:
    return {
        "directory": directory,
        "shards": len(clip_set.urls),
        "clips": clip_set.count,
        "size_bytes": clip_set.size_bytes,
        "formats": {f"{rate} Hz x {channels} ch": count for (rate, channels), count in sorted(formats.items())},
    }


def write_outputs(result: BenchResult, out: Path) -> dict[str, str]:
    """bench.json, bench.md and bench.png (clips/s per stage) in `out`, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench.json", "markdown": out / "bench.md", "chart": out / "bench.png"}
    result.outputs = {name: str(path) for name, path in paths.items()}
    with atomic_write(paths["json"]) as stream:
        stream.write(json.dumps(asdict(result), indent=2, default=str).encode())
    with atomic_write(paths["markdown"]) as stream:
        stream.write(result.markdown.encode())
    measured = [row for row in result.rows if row.clips_per_s is not None]
    plot_bars([f"{row.stage} {row.name}" for row in measured], [row.clips_per_s for row in measured], paths["chart"], "streamgenre bench: clips/s per stage", "clips/s (log scale)")
    return result.outputs


def format_markdown(result: BenchResult) -> str:
    """The stage table, the streaming-vs-paper table, the targets and the notes, as Markdown."""
    machine, clip_set = result.machine, result.clip_set
    lines = [
        "# streamgenre bench",
        "",
        (
            f"Machine: {machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable), GPU: {machine['gpu'] or 'none'}; "
            f"torch {machine['torch']} ({machine['torch_threads']} threads) on {machine['device']}, PyAV {machine['av']}, Python {machine['python']}."
        ),
        f"Clips: {clip_set['clips']} from {clip_set['shards']} shard(s) of {clip_set['directory']} ({clip_set['size_bytes'] / _MB:,.1f} MB; "
        + ", ".join(f"{count} at {name}" for name, count in clip_set["formats"].items())
        + f"); window {result.config['duration_s']:g} s at {result.config['offset_s']:g} s, batch {result.config['batch_size']}.",
        "",
    ]
    lines += _table(
        ["stage", "what", "clips", "seconds", "clips/s", "per core", "detail"],
        [[row.stage, row.name, str(row.clips), f"{row.seconds:.2f}", _number(row.clips_per_s), _number(row.per_core), row.detail] for row in result.rows],
    )
    lines += ["", "## Streaming vs the paper's pipeline", ""]
    lines += _table(["", "streaming", "paper"], [[c.name, _amount(c.streaming, c.unit), _amount(c.paper, c.unit)] for c in result.comparisons])
    lines += ["", "## Targets", ""]
    lines += _table(["figure", "measured", "target", "met"], [[t.name, _number(t.value, 2), t.goal, _MET[t.met]] for t in result.targets])
    lines += ["", "## Notes", "", *(f"- {note}" for note in result.notes)]
    return "\n".join(lines) + "\n"


_MET = {True: "yes", False: "**no**", None: "-"}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|", *("| " + " | ".join(row) + " |" for row in rows)]


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _amount(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:,.2f} s"
    for scale, suffix in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if value >= scale:
            return f"{value / scale:,.2f} {suffix}"
    return f"{value:,.0f} B"


def _config_dict(config: BenchConfig) -> dict[str, Any]:
    return {**asdict(config), "out": str(config.out)}
