"""`streamgenre demo` end to end at a tiny size: corpus -> pack -> train -> report."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from streamgenre.cli import app


@pytest.mark.slow
def test_demo_runs_end_to_end_and_reuses_its_corpus(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--clips-per-genre", "5", "--clip-length", "4s", "--epochs", "1", "--workers", "2", "--quiet"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "test: whole-clip accuracy" in first.output
    index = json.loads((out / "shards" / "index.json").read_text())
    assert index["labels"] == ["ambient", "electronic", "folk", "hiphop", "rock"]
    assert sum(entry["count"] for entry in index["shards"]) == 25
    assert (out / "run" / "confusion_matrix.png").is_file() and (out / "run" / "report.json").is_file()
    stamp = (out / "corpus" / "rock" / "rock-0000.mp3").stat().st_mtime_ns
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert (out / "corpus" / "rock" / "rock-0000.mp3").stat().st_mtime_ns == stamp  # corpus reused


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 2
    assert result.output.startswith("error:") and "Traceback" not in result.output
    assert (tmp_path / "mine.txt").read_text() == "user data"


def test_negative_workers_fail_before_any_synthesis(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--workers", "-1"])
    assert result.exit_code == 2 and "--workers must be >= 0" in result.output and not (tmp_path / "demo").exists()


def test_epochs_0_fails_before_any_synthesis(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--epochs", "0"])
    assert result.exit_code == 2 and result.output.strip() == "error: --epochs must be >= 1, got 0" and not (tmp_path / "demo").exists()


def test_an_out_that_is_a_file_is_one_line_naming_it_not_an_unexpected_error(tmp_path):
    (tmp_path / "song.mp3").write_bytes(b"not a folder")
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "song.mp3"), "--quiet"])
    assert result.exit_code == 2
    assert result.output == f"error: cannot write --out {tmp_path / 'song.mp3'}: {tmp_path / 'song.mp3'} is a file, not a folder\n"
