"""PNG plots people would rather look at than read: training curves, confusion matrices, bars.

Only the output files of a run are drawn here; each is written atomically (tmp + rename).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_curves(history: list[dict], metric: str, path: Path) -> None:
    """Train vs validation `metric` ('loss' or 'accuracy') per epoch."""
    epochs = [row["epoch"] for row in history]
    figure, axes = plt.subplots(figsize=(6, 4))
    for split in ("train", "val"):
        values = [row.get(f"{split}_{metric}") for row in history]
        if any(value is not None for value in values):
            axes.plot(epochs, values, marker="o", label=split)
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} per epoch")
    axes.grid(alpha=0.3)
    axes.legend()
    _save(figure, path)


def plot_confusion(matrix: np.ndarray, labels: list[str], path: Path, title: str) -> None:
    """A row-normalised confusion matrix (rows: true genre), with counts in each cell."""
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    size = max(4.0, 0.8 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    for (row, col), value in np.ndenumerate(normalised):
        colour = "white" if value > 0.5 else "black"
        axes.text(col, row, f"{value:.2f}\n({matrix[row, col]})", ha="center", va="center", color=colour, fontsize=8)
    figure.colorbar(image, ax=axes, fraction=0.046)
    _save(figure, path)


def plot_bars(names: list[str], values: list[float], path: Path, title: str, xlabel: str) -> None:
    """Horizontal bars, one per name (used for benchmark throughput)."""
    figure, axes = plt.subplots(figsize=(12, 0.45 * len(names) + 1.5))  # long stage names on the left
    axes.barh(names[::-1], values[::-1], color="tab:blue")
    for y, value in enumerate(values[::-1]):
        axes.text(value, y, f" {value:,.1f}", va="center", fontsize=8)
    axes.set_xscale("log")
    axes.set_xlim(right=max(values, default=1.0) * 4)  # room for the value label of the longest bar
    axes.set_xlabel(xlabel)
    axes.set_title(title)
    _save(figure, path)


def _save(figure, path: Path) -> None:
    temporary = path.with_name(path.name + ".tmp.png")
    try:
        figure.tight_layout()
        figure.savefig(temporary, dpi=110)
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        temporary.unlink(missing_ok=True)
