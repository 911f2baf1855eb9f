"""The command line as a user meets it: README commands, help, one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
import typer.main
from typer.testing import CliRunner

import streamgenre
from streamgenre.checkpoint import load_checkpoint
from streamgenre.cli import FROM_CONFIG, _config_default, app
from tests.conftest import write_packed_dir

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    return [line.strip() for line in blocks[0].splitlines() + blocks[1].splitlines() if line.strip()]


def test_readme_opens_with_setup_demo_and_test_commands_that_ci_runs():
    setup, demo, tests = _readme_commands()[:3]
    assert "torch==2.13.0" in setup and demo.endswith("streamgenre demo") and "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert setup in ci and tests.split("#")[0].strip() in ci
    assert ".venv/bin/ruff check ." in ci and ".venv/bin/ruff check ." in (ROOT / "README.md").read_text()  # the lint the README shows


def _flatten(text: str) -> str:
    """Help as one line: panel borders gone and whitespace collapsed, so wrapped help reads straight through."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_every_command_help_shows_all_its_text_and_defaults():
    group = typer.main.get_command(app)
    assert set(group.commands) == {"pack", "info", "train", "models", "evaluate", "predict", "export", "tag", "bench", "demo"}
    for name, command in group.commands.items():
        result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "100"}, prog_name="streamgenre")
        assert result.exit_code == 0, result.output
        shown = _flatten(result.output)
        assert shown.startswith(f"Usage: streamgenre {name} [OPTIONS]"), shown[:80]
        assert _flatten(command.help.split("\n\n")[0]) in shown
        for param in command.params:
            assert _flatten(param.help) in shown, f"{name}: help of {param.name} lost: {param.help!r}"
            if isinstance(param.show_default, str):
                default = _config_default(param.name) if param.show_default == FROM_CONFIG else param.show_default
                assert f"[default: ({default})]" in shown, f"{name} --{param.name}: default not shown"
        assert "[default: " not in " ".join(param.help for param in command.params)  # Rich would eat it: use show_default
        for noise in ("<bool>", "<list[", "{", " . "):
            assert noise not in shown, f"{name} --help shows {noise!r}"


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"streamgenre {streamgenre.__version__}"


def test_train_on_a_missing_folder_is_one_line_without_traceback(tmp_path):
    result = CliRunner().invoke(app, ["train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert result.output.startswith("error:") and result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_bad_duration_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["train", str(tmp_path), "--offset", "soon"])
    assert result.exit_code == 2 and "'soon' is not a duration" in result.output


def test_train_help_reads_its_defaults_from_the_configs(monkeypatch):
    """No copy in the CLI: change a recipe and the help says so; equal values across recipes show once."""
    from dataclasses import replace

    from streamgenre.recipes import MODERN, RECIPES

    monkeypatch.setitem(RECIPES, "modern", replace(MODERN, epochs=7, offset_s=12.5, windows_per_clip=1, val_windows=3))
    shown = _flatten(CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output)
    assert "Epochs. [default: (modern: 7, paper: 20, " in shown and "[default: (modern: 12.5s, paper: 15s, probe: random, " in shown
    assert "[default: (modern: 3, paper: 10, " in shown and "Seed for weights, shard order and random windows. [default: (0)]" in shown
    assert "[default: (modern: on, paper: off, " in shown and "[default: (paper)]" in shown and "[default: (resnet: 32, musicnn: 256)]" in shown
    assert "[default: (musicnn: probe, others: modern)]" in shown and "[default: (the model's own: 3s)]" in shown


def test_models_command_lists_every_model_with_its_size():
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "paper" in result.output and "resnet" in result.output and "177,736" in result.output  # the paper CNN for 8 genres


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

    write_packed_dir(tmp_path / "packed", ["ambient", "rock"], {"train": 2}, per_shard=1, clip_s=1.0)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "packed"), "--out", str(tmp_path / "run"), "--workers", "-1", "--quiet"])
    assert result.exit_code == 2 and result.output.startswith("error:") and "--workers must be >= 0" in result.output
    assert result.output.count("\n") == 1


@pytest.mark.slow
def test_resume_takes_the_runs_own_settings_and_checks_only_the_options_given(tmp_path):

    write_packed_dir(tmp_path / "packed", ["ambient", "rock"], {"train": 1}, per_shard=4, clip_s=3.0)
    first = [
        "train",
        str(tmp_path / "packed"),
        "--out",
        str(tmp_path / "run"),
        "--model",
        "resnet",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--amp",
        "--no-spec-augment",
        "--workers",
        "0",
        "--quiet",
    ]
    assert CliRunner().invoke(app, first).exit_code == 0
    resume = ["train", str(tmp_path / "packed"), "--out", str(tmp_path / "run"), "--resume", "--workers", "0", "--quiet"]
    again = CliRunner().invoke(app, resume)
    assert again.exit_code == 0, again.output  # model resnet, 1 epoch, batch 4, --amp, no masks come from the run itself
    changed = CliRunner().invoke(app, [*resume, "--lr", "0.1", "--spec-augment"])
    assert changed.exit_code == 2 and "recipe.lr 0.002 -> 0.1" in changed.output and "recipe.augment.freq_masks 0 -> 2" in changed.output
    assert "model" not in changed.output and "amp" not in changed.output
    longer = CliRunner().invoke(app, [*resume, "--epochs", "2"])
    assert longer.exit_code == 0 and "trained 2 epochs" in longer.output, longer.output
    assert load_checkpoint(tmp_path / "run" / "last.pt")["train_config"]["recipe"]["epochs"] == 2


def test_resume_blames_the_runs_saved_duration_not_the_duration_option(run, tmp_path):
    """The run's last.pt holds a window the loader refuses: `--resume` names last.pt, since nobody typed --duration."""
    import shutil

    import torch

    shutil.copytree(run, tmp_path / "run")
    bundle = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    bundle["train_config"]["duration_s"] = 0.0
    torch.save(bundle, tmp_path / "run" / "last.pt")
    result = CliRunner().invoke(app, ["train", str(run.parent / "packed"), "--out", str(tmp_path / "run"), "--resume", "--workers", "0", "--quiet"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith(f"error: {tmp_path / 'run' / 'last.pt'}: a setting saved in it by streamgenre ")
    assert "(not given on this command line)" in result.output and "must be > 0 seconds, got 0.0" in result.output


def test_resume_on_shards_without_the_runs_genres_blames_the_run_not_the_genres_option(run, tmp_path):
    import shutil

    import torch

    shutil.copytree(run, tmp_path / "run")
    bundle = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    bundle["train_config"]["genres"] = ["ambient", "rock"]  # as `train --genres ambient,rock` saves them
    torch.save(bundle, tmp_path / "run" / "last.pt")
    write_packed_dir(tmp_path / "other", ["folk", "rock"], {"train": 1}, per_shard=2, clip_s=1.0)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "other"), "--out", str(tmp_path / "run"), "--resume", "--workers", "0", "--quiet"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    last, other = tmp_path / "run" / "last.pt", tmp_path / "other"
    assert result.output == f"error: the resumed run's {last} names ambient, not in the packed labels of {other} (known: folk, rock)\n"


def test_fewer_than_two_genres_names_who_gave_them_not_n_classes(tmp_path):

    write_packed_dir(tmp_path / "two", ["ambient", "rock"], {"train": 1}, per_shard=2, clip_s=1.0)
    write_packed_dir(tmp_path / "one", ["rock"], {"train": 1}, per_shard=2, clip_s=1.0)
    chosen = CliRunner().invoke(app, ["train", str(tmp_path / "two"), "--out", str(tmp_path / "a"), "--genres", "ambient", "--quiet"])
    assert chosen.exit_code == 2 and chosen.output == "error: --genres names only ambient: a genre classifier needs at least 2 genres; name two or more\n"
    packed = CliRunner().invoke(app, ["train", str(tmp_path / "one"), "--out", str(tmp_path / "b"), "--quiet"])
    assert packed.exit_code == 2
    assert packed.output == f"error: {tmp_path / 'one'} holds only rock: a genre classifier needs at least 2 genres; pack two or more\n"


@pytest.mark.parametrize(("option", "message"), [("--mixup", "--mixup must be a finite number >= 0, got -1.0"), ("--gain", "--gain must be >= 0 dB, got -1.0")])
def test_a_negative_mixup_or_gain_names_the_option_typed(tmp_path, option, message):
    result = CliRunner().invoke(app, ["train", str(tmp_path), option, "-1"])
    assert result.exit_code == 2 and result.output == f"error: {message}\n"


def test_a_pretrained_recipe_on_the_default_model_names_the_model_and_what_to_give(tmp_path):
    """No --model typed: the message says which model is in use, not '--model paper'."""

    write_packed_dir(tmp_path / "packed", ["ambient", "rock"], {"train": 1}, per_shard=2, clip_s=1.0)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "packed"), "--out", str(tmp_path / "run"), "--recipe", "probe", "--quiet"])
    assert result.exit_code == 2
    assert result.output == "error: --recipe probe trains a pretrained backbone, which model 'paper' has not; give --model musicnn\n"


def test_a_run_without_validation_or_test_clips_says_only_what_it_did(tmp_path):
    write_packed_dir(tmp_path / "packed", ["ambient", "rock"], {"train": 1}, per_shard=4, clip_s=3.0)
    options = ["--recipe", "paper", "--epochs", "1", "--batch-size", "4", "--duration", "2s", "--offset", "0.5s", "--workers", "0", "--quiet"]
    result = CliRunner().invoke(app, ["train", str(tmp_path / "packed"), "--out", str(tmp_path / "run"), *options])
    assert result.exit_code == 0, result.output
    assert "s wall with checkpoints\n" in result.output and "validation" not in result.output.split("trained 1 epoch")[1].split("\n")[0]
