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
    from streamgenre.pack import PackConfig, pack as run_pack
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
    offset: str = typer.Option("15s", help="Window start: 15s, 0:15, 0s (the paper), or 'random' per sample per epoch."),
    duration: str = typer.Option("3s", help="Window length (the paper's 3 s)."),
    genres: Optional[str] = typer.Option(None, help="Comma-separated subset of the packed genres, e.g. Rock,Hip-Hop,Folk."),
    epochs: int = typer.Option(20, help="Epochs (the paper's 20)."),
    batch_size: int = typer.Option(25, help="Batch size (the paper's 25)."),
    lr: float = typer.Option(5e-4, help="Adam learning rate (the paper's 5e-4)."),
    workers: Optional[int] = typer.Option(None, help="Loader worker processes [default: one per CPU core]."),
    seed: int = typer.Option(0, help="Seed for weights, shard order and random windows."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision [default: on with CUDA]."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last.pt."),
    shuffle_buffer: int = typer.Option(64, help="Samples held for shuffling in each loader worker."),
    max_skip_fraction: float = typer.Option(0.01, help="Stop when more than this fraction of samples fails to decode."),
    resample: str = typer.Option("device", help="Resample on the 'device' inside the model, or on the 'cpu' in the loader."),
    sync_bn: bool = typer.Option(False, help="Under torchrun: synchronise batch-norm statistics across processes."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Train the paper's CNN on streamed shards (under torchrun: on every process)."""
    from streamgenre.train import TrainConfig, train as run_training

    config = TrainConfig(
        shards=shards,
        out=out or _default_run_dir(),
        stream=_stream_config(offset, duration, batch_size, shuffle_buffer, seed, resample),
        genres=_split_list(genres),
        epochs=epochs,
        lr=lr,
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


def _stream_config(offset: str, duration: str, batch_size: int, shuffle_buffer: int, seed: int, resample: str):
    from streamgenre.stream import StreamConfig
    from streamgenre.units import parse_duration

    offset_s = None if offset.strip().lower() == "random" else parse_duration(offset)
    return StreamConfig(
        offset_s=offset_s,
        duration_s=parse_duration(duration),
        batch_size=batch_size,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        resample=resample,
    )


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
    typer.echo(f"trained {len(result.history)} epochs in {result.elapsed_s:.0f} s ({result.train_clips_per_s:.1f} clips/s)")
    typer.echo(f"last epoch: train accuracy {last['train_accuracy']:.3f}" + (f", val accuracy {last['val_accuracy']:.3f}" if "val_accuracy" in last else ""))
    if result.test is not None:
        typer.echo(f"test accuracy {result.test['accuracy']:.3f}, macro-F1 {result.test['macro_f1']:.3f} (best checkpoint)")
    typer.echo(f"outputs in {result.run_dir}: best.pt, last.pt, history.csv, loss.png, accuracy.png" + (", confusion_matrix.png, report.txt" if result.test else ""))


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

    if windows is not None and hop is not None:
        _fail("give --windows or --hop, not both")
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
    plan = _window_plan_for(loaded.stream.duration_s, windows, hop or (None if windows else f"{loaded.stream.duration_s}s"), vote)
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
    from streamgenre.evaluate import WindowPlan
    from streamgenre.units import parse_duration

    if windows is not None and hop is not None:
        _fail("give --windows or --hop, not both")
    return WindowPlan(duration_s=duration_s, windows=windows, hop_s=parse_duration(hop) if hop else None, vote=vote)


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
