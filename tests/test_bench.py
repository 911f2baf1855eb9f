"""`streamgenre bench --quick` on a tiny packed set: every stage reaches bench.json, bench.md and bench.png.

No timing assertions: the numbers depend on the machine and on what else runs beside the tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamgenre.cli import app
from tests.conftest import write_packed_dir

GENRES = ["ambient", "rock"]
STAGES = {"1", "2", "3", "4", "5", "6", "7", "10"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[object, Path]:
    """One quick bench over 2 shards x 3 clips of 4 s (a 3-s window fits), one of them garbage, shared by the tests."""
    root = tmp_path_factory.mktemp("bench")
    write_packed_dir(root / "packed", GENRES, {"train": 2}, per_shard=3, clip_s=4.0, corrupt_key="train0101")
    out = root / "out"
    result = CliRunner().invoke(app, ["bench", str(root / "packed"), "--quick", "--quiet", "--out", str(out)])
    return result, out


@pytest.mark.slow
def test_quick_bench_succeeds_and_prints_the_table(quick_run):
    result, out = quick_run
    assert result.exit_code == 0, result.output
    assert "| stage | what |" in result.stdout and str(out / "bench.json") in result.stdout


@pytest.mark.slow
def test_json_holds_every_stage_with_a_rate(quick_run):
    _, out = quick_run
    report = json.loads((out / "bench.json").read_text())
    rows = report["rows"]
    assert {row["stage"] for row in rows} == STAGES
    assert all(row["clips_per_s"] is None or row["clips_per_s"] > 0 for row in rows)
    assert all(row["clips_per_s"] > 0 for row in rows if row["stage"] != "7")  # only the paper may skip
    assert {row["name"].split(",")[1].strip() for row in rows if row["stage"] == "4"} == {"resample=cpu", "resample=device"}
    assert report["clip_set"]["clips"] == 6 and report["machine"]["cores"] >= 1 and report["machine"]["torch"]


@pytest.mark.slow
def test_the_train_step_is_trainings_for_every_model_and_channels_last_is_compared(quick_run):
    _, out = quick_run
    report = json.loads((out / "bench.json").read_text())
    steps = [row for row in report["rows"] if row["stage"] == "6" and row["name"].startswith("train step")]
    assert [row["name"].split(",")[1].split("(")[0].strip() for row in steps] == ["paper model", "resnet model", "musicnn model", "paper model"]
    assert "contiguous" in steps[-1]["name"]
    modern = [row for row in steps if "musicnn" not in row["name"]]
    assert all("modern recipe: adamw, mixup 0.2, label smoothing 0.1" in row["detail"] for row in modern)
    assert "probe recipe: adamw, mixup 0, label smoothing 0.1" in steps[2]["detail"]  # a pretrained model is timed as it trains by default
    ratio = [t for t in report["targets"] if "channels-last / contiguous" in t["name"]]
    assert len(ratio) == 1 and ratio[0]["value"] > 0 and ratio[0]["goal"] == ">= 1.3"


@pytest.mark.slow
def test_predict_is_timed_on_the_clips_and_on_one_long_file_with_its_peak_rss(quick_run):
    _, out = quick_run
    rows = [row for row in json.loads((out / "bench.json").read_text())["rows"] if row["stage"] == "10"]
    assert [row["clips"] for row in rows] == [5, 5, 1]  # the garbage clip is not a file to predict
    assert "4-s clips as files" in rows[0]["name"] and "one 20-s file" in rows[2]["name"]
    assert rows[1]["name"].endswith(", musicnn model") and "musicnn model on cpu" in rows[1]["detail"]
    assert all(row["clips_per_s"] > 0 and "peak RSS" in row["detail"] for row in rows)


@pytest.mark.slow
def test_json_compares_memory_disk_and_first_epoch_with_the_paper(quick_run):
    _, out = quick_run
    comparisons = {c["name"]: c for c in json.loads((out / "bench.json").read_text())["comparisons"]}
    rss = [c for name, c in comparisons.items() if name.startswith("peak RSS")]  # stage 8: 1x and 4x
    assert len(rss) == 2 and all(c["streaming"] > 0 for c in rss)
    assert comparisons["MP3 folder -> end of the first epoch"]["streaming"] > 0  # stage 9
    assert comparisons["files derived from the audio, per clip (WAV + PNG)"]["streaming"] == 0


@pytest.mark.slow
def test_markdown_and_chart_are_written(quick_run):
    _, out = quick_run
    markdown = (out / "bench.md").read_text()
    for heading in ("# streamgenre bench", "## Streaming vs the paper's pipeline", "## Targets", "## Notes"):
        assert heading in markdown
    assert all(f"| {stage} |" in markdown for stage in STAGES)
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "1 of the 6 clips could not be read or decoded" in markdown and "train0101: not an audio file" in markdown
    assert not list(out.glob("*.tmp*"))  # atomic writes leave no temporaries


def test_missing_default_directory_points_to_the_demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["bench", "--quick"])
    assert result.exit_code == 2
    assert "streamgenre demo" in result.output and "Traceback" not in result.output


def test_an_out_that_is_a_file_fails_at_once_in_one_line(tmp_path):
    (tmp_path / "bench.txt").write_text("a file")
    result = CliRunner().invoke(app, ["bench", str(tmp_path), "--quick", "--out", str(tmp_path / "bench.txt")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "is a file" in result.output


def test_garbage_members_are_left_out_and_noted(tmp_path):
    from streamgenre.bench.core import BenchConfig, decodable_clips, load_clips, select_clips

    write_packed_dir(tmp_path / "packed", GENRES, {"train": 2}, per_shard=3, clip_s=4.0, corrupt_key="train0001")
    config = BenchConfig(str(tmp_path / "packed"), quick=True, progress=False)
    dropped: list[str] = []
    clips = load_clips(select_clips(config.shards, 6), config, dropped)
    usable, formats = decodable_clips(clips, config, dropped)
    assert len(usable) == 5 and sum(formats.values()) == 5
    assert len(dropped) == 1 and dropped[0].startswith("train0001: not an audio file FFmpeg can read")


def test_a_shard_shorter_than_its_index_is_an_error(tmp_path):
    from streamgenre.bench.core import BenchConfig, load_clips, select_clips
    from streamgenre.errors import ShardFormatError

    write_packed_dir(tmp_path / "packed", GENRES, {"train": 1}, per_shard=3, clip_s=4.0)
    config = BenchConfig(str(tmp_path / "packed"), quick=True, progress=False)
    clip_set = select_clips(config.shards, 3)
    clip_set.counts[0] += 1  # index.json promises a sample the shard does not hold
    with pytest.raises(ShardFormatError, match="samples read, index.json lists 4"):
        load_clips(clip_set, config, [])


def test_time_to_accuracy_reads_the_budget_and_target_from_the_history():
    from streamgenre.bench.stages import accuracy_run

    history = [
        {"elapsed_s": 10.0, "seconds": 8.0, "train_windows": 80, "val_accuracy": 0.5},
        {"elapsed_s": 20.0, "seconds": 8.0, "train_windows": 80, "val_accuracy": 0.85},
        {"elapsed_s": 31.0, "seconds": 8.0, "train_windows": 80, "val_accuracy": 0.9},  # ended past the budget
    ]
    run = accuracy_run(history, "modern", "resnet", budget_s=30.0, target=0.8)
    assert (run.seconds_to_target, run.accuracy, run.final_accuracy, run.epochs, run.seconds) == (20.0, 0.85, 0.9, 3, 31.0)
    assert accuracy_run(history, "paper", "paper", budget_s=5.0, target=0.95).seconds_to_target is None


def test_time_to_accuracy_trains_each_recipe_and_model_within_the_budget(tmp_path):
    from streamgenre.bench import BenchConfig
    from streamgenre.bench.report import _accuracy_table
    from streamgenre.bench.stages import accuracy_rows

    write_packed_dir(tmp_path / "packed", GENRES, {"train": 1, "val": 1}, per_shard=2, clip_s=3.5)
    config = BenchConfig(str(tmp_path / "packed"), workers=(0,), progress=False, budget_s=1e-3, accuracy_runs=(("modern", "resnet"), ("paper", "paper")))
    rows, runs = accuracy_rows(config, tmp_path / "scratch")
    assert [(run.recipe, run.model, run.epochs) for run in runs] == [("modern", "resnet", 1), ("paper", "paper", 1)]  # the budget stops each after one epoch
    assert runs[0].train_windows == 2 * 8 and runs[1].train_windows == 2  # modern: 8 windows per clip
    assert all(row.stage == "11" and row.clips_per_s > 0 and run.seconds > 0 for row, run in zip(rows, runs, strict=True))
    assert all(run.final_accuracy is not None and run.accuracy is None for run in runs)  # no epoch ends within 1 ms
    table = "\n".join(_accuracy_table(runs))
    assert "s to val acc 0.8" in table and "| modern | resnet |" in table and "| paper | paper |" in table


def test_time_to_accuracy_needs_a_val_split(tmp_path):
    write_packed_dir(tmp_path / "packed", GENRES, {"train": 2}, per_shard=3, clip_s=4.0)
    result = CliRunner().invoke(
        app, ["bench", str(tmp_path / "packed"), "--quick", "--quiet", "--time-to-accuracy", "--budget", "1s", "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2 and "no val shards" in result.output and "Traceback" not in result.output
