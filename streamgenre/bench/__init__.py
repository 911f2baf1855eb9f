"""`streamgenre bench`: where the time and memory go, stage by stage, against the paper's pipeline.

Times each stage alone on the same clips (decode ceiling, shard read, window decode, loader,
frontend, training step), then end to end, and runs the paper's WAV -> PNG -> tensors pipeline
on those clips for comparison; then `predict` on those clips and on one long file, and (opt-in)
the time each recipe and model takes to reach a validation accuracy. Returns a `BenchResult`
and writes bench.json/md/png; never prints.

    core      the configuration, the rows, the clips and the timing helpers every stage shares
    stages    stages 1-6, 10 (predict) and 11 (time to accuracy), and the packing half of stage 9
    baseline  stage 7: the paper's pipeline (librosa and Pillow, the ``[bench]`` extra)
    memory    stage 8 and stage 10's runs: peak RSS, each measured in its own interpreter (see `child`)
    report    comparisons, targets, notes and the bench.json/md/png outputs
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from streamgenre.bench.baseline import paper_rows, paper_stages
from streamgenre.bench.core import (
    DEMO_SHARDS,
    QUICK_CLIPS,
    BenchConfig,
    check_out,
    decodable_clips,
    load_clips,
    most_common_format,
    select_clips,
)
from streamgenre.bench.memory import memory_comparisons
from streamgenre.bench.report import (
    BenchResult,
    clip_set_dict,
    config_dict,
    describe_machine,
    disk_comparisons,
    first_epoch_comparisons,
    format_notes,
    other_targets,
    write_outputs,
)
from streamgenre.bench.stages import (
    accuracy_rows,
    ceiling_row,
    check_accuracy_input,
    frontend_rows,
    loader_rows,
    predict_rows,
    read_row,
    time_packing,
    training_rows,
    window_decode_rows,
)
from streamgenre.dist import resolve_device

__all__ = ["DEMO_SHARDS", "BenchConfig", "BenchResult", "run_bench"]


def run_bench(config: BenchConfig) -> BenchResult:
    """Measure every stage, in stage order, on the same clips and write bench.json, bench.md and bench.png to `config.out`.

    Raises:
        InputError: DIR does not exist (run `streamgenre demo` first) or bad options.
        ShardFormatError: DIR is not a packed directory.
    """
    config = _quick(config) if config.quick else config
    device = resolve_device(config.device)
    check_out(config.out)
    clip_set = select_clips(config.shards, config.clips)
    if config.time_to_accuracy:
        check_accuracy_input(config)
    dropped: list[str] = []
    clips = load_clips(clip_set, config, dropped)  # untimed: also warms the page cache for stage 2
    clips, formats = decodable_clips(clips, config, dropped)
    ceiling = ceiling_row(clips, config)
    read = read_row(clip_set, config)
    decoding = window_decode_rows(clips, config)
    loading, loader_targets = loader_rows(clip_set, config, ceiling)
    frontend = frontend_rows(device, config)
    native_rate, channels = most_common_format(formats)
    steps, epoch, step_targets = training_rows(clip_set, config, device, native_rate)
    with tempfile.TemporaryDirectory(prefix="streamgenre-bench-") as scratch:
        paper = paper_stages(clips, clip_set.labels, config, device, Path(scratch))
        memory = memory_comparisons(clip_set, paper, config)
        pack_s = time_packing(clips, Path(scratch), config)
        predict = predict_rows(clips, clip_set.labels, native_rate, channels, config, device, Path(scratch))
        accuracy, accuracy_runs = accuracy_rows(config, Path(scratch)) if config.time_to_accuracy else ([], [])
    disk, first_epoch = disk_comparisons(clip_set, paper), first_epoch_comparisons(pack_s, epoch, paper)
    result = BenchResult(
        config=config_dict(config),
        machine=describe_machine(device),
        clip_set=clip_set_dict(config.shards, clip_set, formats),
        rows=[ceiling, read, *decoding, *loading, *frontend, *steps, epoch, *paper_rows(paper, len(clips)), *predict, *accuracy],
        comparisons=disk + memory + first_epoch,
        targets=loader_targets + step_targets + other_targets(frontend, disk, memory, first_epoch),
        notes=format_notes(formats, clip_set, config, dropped),
        accuracy_runs=accuracy_runs,
    )
    write_outputs(result, config.out)
    return result


def _quick(config: BenchConfig) -> BenchConfig:
    return replace(
        config,
        clips=min(config.clips, QUICK_CLIPS),
        workers=config.workers[:1],
        batch_size=min(config.batch_size, 4),
        step_batch_size=min(config.step_batch_size or 4, 4),
        timed_steps=1,
        loader_min_clips=0,
        long_file_s=max(config.duration_s, min(config.long_file_s, 20.0)),
    )
