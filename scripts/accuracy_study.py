"""Accuracy study: the classic baseline beside each recipe and model, over several pack seeds.

For each seed, packs the clips with `pack --seed SEED` (a new track-grouped split), runs the
MFCC baseline (scripts/baseline_features.py) and trains each configuration, then prints a
table of whole-clip and single-window test accuracy, macro-F1 and training minutes (mean and
standard deviation over seeds). Finished runs are reused, so an interrupted study continues.

    python scripts/accuracy_study.py ../shared/data/manifest.csv --work study --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

from baseline_features import run as run_baseline

from streamgenre.pack import PackConfig, pack
from streamgenre.recipes import recipe_named
from streamgenre.train import TrainConfig, train

# name: (recipe, model, recipe overrides)
CONFIGS = {
    "modern recipe + resnet": ("modern", "resnet", {}),
    "modern recipe + paper CNN": ("modern", "paper", {}),
    "paper recipe + paper CNN": ("paper", "paper", {}),
}


def run_seed(source: Path, work: Path, seed: int, configs: list[str], overrides: dict) -> list[dict]:
    """Pack with `seed`, then score the baseline and every configuration; returns result rows."""
    shards = work / f"shards-seed{seed}"
    if not (shards / "index.json").exists():
        pack(PackConfig(source=source, out=shards, seed=seed), progress=False)
    rows = [_baseline_row(shards, work / f"baseline-seed{seed}.json", seed)]
    for name in configs:
        recipe_name, model, changes = CONFIGS[name]
        run = work / f"{name.replace(' ', '_').replace('+', 'and')}-seed{seed}"
        if not (run / "report.json").exists():
            recipe = recipe_named(recipe_name).with_options(**changes, **overrides.get(recipe_name, {}))
            started = time.perf_counter()
            train(TrainConfig(shards=str(shards), out=run, recipe=recipe, model=model, seed=seed, progress=False))
            (run / "study.json").write_text(json.dumps({"train_minutes": (time.perf_counter() - started) / 60}))
        report = json.loads((run / "report.json").read_text())
        minutes = json.loads((run / "study.json").read_text())["train_minutes"]
        scores = {key: report[key] for key in ("accuracy", "window_accuracy", "macro_f1")}
        rows.append({"config": name, "seed": seed, **scores, "minutes": minutes})
    return rows


def windows_sweep(work: Path, counts: tuple[int, ...] = (1, 3, 5, 10, 20)) -> str:
    """Test accuracy of every finished run's best.pt heard with 1, 3, ... windows per clip, and of last.pt with 10.

    Mean and spread over seeds; last.pt shows what choosing best.pt on 13 validation clips costs or gains.
    """
    from streamgenre.evaluate import EvaluateConfig, evaluate_run

    by_config: dict[str, dict[str, list[float]]] = {}
    for name in CONFIGS:
        for run in sorted(work.glob(f"{name.replace(' ', '_').replace('+', 'and')}-seed*")):
            if not (run / "report.json").exists():
                continue
            plans = [(f"{count}", "best.pt", count) for count in counts] + [("last.pt, 10", "last.pt", 10)]
            for column, checkpoint, count in plans:
                config = EvaluateConfig(run=run / checkpoint, windows=count, out=run / "windows" / checkpoint, progress=False)
                by_config.setdefault(name, {}).setdefault(column, []).append(evaluate_run(config).summary["accuracy"])
    columns = [f"{count}" for count in counts] + ["last.pt, 10"]
    lines = ["| configuration | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, accuracies in by_config.items():
        lines.append(f"| {name} | " + " | ".join(_spread(accuracies[column]) for column in columns) + " |")
    return "\n".join(lines)


def plot_learning_curves(work: Path, rows: list[dict], path: Path) -> None:
    """Whole-clip validation accuracy per epoch, mean and range over seeds, with the baseline's test mean."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    for name in CONFIGS:
        curves = [
            [row["val_accuracy"] for row in json.loads((run / "history.json").read_text())]
            for run in sorted(work.glob(f"{name.replace(' ', '_').replace('+', 'and')}-seed*"))
            if (run / "report.json").exists()
        ]
        if not curves:
            continue
        length = min(len(curve) for curve in curves)
        epochs = list(range(1, length + 1))
        columns = [[curve[i] for curve in curves] for i in range(length)]
        axes.plot(epochs, [statistics.mean(column) for column in columns], marker="o", label=f"{name} (val, {len(curves)} seeds)")
        axes.fill_between(epochs, [min(column) for column in columns], [max(column) for column in columns], alpha=0.15)
    baseline = [row["accuracy"] for row in rows if row["config"].startswith("classic")]
    if baseline:
        axes.axhline(statistics.mean(baseline), color="black", linestyle="--", linewidth=1, label="MFCC baseline (test, mean)")
    axes.set_xlabel("epoch")
    axes.set_ylabel("whole-clip accuracy")
    axes.set_ylim(0, 1)
    axes.set_title("Real clips (../shared/data): validation accuracy per epoch")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _baseline_row(shards: Path, path: Path, seed: int) -> dict:
    if not path.exists():
        path.write_text(json.dumps(run_baseline(str(shards))))
    result = json.loads(path.read_text())
    best = "logreg"
    return {
        "config": "classic baseline (MFCC stats + logistic regression)",
        "seed": seed,
        "accuracy": result["whole_clip"][best]["accuracy"],
        "window_accuracy": result["single_window"][best]["accuracy"],
        "macro_f1": result["whole_clip"][best]["macro_f1"],
        "minutes": None,
    }


def table(rows: list[dict]) -> str:
    """Markdown: mean ± standard deviation over seeds per configuration."""
    lines = [
        "| configuration | whole-clip accuracy | single-window accuracy | macro-F1 | train minutes | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for config in dict.fromkeys(row["config"] for row in rows):
        mine = [row for row in rows if row["config"] == config]
        cells = [_spread([row[key] for row in mine]) for key in ("accuracy", "window_accuracy", "macro_f1", "minutes")]
        lines.append(f"| {config} | " + " | ".join(cells) + f" | {len(mine)} |")
    return "\n".join(lines)


def _spread(values: list) -> str:
    values = [value for value in values if value is not None]
    if not values:
        return "-"
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {deviation:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="what `streamgenre pack` takes: a manifest, a folder per genre, ...")
    parser.add_argument("--work", type=Path, default=Path("study"), help="folder for shards, runs and results")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--modern-epochs", type=int, help="override the modern recipe's epochs")
    parser.add_argument("--windows-sweep", action="store_true", help="only score the finished runs with 1-20 windows per clip")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.windows_sweep:
        sweep = windows_sweep(args.work)
        (args.work / "windows.md").write_text(sweep + "\n")
        print(sweep)
        return
    overrides = {"modern": {"epochs": args.modern_epochs}} if args.modern_epochs else {}
    rows = []
    for seed in args.seeds:
        rows += run_seed(args.source, args.work, seed, args.configs, overrides)
        (args.work / "results.json").write_text(json.dumps(rows, indent=2))
        print(table(rows), flush=True)
    (args.work / "results.md").write_text(table(rows) + "\n")
    plot_learning_curves(args.work, rows, args.work / "learning_curves.png")


if __name__ == "__main__":
    main()
