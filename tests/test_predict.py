"""`streamgenre predict` on good, broken and listed files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamgenre.cli import app
from streamgenre.synth import encode_mp3, make_clip
from streamgenre.train import train
from tests.conftest import tiny_train_config, write_broken_files, write_packed_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("predict")
    write_packed_dir(root / "packed", ["ambient", "rock"], {"train": 2}, per_shard=4, clip_s=3.0)
    train(tiny_train_config(root / "packed", root / "run", epochs=1))
    return root / "run"


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("audio")
    (folder / "nested").mkdir()
    (folder / "song.mp3").write_bytes(encode_mp3(make_clip("rock", 7, 5.0), 22050))
    (folder / "nested" / "tune.mp3").write_bytes(encode_mp3(make_clip("ambient", 8, 3.0, 44100), 44100, channels=2))
    (folder / "notes.txt").write_text("not audio, and not an audio suffix either")
    return folder


def test_good_and_broken_file_give_one_result_one_error_and_exit_1(run, audio_dir, tmp_path):
    broken = write_broken_files(tmp_path, b"")["text"]
    result = CliRunner().invoke(app, ["predict", str(run), str(audio_dir / "song.mp3"), str(broken)])
    assert result.exit_code == 1
    assert f"{audio_dir / 'song.mp3'}  (3 windows)" in result.stdout  # 5 s heard as 2-s windows every 2 s
    assert result.stdout.count("%") == 2  # top 3 of 2 genres
    errors = [line for line in result.stderr.splitlines() if line]
    assert len(errors) == 1 and errors[0].startswith(f"error: {broken}:")


def test_json_lines_parse_with_sorted_probabilities(run, audio_dir):
    result = CliRunner().invoke(app, ["predict", str(run), str(audio_dir), "--json", "--top", "2", "--windows", "4"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(row["path"]).name for row in rows] == ["tune.mp3", "song.mp3"]
    for row in rows:
        probabilities = [item["probability"] for item in row["top"]]
        assert row["windows"] == 4 and probabilities == sorted(probabilities, reverse=True)
        assert 0.999 <= sum(probabilities) <= 1.0 + 1e-6


def test_dash_reads_paths_from_stdin(run, audio_dir):
    listing = f"{audio_dir / 'song.mp3'}\n{audio_dir / 'nested' / 'tune.mp3'}\n"
    result = CliRunner().invoke(app, ["predict", str(run), "-", "--json"], input=listing)
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2


def test_missing_checkpoint_is_one_clear_line(tmp_path, audio_dir):
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "nothing.pt"), str(audio_dir)])
    assert result.exit_code == 2 and result.output.startswith("error:") and "Traceback" not in result.output
