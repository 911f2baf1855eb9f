"""The `streamgenre` command line: options -> config -> one library call -> a printed summary.

The only broad catch in the package lives here: a `StreamgenreError` becomes one line on stderr
and exit code 2; Ctrl-C exits 130. Heavy imports happen inside commands so `--help` is instant.
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


@app.callback()
def main() -> None:
    """Train and run music-genre classifiers on MP3s streamed from WebDataset shards."""


def friendly_errors(command):
    """Turn domain errors into one line on stderr (exit 2) and Ctrl-C into exit 130."""

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

    return wrapper


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


# -- pack ------------------------------------------------------------------------------------
# (pack and info commands go here)


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
    shuffle_buffer: int = typer.Option(256, help="Samples held for shuffling in each loader worker."),
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
# (evaluate and predict commands go here)


# -- bench -----------------------------------------------------------------------------------
# (bench command goes here)


# -- demo ------------------------------------------------------------------------------------
# (demo command goes here)


if __name__ == "__main__":
    sys.exit(app())
