"""Accuracy study: the classic baseline beside each recipe and model, over several splits.

Splits are either pack seeds (`--seeds`: `pack --seed SEED` draws a new track-grouped
train/val/test split) or grouped K-fold cross-validation (`--folds K`, a manifest with an
`artist` column: fold k is the test split). In a fold, a recipe that chooses its best epoch on
validation (paper, modern) trains on the rest less a grouped eighth that validates; one that
keeps its last epoch (probe, finetune) trains on all of the rest, as K-fold cross-validation
does; the MFCC baseline (scripts/baseline_features.py) is fitted on the same clips as each.
For each split it runs the baseline and trains each configuration, then prints a table of whole-clip and single-window test accuracy, macro-F1
and training minutes (mean and standard deviation over splits). Finished runs are reused, so
an interrupted study continues.

    python scripts/accuracy_study.py ../shared/data/manifest.csv --work study --seeds 0 1 2 3 4
    python scripts/accuracy_study.py ../shared/soundtracks/manifest.csv --work study-st --folds 5
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import statistics
import time
from pathlib import Path

from baseline_features import run as run_baseline

from streamgenre.pack import PackConfig, pack
from streamgenre.recipes import Recipe, recipe_named
from streamgenre.train import TrainConfig, train

# name: (recipe, model, recipe overrides, TrainConfig overrides)
CONFIGS = {
    "modern recipe + resnet": ("modern", "resnet", {}, {}),
    "modern recipe + paper CNN": ("modern", "paper", {}, {}),
    "paper recipe + paper CNN": ("paper", "paper", {}, {}),
    "probe recipe + musicnn": ("probe", "musicnn", {}, {}),
    "probe recipe + musicnn, linear head": ("probe", "musicnn", {}, {"width": 0}),
    "finetune recipe + musicnn": ("finetune", "musicnn", {}, {}),
}


def run_seed(source: Path, work: Path, seed: int, configs: list[str], overrides: dict, train_seeds: int = 1) -> list[dict]:
    """Pack with `seed`, then score the baseline and every configuration; returns result rows."""
    shards = work / f"shards-seed{seed}"
    if not (shards / "index.json").exists():
        pack(PackConfig(source=source, out=shards, seed=seed), progress=False)
    return run_split(shards, work, f"seed{seed}", seed, configs, overrides, train_seeds)


def run_fold(manifest: Path, work: Path, fold: int, folds: int, configs: list[str], overrides: dict, train_seeds: int = 1) -> list[dict]:
    """Pack fold `fold` of a grouped `folds`-fold split of `manifest` with a validation eighth, without one, or both,
    as the configurations' recipes need (`validates`), then score as `run_seed` does, the baseline on each packing."""
    rows = []
    for validated in (True, False):
        mine = [name for name in configs if validates(name, overrides) == validated]
        if not mine:
            continue
        tag = f"fold{fold}" if validated else f"fold{fold}-all"
        shards = work / f"shards-{tag}"
        if not (shards / "index.json").exists():
            pack(PackConfig(source=write_fold_manifest(manifest, work, fold, folds, validated), out=shards), progress=False)
        rows += run_split(shards, work, tag, fold, mine, overrides, train_seeds, "" if validated else ", fit on train + val")
    return rows


def validates(name: str, overrides: dict) -> bool:
    """Whether configuration `name`'s recipe chooses its best epoch on the validation split (else it needs none)."""
    return config_recipe(name, overrides).pick_best


def config_recipe(name: str, overrides: dict) -> Recipe:
    """The recipe configuration `name` trains with: its built-in recipe, its own changes, then the command line's."""
    recipe_name, _, changes, _ = CONFIGS[name]
    return recipe_named(recipe_name).with_options(**changes, **overrides.get(recipe_name, {}))


def run_stem(name: str) -> str:
    """The start of the folder name of every run of configuration `name` (``probe_recipe_and_musicnn``)."""
    return name.replace(" ", "_").replace("+", "and")


def write_fold_manifest(manifest: Path, work: Path, fold: int, folds: int, validated: bool = True) -> Path:
    """A copy of `manifest` with absolute paths and a `split` column: fold `fold` tests; a grouped eighth of the rest
    validates when `validated`, else all of the rest trains."""
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    genres, artists = np.array([row["genre"] for row in rows]), np.array([row["artist"] for row in rows])
    _, test = list(StratifiedGroupKFold(folds, shuffle=True, random_state=0).split(genres, genres, artists))[fold]
    rest = np.setdiff1d(np.arange(len(rows)), test)
    _, val = next(StratifiedGroupKFold(8, shuffle=True, random_state=fold).split(rest, genres[rest], artists[rest]))
    split = np.full(len(rows), "train", dtype=object)
    split[test] = "test"
    if validated:
        split[rest[val]] = "val"
    out = work / (f"manifest-fold{fold}.csv" if validated else f"manifest-fold{fold}-all.csv")
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "genre", "artist", "split"])
        writer.writeheader()
        for row, part in zip(rows, split):
            writer.writerow({"path": str((manifest.parent / row["path"]).resolve()), "genre": row["genre"], "artist": row["artist"], "split": part})
    return out


def run_split(shards: Path, work: Path, tag: str, seed: int, configs: list[str], overrides: dict, train_seeds: int = 1, fitted_on: str = "") -> list[dict]:
    """Score the baseline (its rows' names end in `fitted_on`) and every configuration on the packed split `shards`; returns result rows.

    Each configuration trains `train_seeds` times (training seeds `seed`, `seed + 1000`, ...):
    on small test splits one run's accuracy moves by several points with the seed alone.
    """
    rows = _baseline_rows(shards, work / f"baseline-{tag}.json", seed, fitted_on)
    for name in configs:
        _, model, _, settings = CONFIGS[name]
        for repeat in range(train_seeds):
            run = work / (f"{run_stem(name)}-{tag}" + (f"-t{repeat}" if repeat else ""))
            if not (run / "report.json").exists():
                shutil.rmtree(run, ignore_errors=True)  # a run the study was interrupted in starts again, so its minutes are whole
                recipe = config_recipe(name, overrides)
                started = time.perf_counter()
                train(TrainConfig(shards=str(shards), out=run, recipe=recipe, model=model, seed=seed + 1000 * repeat, progress=False, **settings))
                (run / "study.json").write_text(json.dumps({"train_minutes": (time.perf_counter() - started) / 60}))
            report = json.loads((run / "report.json").read_text())
            minutes = json.loads((run / "study.json").read_text())["train_minutes"]
            scores = {key: report[key] for key in ("accuracy", "window_accuracy", "macro_f1")}
            rows.append({"config": name, "seed": seed, "train_seed": repeat, **scores, "minutes": minutes})
    return rows


def windows_sweep(work: Path, counts: tuple[int, ...] = (1, 3, 5, 10, 20)) -> str:
    """Test accuracy of every finished run's best.pt heard with 1, 3, ... windows per clip, and of last.pt with 10.

    Mean and spread over seeds; last.pt shows what choosing best.pt on 13 validation clips costs or gains.
    """
    from streamgenre.evaluate import EvaluateConfig, evaluate_run

    by_config: dict[str, dict[str, list[float]]] = {}
    for name in CONFIGS:
        for run in sorted(work.glob(f"{run_stem(name)}-*")):
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
        runs = [run for run in sorted(work.glob(f"{run_stem(name)}-*")) if (run / "report.json").exists()]
        histories = [json.loads((run / "history.json").read_text()) for run in runs]
        curves = [[row["val_accuracy"] for row in history] for history in histories if "val_accuracy" in history[-1]]  # runs on train + val have none
        if not curves:
            continue
        length = min(len(curve) for curve in curves)
        epochs = list(range(1, length + 1))
        columns = [[curve[i] for curve in curves] for i in range(length)]
        axes.plot(epochs, [statistics.mean(column) for column in columns], marker="o", label=f"{name} (val, {len(curves)} seeds)")
        axes.fill_between(epochs, [min(column) for column in columns], [max(column) for column in columns], alpha=0.15)
    baseline = [row["accuracy"] for row in rows if row["config"].startswith("classic baseline (")]  # logistic regression
    if baseline:
        axes.axhline(statistics.mean(baseline), color="black", linestyle="--", linewidth=1, label="MFCC baseline (test, mean)")
    axes.set_xlabel("epoch")
    axes.set_ylabel("whole-clip accuracy")
    axes.set_ylim(0, 1)
    axes.set_title("Validation accuracy per epoch (configurations that validate)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _baseline_rows(shards: Path, path: Path, seed: int, fitted_on: str) -> list[dict]:
    if not path.exists():
        path.write_text(json.dumps(run_baseline(str(shards))))
    result = json.loads(path.read_text())
    names = {"logreg": f"classic baseline (MFCC stats + logistic regression){fitted_on}", "svm": f"classic baseline, RBF SVM{fitted_on}"}
    return [
        {
            "config": name,
            "seed": seed,
            "accuracy": result["whole_clip"][model]["accuracy"],
            "window_accuracy": result["single_window"][model]["accuracy"],
            "macro_f1": result["whole_clip"][model]["macro_f1"],
            "minutes": None,
        }
        for model, name in names.items()
    ]


def table(rows: list[dict]) -> str:
    """Markdown: per configuration, each split's mean over training seeds, then mean ± standard deviation over splits."""
    lines = [
        "| configuration | whole-clip accuracy | single-window accuracy | macro-F1 | train minutes | splits x training seeds |",
        "|---|---|---|---|---|---|",
    ]
    for config in dict.fromkeys(row["config"] for row in rows):
        mine = [row for row in rows if row["config"] == config]
        splits = list(dict.fromkeys(row["seed"] for row in mine))
        per_split = [[row for row in mine if row["seed"] == split] for split in splits]
        cells = [_spread([_mean([row[key] for row in runs]) for runs in per_split]) for key in ("accuracy", "window_accuracy", "macro_f1", "minutes")]
        lines.append(f"| {config} | " + " | ".join(cells) + f" | {len(splits)} x {min(len(runs) for runs in per_split)} |")
    return "\n".join(lines)


def _mean(values: list) -> float | None:
    values = [value for value in values if value is not None]
    return statistics.mean(values) if values else None


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
    parser.add_argument("--folds", type=int, help="grouped K-fold cross-validation of a manifest instead of pack seeds")
    parser.add_argument("--only-folds", type=int, nargs="+", help="with --folds: run only these folds (0-based), e.g. to share a study between processes")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--train-seeds", type=int, default=1, help="train each configuration this many times per split (seeds differ by 1000)")
    parser.add_argument("--modern-epochs", type=int, help="override the modern recipe's epochs")
    parser.add_argument("--windows-sweep", action="store_true", help="only score the finished runs with 1-20 windows per clip")
    args = parser.parse_args()
    if args.only_folds and not (args.folds and all(0 <= fold < args.folds for fold in args.only_folds)):
        parser.error(f"--only-folds takes folds 0..K-1 of --folds K, got {args.only_folds} with --folds {args.folds}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.windows_sweep:
        sweep = windows_sweep(args.work)
        (args.work / "windows.md").write_text(sweep + "\n")
        print(sweep)
        return
    overrides = {"modern": {"epochs": args.modern_epochs}} if args.modern_epochs else {}
    rows = []
    for split in (args.only_folds or range(args.folds)) if args.folds else args.seeds:
        if args.folds:
            rows += run_fold(args.source, args.work, split, args.folds, args.configs, overrides, args.train_seeds)
        else:
            rows += run_seed(args.source, args.work, split, args.configs, overrides, args.train_seeds)
        (args.work / "results.json").write_text(json.dumps(rows, indent=2))
        print(table(rows), flush=True)
    (args.work / "results.md").write_text(table(rows) + "\n")
    plot_learning_curves(args.work, rows, args.work / "learning_curves.png")


if __name__ == "__main__":
    main()
