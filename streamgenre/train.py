"""Train the paper's CNN on streamed shards: epochs, validation, checkpoints, plots, test report.

Work happens in `train(config)` with explicit inputs, so the CLI, `demo` and tests share it.
Only the main process (rank 0) prints and writes; a crash or Ctrl-C loses at most the epoch in
progress, because `last.pt` is replaced atomically at the end of every epoch.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
import time
from contextlib import nullcontext
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from streamgenre.checkpoint import BEST_NAME, LAST_NAME, load_checkpoint, make_bundle, save_checkpoint
from streamgenre.dist import DistInfo, all_ranks_agree, all_reduce_sum, check_device_name, destroy_process_group, dist_info_from_env, init_process_group, resolve_device
from streamgenre.errors import InputError, StreamgenreError
from streamgenre.evaluate import predict_batches, summarise, write_report
from streamgenre.model import GenreClassifier, ModelConfig
from streamgenre.frontend import FrontendConfig
from streamgenre.plots import plot_curves
from streamgenre.progress import progress_bar
from streamgenre.shards import atomic_write, read_index
from streamgenre.stream import Batch, SkipTally, SplitSource, StreamConfig, default_workers, expected_batches, iterate_epoch, make_loader, open_split

log = logging.getLogger(__name__)

PAPER_LR = 5e-4  # Adam learning rate of the paper
PAPER_EPOCHS = 20
# Windows used for validation and test when training draws random windows.
EVAL_OFFSET_S = 15.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (the paper's values are the defaults)."""

    shards: str
    out: Path
    stream: StreamConfig = field(default_factory=StreamConfig)
    genres: tuple[str, ...] | None = None
    epochs: int = PAPER_EPOCHS
    lr: float = PAPER_LR
    dropout: float = 0.5
    workers: int | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None  # None: on for CUDA, off on CPU
    resume: bool = False
    max_skip_fraction: float = 0.01
    sync_bn: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.epochs < 1:
            raise InputError(f"--epochs must be >= 1, got {self.epochs}")
        if self.lr <= 0:
            raise InputError(f"--lr must be > 0, got {self.lr}")
        check_device_name(self.device)
        if not 0 <= self.max_skip_fraction <= 1:
            raise InputError(f"--max-skip-fraction must be within 0..1, got {self.max_skip_fraction}")


@dataclass
class TrainResult:
    """What a run produced; the CLI prints it."""

    run_dir: Path
    history: list[dict]
    best_val_accuracy: float | None
    test: dict | None
    elapsed_s: float
    train_clips_per_s: float


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

    def as_row(self, split: str) -> dict:
        return {
            f"{split}_loss": self.loss_sum / max(1, self.count),
            f"{split}_accuracy": self.correct / max(1, self.count),
            f"{split}_samples": self.count,
            f"{split}_skipped": self.skipped,
        }


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
    genres = list(config.genres) if config.genres else None
    train_source = open_split(config.shards, "train", genres, index)
    val_source = _optional_split(config.shards, "val", genres, index)
    labels = train_source.labels
    workers = default_workers() if config.workers is None else config.workers
    _check_enough_shards(train_source, dist, workers)
    out = Path(config.out)
    if dist.is_main:
        _prepare_run_dir(out, config.resume)

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    model_config = ModelConfig(n_classes=len(labels), dropout=config.dropout, frontend=FrontendConfig())
    model = GenreClassifier(model_config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    use_amp = device.type == "cuda" if config.amp is None else config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    history: list[dict] = []
    best = None
    start_epoch = 0
    if config.resume:
        start_epoch, history, best = _restore(out / LAST_NAME, model, optimizer, scaler, labels)
    trained = _wrap_for_dist(model, dist, device, config.sync_bn)
    pin = device.type == "cuda"
    train_loader = make_loader(train_source, config.stream, workers, pin)
    eval_stream = _evaluation_stream(config.stream)
    val_loader = make_loader(val_source, eval_stream, workers, pin) if val_source else None
    train_seconds, train_clips = 0.0, 0
    for epoch in range(start_epoch, config.epochs):
        epoch_started = time.perf_counter()
        stats = _train_epoch(trained, train_loader, train_source, config, optimizer, scaler, device, epoch, dist, use_amp)
        train_seconds += time.perf_counter() - epoch_started
        train_clips += stats.count
        _check_skips(stats, config.max_skip_fraction, "train")
        row = {"epoch": epoch + 1, **stats.as_row("train"), "seconds": round(time.perf_counter() - epoch_started, 2)}
        if val_loader is not None:
            val_stats = _validate(model, val_loader, device, use_amp, dist)
            _check_skips(val_stats, config.max_skip_fraction, "val")
            row.update(val_stats.as_row("val"))
        history.append(row)
        score = row.get("val_accuracy", row["train_accuracy"])
        improved = best is None or score > best
        best = score if improved else best
        if dist.is_main:
            _end_of_epoch(out, model, optimizer, scaler, labels, config, history, best, epoch + 1, improved)
            log.info(_epoch_line(row))
    test = _test_report(config, out, index, genres, workers, device, dist) if dist.is_main else None
    return TrainResult(out, history, best if val_loader is not None else None, test, time.perf_counter() - started, train_clips / max(train_seconds, 1e-9))


def _optional_split(shards: str, split: str, genres: list[str] | None, index) -> SplitSource | None:
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


def _evaluation_stream(stream: StreamConfig) -> StreamConfig:
    """Validation and test read every sample once, in order, at a fixed window."""
    offset = stream.offset_s if stream.offset_s is not None else EVAL_OFFSET_S
    return replace(stream, offset_s=offset, shuffle_buffer=0, shuffle_shards=False)


def _prepare_run_dir(out: Path, resume: bool) -> None:
    if resume and not (out / LAST_NAME).is_file():
        raise InputError(f"--resume: {out / LAST_NAME} does not exist; train without --resume first")
    if not resume and (out / LAST_NAME).exists():
        raise InputError(f"{out} already holds a run; use --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)


def _wrap_for_dist(model: GenreClassifier, dist: DistInfo, device: torch.device, sync_bn: bool) -> torch.nn.Module:
    if not dist.enabled:
        return model
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # The frontend's STFT and mel filters are constants (~17 MB): never broadcast them each step.
    constants = [f"frontend.{name}" for name, _ in model.frontend.named_buffers()]
    torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, constants)
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _autocast(device: torch.device, use_amp: bool):
    return torch.autocast(device_type=device.type, dtype=torch.float16) if use_amp else nullcontext()


def _train_epoch(model, loader, source, config, optimizer, scaler, device, epoch, dist, use_amp) -> _EpochStats:
    model.train()
    stats = _EpochStats()
    total = expected_batches(source, config.stream, loader.num_workers or 1)
    bar = progress_bar(total=total, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", enabled=config.progress and dist.is_main)
    tally = SkipTally()
    for batch in _lockstep(tally.passing(iterate_epoch(loader, epoch)), device):
        waveforms = batch.waveforms.to(device, non_blocking=True)  # (batch, time)
        labels = batch.labels.to(device, non_blocking=True)
        with _autocast(device, use_amp):
            logits = model(waveforms, sample_rate=batch.sample_rate)
            loss = torch.nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        stats.loss_sum += loss.item() * len(batch)  # a CPU-GPU sync point, once per batch
        stats.correct += int((logits.argmax(dim=1) == labels).sum())
        stats.count += len(batch)
        bar.update(1)
        bar.set_postfix(loss=f"{stats.loss_sum / stats.count:.3f}", acc=f"{stats.correct / stats.count:.3f}")
    bar.close()
    stats.skipped = tally.total
    return stats.reduced(device)


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


@torch.inference_mode()
def _validate(model, loader, device, use_amp, dist) -> _EpochStats:
    model.eval()
    stats = _EpochStats()
    tally = SkipTally()
    for batch in tally.passing(iterate_epoch(loader, 0)):
        labels = batch.labels.to(device, non_blocking=True)
        with _autocast(device, use_amp):
            logits = model(batch.waveforms.to(device, non_blocking=True), sample_rate=batch.sample_rate)
        stats.loss_sum += torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum").item()
        stats.correct += int((logits.argmax(dim=1) == labels).sum())
        stats.count += len(batch)
    stats.skipped = tally.total
    return stats.reduced(device)


def _check_skips(stats: _EpochStats, max_fraction: float, split: str) -> None:
    seen = stats.count + stats.skipped
    if stats.skipped:
        log.warning("%s: %d of %d samples could not be decoded and were skipped", split, stats.skipped, seen)
    if seen and stats.skipped / seen > max_fraction:
        raise StreamgenreError(
            f"{split}: {stats.skipped} of {seen} samples failed to decode ({stats.skipped / seen:.1%} > "
            f"--max-skip-fraction {max_fraction:.1%}); check the shards with `streamgenre info` or re-pack them"
        )


def _end_of_epoch(out, model, optimizer, scaler, labels, config, history, best, epochs_done, improved) -> None:
    state = {
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epochs_done,
        "best_score": best,
        "history": history,
        "train_config": _config_dict(config),
        "rng": _rng_state(),
    }
    bundle = make_bundle(model, labels, config.stream, **state)
    if improved:
        save_checkpoint(out / BEST_NAME, bundle)
    save_checkpoint(out / LAST_NAME, bundle)
    _write_history(out, history)


def _config_dict(config: TrainConfig) -> dict:
    data = asdict(config)
    data["out"] = str(config.out)
    return data


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore(path: Path, model, optimizer, scaler, labels: list[str]) -> tuple[int, list[dict], float | None]:
    bundle = load_checkpoint(path)
    if bundle["labels"] != labels:
        raise InputError(f"--resume: the checkpoint was trained on {bundle['labels']}, these shards give {labels}")
    model.load_state_dict(bundle["model"])
    optimizer.load_state_dict(bundle["optimizer"])
    scaler.load_state_dict(bundle["scaler"])
    rng = bundle["rng"]
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return bundle["epoch"], bundle["history"], bundle["best_score"]


def _write_history(out: Path, history: list[dict]) -> None:
    with atomic_write(out / "history.json") as stream:
        stream.write(json.dumps(history, indent=2).encode())
    columns = list(dict.fromkeys(key for row in history for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    with atomic_write(out / "history.csv") as stream:
        stream.write(text.getvalue().encode())
    plot_curves(history, "loss", out / "loss.png")
    plot_curves(history, "accuracy", out / "accuracy.png")


def _test_report(config: TrainConfig, out: Path, index, genres, workers: int, device: torch.device, dist: DistInfo) -> dict | None:
    """Score the best checkpoint on the test split (rank 0 only, every test sample once)."""
    source = _optional_split(config.shards, "test", genres, index)
    if source is None:
        return None
    bundle = load_checkpoint(out / BEST_NAME)
    model = GenreClassifier(ModelConfig.from_dict(bundle["model_config"])).to(device)
    model.load_state_dict(bundle["model"])
    loader = make_loader(source, _evaluation_stream(config.stream), workers, device.type == "cuda", split_nodes=False)
    predictions = predict_batches(model, iterate_epoch(loader, 0), device, len(source.labels))
    summary = summarise(predictions, source.labels)
    write_report(summary, out / "report.json", out / "confusion_matrix.png", "test split (best checkpoint)", out / "report.txt")
    return summary


def _epoch_line(row: dict) -> str:
    line = f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f}"
    if "val_accuracy" in row:
        line += f" | val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.3f}"
    return line + f" | {row['seconds']:.1f}s"
