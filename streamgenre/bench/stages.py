"""Stages 1-6 of `streamgenre bench`: decoding, shard reading, the streaming loader, the frontend and training steps."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from streamgenre.audio import decode_window, decode_window_native
from streamgenre.bench.core import (
    MB,
    BenchConfig,
    Clip,
    ClipSet,
    StageRow,
    Target,
    drain,
    noise,
    optimizer_step,
    read_clips,
    stage_bar,
    stream_config,
    synchronize,
    timed_map,
)
from streamgenre.frontend import FrontendConfig, MelFrontend
from streamgenre.model import GenreClassifier, ModelConfig
from streamgenre.pack import PackConfig, pack
from streamgenre.paper import (
    PAPER_LR,
    PAPER_SAMPLE_RATE,
)
from streamgenre.stream import (
    Batch,
    iterate_epoch,
    make_loader,
)
from streamgenre.units import Seconds


def read_row(clip_set: ClipSet, config: BenchConfig) -> StageRow:
    """Stage 2: time reading the shards (already in the page cache: `load_clips` read them once)."""
    with stage_bar("2 shard read", clip_set.count, config.progress) as bar:
        started = time.perf_counter()
        count = 0
        for _ in read_clips(clip_set, config, []):  # load_clips already noted what it drops
            count += 1
            bar.update(1)
        seconds = time.perf_counter() - started
    detail = f"{clip_set.size_bytes / MB / seconds:,.1f} MB/s over {len(clip_set.urls)} shards"
    return StageRow("2", "shard read (tar -> samples)", count, seconds, count / seconds, count / seconds, detail)


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


def ceiling_row(clips: list[Clip], config: BenchConfig) -> StageRow:
    """Stage 1: the raw-PyAV ceiling, one process, clips already in memory."""
    return _decode_row("1", "ceiling: raw PyAV decode + AudioResampler", partial(decode_ceiling, sample_rate=PAPER_SAMPLE_RATE), clips, config)


def window_decode_rows(clips: list[Clip], config: BenchConfig) -> list[StageRow]:
    """Stage 3: the package's window decoders, one process, clips already in memory."""
    return [
        _decode_row("3", "decode_window (resampled on the CPU)", partial(decode_window, sample_rate=PAPER_SAMPLE_RATE), clips, config),
        _decode_row("3", "decode_window_native (file's rate, down-mixed)", decode_window_native, clips, config),
    ]


def _decode_row(stage: str, name: str, decoder: Callable, clips: list[Clip], config: BenchConfig) -> StageRow:
    decode = partial(_decode_clip, decoder=decoder, duration_s=config.duration_s)
    _, seconds = timed_map(decode, clips, f"{stage} {name.split(' ')[0].rstrip(':')}", config.progress)
    return StageRow(stage, name, len(clips), seconds, len(clips) / seconds, len(clips) / seconds, "1 process")


def _decode_clip(clip: Clip, decoder: Callable, duration_s: Seconds) -> Any:
    return decoder(clip.data, clip.offset_s, duration_s)


def loader_rows(clip_set: ClipSet, config: BenchConfig, ceiling: StageRow) -> tuple[list[StageRow], list[Target]]:
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


def _loader_row(clip_set: ClipSet, config: BenchConfig, resample: str, workers: int) -> StageRow:
    """One loader pass over the clips, repeated to at least `loader_min_clips`.

    As in an epoch of a real corpus, the workers' start-up (paid once per epoch) is then
    amortised instead of dominating a pass over a handful of clips.
    """
    repeats = max(1, math.ceil(config.loader_min_clips / clip_set.count))
    loader = make_loader(clip_set.source(repeats), stream_config(config, resample), workers, split_nodes=False)
    run = drain(iterate_epoch(loader, 0), clip_set.count * repeats, f"4 loader {resample} x{loader.num_workers}", config.progress)
    name = f"streaming loader, resample={resample}, {loader.num_workers} worker(s)"
    detail = f"{repeats}x the clips; first batch after {run.first_batch_s:.2f} s"
    return StageRow("4", name, run.clips, run.seconds, run.clips / run.seconds, run.clips / run.seconds / max(1, loader.num_workers), detail)


def frontend_rows(device: torch.device, config: BenchConfig) -> list[StageRow]:
    """Stage 5 on synthetic waveforms (nanoGPT's real_data=False): compute alone, no I/O."""
    frontend = MelFrontend(FrontendConfig()).to(device)
    rows = []
    for rate, name in ((PAPER_SAMPLE_RATE, "22.05 kHz input"), (44100, "44.1 kHz input, resampled on the device")):
        batches = [noise(config.batch_size, round(config.duration_s * rate), device)] * config.timed_steps  # (batch, time)
        with torch.inference_mode():
            _, seconds = timed_map(partial(frontend, sample_rate=rate), batches, f"5 frontend {rate} Hz", config.progress, device, config.batch_size)
        clips = config.batch_size * config.timed_steps
        rows.append(StageRow("5", f"frontend (mel + dB + resize), {name}", clips, seconds, clips / seconds, None, f"on {device.type}, batch {config.batch_size}"))
    return rows


def training_rows(clip_set: ClipSet, config: BenchConfig, device: torch.device, native_rate: int) -> tuple[StageRow, StageRow]:
    """Stage 6: steps on a synthetic in-memory batch (compute alone), then an epoch fed by the loader."""
    model = GenreClassifier(ModelConfig(n_classes=max(2, len(clip_set.labels)))).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=PAPER_LR)
    waveform = noise(config.batch_size, round(config.duration_s * native_rate), device)  # (batch, time)
    labels = torch.arange(config.batch_size, device=device) % model.config.n_classes
    batches = [(waveform, labels, native_rate)] * config.timed_steps
    _, seconds = timed_map(partial(_waveform_step, model, optimizer), batches, "6 train step", config.progress, device, config.batch_size)
    clips = config.batch_size * config.timed_steps
    step_row = StageRow("6", "train step (forward + backward + Adam), in-memory batch", clips, seconds, clips / seconds, None, f"on {device.type}, {native_rate} Hz input")
    loader = make_loader(clip_set.source(), stream_config(config, "device"), max(config.workers), split_nodes=False)
    run = drain(iterate_epoch(loader, 0), clip_set.count, "6 epoch", config.progress, partial(_loader_step, model, optimizer, device))
    synchronize(device)  # the last step's clock read is late by at most one step
    name = f"epoch end to end (loader x{loader.num_workers} + steps)"
    epoch_row = StageRow("6", name, run.clips, run.seconds, run.clips / run.seconds, None, f"resample=device; first batch after {run.first_batch_s:.2f} s")
    return step_row, epoch_row


def _waveform_step(model: GenreClassifier, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor, int]) -> None:
    waveform, labels, sample_rate = batch  # (batch, time), (batch,), Hz
    optimizer_step(optimizer, model(waveform, sample_rate=sample_rate), labels)


def _loader_step(model: GenreClassifier, optimizer: torch.optim.Optimizer, device: torch.device, batch: Batch) -> None:
    _waveform_step(model, optimizer, (batch.waveforms.to(device), batch.labels.to(device), batch.sample_rate))


def time_packing(clips: list[Clip], scratch: Path, config: BenchConfig) -> float:
    """The streaming half of stage 9: seconds for `streamgenre pack` from a folder of MP3s (one per genre) to shards."""
    folder = scratch / "mp3"
    for clip in clips:
        (folder / clip.genre).mkdir(parents=True, exist_ok=True)
        (folder / clip.genre / f"{clip.key}.mp3").write_bytes(clip.data)
    started = time.perf_counter()
    pack(PackConfig(source=folder, out=scratch / "packed", workers=max(1, *config.workers)), progress=config.progress)
    return time.perf_counter() - started
