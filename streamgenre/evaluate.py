"""Score a model on a split: predictions, accuracy, macro-F1, per-class report, confusion matrix.

Used at the end of training (test split, best checkpoint) and by `streamgenre evaluate`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from streamgenre.plots import plot_confusion
from streamgenre.shards import atomic_write
from streamgenre.stream import Batch


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
        "samples": int(len(y_true)),
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
