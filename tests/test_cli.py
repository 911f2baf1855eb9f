"""The command line as a user meets it: README commands, help, one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from streamgenre.cli import app

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    return [line.strip() for line in blocks[0].splitlines() + blocks[1].splitlines() if line.strip()]


def test_readme_opens_with_setup_demo_and_test_commands_that_ci_runs():
    setup, demo, tests = _readme_commands()[:3]
    assert "torch==2.13.0" in setup and demo.endswith("streamgenre demo") and "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert setup in ci and tests.split("#")[0].strip() in ci


def test_every_command_has_help():
    for command in ("pack", "info", "train", "demo"):
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_train_on_a_missing_folder_is_one_line_without_traceback(tmp_path):
    result = CliRunner().invoke(app, ["train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert result.output.startswith("error:") and result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_bad_duration_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["train", str(tmp_path), "--offset", "soon"])
    assert result.exit_code == 2 and "'soon' is not a duration" in result.output


def test_an_unexpected_error_is_one_line_with_a_hint_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    import streamgenre.shards

    def broken(directory):
        raise RuntimeError("something nobody expected\nsecond line")

    monkeypatch.setattr(streamgenre.shards, "read_index", broken)
    result = CliRunner().invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "Traceback" not in result.output
    assert result.output.startswith("error: unexpected RuntimeError: something nobody expected second line")
    assert "streamgenre --debug info" in result.output
    result = CliRunner().invoke(app, ["--debug", "info", str(tmp_path)])
    assert isinstance(result.exception, RuntimeError)
    assert "--debug" in CliRunner().invoke(app, ["--help"]).output


def test_negative_workers_is_one_line(tmp_path):
    from tests.conftest import write_packed_dir

    write_packed_dir(tmp_path / "packed", ["ambient", "rock"], {"train": 2}, per_shard=1, clip_s=1.0)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "packed"), "--out", str(tmp_path / "run"), "--workers", "-1", "--quiet"])
    assert result.exit_code == 2 and result.output.startswith("error:") and "--workers must be >= 0" in result.output
    assert result.output.count("\n") == 1
