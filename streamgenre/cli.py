"""The `streamgenre` command line: options -> config -> one library call -> a printed summary.

The only broad catch in the package lives here: a `StreamgenreError` becomes one line on stderr
and exit code 2; any other exception becomes one line too, with a hint to rerun with
``streamgenre --debug`` for its traceback; Ctrl-C exits 130. Heavy imports happen inside
commands so `--help` is instant.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer

from streamgenre.errors import StreamgenreError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Train and run music-genre classifiers on MP3s streamed from WebDataset shards.",
)


_OPTIONS = {"debug": False}  # set by the app callback, read by `friendly_errors`


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Print the full traceback of an unexpected error instead of one line (give it before the command)."),
) -> None:
    """Train and run music-genre classifiers on MP3s streamed from WebDataset shards.

    Errors are one line on stderr (exit 2); `streamgenre --debug COMMAND ...` shows the traceback
    of an unexpected one.
    """
    _OPTIONS["debug"] = debug


def friendly_errors(command):
    """Turn any error into one line on stderr (exit 2) and Ctrl-C into exit 130.

    A domain error is printed as it is; an unexpected one gets its type and a hint to rerun
    with ``--debug``, which lets it through with its traceback.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except StreamgenreError as exn:
            typer.echo(f"error: {exn}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except SystemExit as exn:
            if exn.code == _TERMINATED:  # pack turns SIGTERM into this, after cleaning up
                typer.echo("terminated", err=True)
            raise
        except _TYPER_EXITS:
            raise  # typer's own exits and usage errors (typer.Exit is a RuntimeError)
        except Exception as exn:  # the last resort: one line, the traceback on request
            if _OPTIONS["debug"]:
                raise
            typer.echo(f"error: {_one_line(exn)} (rerun as `streamgenre --debug {command.__name__} ...` for the traceback)", err=True)
            raise typer.Exit(2) from None

    return wrapper


_TYPER_EXITS = (typer.Exit, typer.Abort, typer.BadParameter)
_TERMINATED = 128 + 15  # SIGTERM's exit status


def _one_line(exn: Exception) -> str:
    if isinstance(exn, OSError) and exn.strerror:
        return f"{exn.strerror}: {exn.filename}" if exn.filename else exn.strerror
    text = " ".join(str(exn).split())
    return f"unexpected {type(exn).__name__}" + (f": {text[:300]}" if text else "")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


# -- pack ------------------------------------------------------------------------------------
@app.command()
@friendly_errors
def pack(
    source: Path = typer.Argument(..., help="An FMA tree or fma_*.zip (with --metadata), a folder per genre, or a CSV manifest (path,genre[,split][,artist])."),
    out: Path = typer.Option(Path("shards"), "--out", help="Output folder for the shards, index.json and rejected.csv."),
    metadata: Optional[Path] = typer.Option(None, help="FMA's tracks.csv: labels from track.genre_top, splits from set.split."),
    subset: Optional[str] = typer.Option(None, help="FMA subset to keep: small, medium or large."),
    genres: Optional[str] = typer.Option(None, help="Comma-separated genres to keep, in label-index order [default: all, sorted]."),
    val: float = typer.Option(0.1, help="Validation fraction per genre, where the source gives no split."),
    test: float = typer.Option(0.1, help="Test fraction per genre, where the source gives no split."),
    seed: int = typer.Option(0, help="Seed for splits, --max-per-genre sampling and the order within shards."),
    max_per_genre: Optional[int] = typer.Option(None, help="Keep at most this many files per genre (a seeded sample)."),
    shard_size: str = typer.Option("256MB", help="Maximum shard size, e.g. 256MB or 1GiB."),
    max_count: Optional[int] = typer.Option(None, help="Maximum samples per shard."),
    workers: Optional[int] = typer.Option(None, help="Processes that probe and write [default: one per CPU core]."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty --out, once the new pack is complete."),
    min_duration: str = typer.Option("1s", help="Reject files with less decodable audio than this as too short."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Decode every file, then pack the good ones into train/val/test WebDataset shards."""
    from streamgenre.pack import PackConfig
    from streamgenre.pack import pack as run_pack
    from streamgenre.units import parse_duration, parse_size

    config = PackConfig(
        source=source,
        out=out,
        metadata=metadata,
        subset=subset,
        genres=_split_list(genres),
        val=val,
        test=test,
        seed=seed,
        max_per_genre=max_per_genre,
        shard_size_bytes=parse_size(shard_size),
        max_count=max_count,
        workers=workers,
        overwrite=overwrite,
        min_duration_s=parse_duration(min_duration),
    )
    _setup_logging()
    _print_pack(run_pack(config, progress=not quiet))


@app.command()
@friendly_errors
def info(
    directory: str = typer.Argument(..., help="Packed directory (or URL prefix) holding index.json."),
    verify: bool = typer.Option(False, help="Read every shard (streamed, local or remote) and check its size, sha256 and sample count; exit 1 listing the damaged ones."),
    quiet: bool = typer.Option(False, help="No progress bar while verifying."),
) -> None:
    """Show a packed directory: clips per genre and split, its shards and the options used."""
    from streamgenre.shards import read_index

    index = read_index(directory)
    typer.echo(_index_table(index))
    if verify:
        _verify(directory, index, quiet)


def _verify(directory: str, index, quiet: bool) -> None:
    from tqdm import tqdm

    from streamgenre.shards import verify_shards

    damaged = []
    for check in tqdm(verify_shards(directory, index), total=len(index.shards), desc="verifying", unit="shard", disable=quiet, leave=False):
        if check.problem:
            damaged.append(check)
            typer.echo(f"damaged: {check.entry.name}: {check.problem}", err=True)
    if damaged:
        typer.echo(f"verify: {len(damaged)} of {len(index.shards)} shards are damaged: {', '.join(c.entry.name for c in damaged)}")
        raise typer.Exit(1)
    typer.echo(f"verify: all {len(index.shards)} shards match index.json (size, sha256, sample count)")


def _print_pack(report) -> None:
    index = report.index
    splits = ", ".join(f"{split} {index.split_count(split)}" for split in index.counts)
    size_mb = sum(entry.size_bytes for entry in index.shards) / 1e6
    typer.echo(f"packed {report.packed} clips ({splits}) into {len(index.shards)} shards ({size_mb:.1f} MB) in {report.out}")
    typer.echo(f"took {report.elapsed_s:.1f} s ({report.packed / max(report.elapsed_s, 1e-9):.1f} clips/s)")
    if report.short_count:
        typer.echo(f"{report.short_count} clips are shorter than 30 s: kept, with short=true in their json")
    if report.rejected:
        typer.echo(f"rejected {sum(report.rejected.values())} files, listed in {report.rejected_path}:")
        for reason, count in report.rejected.items():
            typer.echo(f"  {count:6d}  {reason}")


def _index_table(index) -> str:
    """Clips per genre (rows) and split (columns) with totals, then shards and options."""
    splits = list(index.counts)
    width = max([len("total"), *(len(label) for label in index.labels)])
    rows = [f"{'label':>5}  {'genre':<{width}}" + "".join(f"{split:>8}" for split in splits) + f"{'total':>8}"]
    for number, label in enumerate(index.labels):
        counts = [index.counts[split].get(label, 0) for split in splits]
        rows.append(f"{number:>5}  {label:<{width}}" + "".join(f"{count:>8}" for count in counts) + f"{sum(counts):>8}")
    totals = [index.split_count(split) for split in splits]
    rows.append(f"{'':>5}  {'total':<{width}}" + "".join(f"{count:>8}" for count in totals) + f"{sum(totals):>8}")
    per_split = ", ".join(f"{split} {len(index.split_shards(split))}" for split in splits)
    size_mb = sum(entry.size_bytes for entry in index.shards) / 1e6
    rows.append(f"shards: {len(index.shards)} ({per_split}), {size_mb:.1f} MB")
    rows.append("options: " + ", ".join(f"{name}={value}" for name, value in index.options.items() if value is not None))
    rows.append(f"packed by streamgenre {index.version}")
    return "\n".join(rows)


# -- train -----------------------------------------------------------------------------------
@app.command()
@friendly_errors
def train(
    shards: str = typer.Argument(..., help="Packed directory (or URL prefix) holding index.json and the shards."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory [default: runs/run-<time>]."),
    recipe: str = typer.Option("modern", help="modern (many random windows, AdamW, cosine, mixup, SpecAugment) or paper (the study's loop exactly)."),
    model: Optional[str] = typer.Option(None, help="paper (the study's CNN) or resnet (short-chunk ResNet) [default: paper]; see `streamgenre models`."),
    width: Optional[int] = typer.Option(None, help="Width of models that have one (resnet: 32)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs [default: the recipe's: modern 20, paper 20]."),
    windows_per_clip: Optional[int] = typer.Option(None, help="Random windows per clip per epoch [default: the recipe's: modern 8, paper 1]."),
    offset: Optional[str] = typer.Option(None, help="'random' windows, or one window at a fixed start such as 15s or 0:15 [default: the recipe's]."),
    duration: str = typer.Option("3s", help="Window length (the paper's 3 s)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size [default: the recipe's: modern 32, paper 25]."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate [default: the recipe's: modern 2e-3, paper 5e-4]."),
    mixup: Optional[float] = typer.Option(None, help="Mixup Beta(alpha, alpha); 0 turns it off [default: the recipe's]."),
    spec_augment: Optional[bool] = typer.Option(None, "--spec-augment/--no-spec-augment", help="Frequency and time masks on the mel [default: the recipe's]."),
    val_windows: Optional[int] = typer.Option(None, help="Windows per clip for whole-clip validation and test [default: 10]."),
    genres: Optional[str] = typer.Option(None, help="Comma-separated subset of the packed genres, e.g. Rock,Hip-Hop,Folk."),
    workers: Optional[int] = typer.Option(None, help="Loader worker processes [default: one per CPU core]."),
    seed: int = typer.Option(0, help="Seed for weights, shard order and random windows."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision [default: on with CUDA]."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last.pt, with its own settings."),
    shuffle_buffer: int = typer.Option(64, help="Clips held for shuffling in each loader worker."),
    max_skip_fraction: float = typer.Option(0.01, help="Stop when more than this fraction of samples fails to decode."),
    resample: str = typer.Option("device", help="Resample on the 'device' inside the model, or on the 'cpu' in the loader."),
    sync_bn: bool = typer.Option(False, help="Under torchrun: synchronise batch-norm statistics across processes."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Train a genre classifier on streamed shards (under torchrun: on every process)."""
    from dataclasses import replace

    from streamgenre.augment import AugmentConfig
    from streamgenre.model import DEFAULT_MODEL
    from streamgenre.recipes import recipe_named
    from streamgenre.train import TrainConfig
    from streamgenre.train import train as run_training
    from streamgenre.units import parse_duration

    base = recipe_named(recipe)
    chosen = base.with_options(
        epochs=epochs,
        windows_per_clip=windows_per_clip,
        offset_s=_parse_offset(offset, base.offset_s),
        batch_size=batch_size,
        lr=lr,
        mixup_alpha=mixup,
        val_windows=val_windows,
        augment=None if spec_augment is None else (replace(recipe_named("modern").augment) if spec_augment else AugmentConfig()),
    )
    if offset is not None and _parse_offset(offset, None) is not None and windows_per_clip is None:
        chosen = replace(chosen, windows_per_clip=1)  # a fixed offset is one window
    config = TrainConfig(
        shards=shards,
        out=out or _default_run_dir(),
        recipe=chosen,
        model=model or DEFAULT_MODEL,
        width=width,
        duration_s=parse_duration(duration),
        resample=resample,
        shuffle_buffer=shuffle_buffer,
        genres=_split_list(genres),
        workers=workers,
        seed=seed,
        device=device,
        amp=amp,
        resume=resume,
        max_skip_fraction=max_skip_fraction,
        sync_bn=sync_bn,
        progress=not quiet,
    )
    _setup_logging()
    result = run_training(config)
    if _is_main_process():
        _print_training(result)


def _parse_offset(text: Optional[str], default):
    """``random`` -> None (random windows), a duration -> seconds, nothing -> `default`."""
    from streamgenre.units import parse_duration

    if text is None:
        return default
    return None if text.strip().lower() == "random" else parse_duration(text)


@app.command()
def models() -> None:
    """List the models `train --model` knows, with parameters and compute per 3-s window."""
    from streamgenre.model import ModelConfig, describe_model
    from streamgenre.models import model_names, model_spec

    typer.echo(f"{'model':<10}{'parameters':>12}{'GFLOPs/window':>15}  description")
    for name in model_names():
        facts = describe_model(ModelConfig(n_classes=8, name=name))
        typer.echo(f"{name:<10}{facts.parameters:>12,}{facts.backbone_gflops:>15.2f}  {model_spec(name).summary}")
    typer.echo("parameters for 8 genres; GFLOPs of the backbone per 3-s window, plus 1.13 in the shared mel frontend")


def _default_run_dir() -> Path:
    import time

    return Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")


def _split_list(text: Optional[str]) -> Optional[tuple[str, ...]]:
    if not text:
        return None
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _is_main_process() -> bool:
    """Rank 0 under torchrun (and any plain process) prints; the other ranks stay quiet."""
    import os

    return int(os.environ.get("RANK", 0)) == 0


def _setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO if _is_main_process() else logging.WARNING, format="%(message)s", stream=sys.stderr)


def _print_training(result) -> None:
    if not result.history:
        return
    last = result.history[-1]
    windows = sum(row["train_windows"] for row in result.history)
    typer.echo(f"trained {len(result.history)} epochs in {result.elapsed_s:.0f} s ({windows} windows, {result.train_windows_per_s:.1f} windows/s while training)")
    typer.echo(f"last epoch: train accuracy {last['train_accuracy']:.3f}" + (f", val whole-clip accuracy {last['val_accuracy']:.3f}" if "val_accuracy" in last else ""))
    if result.best_val_accuracy is not None:
        typer.echo(f"best epoch {result.best_epoch}: val whole-clip accuracy {result.best_val_accuracy:.3f} (best.pt)")
    if result.test is not None:
        test = result.test
        typer.echo(f"test: whole-clip accuracy {test['accuracy']:.3f}, single-window accuracy {test['window_accuracy']:.3f}, macro-F1 {test['macro_f1']:.3f} (best checkpoint)")
    typer.echo(f"outputs in {result.run_dir}: best.pt, last.pt, history.json, history.csv, loss.png, accuracy.png" + (", report.json, report.txt, confusion_matrix.png" if result.test else ""))


# -- evaluate / predict ----------------------------------------------------------------------
@app.command()
@friendly_errors
def evaluate(
    run: Path = typer.Argument(..., help="Run directory (its best.pt) or a checkpoint file."),
    shards: Optional[str] = typer.Option(None, help="Packed directory [default: the one the run was trained on]."),
    split: str = typer.Option("test", help="Split to score: train, val or test."),
    windows: Optional[int] = typer.Option(None, help="Hear N evenly spaced windows per clip [default: the training window only]."),
    hop: Optional[str] = typer.Option(None, help="Or hear a window every HOP (e.g. 3s) across the whole clip."),
    offset: Optional[str] = typer.Option(None, help="Single-window mode: where the window starts [default: the checkpoint's]."),
    vote: str = typer.Option("mean", help="Combine windows by mean probability or by majority vote."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for eval-<split>.json and the confusion matrix [default: the run]."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    workers: Optional[int] = typer.Option(None, help="Loader worker processes [default: one per CPU core]."),
) -> None:
    """Score a checkpoint on a split, with the training window or whole clips (several windows)."""
    from streamgenre.evaluate import EvaluateConfig, evaluate_run, format_report
    from streamgenre.units import parse_duration

    config = EvaluateConfig(
        run=run,
        shards=shards,
        split=split,
        offset_s=parse_duration(offset) if offset else None,
        windows=windows,
        hop_s=parse_duration(hop) if hop else None,
        vote=vote,
        out=out,
        device=device,
        workers=workers,
    )
    _setup_logging()
    result = evaluate_run(config)
    typer.echo(format_report(result.summary))
    if result.summary["skipped"]:
        typer.echo(f"{result.summary['skipped']} samples could not be decoded and were skipped")
    typer.echo(f"wrote {result.json_path} and {result.png_path}")


@app.command()
@friendly_errors
def predict(
    checkpoint: Path = typer.Argument(..., help="Run directory (its best.pt) or a checkpoint file."),
    inputs: list[str] = typer.Argument(..., help="Audio files (mp3, wav, flac, ogg, m4a, ...), folders, or - for paths on stdin."),
    top: int = typer.Option(3, help="How many genres to show per file."),
    json_lines: bool = typer.Option(False, "--json", help="One JSON object per line instead of tables."),
    windows: Optional[int] = typer.Option(None, help="Hear N evenly spaced windows per file [default: the whole file, window after window]."),
    hop: Optional[str] = typer.Option(None, help="Step between windows [default: the window length, i.e. the whole file]."),
    vote: str = typer.Option("mean", help="Combine windows by mean probability or by majority vote."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Print the most likely genres of each file; exits 1 if any file could not be decoded."""
    import json

    from streamgenre.checkpoint import load_for_inference
    from streamgenre.dist import resolve_device
    from streamgenre.predict import expand_inputs, predict_files

    paths = expand_inputs(inputs, sys.stdin if "-" in inputs else ())
    target = resolve_device(device)
    loaded = load_for_inference(checkpoint, target)
    plan = _window_plan_for(loaded.spec.window_s, windows, hop or (None if windows else f"{loaded.spec.window_s}s"), vote)
    failed = 0
    for result in predict_files(loaded, paths, plan, top, target):
        failed += result.error is not None
        if result.error:
            typer.echo(f"error: {result.path}: {result.error}", err=True)
            if json_lines:
                typer.echo(json.dumps(result.to_json()))
        elif json_lines:
            typer.echo(json.dumps(result.to_json()))
        else:
            typer.echo(f"{result.path}  ({result.windows} windows)")
            for genre, probability in result.top:
                typer.echo(f"  {genre:<20}{probability:7.1%}")
    if failed:
        raise typer.Exit(1)


def _window_plan_for(duration_s: float, windows: Optional[int], hop: Optional[str], vote: str):
    from streamgenre.units import parse_duration
    from streamgenre.windows import WindowPlan

    return WindowPlan(duration_s=duration_s, windows=windows, hop_s=parse_duration(hop) if hop else None, vote=vote)


# -- export / tag ----------------------------------------------------------------------------
@app.command()
@friendly_errors
def export(
    run: Path = typer.Argument(..., help="Run directory (its best.pt) or a checkpoint file."),
    fmt: str = typer.Option("onnx", "--format", help="onnx (needs the export extra) or torchscript."),
    out: Optional[Path] = typer.Option(None, "--out", help="File to write (default: model.onnx or model.torchscript.pt beside the checkpoint)."),
    sample_rate: Optional[int] = typer.Option(None, help="Rate of the waveforms the file takes (default: the run's); another rate builds the resampler into the file."),
    check: Optional[list[Path]] = typer.Option(None, "--check", help="Audio file to check the export on, repeatable (default: synthetic clips)."),
) -> None:
    """Write the run as one ONNX or TorchScript file: mono waveforms in, genre probabilities out."""
    from streamgenre.checkpoint import load_for_inference
    from streamgenre.export import FORMATS, export_run

    if fmt not in FORMATS:
        _fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    loaded = load_for_inference(run, "cpu")
    target = out or loaded.path.parent / ("model.onnx" if fmt == "onnx" else "model.torchscript.pt")
    result = export_run(loaded, target, fmt, sample_rate, list(check or []))
    meta, check_result = result.metadata, result.check
    typer.echo(
        f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, {fmt}) in {result.seconds:.1f} s: "
        f"float32 (batch, samples) mono at {meta['sample_rate']} Hz in, probabilities of {len(loaded.labels)} genres out; "
        f"windows of {meta['window_seconds']} s"
    )
    runtime = "onnxruntime" if fmt == "onnx" else "torch.jit.load"
    typer.echo(
        f"checked with {runtime} on {check_result.windows} windows of {check_result.source}: "
        f"max |p - p_pytorch| = {check_result.max_abs_diff:.1e} (tolerance {check_result.tolerance:.0e})"
        + ("" if check_result.same_top else "; the top genre differs on some windows")
    )


@app.command()
@friendly_errors
def tag(
    checkpoint: Path = typer.Argument(..., help="Run directory (its best.pt) or a checkpoint file."),
    inputs: list[str] = typer.Argument(..., help="Audio files (mp3, flac, ogg, opus, m4a), folders, or - for paths on stdin."),
    write: bool = typer.Option(False, "--write", help="Write the tags (without it, only the plan is printed)."),
    min_probability: float = typer.Option(0.0, help="Leave files whose top genre is less likely than this (0 to 1)."),
    overwrite_existing: bool = typer.Option(False, "--overwrite-existing", help="Replace a genre the file already has."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Also write the plan as CSV: path, current genre, predicted genre, probability, action."),
    json_lines: bool = typer.Option(False, "--json", help="One JSON object per line instead of a table."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Put each file's predicted genre into its own genre tag; exits 1 if any file could not be read or tagged."""
    import csv
    import json

    from streamgenre.checkpoint import load_for_inference
    from streamgenre.dist import resolve_device
    from streamgenre.predict import expand_inputs
    from streamgenre.tag import CSV_COLUMNS, ERROR, require_mutagen, tag_files

    require_mutagen()
    paths = expand_inputs(inputs, sys.stdin if "-" in inputs else ())
    target = resolve_device(device)
    loaded = load_for_inference(checkpoint, target)
    plan = _window_plan_for(loaded.spec.window_s, None, f"{loaded.spec.window_s}s", "mean")
    rows = []
    if not json_lines:
        typer.echo(f"{'action':<18}{'prob.':>7}  {'predicted':<16}{'current':<16}path")
    for row in tag_files(loaded, paths, plan, target, min_probability, overwrite_existing, write):
        rows.append(row)
        if row.error:
            typer.echo(f"error: {row.path}: {row.error}", err=True)
        if json_lines:
            typer.echo(json.dumps(row.to_json()))
        elif not row.error:
            typer.echo(f"{row.action:<18}{row.probability:7.1%}  {row.predicted:<16}{row.current_text or '-':<16}{row.path}")
    if csv_path is not None:
        with open(csv_path, "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(row.to_csv() for row in rows)
    counts = {action: sum(row.action == action for row in rows) for action in dict.fromkeys(row.action for row in rows)}
    summary = ", ".join(f"{count} {action}" for action, count in counts.items())
    hint = "" if write or not counts.get("write") else "; nothing written: add --write to tag"
    typer.echo(f"{len(rows)} files: {summary}{hint}" + (f"; plan in {csv_path}" if csv_path else ""), err=json_lines)
    if counts.get(ERROR):
        raise typer.Exit(1)


# -- bench -----------------------------------------------------------------------------------
@app.command()
@friendly_errors
def bench(
    shards: Optional[str] = typer.Argument(None, help="Packed directory to measure; by default the demo corpus, demo/shards, made by `streamgenre demo`."),
    clips: int = typer.Option(128, help="Clips to measure on (rounded up to whole shards)."),
    workers: str = typer.Option("1,2", help="Comma-separated loader worker counts to compare."),
    device: str = typer.Option("auto", help="Where the frontend and the model run: auto, cpu or cuda."),
    out: Path = typer.Option(Path("bench"), "--out", help="Folder for bench.json, bench.md and bench.png."),
    quick: bool = typer.Option(False, help="A smoke run under a minute: a few clips, the first worker count."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Time every stage (decode, loader, frontend, training) and the paper's WAV/PNG pipeline on the same clips."""
    from streamgenre.bench import DEMO_SHARDS, BenchConfig, run_bench

    worker_counts = _parse_counts("--workers", workers)
    config = BenchConfig(shards or DEMO_SHARDS, out, clips, worker_counts, device, quick, progress=not quiet)
    _setup_logging()
    result = run_bench(config)
    typer.echo(result.markdown)
    typer.echo(f"wrote {', '.join(result.outputs.values())}")


def _parse_counts(option: str, text: str) -> tuple[int, ...]:
    """``"1,2"`` -> ``(1, 2)``; anything but comma-separated whole numbers is an input error."""
    from streamgenre.errors import InputError

    try:
        return tuple(int(item) for item in _split_list(text) or ())
    except ValueError:
        raise InputError(f"{option} takes comma-separated whole numbers, e.g. 1,2; got {text!r}") from None


# -- demo ------------------------------------------------------------------------------------
@app.command()
@friendly_errors
def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="Folder for the corpus, the shards and the run."),
    clips_per_genre: int = typer.Option(100, help="Synthetic clips per genre (five genres)."),
    clip_length: str = typer.Option("30s", help="Length of each synthetic clip (FMA clips are 30 s)."),
    epochs: int = typer.Option(12, help="Training epochs."),
    seed: int = typer.Option(0, help="Seed for the corpus, the split and training."),
    workers: Optional[int] = typer.Option(None, help="Processes for synthesis, packing and loading [default: one per core]."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Synthesise a five-genre MP3 corpus, pack it, train on the window at 0:15 and evaluate: no download."""
    from streamgenre.demo import DemoConfig, run_demo
    from streamgenre.units import parse_duration

    config = DemoConfig(out=out, clips_per_genre=clips_per_genre, clip_s=parse_duration(clip_length), epochs=epochs, seed=seed, workers=workers, progress=not quiet)
    _setup_logging()
    result = run_demo(config)
    typer.echo(f"corpus: {result.corpus} ({result.pack.packed} MP3 clips, five genres) -> shards: {result.shards}")
    _print_training(result.train)
    typer.echo(f"look at {result.run / 'accuracy.png'}, {result.run / 'loss.png'} and {result.run / 'confusion_matrix.png'}")


if __name__ == "__main__":
    sys.exit(app())
