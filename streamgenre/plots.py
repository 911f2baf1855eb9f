"""PNG plots people would rather look at than read: training curves, confusion matrices, bars.

Only the output files of a run are drawn here; each is written atomically (`files.atomic_path`).
Figures are built with matplotlib's object API (`Figure` + `savefig`, which draws with Agg for
PNG), so importing this module changes no global matplotlib state: no backend switch and no
pyplot figure registry for the programs that import `train`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from streamgenre.files import atomic_path


def plot_curves(history: list[dict], metric: str, path: Path, best_epoch: int | None = None) -> None:
    """Train vs validation `metric` ('loss' or 'accuracy') per epoch, with `best_epoch` (best.pt's) marked."""
    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    for split in ("train", "val"):
        values = [row.get(f"{split}_{metric}") for row in history]
        if any(value is not None for value in values):
            axes.plot(epochs, values, marker="o", label=split)
    if best_epoch is not None:
        axes.axvline(best_epoch, color="tab:green", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch}: best.pt)")
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
    figure = Figure(figsize=(size, size))
    axes = figure.subplots()
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


def plot_bars(names: list[str], values: list[float], path: Path, title: str, xlabel: str, groups: list[str] | None = None) -> None:
    """Horizontal bars, one per name (used for benchmark throughput); `groups` colours them, with a legend."""
    groups = groups or [""] * len(names)
    palette = dict(zip(dict.fromkeys(groups), ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"), strict=False))
    figure = Figure(figsize=(12, 0.45 * len(names) + 1.5))  # long stage names on the left
    axes = figure.subplots()
    for group, colour in palette.items():
        positions = [y for y, name_group in enumerate(groups[::-1]) if name_group == group]
        axes.barh(positions, [values[::-1][y] for y in positions], color=colour, label=group or None)
    axes.set_yticks(range(len(names)), names[::-1])
    for y, value in enumerate(values[::-1]):
        axes.text(value, y, f" {value:,.1f}", va="center", fontsize=8)
    axes.set_xscale("log")
    axes.set_xlim(right=max(values, default=1.0) * 4)  # room for the value label of the longest bar
    axes.set_xlabel(xlabel)
    axes.set_title(title)
    if len(palette) > 1:
        axes.legend(loc="lower right")
    _save(figure, path)


def _save(figure: Figure, path: Path) -> None:
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")  # the temporary's name has no .png to go by
