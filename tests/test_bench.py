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
STAGES = {"1", "2", "3", "4", "5", "6", "7"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[object, Path]:
    """One quick bench over 2 shards x 3 clips of 4 s (a 3-s window fits), one of them garbage, shared by the tests."""
    root = tmp_path_factory.mktemp("bench")
    write_packed_dir(root / "packed", GENRES, {"train": 2}, per_shard=3, clip_s=4.0, corrupt_key="train0101")
    out = root / "out"
    result = CliRunner().invoke(app, ["bench", str(root / "packed"), "--quick", "--quiet", "--out", str(out)])
    return result, out


def test_quick_bench_succeeds_and_prints_the_table(quick_run):
    result, out = quick_run
    assert result.exit_code == 0, result.output
    assert "| stage | what |" in result.stdout and str(out / "bench.json") in result.stdout


def test_json_holds_every_stage_with_a_rate(quick_run):
    _, out = quick_run
    report = json.loads((out / "bench.json").read_text())
    rows = report["rows"]
    assert {row["stage"] for row in rows} == STAGES
    assert all(row["clips_per_s"] is None or row["clips_per_s"] > 0 for row in rows)
    assert all(row["clips_per_s"] > 0 for row in rows if row["stage"] != "7")  # only the paper may skip
    assert {row["name"].split(",")[1].strip() for row in rows if row["stage"] == "4"} == {"resample=cpu", "resample=device"}
    assert report["clip_set"]["clips"] == 6 and report["machine"]["cores"] >= 1 and report["machine"]["torch"]


def test_json_compares_memory_disk_and_first_epoch_with_the_paper(quick_run):
    _, out = quick_run
    comparisons = {c["name"]: c for c in json.loads((out / "bench.json").read_text())["comparisons"]}
    rss = [c for name, c in comparisons.items() if name.startswith("peak RSS")]  # stage 8: 1x and 4x
    assert len(rss) == 2 and all(c["streaming"] > 0 for c in rss)
    assert comparisons["MP3 folder -> end of the first epoch"]["streaming"] > 0  # stage 9
    assert comparisons["files derived from the audio, per clip (WAV + PNG)"]["streaming"] == 0


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
