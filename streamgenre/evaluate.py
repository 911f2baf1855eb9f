"""Score a model on a split: predictions, accuracy, macro-F1, per-class report, confusion matrix.

Used at the end of training (test split, best checkpoint) and by `streamgenre evaluate`, which
can also hear whole clips: decoded once, cut into windows in memory, probabilities combined.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from streamgenre.dist import check_workers, resolve_device
from streamgenre.errors import InputError
from streamgenre.files import atomic_write, check_writable_folder
from streamgenre.plots import plot_confusion
from streamgenre.progress import progress_bar
from streamgenre.stream import Batch, SkipTally
from streamgenre.windows import WindowBatcher, WindowPlan, combine_windows

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Class probabilities per clip, with the true labels and sample keys.

    `window_hits` / `windows` count the single windows the model classified correctly on
    their own, before combining, so one pass reports whole-clip and single-window accuracy.
    """

    keys: list[str]
    labels: np.ndarray  # (clips,) int64
    probs: np.ndarray  # (clips, classes) float32
    window_hits: int = 0
    windows: int = 0

    @property
    def predicted(self) -> np.ndarray:
        """Arg-max class per clip, (clips,)."""
        return self.probs.argmax(axis=1)


@dataclass
class _Clip:
    key: str
    label: int
    windows_left: int
    probs: list[torch.Tensor] = field(default_factory=list)  # (windows, classes) pieces, in order


class _ClipTally:
    """Clips whose windows are all scored, combined by the plan's vote, with single-window hits counted."""

    def __init__(self, plan: WindowPlan):
        self.plan = plan
        self.done: list[_Clip] = []
        self.window_hits = self.windows = 0

    def deliver(self, clip: _Clip, probs: torch.Tensor) -> None:
        """Take ``(n, classes)`` probabilities of `clip`'s next windows; combine once the last has come."""
        clip.probs.append(probs)
        clip.windows_left -= len(probs)
        if clip.windows_left == 0:
            window_probs = torch.cat(clip.probs)  # (windows, classes)
            self.window_hits += int((window_probs.argmax(dim=1) == clip.label).sum())
            self.windows += len(window_probs)
            clip.probs = [combine_windows(window_probs, self.plan.vote)]
            self.done.append(clip)


@torch.inference_mode()
def predict_clips(model: torch.nn.Module, clips: Iterable[Batch], plan: WindowPlan, device: torch.device, n_classes: int) -> Predictions:
    """Score every clip of `clips` by the windows `plan` picks, `windows.WINDOWS_PER_FORWARD` at most per forward.

    A batch row may be a whole clip (several planned windows) or a window the loader already
    cut (a plan with neither `windows` nor `hop_s` hears it as it is): one loop serves both.
    Windows of many clips share forward passes (`windows.WindowBatcher`).
    """
    model.eval()
    tally = _ClipTally(plan)
    batcher = WindowBatcher(model, device, tally.deliver)
    for batch in clips:
        for row, key in enumerate(batch.keys):
            waveform = batch.waveforms[row]
            clip = _Clip(key, int(batch.labels[row]), windows_left=len(plan.starts(waveform.shape[-1], batch.sample_rate)))
            for chunk in plan.chunks(waveform, batch.sample_rate, batcher.size):
                batcher.add(clip, chunk, batch.sample_rate)
    batcher.flush()
    if not tally.done:
        return Predictions([], np.zeros(0, np.int64), np.zeros((0, n_classes), np.float32))
    return Predictions(
        [clip.key for clip in tally.done],
        np.array([clip.label for clip in tally.done], dtype=np.int64),
        torch.stack([clip.probs[0] for clip in tally.done]).numpy(),
        tally.window_hits,
        tally.windows,
    )


def summarise(predictions: Predictions, label_names: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix (counts)."""
    from sklearn.metrics import classification_report, confusion_matrix

    classes = list(range(len(label_names)))
    y_true, y_pred = predictions.labels, predictions.predicted
    report = classification_report(y_true, y_pred, labels=classes, target_names=label_names, output_dict=True, zero_division=0)
    return {
        "samples": len(y_true),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "window_accuracy": predictions.window_hits / predictions.windows if predictions.windows else None,
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
    max_skip_fraction: float = 0.01

    def __post_init__(self):
        if not 0 <= self.max_skip_fraction <= 1:
            raise InputError(f"--max-skip-fraction must be within 0..1, got {self.max_skip_fraction}")
        check_workers(self.workers)  # before the checkpoint is loaded or the split opened


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
    from streamgenre.stream import evaluation_stream, iterate_epoch, make_loader, open_split, warn_clamped

    device = resolve_device(config.device)
    loaded = load_for_inference(config.run, device)
    if loaded.multi_label:  # the built-in tagger: its outputs are MSD tags, none of them a packed genre
        raise InputError(
            f"{config.run} is the built-in MSD tagger: its {len(loaded.labels)} tags are not genre labels, so there is nothing to score on a split; "
            f"to score musicnn on your genres, train a head on it (`streamgenre train SHARDS --model musicnn`) and evaluate that run"
        )
    shards = config.shards or loaded.shards
    if not shards:
        raise InputError(f"{loaded.path} does not say which shards it was trained on: pass --shards")
    source = open_split(shards, config.split, loaded.labels, given_by=f"the checkpoint {loaded.path}")
    spec = loaded.spec
    plan = WindowPlan(spec.window_s, config.windows, config.hop_s, config.vote)
    whole_clips = config.windows is not None or config.hop_s is not None
    offset = spec.offset_s if config.offset_s is None else config.offset_s
    stream = evaluation_stream(spec.window_s, spec.sample_rate, spec.resample, offset, whole_clips)
    chosen_by = "--offset" if config.offset_s is not None else "the training window" if spec.offset_s is not None else "the run trained on random windows"
    mode, description = _mode(plan if whole_clips else None, stream.offset_s, stream.duration_s, chosen_by)
    out = config.out or (loaded.path.parent if loaded.path.is_file() else Path(config.run))
    check_writable_folder(out, "--out")  # before minutes of scoring, not after
    log.info(f"evaluating {loaded.path} on the {config.split} split ({source.sample_count} clips): {description}")
    loader = make_loader(source, stream, config.workers, device.type == "cuda", split_nodes=False)
    tally = SkipTally()
    with progress_bar(total=source.sample_count, desc=f"evaluating {config.split}", unit="clip", enabled=config.progress) as bar:
        batches = _counted(tally.passing(iterate_epoch(loader, 0)), bar)
        predictions = predict_clips(loaded.model, batches, plan, device, len(source.labels))
    tally.check(config.max_skip_fraction, config.split)
    summary = summarise(predictions, source.labels)
    summary["skipped"] = tally.total
    if tally.clamped:
        warn_clamped(tally.clamped, summary["samples"], stream)
    options = {"offset_s": None if whole_clips else stream.offset_s, "windows": asdict(plan) if whole_clips else "one window", "mode": mode}
    summary["options"] = {"run": str(loaded.path), "shards": shards, "split": config.split, **options}
    json_path, png_path = out / f"eval-{config.split}-{mode}.json", out / f"confusion_matrix-{config.split}-{mode}.png"
    write_report(summary, json_path, png_path, f"{config.split} split, {description}")
    return EvaluateResult(summary, json_path, png_path)


def _mode(plan: WindowPlan | None, offset_s: float, duration_s: float, chosen_by: str) -> tuple[str, str]:
    """A file-name tag and a phrase for how clips are heard, e.g. ``("w10-mean", "10 windows per clip, mean vote")``.

    `chosen_by` says where a single window's offset came from: ``--offset``, the training window,
    or neither (a run trained on random windows is heard at the default 0:15).
    """
    if plan is None:
        return f"at{offset_s:g}s", f"one {duration_s:g}-s window at {offset_s:g} s ({chosen_by})"
    vote = "mean probability" if plan.vote == "mean" else "majority vote"
    if plan.windows is not None:
        return f"w{plan.windows}-{plan.vote}", f"{plan.windows} windows of {duration_s:g} s per clip, {vote}"
    return f"hop{plan.hop_s:g}s-{plan.vote}", f"a {duration_s:g}-s window every {plan.hop_s:g} s, {vote}"


def _counted(batches: Iterable[Batch], bar) -> Iterable[Batch]:
    """Pass `batches` through, advancing `bar` by the clips in each."""
    for batch in batches:
        yield batch
        bar.update(len(batch))
