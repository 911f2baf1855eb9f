"""The bench report: streaming-vs-paper comparisons, targets, notes, the machine, and bench.json/md/png."""

from __future__ import annotations

import json
import os
import platform
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import torch

from streamgenre.bench.baseline import PaperRun, missing_paper_extras
from streamgenre.bench.core import MB, AccuracyRun, BenchConfig, ClipSet, Comparison, StageRow, Target, stream_config
from streamgenre.dist import default_workers
from streamgenre.files import atomic_write
from streamgenre.paper import FMA_SMALL_CLIPS, PAPER_SAMPLE_RATE
from streamgenre.plots import plot_bars


@dataclass
class BenchResult:
    """Everything one run measured, in the order of the issue's stages; the CLI prints `markdown`."""

    config: dict[str, Any]
    machine: dict[str, Any]
    clip_set: dict[str, Any]
    rows: list[StageRow]
    comparisons: list[Comparison]
    targets: list[Target]
    notes: list[str]
    accuracy_runs: list[AccuracyRun] = field(default_factory=list)  # stage 11, with --time-to-accuracy
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def markdown(self) -> str:
        """The report as Markdown (what bench.md holds)."""
        return format_markdown(self)


def first_epoch_comparisons(pack_s: float, epoch: StageRow, paper: PaperRun | None) -> list[Comparison]:
    paper_times = (None, None, None) if paper is None else (paper.prepare_s, paper.load_s, paper.epoch_s)
    comparisons = [
        Comparison("MP3 folder -> training input (pack / WAV + mel + PNG)", pack_s, paper_times[0], "s"),
        Comparison("load the dataset into RAM", 0.0, paper_times[1], "s"),
        Comparison("first epoch (loader + steps / steps on held tensors)", epoch.seconds, paper_times[2], "s"),
    ]
    total_paper = None if paper is None else sum(paper_times)
    return comparisons + [Comparison("MP3 folder -> end of the first epoch", pack_s + epoch.seconds, total_paper, "s")]


def disk_comparisons(clip_set: ClipSet, paper: PaperRun | None) -> list[Comparison]:
    """Stage 7's footprint per clip and extrapolated to FMA small; streaming derives no files and holds no dataset."""
    disk = None if paper is None else paper.disk_bytes / clip_set.count
    held = None if paper is None else paper.tensor_bytes / clip_set.count
    return [
        Comparison("files derived from the audio, per clip (WAV + PNG)", 0, disk, "bytes"),
        Comparison(f"files derived from the audio, FMA small ({FMA_SMALL_CLIPS} clips)", 0, _times(disk, FMA_SMALL_CLIPS), "bytes"),
        Comparison("RAM to hold the dataset as 3x288x432 tensors, per clip", 0, held, "bytes"),
        Comparison(f"RAM to hold the dataset, FMA small ({FMA_SMALL_CLIPS} clips)", 0, _times(held, FMA_SMALL_CLIPS), "bytes"),
    ]


def other_targets(frontend: list[StageRow], disk: list[Comparison], memory: list[Comparison], first_epoch: list[Comparison]) -> list[Target]:
    sooner = _ratio(first_epoch[-1].paper, first_epoch[-1].streaming)
    stream_growth = _ratio(memory[-1].streaming, memory[0].streaming)
    paper_growth = _ratio(memory[-1].paper, memory[0].paper)
    return [
        Target(
            "frontend clips/s, 44.1 kHz input (device resampling) / 22.05 kHz input", _ratio(frontend[1].clips_per_s, frontend[0].clips_per_s), "(report)", None
        ),
        Target("first epoch: paper pipeline seconds / streaming seconds", sooner, ">= 20", None if sooner is None else sooner >= 20),
        Target("bytes of intermediate files written by streaming", disk[0].streaming, "0", disk[0].streaming == 0),
        Target("streaming peak RSS, 4x / 1x the clips", stream_growth, "<= 1.10", None if stream_growth is None else stream_growth <= 1.1),
        Target("paper peak RSS, 4x / 1x the clips", paper_growth, "(report)", None),
    ]


def _times(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


def format_notes(formats: Counter, clip_set: ClipSet, config: BenchConfig, dropped: list[str]) -> list[str]:
    notes = []
    if dropped:
        shown = "; ".join(dropped[:5]) + (f"; and {len(dropped) - 5} more" if len(dropped) > 5 else "")
        notes.append(f"{len(dropped)} of the {clip_set.count} clips could not be read or decoded and were left out of the per-clip stages: {shown}")
    missing = missing_paper_extras()
    if missing:
        notes.append(f"{' and '.join(missing)} not installed: the paper pipeline (stages 7-9) was skipped; pip install 'streamgenre[bench]'")
    if all(rate == PAPER_SAMPLE_RATE for rate, _ in formats):
        notes.append(
            f"the clips are already {PAPER_SAMPLE_RATE} Hz, so resample=cpu and resample=device do the same work and their "
            "loader rates differ only by noise; the device path pays off on 44.1 kHz stereo clips such as FMA's"
        )
    workers = min(max(config.workers), len(clip_set.urls))
    if max(config.workers) > workers:
        notes.append(f"only {len(clip_set.urls)} shard(s) hold the clips, so at most that many loader workers ran; re-pack with a smaller --max-count for more")
    buffer = stream_config(config, "device").shuffle_buffer
    if clip_set.count < buffer * max(1, workers):
        full_mb = buffer * clip_set.size_bytes / clip_set.count / MB
        notes.append(
            f"peak RSS: each loader worker's shuffle buffer holds up to {buffer} whole MP3s (~{full_mb:,.0f} MB when full); at 1x the "
            f"{max(1, workers)} worker(s) see only {clip_set.count} clips, so part of the streaming 4x/1x growth is that buffer filling "
            "up: it stops growing once full, whatever the corpus size"
        )
    if config.quick:
        notes.append("--quick: a handful of clips and one timed step; a smoke test, not a benchmark")
    notes.append(
        "loader rows include each epoch's worker start-up and the training loader's shuffle buffer; the frontend and "
        "train-step rows use synthetic in-memory input, so they time compute alone"
    )
    notes.append(
        f"train-step rows run training's own step ({config.recipe} recipe: its optimizer, schedule, mixup, label smoothing and "
        "clipping; autocast + GradScaler on CUDA only, as `train` does) for every registered model; the contiguous row runs the "
        "default model's backbone without channels-last, in the same run"
    )
    notes.append(
        "stage 10 runs `predict`'s default plan (the whole file, window after window) with an untrained default model, and on the "
        "clips with each pretrained model too, in a fresh interpreter each time, one untimed forward pass first; the long file is "
        f"the clips' audio end to end, {config.long_file_s:g} s"
    )
    if config.time_to_accuracy:
        notes.append(
            f"stage 11 trains on the whole packed directory (not only the measured clips) with each recipe's own epochs and batch, "
            f"stopped after the epoch in which {config.budget_s:g} s ran out; times are the run's wall time, validation and loader "
            "start-up included, the final test report not; its clips/s column is training windows/s"
        )
    return notes


def describe_machine(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, GPU and library versions, so a table is never read without its machine."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": default_workers(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "device": str(device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "av": av.__version__,
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return models[0] if models else platform.processor() or "unknown"


def clip_set_dict(directory: str, clip_set: ClipSet, formats: Counter) -> dict[str, Any]:
    return {
        "directory": directory,
        "shards": len(clip_set.urls),
        "clips": clip_set.count,
        "size_bytes": clip_set.size_bytes,
        "formats": {f"{rate} Hz x {channels} ch": count for (rate, channels), count in sorted(formats.items())},
    }


def write_outputs(result: BenchResult, out: Path) -> dict[str, str]:
    """bench.json, bench.md and bench.png (clips/s per stage) in `out`, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench.json", "markdown": out / "bench.md", "chart": out / "bench.png"}
    result.outputs = {name: str(path) for name, path in paths.items()}
    with atomic_write(paths["json"]) as stream:
        stream.write(json.dumps(asdict(result), indent=2, default=str).encode())
    with atomic_write(paths["markdown"]) as stream:
        stream.write(result.markdown.encode())
    measured = [row for row in result.rows if row.clips_per_s is not None]
    groups = [PAPER_GROUP if row.stage == PAPER_STAGE else STREAMING_GROUP for row in measured]
    names, rates = [f"{row.stage} {row.name}" for row in measured], [row.clips_per_s for row in measured]
    plot_bars(names, rates, paths["chart"], chart_title(result), "clips/s (log scale)", groups)
    return result.outputs


PAPER_STAGE = "7"
STREAMING_GROUP, PAPER_GROUP = "streaming (this package)", "the paper's pipeline"


def chart_title(result: BenchResult) -> str:
    """What the chart shows and on what: a --quick run says so, with its clip count."""
    clips = result.clip_set["clips"]
    run = f"--quick smoke run: {clips} clips, not a benchmark" if result.config["quick"] else f"{clips} clips"
    return f"streamgenre bench: clips/s per stage\n{run}; on {result.machine['device']}"


def format_markdown(result: BenchResult) -> str:
    """The stage table, the streaming-vs-paper table, the targets and the notes, as Markdown."""
    machine, clip_set = result.machine, result.clip_set
    lines = [
        "# streamgenre bench",
        "",
        (
            f"Machine: {machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable), GPU: {machine['gpu'] or 'none'}; "
            f"torch {machine['torch']} ({machine['torch_threads']} threads) on {machine['device']}, PyAV {machine['av']}, Python {machine['python']}."
        ),
        f"Clips: {clip_set['clips']} from {clip_set['shards']} shard(s) of {clip_set['directory']} ({clip_set['size_bytes'] / MB:,.1f} MB; "
        + ", ".join(f"{count} at {name}" for name, count in clip_set["formats"].items())
        + f"); window {result.config['duration_s']:g} s at {result.config['offset_s']:g} s, batch {result.config['batch_size']}.",
        "",
    ]
    lines += _table(
        ["stage", "what", "clips", "seconds", "clips/s", "per core", "detail"],
        [[row.stage, row.name, str(row.clips), f"{row.seconds:.2f}", _number(row.clips_per_s), _number(row.per_core), row.detail] for row in result.rows],
    )
    lines += ["", "## Streaming vs the paper's pipeline", ""]
    lines += _table(["", "streaming", "paper"], [[c.name, _amount(c.streaming, c.unit), _amount(c.paper, c.unit)] for c in result.comparisons])
    lines += ["", "## Targets", ""]
    lines += _table(["figure", "measured", "target", "met"], [[t.name, _number(t.value, 2), t.goal, _MET[t.met]] for t in result.targets])
    if result.accuracy_runs:
        lines += ["", "## Time to accuracy", ""]
        lines += _accuracy_table(result.accuracy_runs)
    lines += ["", "## Notes", "", *(f"- {note}" for note in result.notes)]
    return "\n".join(lines) + "\n"


_MET = {True: "yes", False: "**no**", None: "-"}


def _accuracy_table(runs: list[AccuracyRun]) -> list[str]:
    """One row per recipe and model: when whole-clip validation accuracy reached the target, and how high it got."""
    first = runs[0]
    header = [
        "recipe",
        "model",
        f"s to val acc {first.target:g}",
        f"best val acc within {first.budget_s:g} s",
        "last epoch's val acc",
        "epochs",
        "s in all",
        "train windows/s",
    ]
    rows = [
        [
            run.recipe,
            run.model,
            _number(run.seconds_to_target, 0) if run.seconds_to_target is not None else "not reached",
            _number(run.accuracy, 3),
            _number(run.final_accuracy, 3),
            str(run.epochs),
            _number(run.seconds, 0),
            _number(run.train_windows / run.train_seconds if run.train_seconds else None),
        ]
        for run in runs
    ]
    return _table(header, rows)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|", *("| " + " | ".join(row) + " |" for row in rows)]


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _amount(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:,.2f} s"
    for scale, suffix in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if value >= scale:
            return f"{value / scale:,.2f} {suffix}"
    return f"{value:,.0f} B"


def config_dict(config: BenchConfig) -> dict[str, Any]:
    return {**asdict(config), "out": str(config.out)}
