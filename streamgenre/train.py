"""Train a genre classifier on streamed shards: epochs, whole-clip validation, checkpoints, plots, test report.

Work happens in `train(config)` with explicit inputs, so the CLI, `demo` and tests share it. The
loop reads top to bottom: set up the run, then per epoch train, validate and save, then test the
best checkpoint. Only the main process (rank 0) prints and writes; a crash or Ctrl-C loses at
most the epoch in progress, because `last.pt` is replaced atomically at the end of every epoch.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Collection, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from streamgenre.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    InferenceSpec,
    load_checkpoint,
    load_for_inference,
    make_bundle,
    save_checkpoint,
    saved_settings,
)
from streamgenre.config import MACHINE, MAY_CHANGE, config_from_dict, kept_changes, resume_field, resumed
from streamgenre.dist import (
    DistInfo,
    all_ranks_agree,
    all_reduce_sum,
    check_device_name,
    check_workers,
    default_workers,
    destroy_process_group,
    dist_info_from_env,
    init_process_group,
    resolve_device,
)
from streamgenre.errors import InputError, StreamgenreError
from streamgenre.evaluate import Predictions, predict_clips, summarise, write_report
from streamgenre.files import atomic_write, remove_stale_temporaries
from streamgenre.lock import run_lock
from streamgenre.model import DEFAULT_MODEL, GenreClassifier, ModelConfig, default_frontend, model_width
from streamgenre.models import model_names, model_spec
from streamgenre.plots import plot_curves
from streamgenre.progress import progress_bar
from streamgenre.recipes import MODERN, Recipe, learning_rate
from streamgenre.replay import EmbeddingReplay, make_replay
from streamgenre.shards import is_remote, read_index
from streamgenre.stream import (
    Batch,
    SkipTally,
    SplitSource,
    StreamConfig,
    check_skips,
    evaluation_stream,
    expected_batches,
    iterate_epoch,
    make_loader,
    open_split,
    warn_clamped,
)
from streamgenre.units import count_of
from streamgenre.windows import WindowPlan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on: the data, the model, the recipe and the machine.

    Each field declares what `--resume` does with it (`streamgenre.config`): machine fields are
    always this invocation's, the run's own value of the others is kept unless it may change.
    """

    shards: str = resume_field(MACHINE)  # where the packed data is now (its labels are checked)
    out: Path = resume_field(MACHINE)
    recipe: Recipe = MODERN
    model: str = DEFAULT_MODEL
    width: int | None = None  # None: the model's default, resolved and saved (`model_width`)
    dropout: float = 0.5
    duration_s: float | None = None  # None: the model's own window (its frontend's window_s)
    resample: str = "device"
    shuffle_buffer: int = 64
    genres: tuple[str, ...] | None = None
    workers: int | None = resume_field(MACHINE, default=None)
    seed: int = 0
    device: str = resume_field(MACHINE, default="auto")
    amp: bool | None = resume_field(MAY_CHANGE, default=None)  # None: on for CUDA, off on CPU
    resume: bool = resume_field(MACHINE, default=False)
    max_skip_fraction: float = resume_field(MAY_CHANGE, default=0.01)
    sync_bn: bool = False
    compile: bool = resume_field(MACHINE, default=False)  # torch.compile the model for training (off: not measured faster on a 2-core CPU)
    progress: bool = resume_field(MACHINE, default=True)
    time_budget_s: float | None = resume_field(MAY_CHANGE, default=None)  # stop after the epoch in which the run's wall time passes this

    def __post_init__(self):
        check_device_name(self.device)
        if self.time_budget_s is not None and not (math.isfinite(self.time_budget_s) and self.time_budget_s > 0):
            raise InputError(f"the time budget must be a finite number of seconds > 0, got {self.time_budget_s}")
        if not 0 <= self.max_skip_fraction <= 1:
            raise InputError(f"--max-skip-fraction must be within 0..1, got {self.max_skip_fraction}")
        check_workers(self.workers)
        object.__setattr__(self, "width", model_width(self.model, self.width))
        _ = self.stream  # the loader's checks (window, batch, resample) now: a resumed run's saved values fail as the checkpoint's
        frontend = default_frontend(self.model)
        if round(self.window_s * frontend.sample_rate) < frontend.shortest_samples:  # else the first forward pass fails, naming n_fft
            shortest = frontend.shortest_samples
            raise InputError(
                f"--duration {self.window_s:g} s is too short for model {self.model!r}: it needs windows of at least "
                f"{math.ceil(1000 * shortest / frontend.sample_rate) / 1000:g} s ({shortest} samples at {frontend.sample_rate} Hz)"
            )

    @property
    def window_s(self) -> float:
        """Seconds per training window: `duration_s`, or the model's own."""
        return default_frontend(self.model).window_s if self.duration_s is None else self.duration_s

    @property
    def sample_rate(self) -> int:
        """The rate the model hears, as its frontend declares it (the loader's rate with ``resample="cpu"``)."""
        return default_frontend(self.model).sample_rate

    @property
    def stream(self) -> StreamConfig:
        """How the training split is read: the recipe's windows and batch, this run's audio settings."""
        recipe = self.recipe
        return StreamConfig(
            offset_s=recipe.offset_s,
            duration_s=self.window_s,
            sample_rate=self.sample_rate,
            batch_size=recipe.batch_size,
            shuffle_buffer=self.shuffle_buffer,
            seed=self.seed,
            resample=self.resample,
            windows_per_clip=recipe.windows_per_clip,
            fresh_windows=recipe.fresh_windows,
        )

    def model_config(self, n_classes: int) -> ModelConfig:
        """The classifier this run trains (the recipe adds its augmentation when building it).

        Raises:
            InputError: the recipe treats a pretrained backbone apart, and the model has none.
        """
        if self.recipe.needs_pretrained and not model_spec(self.model).pretrained:
            pretrained = ", ".join(name for name in model_names() if model_spec(name).pretrained)
            # --model may be the default, not typed: say which model, and which to give
            raise InputError(f"--recipe {self.recipe.name} trains a pretrained backbone, which model {self.model!r} has not; give --model {pretrained}")
        return ModelConfig(n_classes, self.model, self.dropout, self.width)

    def inference_spec(self, labels: list[str]) -> InferenceSpec:
        """What a checkpoint of this run needs to be fed."""
        return InferenceSpec(list(labels), self.window_s, self.sample_rate, self.resample, self.recipe.offset_s)

    def to_dict(self) -> dict:
        """A JSON-ready dict, stored in checkpoints (shards resolved, so it can be found later)."""
        data = asdict(self)
        data["out"] = str(self.out)
        data["shards"] = self.shards if is_remote(self.shards) else str(Path(self.shards).resolve())
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Rebuild from `to_dict` output (a checkpoint's ``train_config``); unknown keys raise `InputError`."""
        genres = tuple(data["genres"]) if data.get("genres") else None
        data = {name: value for name, value in data.items() if name != "sample_rate"}  # before 0.3 a setting; now the model's
        return config_from_dict(cls, {**data, "out": Path(data["out"]), "recipe": Recipe.from_dict(data["recipe"]), "genres": genres})


@dataclass
class TrainResult:
    """What a run produced; the CLI prints it."""

    run_dir: Path
    history: list[dict]
    best_val_accuracy: float | None
    best_epoch: int | None
    test: dict | None
    elapsed_s: float
    train_windows_per_s: float


@dataclass
class _Run:
    """The state one training process carries from step to step."""

    config: TrainConfig
    model: GenreClassifier
    trained: torch.nn.Module  # `model`, wrapped for DDP under torchrun
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    dist: DistInfo
    use_amp: bool
    labels: list[str]
    total_steps: int
    step: int = 0
    history: list[dict] = field(default_factory=list)
    best: float | None = None
    best_epoch: int | None = None


@dataclass
class _EpochStats:
    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0
    skipped: int = 0

    def reduced(self, device: torch.device) -> _EpochStats:
        """Sums over all processes (one all-reduce)."""
        totals = torch.tensor([self.loss_sum, self.correct, self.count, self.skipped], dtype=torch.float64, device=device)
        loss_sum, correct, count, skipped = all_reduce_sum(totals).tolist()
        return _EpochStats(loss_sum, int(correct), int(count), int(skipped))


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) training and finish with a test-split report from the best checkpoint."""
    dist = dist_info_from_env()
    device = resolve_device(config.device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    init_process_group(dist, device)
    try:
        return _train(config, dist, device)
    finally:
        destroy_process_group()


def _train(config: TrainConfig, dist: DistInfo, device: torch.device) -> TrainResult:
    started = time.perf_counter()
    index = read_index(config.shards)
    train_source = open_split(config.shards, "train", config.genres, index, given_by=_genres_given_by(config))
    _check_two_genres(train_source, config)
    val_source = _optional_split(config.shards, "val", config.genres, index)
    workers = default_workers() if config.workers is None else config.workers
    _check_enough_shards(train_source, dist, workers)
    out = Path(config.out)
    if dist.is_main:
        _prepare_run_dir(out, config.resume)
    with run_lock(out) if dist.is_main else nullcontext():  # one run per folder
        if dist.is_main:
            remove_stale_temporaries(out)  # half-written checkpoints or plots of a run killed mid-save
        torch.manual_seed(config.seed)
        run = _start_run(config, train_source, dist, device, workers)
        if config.resume:
            _restore(run, out / LAST_NAME)
        pin = device.type == "cuda"
        train_loader = make_loader(train_source, config.stream, workers, pin)
        val_loader = make_loader(val_source, _whole_clip_stream(config), workers, pin) if val_source else None
        if dist.is_main:
            log.info(machine_line(device, train_loader.num_workers))
        replay = make_replay(run.model, config.recipe, device, dist.enabled, config.seed)
        if replay is not None and run.history:
            _record_replay(run, train_loader, replay)  # a resumed run replays what the uninterrupted one would
        train_seconds, train_windows = 0.0, 0
        elapsed_before = run.history[-1].get("elapsed_s", 0.0) if run.history else 0.0  # a resumed run's count goes on
        for epoch in range(len(run.history), config.recipe.epochs):
            epoch_started = time.perf_counter()
            if replay is not None and replay.ready:
                stats = _replay_epoch(run, replay, epoch)
            else:
                stats = _train_epoch(run, train_loader, train_source, epoch, replay if replay is not None and not replay.recorded else None)
            train_seconds += time.perf_counter() - epoch_started
            train_windows += stats.count
            check_skips(stats.skipped, stats.count, config.max_skip_fraction, "train")
            _check_read_something(stats, epoch)
            row = {"epoch": epoch + 1, **_rates(stats, "train"), "lr": learning_rate(config.recipe, run.step, run.total_steps)}
            row["seconds"] = round(time.perf_counter() - epoch_started, 2)
            if val_loader is not None:
                row.update(_validate(run, val_loader))
            row["elapsed_s"] = round(elapsed_before + time.perf_counter() - started, 2)  # wall time since the run began, validation included
            score = row.get("val_accuracy", row["train_accuracy"])
            improved = not config.recipe.pick_best or run.best is None or score > run.best
            if improved:
                run.best, run.best_epoch = score, epoch + 1
            run.history.append(row)
            if dist.is_main:
                _save_epoch(run, out, improved)
                log.info(_epoch_line(row, config.recipe.epochs))
            if config.time_budget_s is not None and row["elapsed_s"] >= config.time_budget_s:
                if dist.is_main:
                    log.info("time budget of %.0f s spent after epoch %d: stopping", config.time_budget_s, epoch + 1)
                break
        test = _test_report(config, out, index, workers, device) if dist.is_main else None
        return TrainResult(
            out,
            run.history,
            run.best if val_loader is not None else None,
            run.best_epoch,
            test,
            time.perf_counter() - started,
            train_windows / max(train_seconds, 1e-9),
        )


def _start_run(config: TrainConfig, source: SplitSource, dist: DistInfo, device: torch.device, workers: int) -> _Run:
    """Build the model, optimizer and AMP scaler, and plan the number of optimizer steps."""
    recipe = config.recipe
    model = build_trained_model(config.model_config(len(source.labels)), recipe).to(device)
    optimizer = make_optimizer(model, recipe)
    use_amp = device.type == "cuda" and config.amp is not False
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    steps_per_epoch = math.ceil(source.sample_count * recipe.windows_per_clip / recipe.batch_size / dist.world_size)
    trained = _wrap_for_dist(model, dist, device, config.sync_bn)
    if config.compile:
        trained = torch.compile(trained)
    return _Run(config, model, trained, optimizer, scaler, device, dist, use_amp, source.labels, steps_per_epoch * recipe.epochs)


def machine_line(device: torch.device, loader_workers: int) -> str:
    """What decides a run's exact weights besides its settings and seed, for the log (README: "Two runs with the same seed...").

    The number of loader workers sets the sample order (each worker shuffles its own shards);
    on the CPU torch's thread count splits the float sums, so 1 thread and 2 differ in the last
    bits from the first step on. Both default to the cores this process may use.
    """
    threads = f"{count_of(torch.get_num_threads(), 'torch thread')}, " if device.type == "cpu" else ""
    workers = count_of(loader_workers, "loader worker")
    return f"training on {device} with {threads}{workers} (a same-seed run repeats these weights bit for bit only with the same counts)"


def build_trained_model(model_config: ModelConfig, recipe: Recipe) -> GenreClassifier:
    """A fresh classifier as a run trains it: with the recipe's augmentation, and a pretrained backbone frozen when the recipe freezes it."""
    model = GenreClassifier(model_config, recipe.augment)
    if recipe.backbone_lr_scale == 0:
        model.cnn.freeze()
    return model


def set_learning_rate(optimizer: torch.optim.Optimizer, recipe: Recipe, step: int, total_steps: int) -> None:
    """Every parameter group at the schedule's rate for `step`, times the group's `lr_scale`."""
    rate = learning_rate(recipe, step, total_steps)
    for group in optimizer.param_groups:
        group["lr"] = rate * group.get("lr_scale", 1.0)


def make_optimizer(model: GenreClassifier, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over `model`'s trainable parameters, at the recipe's peak learning rate.

    A pretrained backbone that trains is its own parameter group, whose `lr_scale` (the recipe's
    `backbone_lr_scale`) the schedule multiplies in; a frozen one has no trainable parameters.
    """
    optimizer_class = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    backbone = getattr(model.cnn, "backbone", None) if recipe.needs_pretrained else None
    in_backbone = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in in_backbone], "lr_scale": 1.0}]
    if any(id(p) in in_backbone for p in trainable):
        groups.append({"params": [p for p in trainable if id(p) in in_backbone], "lr_scale": recipe.backbone_lr_scale})
    return optimizer_class(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)


def _check_two_genres(source: SplitSource, config: TrainConfig) -> None:
    """A classifier needs two genres or more: name who gave fewer, the genres asked for or the packed directory (not n_classes)."""
    if len(source.labels) > 1:
        return
    if config.genres:
        raise InputError(f"{_genres_given_by(config)} names only {source.labels[0]}: a genre classifier needs at least 2 genres; name two or more")
    raise InputError(f"{config.shards} holds only {', '.join(source.labels) or 'no genre'}: a genre classifier needs at least 2 genres; pack two or more")


def _optional_split(shards: str, split: str, genres: tuple[str, ...] | None, index) -> SplitSource | None:
    if not index.split_shards(split):
        log.warning("no %s shards in %s: skipping %s", split, shards, split)
        return None
    return open_split(shards, split, genres, index)


def _check_enough_shards(source: SplitSource, dist: DistInfo, workers: int) -> None:
    """Under torchrun every process and loader worker needs a shard of its own."""
    needed = dist.world_size * max(1, workers)
    if dist.enabled and len(source.urls) < needed:
        raise InputError(
            f"{len(source.urls)} train shards cannot feed {dist.world_size} processes x {max(1, workers)} loader workers: "
            f"at least {needed} are needed; re-pack with a smaller --max-count or --shard-size, or lower --workers"
        )


def _whole_clip_stream(config: TrainConfig) -> StreamConfig:
    return evaluation_stream(config.window_s, config.sample_rate, config.resample, config.recipe.offset_s, whole_clips=True)


def _prepare_run_dir(out: Path, resume: bool) -> None:
    if resume and not (out / LAST_NAME).is_file():
        raise InputError(f"--resume: {out / LAST_NAME} does not exist; train without --resume first")
    if not resume and (out / LAST_NAME).exists():
        raise InputError(f"{out} already holds a run; use --resume to continue it or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exn:
        raise InputError(f"--out {out} is a file, not a folder") from exn


def _wrap_for_dist(model: GenreClassifier, dist: DistInfo, device: torch.device, sync_bn: bool) -> torch.nn.Module:
    if not dist.enabled:
        return model
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # The frontend's window and mel filters are constants (~0.5 MB): never broadcast them each step.
    constants = [f"frontend.{name}" for name, _ in model.frontend.named_buffers()]
    torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, constants)
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _autocast(device: torch.device, use_amp: bool):
    return torch.autocast(device_type=device.type, dtype=torch.float16) if use_amp else nullcontext()


def _train_epoch(run: _Run, loader: torch.utils.data.DataLoader, source: SplitSource, epoch: int, replay: EmbeddingReplay | None = None) -> _EpochStats:
    """One pass over the training split: every clip's windows once, one optimizer step per batch.

    With a `replay`, the pass is recorded so that later epochs can be served from memory.
    """
    config, recipe, device = run.config, run.config.recipe, run.device
    run.trained.train()
    stats = _EpochStats()
    total = expected_batches(source, config.stream, loader.num_workers or 1)
    bar = progress_bar(total=total, desc=f"epoch {epoch + 1}/{recipe.epochs}", unit="batch", enabled=config.progress and run.dist.is_main)
    tally = SkipTally()
    for batch in _lockstep(tally.passing(iterate_epoch(loader, epoch)), device):
        set_learning_rate(run.optimizer, recipe, run.step, run.total_steps)
        waveforms = batch.waveforms.to(device, non_blocking=True)  # (batch, time)
        labels = batch.labels.to(device, non_blocking=True)
        loss, logits = step_loss(run.trained, recipe, waveforms, labels, batch.sample_rate, run.use_amp)
        _take_step(run, loss, epoch)
        if replay is not None:
            replay.record(batch.waveforms, batch.labels, batch.sample_rate)
        _tally_step(stats, bar, loss, logits, labels)
    bar.close()
    stats.skipped = tally.total
    if tally.clamped and epoch == 0:
        warn_clamped(tally.clamped, stats.count, config.stream)
    if replay is not None:
        _finish_replay(replay, run)
    return stats.reduced(device)


def _replay_epoch(run: _Run, replay: EmbeddingReplay, epoch: int) -> _EpochStats:
    """One epoch of the head on the recorded windows' cached embeddings: no decoding, no backbone (see `replay`)."""
    recipe = run.config.recipe
    run.trained.train()
    stats = _EpochStats()
    bar = progress_bar(total=replay.batch_count(recipe.batch_size), desc=f"epoch {epoch + 1}/{recipe.epochs}", unit="batch", enabled=run.config.progress)
    for embeddings, labels in replay.batches(epoch, recipe.batch_size):
        set_learning_rate(run.optimizer, recipe, run.step, run.total_steps)
        logits = run.model.cnn.head(embeddings)
        loss = _mixed_loss(logits, labels, None, 1.0, recipe.label_smoothing)
        _take_step(run, loss, epoch)
        _tally_step(stats, bar, loss, logits, labels)
    bar.close()
    return stats


def _take_step(run: _Run, loss: torch.Tensor, epoch: int) -> None:
    """Refuse a non-finite loss, then one optimizer step on it (streamed and replayed epochs alike)."""
    _check_finite(loss, epoch, run.step)
    apply_step(run.optimizer, run.scaler, loss, run.config.recipe, run.model.parameters())
    run.step += 1


def _tally_step(stats: _EpochStats, bar, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Add one batch's loss and hits to the epoch's totals and its progress bar."""
    stats.loss_sum += loss.item() * len(labels)  # a CPU-GPU sync point, once per batch
    stats.correct += int((logits.argmax(dim=1) == labels).sum())
    stats.count += len(labels)
    bar.update(1)
    bar.set_postfix(loss=f"{stats.loss_sum / stats.count:.3f}", acc=f"{stats.correct / stats.count:.3f}")


def _record_replay(run: _Run, loader: torch.utils.data.DataLoader, replay: EmbeddingReplay) -> None:
    """Rebuild a resumed run's replay: the first epoch's windows again, embedded, nothing trained.

    The random state is put back afterwards, so the epochs that follow draw what they would have.
    """
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for batch in SkipTally().passing(iterate_epoch(loader, 0)):
            run.model.cached_embedding(batch.waveforms, batch.sample_rate)
            replay.record(batch.waveforms, batch.labels, batch.sample_rate)
    _finish_replay(replay, run)


def _finish_replay(replay: EmbeddingReplay, run: _Run) -> None:
    """Close the recorded pass and say whether the epochs to come replay it."""
    cache = run.model.cnn.cache
    if replay.finish():
        log.info("the next epochs replay these %d windows' embeddings from memory (%.0f MB in the cache): no decoding", len(replay), cache.bytes / 2**20)
    else:
        log.info("the embedding cache's %.0f MB bound left windows out: every epoch streams and decodes", cache.max_bytes / 2**20)


def step_loss(
    model: torch.nn.Module, recipe: Recipe, waveforms: torch.Tensor, labels: torch.Tensor, sample_rate: int, use_amp: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward half of a training step: the recipe's mixup, then the model and its loss under autocast.

    `streamgenre bench` times this and `apply_step` as training runs them.

    Returns:
        ``(loss, logits)``: the scalar loss and the ``(batch, n_classes)`` logits of the mixed batch.
    """
    waveforms, partner, share = _mixup(waveforms, recipe.mixup_alpha)  # (batch, time)
    with _autocast(waveforms.device, use_amp):
        logits = model(waveforms, sample_rate=sample_rate)
        loss = _mixed_loss(logits, labels, partner, share, recipe.label_smoothing)
    return loss, logits


def apply_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: torch.Tensor, recipe: Recipe, parameters) -> None:
    """The backward half: scaled backward, the recipe's gradient clipping of `parameters`, one optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if recipe.clip_grad_norm is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, recipe.clip_grad_norm)
    scaler.step(optimizer)
    scaler.update()


def _mixup(waveforms: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """Mix each waveform with a shuffled partner (Zhang et al. 2018): returns mix, partner order, share.

    The share of the original is drawn from Beta(alpha, alpha) and folded to >= 0.5, so the
    original label stays the larger part; alpha 0 leaves the batch as it is.
    """
    if alpha <= 0 or len(waveforms) < 2:
        return waveforms, None, 1.0
    share = float(torch.distributions.Beta(alpha, alpha).sample())
    share = max(share, 1 - share)
    partner = torch.randperm(len(waveforms), device=waveforms.device)
    return share * waveforms + (1 - share) * waveforms[partner], partner, share


def _mixed_loss(logits: torch.Tensor, labels: torch.Tensor, partner: torch.Tensor | None, share: float, smoothing: float) -> torch.Tensor:
    loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
    if partner is None:
        return loss
    return share * loss + (1 - share) * F.cross_entropy(logits, labels[partner], label_smoothing=smoothing)


def _check_finite(loss: torch.Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss):
        raise StreamgenreError(
            f"training diverged: the loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
            "lower --lr (or check the input audio); last.pt still holds the last good epoch"
        )


def _lockstep(batches: Iterator[Batch], device: torch.device) -> Iterator[Batch]:
    """Stop every process as soon as one runs out of batches.

    Under DDP each optimizer step all-reduces gradients, so a process that took one step more
    than the others would wait forever; shards rarely split into equal sample counts.
    """
    for batch in batches:
        if not all_ranks_agree(True, device):
            return
        yield batch
    all_ranks_agree(False, device)


def _validate(run: _Run, loader: torch.utils.data.DataLoader) -> dict:
    """Whole-clip validation: `val_windows` windows per clip, probabilities averaged, summed over ranks."""
    plan = WindowPlan(run.config.window_s, windows=run.config.recipe.val_windows)
    tally = SkipTally()
    with _autocast(run.device, run.use_amp):
        predictions = predict_clips(run.model, tally.passing(iterate_epoch(loader, 0)), plan, run.device, len(run.labels))
    totals = torch.tensor(
        [
            _clip_loss_sum(predictions),
            (predictions.predicted == predictions.labels).sum(),
            len(predictions.keys),
            predictions.window_hits,
            predictions.windows,
            tally.total,
        ],
        dtype=torch.float64,
        device=run.device,
    )
    loss_sum, correct, clips, window_hits, windows, skipped = all_reduce_sum(totals).tolist()
    check_skips(int(skipped), int(clips), run.config.max_skip_fraction, "val")
    return {
        "val_loss": loss_sum / max(1, clips),
        "val_accuracy": correct / max(1, clips),
        "val_window_accuracy": window_hits / max(1, windows),
        "val_clips": int(clips),
        "val_skipped": int(skipped),
    }


def _clip_loss_sum(predictions: Predictions) -> float:
    """Summed negative log-likelihood of the true label under each clip's combined probabilities."""
    picked = predictions.probs[range(len(predictions.labels)), predictions.labels]
    return float(-torch.log(torch.from_numpy(picked).clamp_min(1e-12)).sum())


def _rates(stats: _EpochStats, split: str) -> dict:
    return {
        f"{split}_loss": stats.loss_sum / max(1, stats.count),
        f"{split}_accuracy": stats.correct / max(1, stats.count),
        f"{split}_windows": stats.count,
        f"{split}_skipped": stats.skipped,
    }


def _check_read_something(stats: _EpochStats, epoch: int) -> None:
    """An epoch that trained on nothing must not become a checkpoint of an untrained model."""
    if stats.count == 0:
        raise StreamgenreError(
            f"train: epoch {epoch + 1} read 0 windows ({stats.skipped} samples skipped): nothing was trained and no checkpoint was written; "
            "check the shards with `streamgenre info --verify`"
        )


def _save_epoch(run: _Run, out: Path, improved: bool) -> None:
    """Write last.pt (and best.pt when validation improved), the history and its plots."""
    state = {
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(),
        "epoch": len(run.history),
        "step": run.step,
        "best_score": run.best,
        "best_epoch": run.best_epoch,
        "history": run.history,
        "train_config": run.config.to_dict(),
        "rng": _rng_state(),
    }
    bundle = make_bundle(run.model, run.config.inference_spec(run.labels), **state)
    if improved:
        save_checkpoint(out / BEST_NAME, bundle)
    save_checkpoint(out / LAST_NAME, bundle)
    _write_history(out, run.history, run.best_epoch)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def resumed_config(config: TrainConfig, given: Collection[str]) -> TrainConfig:
    """`--resume` from the command line: the run's own settings in last.pt, with `config`'s machine fields and `given` ones.

    `given` holds the dotted field paths the user typed (``recipe.epochs``); any of them that
    would change a kept setting is refused here, before a shard is read, so that every kept
    setting `train` then meets is the run's own. Without a last.pt, `config` as it is (and
    `train` says there is nothing to resume).
    """
    last = Path(config.out) / LAST_NAME
    if not last.is_file():
        return config
    bundle = load_checkpoint(last)
    saved = saved_train_config(bundle, last)
    config = resumed(saved, config, given)
    _check_resumable(saved, config, len(bundle["history"]))
    return config


def _genres_given_by(config: TrainConfig) -> str:
    """Who named `config.genres`, for messages: --genres, or (resumed) the run itself, whose genres `resumed_config` keeps."""
    return f"the resumed run's {Path(config.out) / LAST_NAME}" if config.resume else "--genres"


def saved_train_config(bundle: dict, path: Path) -> TrainConfig:
    """The run's own settings, saved in checkpoint `path`: a bad one is the checkpoint's, not an option's (`saved_settings`).

    The width is the saved model's: runs of earlier releases saved none in their settings, and
    today's default would rebuild a head other than the one they trained (`ModelConfig.from_dict`).
    """

    def settings() -> TrainConfig:
        width = ModelConfig.from_dict(bundle["model_config"]).width
        return TrainConfig.from_dict({**bundle["train_config"], "width": width})

    return saved_settings(bundle, path, settings)


def _restore(run: _Run, path: Path) -> None:
    """Continue from last.pt: weights, optimizer, step, history and RNG, for the same kept settings only."""
    bundle = load_checkpoint(path)
    if bundle["spec"]["labels"] != run.labels:
        raise InputError(f"--resume: the checkpoint was trained on {bundle['spec']['labels']}, these shards give {run.labels}")
    _check_resumable(saved_train_config(bundle, path), run.config, len(bundle["history"]))
    run.model.load_state_dict(bundle["model"])
    run.optimizer.load_state_dict(bundle["optimizer"])
    run.scaler.load_state_dict(bundle["scaler"])
    run.step, run.history = bundle["step"], bundle["history"]
    run.best, run.best_epoch = bundle["best_score"], bundle["best_epoch"]
    torch.set_rng_state(bundle["rng"]["torch"])
    if "cuda" in bundle["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(bundle["rng"]["cuda"])


def _check_resumable(saved: TrainConfig, config: TrainConfig, trained_epochs: int) -> None:
    """`--resume` continues the run as it was configured: refuse changed kept settings, or fewer epochs than trained."""
    changed = kept_changes(saved, config)
    if changed:
        raise InputError(f"--resume continues the run with its own settings, but these differ: {'; '.join(changed)}; drop them, or train a new run")
    if config.recipe.epochs < trained_epochs:
        raise InputError(f"--resume --epochs {config.recipe.epochs}: the run has already trained {trained_epochs} epochs; give at least that many")


def _write_history(out: Path, history: list[dict], best_epoch: int | None) -> None:
    with atomic_write(out / "history.json") as stream:
        stream.write(json.dumps(history, indent=2).encode())
    columns = list(dict.fromkeys(key for row in history for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    with atomic_write(out / "history.csv") as stream:
        stream.write(text.getvalue().encode())
    plot_curves(history, "loss", out / "loss.png", best_epoch)
    plot_curves(history, "accuracy", out / "accuracy.png", best_epoch)


def _test_report(config: TrainConfig, out: Path, index, workers: int, device: torch.device) -> dict | None:
    """Score the best checkpoint on the test split whole-clip (rank 0 only, every test clip once)."""
    source = _optional_split(config.shards, "test", config.genres, index)
    if source is None:
        return None
    loaded = load_for_inference(out / BEST_NAME, device)
    loader = make_loader(source, _whole_clip_stream(config), workers, device.type == "cuda", split_nodes=False)
    plan = WindowPlan(config.window_s, windows=config.recipe.val_windows)
    tally = SkipTally()
    predictions = predict_clips(loaded.model, tally.passing(iterate_epoch(loader, 0)), plan, device, len(source.labels))
    tally.check(config.max_skip_fraction, "test")
    summary = summarise(predictions, source.labels)
    summary["skipped"] = tally.total
    title = f"test split, best checkpoint, {plan.windows} windows per clip"
    write_report(summary, out / "report.json", out / "confusion_matrix.png", title, out / "report.txt")
    return summary


def _epoch_line(row: dict, epochs: int) -> str:
    line = f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f}"
    if "val_accuracy" in row:
        line += f" | val loss {row['val_loss']:.4f} clip acc {row['val_accuracy']:.3f} window acc {row['val_window_accuracy']:.3f}"
    return line + f" | lr {row['lr']:.2e} | {row['seconds']:.1f}s"
