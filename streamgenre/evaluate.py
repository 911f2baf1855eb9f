"""Score a model on a split: predictions, accuracy, macro-F1, per-class report, confusion matrix.

Used at the end of training (test split, best checkpoint) and by `streamgenre evaluate`, which
can also hear whole clips: decoded once, cut into windows in memory, probabilities combined.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from streamgenre.dist import resolve_device
from streamgenre.errors import InputError
from streamgenre.paper import DEFAULT_OFFSET_S
from streamgenre.plots import plot_confusion
from streamgenre.progress import progress_bar
from streamgenre.shards import atomic_write
from streamgenre.stream import Batch, SkipTally

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Class probabilities per sample, with the true labels and sample keys."""

    keys: list[str]
    labels: np.ndarray  # (samples,) int64
    probs: np.ndarray  # (samples, classes) float32

    @property
    def predicted(self) -> np.ndarray:
        """Arg-max class per sample, (samples,)."""
        return self.probs.argmax(axis=1)


@torch.inference_mode()
def predict_batches(model: torch.nn.Module, batches: Iterable[Batch], device: torch.device, n_classes: int) -> Predictions:
    """Run `model` in eval mode over `batches` and collect softmax probabilities."""
    model.eval()
    keys, labels, probs = [], [], []
    for batch in batches:
        if not len(batch):
            continue
        logits = model(batch.waveforms.to(device, non_blocking=True), sample_rate=batch.sample_rate)
        probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        labels.append(batch.labels.numpy())
        keys.extend(batch.keys)
    if not keys:
        return Predictions([], np.zeros(0, np.int64), np.zeros((0, n_classes), np.float32))
    return Predictions(keys, np.concatenate(labels), np.concatenate(probs))


def summarise(predictions: Predictions, label_names: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix (counts)."""
    from sklearn.metrics import classification_report, confusion_matrix

    classes = list(range(len(label_names)))
    y_true, y_pred = predictions.labels, predictions.predicted
    report = classification_report(y_true, y_pred, labels=classes, target_names=label_names, output_dict=True, zero_division=0)
    return {
        "samples": len(y_true),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "macro_f1": float(report["macro avg"]["f1-score"]),
        "per_class": {name: report[name] for name in label_names},
        "labels": label_names,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
    }


def format_report(summary: dict) -> str:
    """A plain-text table of the per-class report, for report.txt and the terminal."""
    lines = [f"{'genre':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name, row in summary["per_class"].items():
        lines.append(f"{name:<16}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1-score']:>10.3f}{int(row['support']):>10d}")
    lines.append(f"\naccuracy {summary['accuracy']:.4f}   macro-F1 {summary['macro_f1']:.4f}   samples {summary['samples']}")
    return "\n".join(lines)


def write_report(summary: dict, json_path: Path, png_path: Path, title: str, text_path: Path | None = None) -> None:
    """Write the summary as JSON (and text), and draw its confusion matrix."""
    with atomic_write(json_path) as stream:
        stream.write(json.dumps(summary, indent=2).encode())
    if text_path is not None:
        with atomic_write(text_path) as stream:
            stream.write((format_report(summary) + "\n").encode())
    plot_confusion(np.array(summary["confusion_matrix"]), summary["labels"], png_path, title)


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
    """Cut ``(samples,)`` into ``(len(starts), window)`` views, zero-padding a short clip."""
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
    """How a whole clip is heard: windows of `duration_s`, either `windows` of them or every `hop_s`."""

    duration_s: float
    windows: int | None = None
    hop_s: float | None = None
    vote: str = "mean"

    def __post_init__(self):
        if self.windows is not None and self.windows < 1:
            raise InputError(f"--windows must be >= 1, got {self.windows}")
        if self.hop_s is not None and self.hop_s <= 0:
            raise InputError(f"--hop must be > 0 seconds, got {self.hop_s}")
        if self.vote not in ("mean", "majority"):
            raise InputError(f"--vote must be mean or majority, got {self.vote!r}")

    def cut(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """``(samples,)`` at `sample_rate` -> ``(windows, window_samples)``."""
        window = round(self.duration_s * sample_rate)
        hop = round(self.hop_s * sample_rate) if self.hop_s else None
        return slice_windows(waveform, window, window_starts(waveform.shape[-1], window, self.windows, hop))


@torch.inference_mode()
def predict_clips(model: torch.nn.Module, clips: Iterable[Batch], plan: WindowPlan, device: torch.device, n_classes: int) -> Predictions:
    """Score whole clips (one per batch): all of a clip's windows go through the model as one batch."""
    model.eval()
    keys, labels, probs = [], [], []
    for clip in clips:
        if not len(clip):
            continue
        windows = plan.cut(clip.waveforms[0], clip.sample_rate).to(device)  # (windows, samples)
        window_probs = torch.softmax(model(windows, sample_rate=clip.sample_rate).float(), dim=1)
        probs.append(combine_windows(window_probs, plan.vote).cpu().numpy()[None, :])
        labels.append(clip.labels.numpy())
        keys.extend(clip.keys)
    if not keys:
        return Predictions([], np.zeros(0, np.int64), np.zeros((0, n_classes), np.float32))
    return Predictions(keys, np.concatenate(labels), np.concatenate(probs))


@dataclass(frozen=True)
class EvaluateConfig:
    """What to score: a run (or checkpoint) on one split, with one window or many per clip."""

    run: Path
    shards: str | None = None  # default: the shards the run was trained on
    split: str = "test"
    offset_s: float | None = None  # single-window offset; default: the checkpoint's
    windows: int | None = None  # whole clips: this many windows each ...
    hop_s: float | None = None  # ... or a window every hop_s; neither: the training window only
    vote: str = "mean"
    out: Path | None = None
    device: str = "auto"
    workers: int | None = None
    progress: bool = True


@dataclass
class EvaluateResult:
    """The summary written to eval-<split>-<mode>.json, and where it went."""

    summary: dict
    json_path: Path
    png_path: Path


def evaluate_run(config: EvaluateConfig) -> EvaluateResult:
    """Score a checkpoint on a split and write eval-<split>-<mode>.json and confusion_matrix-<split>-<mode>.png.

    The mode (``at15s``, ``w10-mean``, ``hop3s-majority``) is in the names, so runs with other
    windows or votes sit beside each other instead of overwriting each other.
    """
    from streamgenre.checkpoint import load_for_inference
    from streamgenre.stream import iterate_epoch, make_loader, open_split

    device = resolve_device(config.device)
    loaded = load_for_inference(config.run, device)
    shards = config.shards or loaded.shards
    if not shards:
        raise InputError(f"{loaded.path} does not say which shards it was trained on: pass --shards")
    source = open_split(shards, config.split, loaded.labels)
    plan = None
    if config.windows is not None or config.hop_s is not None:
        plan = WindowPlan(loaded.stream.duration_s, config.windows, config.hop_s, config.vote)
    offset = loaded.stream.offset_s if config.offset_s is None else config.offset_s
    stream = replace(loaded.stream, offset_s=offset if offset is not None else DEFAULT_OFFSET_S, shuffle_buffer=0, shuffle_shards=False, whole_clips=plan is not None)
    mode, description = _mode(plan, stream.offset_s, stream.duration_s)
    log.info(f"evaluating {loaded.path} on the {config.split} split ({source.sample_count} clips): {description}")
    loader = make_loader(source, stream, config.workers, device.type == "cuda", split_nodes=False)
    tally = SkipTally()
    with progress_bar(total=source.sample_count, desc=f"evaluating {config.split}", unit="clip", enabled=config.progress) as bar:
        batches = _counted(tally.passing(iterate_epoch(loader, 0)), bar)
        if plan is None:
            predictions = predict_batches(loaded.model, batches, device, len(source.labels))
        else:
            predictions = predict_clips(loaded.model, batches, plan, device, len(source.labels))
    summary = summarise(predictions, source.labels)
    summary["skipped"] = tally.total
    summary["options"] = {"run": str(loaded.path), "shards": shards, "split": config.split, "offset_s": stream.offset_s, "windows": asdict(plan) if plan else "training window", "mode": mode}
    out = config.out or (loaded.path.parent if loaded.path.is_file() else Path(config.run))
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / f"eval-{config.split}-{mode}.json", out / f"confusion_matrix-{config.split}-{mode}.png"
    write_report(summary, json_path, png_path, f"{config.split} split, {description}")
    return EvaluateResult(summary, json_path, png_path)


def _mode(plan: WindowPlan | None, offset_s: float, duration_s: float) -> tuple[str, str]:
    """A file-name tag and a phrase for how clips are heard, e.g. ``("w10-mean", "10 windows per clip, mean vote")``."""
    if plan is None:
        return f"at{offset_s:g}s", f"one {duration_s:g}-s window at {offset_s:g} s (the training window)"
    vote = "mean probability" if plan.vote == "mean" else "majority vote"
    if plan.windows is not None:
        return f"w{plan.windows}-{plan.vote}", f"{plan.windows} windows of {duration_s:g} s per clip, {vote}"
    return f"hop{plan.hop_s:g}s-{plan.vote}", f"a {duration_s:g}-s window every {plan.hop_s:g} s, {vote}"


def _counted(batches: Iterable[Batch], bar) -> Iterable[Batch]:
    """Pass `batches` through, advancing `bar` by the clips in each."""
    for batch in batches:
        yield batch
        bar.update(len(batch))
