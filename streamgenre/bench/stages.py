"""Stages 1-6, 10 and 11 of `streamgenre bench`: decoding, shard reading, the loader, the frontend, training steps,
inference throughput and time to accuracy (and the packing half of stage 9)."""

from __future__ import annotations

import io
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from streamgenre.audio import Window, decode, decode_blocks
from streamgenre.bench.core import (
    MB,
    AccuracyRun,
    BenchConfig,
    Clip,
    ClipSet,
    StageRow,
    Target,
    drain,
    noise,
    read_clips,
    stage_bar,
    stream_config,
    synchronize,
    timed_map,
)
from streamgenre.bench.memory import in_subprocess
from streamgenre.checkpoint import InferenceSpec, make_bundle, save_checkpoint
from streamgenre.errors import InputError
from streamgenre.frontend import FrontendConfig, MelFrontend
from streamgenre.model import DEFAULT_MODEL, GenreClassifier, ModelConfig
from streamgenre.models import model_names, model_spec
from streamgenre.pack import PackConfig, pack
from streamgenre.paper import PAPER_SAMPLE_RATE
from streamgenre.recipes import Recipe, default_recipe, recipe_named
from streamgenre.shards import read_index
from streamgenre.stream import (
    Batch,
    iterate_epoch,
    make_loader,
)
from streamgenre.synth import encode_mp3
from streamgenre.train import TrainConfig, apply_step, build_trained_model, make_optimizer, set_learning_rate, step_loss, train
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
        _decode_row("3", "decode a window, resampled on the CPU", partial(_decode_window, rate=PAPER_SAMPLE_RATE), clips, config),
        _decode_row("3", "decode a window at the file's rate, down-mixed", partial(_decode_window, rate=None), clips, config),
    ]


def _decode_row(stage: str, name: str, decoder: Callable, clips: list[Clip], config: BenchConfig) -> StageRow:
    one = partial(_decode_clip, decoder=decoder, duration_s=config.duration_s)
    _, seconds = timed_map(one, clips, f"{stage} decode", config.progress)
    return StageRow(stage, name, len(clips), seconds, len(clips) / seconds, len(clips) / seconds, "1 process")


def _decode_clip(clip: Clip, decoder: Callable, duration_s: Seconds) -> Any:
    return decoder(clip.data, clip.offset_s, duration_s)


def _decode_window(data: bytes, offset_s: Seconds, duration_s: Seconds, rate: int | None) -> Any:
    """`audio.decode` of one window, to `rate` (None: the file's own)."""
    return decode(data, Window(offset_s, duration_s), rate)


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
        targets.append(
            Target(f"loader resample=device / resample=cpu, clips/s per core, {workers} worker(s)", speedup, ">= 1.8 (44.1 kHz stereo)", speedup >= 1.8)
        )
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
        rows.append(
            StageRow("5", f"frontend (mel + dB + resize), {name}", clips, seconds, clips / seconds, None, f"on {device.type}, batch {config.batch_size}")
        )
    return rows


def training_rows(clip_set: ClipSet, config: BenchConfig, device: torch.device, native_rate: int) -> tuple[list[StageRow], StageRow, list[Target]]:
    """Stage 6: training's own step on a synthetic in-memory batch (compute alone) for every registered model,
    the paper CNN again in contiguous memory format, then an epoch of the default model fed by the loader.

    The step is `train.step_loss` + `train.apply_step` with the recipe's optimizer, learning-rate
    schedule, mixup, label smoothing and clipping, under autocast + GradScaler where training
    turns them on (CUDA); `--quick` shrinks only the batch.
    """
    recipe = recipe_named(config.recipe)
    n_classes = max(2, len(clip_set.labels))
    steppers = {name: _Stepper.build(name, _recipe_for(name, recipe), n_classes, device) for name in model_names()}
    rows = {name: _step_row(stepper, f"train step, {name} model", config, device, native_rate) for name, stepper in steppers.items()}
    contiguous = _Stepper.build(DEFAULT_MODEL, recipe, n_classes, device, contiguous=True)
    rows["contiguous"] = _step_row(contiguous, f"train step, {DEFAULT_MODEL} model, contiguous memory format", config, device, native_rate)
    ratio = rows[DEFAULT_MODEL].clips_per_s / rows["contiguous"].clips_per_s
    target = Target(f"train step windows/s, {DEFAULT_MODEL} model: channels-last / contiguous", ratio, ">= 1.3", ratio >= 1.3)
    stepper = steppers[DEFAULT_MODEL]
    loader = make_loader(clip_set.source(), stream_config(config, "device"), max(config.workers), split_nodes=False)
    run = drain(iterate_epoch(loader, 0), clip_set.count, "6 epoch", config.progress, partial(_loader_step, stepper, device))
    synchronize(device)  # the last step's clock read is late by at most one step
    name = f"epoch end to end (loader x{loader.num_workers} + {DEFAULT_MODEL} model steps)"
    epoch_row = StageRow("6", name, run.clips, run.seconds, run.clips / run.seconds, None, f"resample=device; first batch after {run.first_batch_s:.2f} s")
    return list(rows.values()), epoch_row, [target]


def _recipe_for(model: str, recipe: Recipe) -> Recipe:
    """`recipe` where it suits the model; else the model's default (a pretrained model is timed as it trains by default)."""
    pretrained = model_spec(model).pretrained
    return recipe if recipe.needs_pretrained == pretrained else default_recipe(pretrained)


class _Contiguous(torch.nn.Module):
    """A backbone run in the default (contiguous) memory format, to measure what channels-last gains."""

    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone = backbone.to(memory_format=torch.contiguous_format)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone(image.contiguous())  # (B, C, H, W), NCHW strides


@dataclass
class _Stepper:
    """One model training as `train` trains it: the recipe's optimizer and schedule, its step, AMP where training uses it."""

    model: GenreClassifier
    recipe: Recipe
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    use_amp: bool
    step: int = 0

    @classmethod
    def build(cls, model_name: str, recipe: Recipe, n_classes: int, device: torch.device, contiguous: bool = False) -> _Stepper:
        model = build_trained_model(ModelConfig(n_classes, model_name), recipe).to(device).train()
        if contiguous:
            model.cnn = _Contiguous(model.cnn)
        use_amp = device.type == "cuda"  # `train`'s default: on for CUDA, off on the CPU
        return cls(model, recipe, make_optimizer(model, recipe), torch.amp.GradScaler(device.type, enabled=use_amp), use_amp)

    def __call__(self, batch: tuple[torch.Tensor, torch.Tensor, int]) -> None:
        waveforms, labels, sample_rate = batch  # (batch, time), (batch,), Hz
        set_learning_rate(self.optimizer, self.recipe, self.step, _SCHEDULE_STEPS)
        loss, _logits = step_loss(self.model, self.recipe, waveforms, labels, sample_rate, self.use_amp)
        apply_step(self.optimizer, self.scaler, loss, self.recipe, self.model.parameters())
        loss.item()  # training reads the loss every step: a device sync on CUDA
        self.step += 1


_SCHEDULE_STEPS = 1000  # the length of the schedule the bench's steps walk along (the rate does not change the cost)


def _step_row(stepper: _Stepper, name: str, config: BenchConfig, device: torch.device, native_rate: int) -> StageRow:
    batch_size = config.step_batch_size or stepper.recipe.batch_size
    waveform = noise(batch_size, round(config.duration_s * native_rate), device)  # (batch, time)
    labels = torch.arange(batch_size, device=device) % stepper.model.config.n_classes
    batches = [(waveform, labels, native_rate)] * config.timed_steps
    _, seconds = timed_map(stepper, batches, f"6 {name}", config.progress, device, batch_size)
    windows = batch_size * config.timed_steps
    recipe = stepper.recipe
    what = f"{recipe.name} recipe: {recipe.optimizer}, mixup {recipe.mixup_alpha:g}, label smoothing {recipe.label_smoothing:g}"
    amp = "autocast + GradScaler" if stepper.use_amp else "no autocast (as train on the CPU)"
    detail = f"{what}; {amp}; on {device.type}, batch {batch_size}, {native_rate} Hz input"
    return StageRow("6", f"{name} (in-memory batch)", windows, seconds, windows / seconds, None, detail)


def _loader_step(stepper: _Stepper, device: torch.device, batch: Batch) -> None:
    stepper((batch.waveforms.to(device), batch.labels.to(device), batch.sample_rate))


def time_packing(clips: list[Clip], scratch: Path, config: BenchConfig) -> float:
    """The streaming half of stage 9: seconds for `streamgenre pack` from a folder of MP3s (one per genre) to shards."""
    folder = scratch / "mp3"
    for clip in clips:
        (folder / clip.genre).mkdir(parents=True, exist_ok=True)
        (folder / clip.genre / f"{clip.key}.mp3").write_bytes(clip.data)
    started = time.perf_counter()
    pack(PackConfig(source=folder, out=scratch / "packed", workers=max(1, *config.workers)), progress=config.progress)
    return time.perf_counter() - started


# -- stage 10: inference throughput ----------------------------------------------------------------
def predict_rows(
    clips: list[Clip], labels: list[str], native_rate: int, channels: int, config: BenchConfig, device: torch.device, scratch: Path
) -> list[StageRow]:
    """Stage 10: `predict` with its default plan (the whole file, window after window) on the clips as files,
    then on one `long_file_s` file made of the clips' audio end to end; each in a fresh interpreter, with its peak RSS.

    The clips are timed with the default model and with each pretrained one (their backbones cost
    another order of magnitude); the long file with the default model. Models are untrained
    heads: their weights do not change the cost.
    """
    folder = scratch / "predict"
    folder.mkdir()
    paths = []
    for clip in clips:
        paths.append(folder / f"{clip.key}.mp3")
        paths[-1].write_bytes(clip.data)
    long_file = folder / "long.mp3"
    long_file.write_bytes(_long_file(clips, native_rate, channels, config.long_file_s))
    known = all(clip.duration_s for clip in clips)
    clip_name = f"{np.mean([clip.duration_s for clip in clips]):.0f}-s clips" if known else "clips"
    as_files, clips_audio_s = f"{len(paths)} {clip_name} as files", sum(clip.duration_s or 0 for clip in clips)
    plans = [(DEFAULT_MODEL, as_files, paths, clips_audio_s)]
    plans += [(name, as_files, paths, clips_audio_s) for name in model_names() if model_spec(name).pretrained]
    plans.append((DEFAULT_MODEL, f"one {_length(config.long_file_s)} file", [long_file], config.long_file_s))
    rows = []
    with stage_bar("10 predict (subprocesses)", sum(len(files) for _, _, files, _ in plans), config.progress) as bar:
        for model_name, what, files, audio_s in plans:
            checkpoint = _untrained_checkpoint(model_name, labels, folder)
            run = in_subprocess("predict_rss", {"checkpoint": str(checkpoint), "paths": [str(path) for path in files], "device": str(device)})
            bar.update(len(files))
            realtime = f", {audio_s / run['seconds']:,.0f}x real time" if audio_s else ""
            detail = (
                f"files/s; {run['windows'] / run['seconds']:,.1f} windows/s{realtime}; "
                f"peak RSS {run['peak_bytes'] / MB:,.0f} MB; {model_name} model on {device.type}"
            )
            name = f"predict, {what}" + ("" if model_name == DEFAULT_MODEL else f", {model_name} model")
            rows.append(StageRow("10", name, run["files"], run["seconds"], run["files"] / run["seconds"], None, detail))
    return rows


def _untrained_checkpoint(model_name: str, labels: list[str], folder: Path) -> Path:
    """A checkpoint of an untrained `model_name` classifier over `labels`, as `predict` loads one."""
    checkpoint = folder / f"{model_name}.pt"
    if not checkpoint.exists():
        model = GenreClassifier(ModelConfig(max(2, len(labels)), model_name))
        frontend = model.config.frontend
        save_checkpoint(checkpoint, make_bundle(model, InferenceSpec(list(labels), frontend.window_s, frontend.sample_rate, "device", None)))
    return checkpoint


def _length(seconds: Seconds) -> str:
    """``600`` -> ``10-min``, ``20`` -> ``20-s``."""
    return f"{seconds / 60:g}-min" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g}-s"


def _long_file(clips: list[Clip], rate: int, channels: int, length_s: Seconds) -> bytes:
    """MP3 bytes of `length_s` of the clips' decoded audio end to end (repeated as needed), at `rate`."""
    wanted, pieces, count = round(length_s * rate), [], 0
    for clip in itertools.cycle(clips):
        _, blocks = decode_blocks(clip.data, rate)
        for block in blocks:
            pieces.append(block[: wanted - count])
            count += len(pieces[-1])
            if count >= wanted:
                return encode_mp3(np.concatenate(pieces), rate, channels=channels)
    raise AssertionError("unreachable: itertools.cycle never ends")


# -- stage 11: time to accuracy ------------------------------------------------------------------
def accuracy_rows(config: BenchConfig, scratch: Path) -> tuple[list[StageRow], list[AccuracyRun]]:
    """Stage 11 (``--time-to-accuracy``): `train` each ``(recipe, model)`` on the whole packed directory for the budget.

    Each run is `train` as the CLI runs it, stopped after the epoch in which `budget_s` ran
    out; its history's `elapsed_s` (validation included) says when whole-clip validation
    accuracy first reached `target`.

    Raises:
        InputError: the packed directory has no val split to measure accuracy on.
    """
    check_accuracy_input(config)
    rows, runs = [], []
    for recipe_name, model in config.accuracy_runs:
        settings = TrainConfig(
            shards=config.shards,
            out=scratch / f"accuracy-{recipe_name}-{model}",
            recipe=recipe_named(recipe_name),
            model=model,
            duration_s=config.duration_s,
            workers=max(config.workers),
            device=config.device,
            progress=config.progress,
            time_budget_s=config.budget_s,
        )
        run = accuracy_run(train(settings).history, recipe_name, model, config.budget_s, config.target)
        runs.append(run)
        rows.append(_accuracy_row(run))
    return rows, runs


def check_accuracy_input(config: BenchConfig) -> None:
    """Before minutes of measuring: stage 11 needs a val split to measure accuracy on.

    Raises:
        InputError: the packed directory has no val shards.
    """
    if not read_index(config.shards).split_shards("val"):
        raise InputError(f"--time-to-accuracy measures whole-clip validation accuracy, but {config.shards} has no val shards; re-pack it with a val split")


def accuracy_run(history: list[dict], recipe: str, model: str, budget_s: Seconds, target: float) -> AccuracyRun:
    """Time to `target` and the best accuracy within `budget_s`, from a `train` history (rows need `elapsed_s`)."""
    within = [row["val_accuracy"] for row in history if row["elapsed_s"] <= budget_s and "val_accuracy" in row]
    reached = next((row["elapsed_s"] for row in history if row.get("val_accuracy", -1.0) >= target), None)
    last = history[-1] if history else {}
    return AccuracyRun(
        recipe=recipe,
        model=model,
        budget_s=budget_s,
        target=target,
        epochs=len(history),
        seconds=last.get("elapsed_s", 0.0),
        train_windows=sum(row["train_windows"] for row in history),
        train_seconds=sum(row["seconds"] for row in history),
        seconds_to_target=reached,
        accuracy=max(within) if within else None,
        final_accuracy=last.get("val_accuracy"),
    )


def _accuracy_row(run: AccuracyRun) -> StageRow:
    reached = (
        f"val accuracy {run.target:g} after {run.seconds_to_target:,.0f} s" if run.seconds_to_target is not None else f"val accuracy {run.target:g} not reached"
    )
    best = "no epoch ended within the budget" if run.accuracy is None else f"best {run.accuracy:.3f} within the {run.budget_s:g}-s budget"
    detail = f"training windows/s; {reached}; {best}; {run.epochs} epoch(s) in {run.seconds:,.0f} s"
    rate = run.train_windows / run.train_seconds if run.train_seconds else None
    return StageRow("11", f"time to accuracy: {run.recipe} recipe, {run.model} model", run.train_windows, run.seconds, rate, None, detail)
