"""`streamgenre predict` on good, broken and listed files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import streamgenre.predict
from streamgenre.audio import decode
from streamgenre.checkpoint import InferenceSpec, LoadedModel
from streamgenre.cli import app
from streamgenre.errors import InputError
from streamgenre.predict import predict_files, stream_windows
from streamgenre.synth import encode_mp3, make_clip
from streamgenre.windows import WindowPlan
from tests.conftest import write_broken_files


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


# -- streaming: the same windows as a whole-file decode, in bounded memory -----------------------
class _StubModel(torch.nn.Module):
    """Logits from each window's mean and energy; records every batch size it is given."""

    def __init__(self):
        super().__init__()
        self.batches: list[int] = []

    def forward(self, waveforms, sample_rate):
        self.batches.append(len(waveforms))
        return torch.stack([waveforms.mean(dim=1), waveforms.pow(2).mean(dim=1)], dim=1)


def _stub(resample: str = "device") -> LoadedModel:
    return LoadedModel(_StubModel(), InferenceSpec(["quiet", "loud"], 3.0, 16000, resample, None), Path("stub.pt"), None)


@pytest.mark.parametrize("resample", ["device", "cpu"])
@pytest.mark.parametrize(
    "plan",
    [
        WindowPlan(2.0, hop_s=2.0),
        WindowPlan(1.5, hop_s=0.7),
        WindowPlan(3.0, hop_s=5.0),
        WindowPlan(2.0, windows=5),
        WindowPlan(2.0, windows=1),
        WindowPlan(9.0, hop_s=2.0),
        WindowPlan(9.0, windows=3),
        WindowPlan(2.0),
    ],
)
def test_streamed_windows_equal_the_windows_of_a_whole_decode(audio_dir, plan, resample):
    path = audio_dir / "nested" / "tune.mp3"  # 3 s of 44.1 kHz stereo
    loaded = _stub(resample)
    audio = decode(path.read_bytes(), rate=None if resample == "device" else 16000)
    expected = plan.cut(audio.samples, audio.sample_rate)
    streamed = list(stream_windows(path, loaded, plan))
    assert {r for _, r in streamed} == {audio.sample_rate} and len(streamed) == len(expected)
    torch.testing.assert_close(torch.stack([w for w, _ in streamed]), expected, atol=1e-5, rtol=0)


def test_the_model_never_sees_more_than_a_chunk_of_windows(audio_dir, monkeypatch):
    monkeypatch.setattr(streamgenre.windows, "WINDOWS_PER_FORWARD", 3)
    loaded = _stub()
    paths = [audio_dir / "song.mp3", audio_dir / "nested" / "tune.mp3", audio_dir / "song.mp3"]
    results = list(predict_files(loaded, paths, WindowPlan(1.0, hop_s=0.5), top=2, device=torch.device("cpu")))
    assert [r.windows for r in results] == [9, 5, 9] and max(loaded.model.batches) <= 3
    assert sum(loaded.model.batches) == 23


def test_memory_does_not_grow_with_the_file(tmp_path):
    import tracemalloc
    import wave

    rate, minutes = 8000, 10
    path = tmp_path / "long.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        tone = (np.sin(np.arange(rate * 60) * 0.05) * 8000).astype("<i2").tobytes()
        for _ in range(minutes):
            out.writeframes(tone)
    whole_bytes = rate * 60 * minutes * 4  # the file as float32: 19.2 MB
    tracemalloc.start()
    try:
        (result,) = predict_files(_stub(), [path], WindowPlan(1.0, hop_s=1.0), top=1, device=torch.device("cpu"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.error is None and result.windows == 60 * minutes
    assert peak < whole_bytes / 8, f"peak {peak / 1e6:.1f} MB for a {whole_bytes / 1e6:.1f} MB waveform"


def test_a_damaged_file_is_an_error_line_not_a_short_clip(run, audio_dir, tmp_path, chord_mp3):
    from tests.test_audio import damage_middle

    (tmp_path / "damaged.mp3").write_bytes(damage_middle(chord_mp3))
    result = CliRunner().invoke(app, ["predict", str(run), str(tmp_path / "damaged.mp3"), str(audio_dir / "song.mp3")])
    assert result.exit_code == 1
    assert f"error: {tmp_path / 'damaged.mp3'}: damaged audio after " in result.stderr and "song.mp3  (3 windows)" in result.stdout


def test_a_non_audio_file_says_so_with_its_path(run, tmp_path):
    (tmp_path / "notes.mp3").write_text("not audio")
    result = CliRunner().invoke(app, ["predict", str(run), str(tmp_path / "notes.mp3")])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'notes.mp3'}: not an audio file FFmpeg can read (invalid data found when processing input)"


def test_a_broken_link_in_a_folder_gets_an_error_line(tmp_path):
    from streamgenre.predict import expand_inputs

    (tmp_path / "gone.mp3").symlink_to(tmp_path / "nowhere.mp3")
    (tmp_path / "notes.txt").write_text("not audio")
    assert expand_inputs([str(tmp_path)]) == [tmp_path / "gone.mp3"]


def test_top_below_one_and_an_unknown_device_are_one_line(run, audio_dir):
    for options, message in ([["--top", "-1"], "--top must be >= 1"], [["--device", "tpu"], "--device must be"]):
        result = CliRunner().invoke(app, ["predict", str(run), str(audio_dir / "song.mp3"), *options])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


# -- the pretrained tagger: `predict musicnn` -------------------------------------------------------
def test_the_tagger_gives_a_real_clip_the_backbones_50_tag_probabilities(shared_data):
    from streamgenre.checkpoint import load_for_inference
    from streamgenre.frontend import MelFrontend
    from streamgenre.models.musicnn import MSD_TAGS, MUSICNN_FRONTEND, pretrained_backbone

    clip = sorted(shared_data.glob("*/*.mp3"))[0]
    (result,) = predict_files(load_for_inference("musicnn"), [clip], WindowPlan(3.0, hop_s=3.0), top=50, device=torch.device("cpu"))
    got = dict(result.top)
    audio = decode(clip.read_bytes())  # at the file's own rate, as predict hears it
    windows = WindowPlan(3.0, hop_s=3.0).cut(audio.samples, audio.sample_rate)
    with torch.inference_mode():
        mel = MelFrontend(MUSICNN_FRONTEND)(windows, audio.sample_rate)  # (windows, 1, 96, frames)
        expected = torch.sigmoid(pretrained_backbone(fold=False).eval()(mel).logits).mean(dim=0)  # (50,)
    assert result.windows == len(windows) and sorted(got) == sorted(MSD_TAGS)
    assert max(abs(got[tag] - float(p)) for tag, p in zip(MSD_TAGS, expected)) < 1e-5
    assert sum(got.values()) != pytest.approx(1.0)  # independent tags, not a softmax


def test_predict_musicnn_prints_the_top_tags_and_every_tag_as_json(audio_dir):
    from streamgenre.models.musicnn import MSD_TAGS

    song = str(audio_dir / "song.mp3")
    table = CliRunner().invoke(app, ["predict", "musicnn", song, "--top", "4"])
    assert table.exit_code == 0, table.output
    assert table.stdout.count("%") == 4 and all(line.split()[0] in MSD_TAGS for line in table.stdout.splitlines()[1:])
    (row,) = [json.loads(line) for line in CliRunner().invoke(app, ["predict", "musicnn", song, "--json"]).stdout.splitlines()]
    assert sorted(item["genre"] for item in row["top"]) == sorted(MSD_TAGS)
    majority = CliRunner().invoke(app, ["predict", "musicnn", song, "--vote", "majority"])
    assert majority.exit_code == 2 and majority.output.strip().splitlines() == [
        "error: --vote majority: a tagger's tags are independent, not one choice per window; use --vote mean"
    ]


def test_a_run_folder_called_musicnn_is_still_the_run(run, audio_dir, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(run, tmp_path / "musicnn")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["predict", "musicnn", str(audio_dir / "song.mp3"), "--json"])
    assert result.exit_code == 0, result.output
    assert {item["genre"] for item in json.loads(result.stdout)["top"]} == {"ambient", "rock"}


# -- one bad file is one error line, whatever it is --------------------------------------------
def random_mp3s(folder: Path, count: int) -> list[Path]:
    """Files of seeded random bytes named .mp3; FFmpeg opens about half as an MP3 stream at 0 Hz."""
    import random

    rng = random.Random(0)
    paths = []
    for number in range(count):
        paths.append(folder / f"junk{number:02d}.mp3")
        paths[-1].write_bytes(rng.randbytes(100_000))
    return paths


def test_random_bytes_named_mp3_are_one_error_line_each_and_cost_no_prediction(run, audio_dir, tmp_path):
    junk = random_mp3s(tmp_path, 6)
    assert any(_opens_at_0_hz(path) for path in junk)  # the trap: a stream that claims to be audio, at 0 Hz
    songs = [str(audio_dir / "song.mp3")] * 3
    result = CliRunner().invoke(app, ["predict", str(run), songs[0], *map(str, junk), *songs[1:]])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stdout.count("song.mp3  (3 windows)") == 3
    errors = [line for line in result.stderr.splitlines() if line]
    assert len(errors) == 6 and all(line.startswith(f"error: {tmp_path / 'junk'}") for line in errors)
    assert "0 Hz" in result.stderr and "unexpected" not in result.stderr


def _opens_at_0_hz(path: Path) -> bool:
    import av

    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio) and container.streams.audio[0].codec_context.sample_rate == 0
    except av.FFmpegError:
        return False


def test_an_unexpected_failure_of_one_file_is_its_error_line(audio_dir, monkeypatch):
    real = streamgenre.predict.stream_windows

    def odd(path, loaded, plan):
        if path.name == "tune.mp3":
            raise ZeroDivisionError("division by zero")
        return real(path, loaded, plan)

    monkeypatch.setattr(streamgenre.predict, "stream_windows", odd)
    paths = [audio_dir / "song.mp3", audio_dir / "nested" / "tune.mp3", audio_dir / "song.mp3"]
    results = list(predict_files(_stub(), paths, WindowPlan(1.0, hop_s=0.5), top=1, device=torch.device("cpu")))
    assert [r.error is None for r in results] == [True, False, True]
    assert results[1].error == "cannot decode it: unexpected ZeroDivisionError: division by zero"


def test_queued_predictions_are_flushed_when_the_run_stops(audio_dir, monkeypatch):
    real = streamgenre.predict.stream_windows

    def interrupted(path, loaded, plan):
        if path.name == "tune.mp3":
            raise KeyboardInterrupt
        return real(path, loaded, plan)

    monkeypatch.setattr(streamgenre.predict, "stream_windows", interrupted)
    paths = [audio_dir / "song.mp3", audio_dir / "song.mp3", audio_dir / "nested" / "tune.mp3"]
    results = []
    with pytest.raises(KeyboardInterrupt):
        results.extend(predict_files(_stub(), paths, WindowPlan(1.0, hop_s=0.5), top=1, device=torch.device("cpu")))
    assert [r.windows for r in results] == [9, 9]  # both queued files were heard before the interrupt went on


def test_a_fifo_is_an_error_line_not_a_hang(run, audio_dir, tmp_path):
    import os
    import subprocess
    import sys

    os.mkfifo(tmp_path / "pipe.mp3")
    command = [sys.executable, "-m", "streamgenre", "predict", str(run), str(tmp_path / "pipe.mp3"), str(audio_dir / "song.mp3")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)  # the timeout only guards against the hang
    assert result.returncode == 1 and "song.mp3  (3 windows)" in result.stdout
    assert result.stderr.strip() == f"error: {tmp_path / 'pipe.mp3'}: not a regular file (a FIFO): only regular files are read"


def test_windows_0_names_the_windows_option(run, audio_dir):
    result = CliRunner().invoke(app, ["predict", str(run), str(audio_dir / "song.mp3"), "--windows", "0"])
    assert result.exit_code == 2 and result.output.strip() == "error: --windows must be >= 1, got 0"


def test_one_window_is_counted_in_the_singular(run, audio_dir):
    result = CliRunner().invoke(app, ["predict", str(run), str(audio_dir / "song.mp3"), "--windows", "1"])
    assert result.exit_code == 0, result.output
    assert f"{audio_dir / 'song.mp3'}  (1 window)\n" in result.stdout


def test_a_run_with_windows_shorter_than_the_finest_hop_hears_the_file_window_after_window(run, audio_dir, tmp_path):
    """No --hop given: the hop is the run's own 0.05-s window, which is not the user's --hop to refuse."""
    bundle = torch.load(run / "best.pt", weights_only=True)
    bundle["spec"]["window_s"] = 0.05
    torch.save(bundle, tmp_path / "short-windows.pt")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "short-windows.pt"), str(audio_dir / "song.mp3")])
    assert result.exit_code == 0, result.output
    windows = int(re.search(r"song\.mp3  \((\d+) windows\)", result.stdout).group(1))
    assert 100 <= windows <= 102  # 5 s (and the decoder's padding) in 0.05-s windows
    assert WindowPlan(0.05, hop_s=0.05).hop_s == 0.05
    with pytest.raises(InputError, match=r"^--hop must be at least 0.1 s, got 0.05 s$"):
        WindowPlan(2.0, hop_s=0.05)


def test_a_checkpoint_from_a_newer_streamgenre_names_itself_and_its_version(run, audio_dir, tmp_path):
    bundle = torch.load(run / "best.pt", weights_only=True)
    bundle["spec"]["loudness"] = -14.0  # a setting a later version might save
    bundle["version"] = "9.9.0"
    torch.save(bundle, tmp_path / "newer.pt")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "newer.pt"), str(audio_dir / "song.mp3")])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith(f"error: {tmp_path / 'newer.pt'}: a setting saved in it by streamgenre 9.9.0 (not given on this command line)")
    assert "unknown keys ['loudness']" in result.output and "use the streamgenre that saved it" in result.output
