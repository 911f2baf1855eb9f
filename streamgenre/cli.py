"""The `streamgenre` command line: options -> config -> one library call -> a printed summary.

The only broad catch in the package lives here: a `StreamgenreError` becomes one line on stderr
and exit code 2; any other exception becomes one line too, with a hint to rerun with
``streamgenre --debug`` for its traceback; Ctrl-C exits 130. Heavy imports happen inside
commands so `--help` is instant. Defaults that are not plain values (``one per CPU core``) are
given to typer as `show_default` text: written as ``[default: ...]`` inside a help string, Rich
would take them for markup and drop them. `train`'s defaults belong to its configs (the recipes,
`TrainConfig`): its options default to None, meaning "the config's", and its help reads the
values from the configs when it is drawn (importing them loads torch, which the help of every
other command is spared).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from streamgenre import __version__
from streamgenre.errors import StreamgenreError
from streamgenre.units import count_of


class _QuietTypes:
    """Help without typer's type noise: no ``<bool>`` beside a flag, NAME rather than {name} in usage."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # a flag takes no value, so it has no type to show
            elif isinstance(param, TyperArgument) and param.nargs != 1:
                param.__class__ = _ManyArgument
        return params

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.name.upper() + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
        if isinstance(self, TyperGroup):
            pieces.append(self.subcommand_metavar)
        return pieces


class _ManyArgument(TyperArgument):
    """An argument taking several values: its type reads ``<str>``, not ``<list[str]>`` (the name says ``...``)."""

    def display_type_rich(self, ctx):
        shown = super().display_type_rich(ctx)
        return shown.replace("<list[", "<").replace("]>", ">") if shown else shown


class _Command(_QuietTypes, TyperCommand):
    pass


class _Group(_QuietTypes, TyperGroup):
    pass


class _TrainCommand(_Command):
    """`train`, whose help shows the defaults its configs hold (see `_config_default`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.from_config = [param for param in self.params if param.show_default == FROM_CONFIG]

    def format_help(self, ctx, formatter) -> None:
        for param in self.from_config:
            param.show_default = _config_default(param.name)
        super().format_help(ctx, formatter)


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Train and run music-genre classifiers on MP3s streamed from WebDataset shards.",
)
command = functools.partial(app.command, cls=_Command)

ONE_PER_CORE = "one per CPU core"
FROM_CONFIG = "the config's"  # replaced by the value itself when `train --help` is drawn


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"streamgenre {__version__}")
        raise typer.Exit()


_OPTIONS = {"debug": False}  # set by the app callback, read by `friendly_errors`


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Print the full traceback of an unexpected error instead of one line (give it before the command).")
    ] = False,
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
@command()
@friendly_errors
def pack(
    source: Annotated[
        Path, typer.Argument(help="An FMA tree or fma_*.zip (with --metadata), a folder per genre, or a CSV manifest (path,genre[,split][,artist]).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder for the shards, index.json and rejected.csv.")] = Path("shards"),
    metadata: Annotated[Path | None, typer.Option(help="FMA's tracks.csv: labels from track.genre_top, splits from set.split.")] = None,
    subset: Annotated[str | None, typer.Option(help="FMA subset to keep: small, medium or large.")] = None,
    genres: Annotated[str | None, typer.Option(help="Comma-separated genres to keep, in label-index order.", show_default="all, sorted")] = None,
    val: Annotated[float, typer.Option(help="Validation fraction per genre, where the source gives no split.")] = 0.1,
    test: Annotated[float, typer.Option(help="Test fraction per genre, where the source gives no split.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed for splits, --max-per-genre sampling and the order within shards.")] = 0,
    max_per_genre: Annotated[int | None, typer.Option(help="Keep at most this many files per genre (a seeded sample).")] = None,
    shard_size: Annotated[str, typer.Option(help="Maximum shard size, e.g. 256MB or 1GiB.")] = "256MB",
    max_count: Annotated[int | None, typer.Option(help="Maximum samples per shard.")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes that probe and write.", show_default=ONE_PER_CORE)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out, once the new pack is complete.")] = False,
    min_duration: Annotated[str, typer.Option(help="Reject files with less decodable audio than this as too short.")] = "1s",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars (there are none when stderr is not a terminal).")] = False,
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


@command()
@friendly_errors
def info(
    directory: Annotated[str, typer.Argument(help="Packed directory (or URL prefix) holding index.json.")],
    verify: Annotated[
        bool,
        typer.Option(
            "--verify", help="Read every shard (streamed, local or remote) and check its size, sha256 and sample count; exit 1 listing the damaged ones."
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar while verifying.")] = False,
) -> None:
    """Show a packed directory: clips per genre and split, its shards and the options used."""
    from streamgenre.shards import read_index

    index = read_index(directory)
    typer.echo(_index_table(index))
    if verify:
        _verify(directory, index, quiet)


def _verify(directory: str, index, quiet: bool) -> None:
    from streamgenre.progress import progress_bar
    from streamgenre.shards import verify_shards

    damaged = []
    for check in progress_bar(verify_shards(directory, index), total=len(index.shards), desc="verifying", unit="shard", enabled=not quiet):
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
        typer.echo(f"{count_of(report.short_count, 'clip')} shorter than 30 s: kept, with short=true in their json")
    if report.rejected:
        typer.echo(f"rejected {count_of(sum(report.rejected.values()), 'file')}, listed in {report.rejected_path}:")
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
@app.command(cls=_TrainCommand)
@friendly_errors
def train(
    context: typer.Context,
    shards: Annotated[str, typer.Argument(help="Packed directory (or URL prefix) holding index.json and the shards.")],
    out: Annotated[Path | None, typer.Option("--out", help="Run directory.", show_default="runs/run-<time>")] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="modern (many random windows, AdamW, cosine, mixup, SpecAugment), paper (the study's loop exactly), "
            "probe (a frozen pretrained backbone, a trained head) or finetune (all of it, the backbone slower).",
            show_default=FROM_CONFIG,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="paper (the study's CNN), resnet (short-chunk ResNet) or musicnn (pretrained); see `streamgenre models`.", show_default=FROM_CONFIG),
    ] = None,
    width: Annotated[int | None, typer.Option(help="Width: the ResNet's channels, musicnn's hidden head units (0: linear).", show_default=FROM_CONFIG)] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs.", show_default=FROM_CONFIG)] = None,
    windows_per_clip: Annotated[int | None, typer.Option(help="Random windows per clip per epoch.", show_default=FROM_CONFIG)] = None,
    offset: Annotated[str | None, typer.Option(help="'random' windows, or one window at a fixed start such as 15s or 0:15.", show_default=FROM_CONFIG)] = None,
    duration: Annotated[str | None, typer.Option(help="Window length.", show_default=FROM_CONFIG)] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.", show_default=FROM_CONFIG)] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.", show_default=FROM_CONFIG)] = None,
    mixup: Annotated[float | None, typer.Option(help="Mixup Beta(alpha, alpha); 0 turns it off.", show_default=FROM_CONFIG)] = None,
    spec_augment: Annotated[
        bool | None,
        typer.Option("--spec-augment/--no-spec-augment", help="Frequency and time masks on the mel (nothing else).", show_default=FROM_CONFIG),
    ] = None,
    gain: Annotated[float | None, typer.Option(help="Random gain within +-DB decibels; 0 turns it off.", show_default=FROM_CONFIG)] = None,
    val_windows: Annotated[int | None, typer.Option(help="Windows per clip for whole-clip validation and test.", show_default=FROM_CONFIG)] = None,
    genres: Annotated[str | None, typer.Option(help="Comma-separated subset of the packed genres, e.g. Rock,Hip-Hop,Folk.")] = None,
    workers: Annotated[int | None, typer.Option(help="Loader worker processes.", show_default=ONE_PER_CORE)] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for weights, shard order and random windows.", show_default=FROM_CONFIG)] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.", show_default=FROM_CONFIG)] = None,
    amp: Annotated[bool | None, typer.Option("--amp/--no-amp", help="Mixed precision.", show_default="on with CUDA")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last.pt, with its own settings (with --epochs N: up to N epochs).")
    ] = False,
    shuffle_buffer: Annotated[int | None, typer.Option(help="Clips held for shuffling in each loader worker.", show_default=FROM_CONFIG)] = None,
    max_skip_fraction: Annotated[
        float | None,
        typer.Option(help="Stop when more than this fraction of samples is skipped (undecodable, or of a genre not in index.json).", show_default=FROM_CONFIG),
    ] = None,
    resample: Annotated[
        str | None, typer.Option(help="Resample on the 'device' inside the model, or on the 'cpu' in the loader.", show_default=FROM_CONFIG)
    ] = None,
    sync_bn: Annotated[bool, typer.Option("--sync-bn", help="Under torchrun: synchronise batch-norm statistics across processes.")] = False,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the model (minutes of compiling first; try it on a GPU).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars (there are none when stderr is not a terminal).")] = False,
) -> None:
    """Train a genre classifier on streamed shards (under torchrun: on every process)."""
    from streamgenre.train import TrainConfig
    from streamgenre.train import train as run_training
    from streamgenre.units import parse_duration

    defaulted = {  # None: the config's default
        "model": model,
        "width": width,
        "duration_s": parse_duration(duration) if duration else None,
        "resample": resample,
        "shuffle_buffer": shuffle_buffer,
        "workers": workers,
        "seed": seed,
        "device": device,
        "amp": amp,
        "max_skip_fraction": max_skip_fraction,
    }
    config = TrainConfig(
        shards=shards,
        out=out or _default_run_dir(),
        recipe=_chosen_recipe(recipe, model, epochs, windows_per_clip, offset, batch_size, lr, mixup, spec_augment, gain, val_windows),
        genres=_split_list(genres),
        resume=resume,
        sync_bn=sync_bn,
        compile=compile_model,
        progress=not quiet,
        **{name: value for name, value in defaulted.items() if value is not None},
    )
    if resume:
        from streamgenre.train import resumed_config

        config = resumed_config(config, _typed_fields(context))
    _setup_logging()
    result = run_training(config)
    if _is_main_process():
        _print_training(result)


# The `train` options that set a config field of another name (dotted paths into TrainConfig);
# every other option sets the field it is named after. What --resume does with each field is
# declared on the field itself (streamgenre.config).
_MASKS = ("freq_masks", "freq_mask_bins", "time_masks", "time_mask_frames")
_OPTION_FIELDS = {
    "duration": ("duration_s",),
    "compile_model": ("compile",),
    "quiet": ("progress",),
    "epochs": ("recipe.epochs",),
    "windows_per_clip": ("recipe.windows_per_clip",),
    "offset": ("recipe.offset_s", "recipe.windows_per_clip"),  # a fixed offset means one window per clip
    "batch_size": ("recipe.batch_size",),
    "lr": ("recipe.lr",),
    "mixup": ("recipe.mixup_alpha",),
    "spec_augment": tuple(f"recipe.augment.{mask}" for mask in _MASKS),
    "gain": ("recipe.augment.gain_db",),
    "val_windows": ("recipe.val_windows",),
}


def _typed_fields(context: typer.Context) -> set[str]:
    """The config fields (dotted paths) set by the options the user typed, not left at their defaults."""
    typed = [name for name in context.params if context.get_parameter_source(name).name != "DEFAULT"]
    return {path for name in typed for path in _OPTION_FIELDS.get(name, (name,))}


def _config_default(option: str) -> str:
    """A `train` option's default as its help shows it, read from the config field the option sets.

    Recipe fields show each recipe's value where they differ (``modern: 15, paper: 20``), model
    facts each model's (``resnet: 32``).
    """
    from dataclasses import fields

    from streamgenre.models import model_names, model_spec
    from streamgenre.recipes import RECIPES, default_recipe
    from streamgenre.train import TrainConfig

    specs = [model_spec(name) for name in model_names()]
    if option == "recipe":
        pretrained = ", ".join(spec.name for spec in specs if spec.pretrained)
        return f"{pretrained}: {default_recipe(True).name}, others: {default_recipe(False).name}"
    if option == "width":
        return ", ".join(f"{spec.name}: {spec.default_width}" for spec in specs if spec.default_width is not None)
    if option == "duration":
        return "the model's own: " + _joined({spec.name: f"{spec.frontend.window_s:g}s" for spec in specs})
    path = _HELP_FIELDS.get(option, _OPTION_FIELDS.get(option, (option,))[0])
    if not path.startswith("recipe."):
        return _shown_default(path, {f.name: f.default for f in fields(TrainConfig)}[path])
    return _joined({name: _shown_default(path, _value_at(recipe, path.removeprefix("recipe."))) for name, recipe in RECIPES.items()})


# `train` options whose help default is another field than the first one they set.
_HELP_FIELDS = {"spec_augment": "recipe.augment.spec_augment"}


def _joined(values: dict[str, str]) -> str:
    """One value when all agree, else ``name: value`` pairs."""
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    return ", ".join(f"{name}: {value}" for name, value in values.items())


def _value_at(config, path: str):
    for name in path.split("."):
        config = getattr(config, name)
    return config


def _shown_default(path: str, value) -> str:
    """How help writes a default: on/off, ``random`` for no fixed offset, seconds with their unit."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "random"
    return f"{value:g}s" if path.endswith("_s") else f"{value:g}" if isinstance(value, float) else str(value)


def _chosen_recipe(name: str | None, model: str | None, epochs, windows_per_clip, offset, batch_size, lr, mixup, spec_augment, gain, val_windows):
    """The named recipe (None: the model's default) with the options the user gave; a fixed --offset means one window per clip."""
    from dataclasses import replace

    from streamgenre.model import DEFAULT_MODEL
    from streamgenre.models import model_spec
    from streamgenre.recipes import default_recipe, recipe_named
    from streamgenre.units import parse_duration

    base = default_recipe(model_spec(model or DEFAULT_MODEL).pretrained) if name is None else recipe_named(name)
    offset_s = base.offset_s if offset is None else None if offset.strip().lower() == "random" else parse_duration(offset)
    if offset_s is not None and windows_per_clip is None:
        windows_per_clip = 1
    augment = base.augment.switched(spec_augment, gain)
    given = {
        "epochs": epochs,
        "windows_per_clip": windows_per_clip,
        "batch_size": batch_size,
        "lr": lr,
        "mixup_alpha": mixup,
        "val_windows": val_windows,
        "augment": augment,
    }
    return replace(base, offset_s=offset_s, **{option: value for option, value in given.items() if value is not None})


@command()
def models() -> None:
    """List the models `train --model` knows: their input, parameters and compute per window."""
    from streamgenre.model import ModelConfig, describe_model
    from streamgenre.models import model_names, model_spec

    typer.echo(f"{'model':<10}{'input':<34}{'parameters':>12}{'GFLOPs/window':>15}  description")
    for name in model_names():
        spec = model_spec(name)
        facts = describe_model(ModelConfig(n_classes=8, name=name))
        frontend = spec.frontend
        heard = f"{frontend.window_s:g} s at {frontend.sample_rate / 1000:g} kHz, {frontend.n_mels} mel, {frontend.compression}"
        typer.echo(f"{name:<10}{heard:<34}{facts.parameters:>12,}{facts.backbone_gflops:>15.2f}  {spec.summary}")
    typer.echo("parameters for 8 genres; GFLOPs of the model per window, the frontend's mel filtering (a few hundredths) and FFT not counted")


def _default_run_dir() -> Path:
    import time

    return Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")


def _split_list(text: str | None) -> tuple[str, ...] | None:
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
    """What was measured, said plainly: training-pass throughput apart from the wall time of the whole run."""
    if not result.history:
        return
    history, last = result.history, result.history[-1]
    train_s = sum(row["seconds"] for row in history)
    windows = sum(row["train_windows"] for row in history)
    besides = ["validation"] * ("val_accuracy" in last) + ["checkpoints"] + ["the test report"] * (result.test is not None)
    besides_text = f"{', '.join(besides[:-1])} and {besides[-1]}" if len(besides) > 1 else besides[0]
    typer.echo(
        f"trained {count_of(len(history), 'epoch')}: the training passes took {train_s:.0f} s "
        f"({windows} windows, {windows / max(train_s, 1e-9):.1f} windows/s); "
        f"the run took {result.elapsed_s:.0f} s wall with {besides_text}"
    )
    if result.best_epoch is not None:
        score = "val whole-clip" if result.best_val_accuracy is not None else "train"
        best = history[result.best_epoch - 1]
        typer.echo(f"best epoch {result.best_epoch} ({score} accuracy {best.get('val_accuracy', best['train_accuracy']):.3f}) is best.pt")
    typer.echo(
        f"last epoch: train accuracy {last['train_accuracy']:.3f}" + (f", val whole-clip accuracy {last['val_accuracy']:.3f}" if "val_accuracy" in last else "")
    )
    if result.test is not None:
        test = result.test
        typer.echo(
            f"test: whole-clip accuracy {test['accuracy']:.3f}, single-window accuracy {test['window_accuracy']:.3f}, "
            f"macro-F1 {test['macro_f1']:.3f} (best checkpoint)"
        )
    outputs = "best.pt, last.pt, history.json, history.csv, loss.png, accuracy.png" + (", confusion_matrix.png, report.json, report.txt" if result.test else "")
    typer.echo(f"outputs in {result.run_dir}: {outputs}")


# -- evaluate / predict ----------------------------------------------------------------------
_TAGGER_HELP = "musicnn: the pretrained MSD tagger, no training needed (50 tags; a folder called musicnn wins)."


@command()
@friendly_errors
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run directory (its best.pt) or a checkpoint file.")],
    shards: Annotated[str | None, typer.Option(help="Packed directory.", show_default="the one the run was trained on")] = None,
    split: Annotated[str, typer.Option(help="Split to score: train, val or test.")] = "test",
    windows: Annotated[int | None, typer.Option(help="Hear N evenly spaced windows per clip.", show_default="the training window only")] = None,
    hop: Annotated[str | None, typer.Option(help="Or hear a window every HOP (e.g. 3s) across the whole clip.")] = None,
    offset: Annotated[str | None, typer.Option(help="Single-window mode: where the window starts.", show_default="the checkpoint's")] = None,
    vote: Annotated[str, typer.Option(help="Combine windows by mean probability or by majority vote.")] = "mean",
    out: Annotated[Path | None, typer.Option("--out", help="Folder for eval-<split>-<mode>.json and the confusion matrix.", show_default="the run")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    workers: Annotated[int | None, typer.Option(help="Loader worker processes.", show_default=ONE_PER_CORE)] = None,
    max_skip_fraction: Annotated[
        float, typer.Option(help="Stop when more than this fraction of samples is skipped (undecodable, or of a genre not in index.json).")
    ] = 0.01,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar (there is none when stderr is not a terminal).")] = False,
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
        progress=not quiet,
        max_skip_fraction=max_skip_fraction,
    )
    _setup_logging()
    result = evaluate_run(config)
    typer.echo(format_report(result.summary))
    if result.summary["skipped"]:
        typer.echo(f"{count_of(result.summary['skipped'], 'sample')} skipped (undecodable, or of a genre not in index.json)")
    typer.echo(f"wrote {result.json_path} and {result.png_path}")


@command()
@friendly_errors
def predict(
    checkpoint: Annotated[Path, typer.Argument(help=f"Run directory (its best.pt), a checkpoint file, or {_TAGGER_HELP}")],
    inputs: Annotated[list[str], typer.Argument(help="Audio files (mp3, wav, flac, ogg, m4a, ...), folders, or - for paths on stdin.")],
    top: Annotated[int, typer.Option(help="How many genres to show per file.")] = 3,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of tables.")] = False,
    windows: Annotated[int | None, typer.Option(help="Hear N evenly spaced windows per file.", show_default="the whole file, window after window")] = None,
    hop: Annotated[str | None, typer.Option(help="Step between windows.", show_default="the window length, i.e. the whole file")] = None,
    vote: Annotated[str, typer.Option(help="Combine windows by mean probability or by majority vote.")] = "mean",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Print the most likely genres (or musicnn's tags) of each file; exits 1 if any file could not be decoded."""
    import json

    from streamgenre.checkpoint import load_for_inference
    from streamgenre.dist import resolve_device
    from streamgenre.predict import expand_inputs, predict_files

    paths = expand_inputs(inputs, sys.stdin if "-" in inputs else ())
    target = resolve_device(device)
    loaded = load_for_inference(checkpoint, target)
    plan = _window_plan_for(loaded.spec.window_s, windows, hop or (None if windows is not None else f"{loaded.spec.window_s}s"), vote)
    failed = 0
    shown = len(loaded.labels) if json_lines and loaded.multi_label else top  # a tagger's --json: every tag
    for result in predict_files(loaded, paths, plan, shown, target):
        failed += result.error is not None
        if result.error:
            typer.echo(f"error: {result.path}: {result.error}", err=True)
            if json_lines:
                typer.echo(json.dumps(result.to_json()))
        elif json_lines:
            typer.echo(json.dumps(result.to_json()))
        else:
            typer.echo(f"{result.path}  ({count_of(result.windows, 'window')})")
            for genre, probability in result.top:
                typer.echo(f"  {_column(genre, 20)}{probability:7.1%}")
    if failed:
        raise typer.Exit(1)


def _column(text: str, width: int) -> str:
    """`text` padded to `width`, or longer with two spaces after it: a long genre never runs into the next column."""
    return text.ljust(width - 2) + "  "


def _window_plan_for(duration_s: float, windows: int | None, hop: str | None, vote: str):
    from streamgenre.units import parse_duration
    from streamgenre.windows import WindowPlan

    return WindowPlan(duration_s=duration_s, windows=windows, hop_s=parse_duration(hop) if hop else None, vote=vote)


# -- export / tag ----------------------------------------------------------------------------
@command()
@friendly_errors
def export(
    run: Annotated[Path, typer.Argument(help=f"Run directory (its best.pt), a checkpoint file, or {_TAGGER_HELP}")],
    fmt: Annotated[str, typer.Option("--format", help="onnx (needs the export extra) or torchscript.")] = "onnx",
    out: Annotated[Path | None, typer.Option("--out", help="File to write.", show_default="model.onnx or model.torchscript.pt beside the checkpoint")] = None,
    sample_rate: Annotated[
        int | None, typer.Option(help="Rate of the waveforms the file takes; another rate builds the resampler into the file.", show_default="the run's")
    ] = None,
    check: Annotated[
        list[Path] | None, typer.Option("--check", metavar="FILE", help="Audio file to check the export on, repeatable.", show_default="synthetic clips")
    ] = None,
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
    outputs = "tags" if loaded.multi_label else "genres"
    typer.echo(
        f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, {fmt}) in {result.seconds:.1f} s: "
        f"float32 (batch, samples) mono at {meta['sample_rate']} Hz in, probabilities of {len(loaded.labels)} {outputs} out; "
        f"windows of {meta['window_seconds']} s"
    )
    runtime = "onnxruntime" if fmt == "onnx" else "torch.jit.load"
    typer.echo(
        f"checked with {runtime} on {check_result.windows} windows of {check_result.source}: "
        f"max |p - p_pytorch| = {check_result.max_abs_diff:.1e} (tolerance {check_result.tolerance:.0e})"
        + ("" if check_result.same_top else "; the top genre differs on some windows")
    )


@command()
@friendly_errors
def tag(
    checkpoint: Annotated[Path, typer.Argument(help=f"Run directory (its best.pt), a checkpoint file, or {_TAGGER_HELP}")],
    inputs: Annotated[list[str], typer.Argument(help="Audio files (mp3, flac, ogg, opus, m4a), folders, or - for paths on stdin.")],
    write: Annotated[bool, typer.Option("--write", help="Write the tags (without it, only the plan is printed).")] = False,
    min_probability: Annotated[float, typer.Option(help="Leave files whose top genre is less likely than this (0 to 1).")] = 0.0,
    overwrite_existing: Annotated[bool, typer.Option("--overwrite-existing", help="Replace a genre the file already has.")] = False,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Also write the plan as CSV: path, current genre, predicted genre, probability, action.")
    ] = None,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    top: Annotated[int, typer.Option(help="Write the N most likely genres (those after the first only if they reach --min-probability).")] = 1,
    genre_map: Annotated[
        Path | None,
        typer.Option("--map", help="CSV with a tag,genre header: write these genre names for these tags (or labels); other tags are not genres."),
    ] = None,
) -> None:
    """Put each file's predicted genre into its own genre tag; exits 1 if any file could not be read or tagged."""
    import csv
    import io
    import json

    from streamgenre.checkpoint import load_for_inference
    from streamgenre.dist import resolve_device
    from streamgenre.files import check_writable, write_bytes_atomically
    from streamgenre.predict import expand_inputs
    from streamgenre.tag import CSV_COLUMNS, ERROR, check_tag_options, genre_vocabulary, require_mutagen, tag_files

    require_mutagen()
    check_tag_options(min_probability, top)
    if csv_path is not None:
        check_writable(csv_path, "--csv")  # before any file is tagged, not after
    paths = expand_inputs(inputs, sys.stdin if "-" in inputs else ())
    target = resolve_device(device)
    loaded = load_for_inference(checkpoint, target)
    vocabulary = genre_vocabulary(loaded, genre_map)
    plan = _window_plan_for(loaded.spec.window_s, None, f"{loaded.spec.window_s}s", "mean")
    rows = []
    if not json_lines:
        typer.echo(f"{'action':<18}{'prob.':>7}  {_column('predicted', 16)}{_column('current', 16)}path")
    for row in tag_files(loaded, paths, plan, target, min_probability, overwrite_existing, write, vocabulary, top):
        rows.append(row)
        if row.error:
            typer.echo(f"error: {row.path}: {row.error}", err=True)
        if json_lines:
            typer.echo(json.dumps(row.to_json()))
        elif not row.error:
            typer.echo(f"{row.action:<18}{row.probability:7.1%}  {_column(row.predicted_text, 16)}{_column(row.current_text or '-', 16)}{row.path}")
    if csv_path is not None:
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(row.to_csv() for row in rows)
        write_bytes_atomically(csv_path, text.getvalue().encode())
    counts = {action: sum(row.action == action for row in rows) for action in dict.fromkeys(row.action for row in rows)}
    summary = ", ".join(f"{count} {action}" for action, count in counts.items())
    hint = "" if write or not counts.get("write") else "; nothing written: add --write to tag"
    typer.echo(f"{count_of(len(rows), 'file')}: {summary}{hint}" + (f"; plan in {csv_path}" if csv_path else ""), err=json_lines)
    if counts.get(ERROR):
        raise typer.Exit(1)


# -- bench -----------------------------------------------------------------------------------
@command()
@friendly_errors
def bench(
    shards: Annotated[
        str | None, typer.Argument(help="Packed directory to measure; by default the demo corpus, demo/shards, made by `streamgenre demo`.")
    ] = None,
    clips: Annotated[int, typer.Option(help="Clips to measure on (rounded up to whole shards).")] = 128,
    workers: Annotated[str, typer.Option(help="Comma-separated loader worker counts to compare.")] = "1,2",
    device: Annotated[str, typer.Option(help="Where the frontend and the model run: auto, cpu or cuda.")] = "auto",
    out: Annotated[Path, typer.Option("--out", help="Folder for bench.json, bench.md and bench.png.")] = Path("bench"),
    quick: Annotated[
        bool,
        typer.Option("--quick", help="A smoke test of every stage on a few clips with the first worker count (about a minute on 2 cores); not a benchmark."),
    ] = False,
    time_to_accuracy: Annotated[
        bool,
        typer.Option(
            "--time-to-accuracy",
            help="Also train each recipe and model on DIR for --budget and time how soon whole-clip val accuracy reaches --target (minutes).",
        ),
    ] = False,
    budget: Annotated[str, typer.Option(help="Wall time per --time-to-accuracy run, e.g. 5m; each stops after the epoch that spends it.")] = "5m",
    target: Annotated[float, typer.Option(help="The whole-clip validation accuracy --time-to-accuracy times.")] = 0.8,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars (there are none when stderr is not a terminal).")] = False,
) -> None:
    """Time every stage (decode, loader, frontend, training, predict) and the paper's WAV/PNG pipeline on the same clips."""
    from streamgenre.bench import DEMO_SHARDS, BenchConfig, run_bench
    from streamgenre.units import parse_duration

    worker_counts = _parse_counts("--workers", workers)
    config = BenchConfig(
        shards or DEMO_SHARDS,
        out,
        clips,
        worker_counts,
        device,
        quick,
        progress=not quiet,
        time_to_accuracy=time_to_accuracy,
        budget_s=parse_duration(budget),
        target=target,
    )
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
@command()
@friendly_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the corpus, the shards and the run.")] = Path("demo"),
    clips_per_genre: Annotated[int, typer.Option(help="Synthetic clips per genre (five genres).")] = 100,
    clip_length: Annotated[str, typer.Option(help="Length of each synthetic clip (FMA clips are 30 s).")] = "30s",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 12,
    seed: Annotated[int, typer.Option(help="Seed for the corpus, the split and training.")] = 0,
    workers: Annotated[int | None, typer.Option(help="Processes for synthesis, packing and loading.", show_default=ONE_PER_CORE)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars (there are none when stderr is not a terminal).")] = False,
) -> None:
    """Synthesise a five-genre MP3 corpus, pack it, train on the window at 0:15 and evaluate: no download."""
    from streamgenre.demo import DemoConfig, run_demo
    from streamgenre.units import parse_duration

    config = DemoConfig(
        out=out, clips_per_genre=clips_per_genre, clip_s=parse_duration(clip_length), epochs=epochs, seed=seed, workers=workers, progress=not quiet
    )
    _setup_logging()
    result = run_demo(config)
    synthesis = result.synthesis
    if synthesis.clips:
        typer.echo(
            f"synthesised {synthesis.clips} MP3 clips (five genres) into {result.corpus} in {synthesis.seconds:.0f} s ({synthesis.clips_per_s:.1f} clips/s)"
        )
    else:
        typer.echo(f"reused the corpus in {result.corpus} (same settings as before)")
    _print_pack(result.pack)
    _print_training(result.train)
    typer.echo(f"look at {result.run / 'accuracy.png'}, {result.run / 'loss.png'} and {result.run / 'confusion_matrix.png'}")


if __name__ == "__main__":
    sys.exit(app())
