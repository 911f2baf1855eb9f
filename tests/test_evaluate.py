"""Whole-clip, multi-window evaluation against a hand computation, and the evaluate command."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import streamgenre.stream as stream_module
from streamgenre.audio import Window, decode, probe
from streamgenre.checkpoint import load_for_inference
from streamgenre.cli import app
from streamgenre.evaluate import EvaluateConfig, evaluate_run, predict_clips
from streamgenre.stream import StreamConfig, iterate_epoch, make_loader, open_split
from streamgenre.train import train
from streamgenre.windows import WindowPlan, combine_windows, window_starts
from tests.conftest import tiny_train_config, write_packed_dir

GENRES = ["ambient", "rock"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    write_packed_dir(root / "packed", GENRES, {"train": 2, "val": 1, "test": 1}, per_shard=4, clip_s=6.0)
    train(tiny_train_config(root / "packed", root / "run"))
    return root / "packed", root / "run"


def _test_clips(packed: Path) -> dict[str, tuple[bytes, int]]:
    clips = {}
    with tarfile.open(packed / "test-000000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    for name, payload in members.items():
        if name.endswith(".json"):
            key = name[: -len(".json")]
            clips[key] = (members[f"{key}.mp3"], GENRES.index(json.loads(payload)["genre"]))
    return clips


def test_multi_window_equals_averaging_single_windows_by_hand(trained):
    packed, run = trained
    loaded = load_for_inference(run)
    plan = WindowPlan(duration_s=2.0, windows=3)
    config = StreamConfig(duration_s=2.0, shuffle_buffer=0, shuffle_shards=False, whole_clips=True)
    loader = make_loader(open_split(str(packed), "test"), config, workers=0)
    predicted = predict_clips(loaded.model, iterate_epoch(loader, 0), plan, torch.device("cpu"), 2)
    for key, (data, label) in _test_clips(packed).items():
        length = round(probe(data).duration_s * 22050)
        starts = window_starts(length, 44100, windows=3)
        windows = torch.stack([decode(data, Window(start / 22050, 2.0), 22050).samples for start in starts])
        with torch.inference_mode():
            by_hand = loaded.model.predict_proba(windows).mean(dim=0).numpy()
        row = predicted.keys.index(key)
        np.testing.assert_allclose(predicted.probs[row], by_hand, atol=1e-4)
        assert predicted.labels[row] == label


def test_each_clip_is_decoded_once_for_all_its_windows(trained, monkeypatch):
    packed, run = trained
    calls = []
    original = stream_module.decode

    def whole_files_only(data, window=None, rate=None):
        assert window is None  # a window decode here would be one decode per window
        calls.append(1)
        return original(data, window, rate)

    monkeypatch.setattr(stream_module, "decode", whole_files_only)
    result = evaluate_run(EvaluateConfig(run=run, windows=4, workers=0, out=run / "multi"))
    assert len(calls) == result.summary["samples"] == 4


def test_window_starts_cover_the_clip():
    assert window_starts(100, 40, windows=3) == [0, 30, 60]
    assert window_starts(100, 40, hop=30) == [0, 30, 60]
    assert window_starts(100, 40, hop=25) == [0, 25, 50, 60]  # the end is heard too
    assert window_starts(30, 40, windows=5) == [0, 0, 0, 0, 0]
    assert window_starts(100, 40, windows=1) == [30]


def test_majority_vote_counts_windows_while_mean_weighs_confidence():
    probs = torch.tensor([[0.6, 0.4], [0.6, 0.4], [0.0, 1.0]])
    assert torch.allclose(combine_windows(probs, "majority"), torch.tensor([2 / 3, 1 / 3]))
    assert torch.allclose(combine_windows(probs, "mean"), torch.tensor([0.4, 0.6]))


def test_evaluate_command_writes_report_and_plot(trained):
    packed, run = trained
    result = CliRunner().invoke(app, ["evaluate", str(run), "--split", "val", "--hop", "2s", "--workers", "0"])
    assert result.exit_code == 0, result.output
    report = json.loads((run / "eval-val-hop2s-mean.json").read_text())
    assert report["samples"] == 4 and report["options"]["windows"]["hop_s"] == 2.0
    assert (run / "confusion_matrix-val-hop2s-mean.png").is_file() and "macro-F1" in result.output
    single = CliRunner().invoke(app, ["evaluate", str(run), "--split", "val", "--workers", "0"])
    assert single.exit_code == 0, single.output
    assert (run / "eval-val-at0.5s.json").is_file() and (run / "eval-val-hop2s-mean.json").is_file()  # one file per mode, no clobbering


def test_evaluate_without_a_run_is_one_clear_line(tmp_path):
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "none")])
    assert result.exit_code == 2 and result.output.startswith("error:") and "Traceback" not in result.output


def test_an_unwritable_out_is_refused_before_scoring(trained, tmp_path, monkeypatch):
    import streamgenre.evaluate
    from streamgenre.errors import InputError

    monkeypatch.setattr(streamgenre.evaluate, "predict_clips", lambda *args: pytest.fail("scored before checking --out"))
    (tmp_path / "reports").write_text("a file, not a folder")
    with pytest.raises(InputError, match=r"--out .*reports is a file, not a folder"):
        evaluate_run(EvaluateConfig(run=trained[1], out=tmp_path / "reports" / "eval", workers=0, progress=False))


def test_genres_of_the_checkpoint_missing_from_the_shards_blame_the_checkpoint_not_genres(trained, tmp_path):
    from streamgenre.errors import InputError

    write_packed_dir(tmp_path / "other", ["folk", "rock"], {"test": 1}, per_shard=2, clip_s=3.0)
    with pytest.raises(InputError) as error:
        evaluate_run(EvaluateConfig(run=trained[1], shards=str(tmp_path / "other"), workers=0, progress=False))
    assert str(error.value).startswith("the checkpoint ") and "names ambient, not in the packed labels of" in str(error.value)
    assert "--genres" not in str(error.value)


def test_the_built_in_tagger_has_no_genres_to_evaluate_and_says_what_to_train(trained, monkeypatch, tmp_path):
    packed, _ = trained
    monkeypatch.chdir(tmp_path)  # no folder called musicnn here: the name is the tagger
    result = CliRunner().invoke(app, ["evaluate", "musicnn", "--shards", str(packed), "--workers", "0"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith("error: musicnn is the built-in MSD tagger: its 50 tags are not genre labels")
    assert "streamgenre train SHARDS --model musicnn" in result.output and "checkpoint" not in result.output


def test_a_bad_value_saved_in_the_checkpoint_blames_the_checkpoint_not_an_option(trained, tmp_path):
    """evaluate has no --resample: a value the loader refuses came from the checkpoint, and the message says so."""
    _, run = trained
    bundle = torch.load(run / "best.pt", weights_only=True)
    bundle["spec"]["resample"] = "gpu"
    torch.save(bundle, tmp_path / "edited.pt")
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "edited.pt"), "--workers", "0"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith(f"error: {tmp_path / 'edited.pt'}: a setting saved in it by streamgenre ")
    assert "(not given on this command line)" in result.output and "resample must be cpu or device, got 'gpu'" in result.output
    assert "--resample" not in result.output and "or train the run again" in result.output


def test_an_offset_given_past_the_clips_end_is_called_the_offset_given_and_the_clamp_names_no_option(trained, caplog):
    """evaluate has no --duration, and an --offset typed is not 'the training window'."""
    import logging

    _, run = trained
    with caplog.at_level(logging.INFO):
        result = evaluate_run(EvaluateConfig(run=run, offset_s=100.0, workers=0, progress=False))
    assert result.summary["samples"] == 4
    assert "one 2-s window at 100 s (--offset)" in caplog.text and "training window" not in caplog.text
    assert "4 of 4 clips end before the end of the 2s window at 100s: their last full window was used instead" in caplog.text
    assert "--duration" not in caplog.text


def test_negative_workers_are_refused_before_the_run_is_read(tmp_path):
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "no-such-run"), "--workers", "-1"])
    assert result.exit_code == 2 and "--workers must be >= 0" in result.output and "evaluating" not in result.output
