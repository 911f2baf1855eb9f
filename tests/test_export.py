"""`streamgenre export`: the ONNX and TorchScript files reproduce PyTorch's probabilities."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import streamgenre.export as export_module
from streamgenre.audio import decode
from streamgenre.checkpoint import InferenceSpec, LoadedModel, load_for_inference
from streamgenre.cli import app
from streamgenre.evaluate import WindowPlan
from streamgenre.export import TOLERANCE, load_exported
from streamgenre.synth import encode_mp3, make_clip

README = Path(__file__).resolve().parents[1] / "README.md"
GENRES = ["ambient", "rock"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """Two MP3s: a 22.05 kHz mono one and a 44.1 kHz stereo one."""
    folder = tmp_path_factory.mktemp("clips")
    (folder / "rock.mp3").write_bytes(encode_mp3(make_clip("rock", 11, 7.0), 22050))
    (folder / "ambient.mp3").write_bytes(encode_mp3(make_clip("ambient", 12, 5.0, 44100), 44100, channels=2))
    return [folder / "rock.mp3", folder / "ambient.mp3"]


def _windows(paths: list[Path], rate: int, duration_s: float = 2.0) -> torch.Tensor:
    plan = WindowPlan(duration_s=duration_s, hop_s=duration_s)
    return torch.cat([plan.cut(decode(path.read_bytes(), rate=rate).samples, rate) for path in paths])


def _pytorch(run: Path, windows: torch.Tensor, rate: int) -> np.ndarray:
    loaded = load_for_inference(run)
    with torch.inference_mode():
        return loaded.model.predict_proba(windows, sample_rate=rate).numpy()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_file_matches_pytorch_on_clips_with_free_batch_and_length(fmt, run, clips, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    out = tmp_path / f"model.{fmt}"
    result = CliRunner().invoke(app, ["export", str(run), "--format", fmt, "--out", str(out), "--check", str(clips[0])])
    assert result.exit_code == 0, result.output
    assert re.search(r"max \|p - p_pytorch\| = \S+ \(tolerance 1e-04\)", result.stdout)
    run_file, metadata = load_exported(out, fmt)
    assert json.loads(metadata["labels"]) == GENRES
    assert (metadata["sample_rate"], metadata["window_seconds"], metadata["window_samples"]) == ("22050", "2.0", "44100")
    windows = _windows(clips, 22050)  # 4 + 3 windows of 2 s
    assert len(windows) == 7
    expected = _pytorch(run, windows, 22050)
    got = run_file(windows.numpy())
    assert got.shape == (7, 2) and np.allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(got - expected).max() <= TOLERANCE
    odd = windows[:3, :30001]  # another batch size and a length it was not traced with
    assert np.abs(run_file(odd.numpy()) - _pytorch(run, odd, 22050)).max() <= TOLERANCE


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_sample_rate_option_builds_the_resampler_into_the_file(run, clips, tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    out = tmp_path / f"model44k.{fmt}"
    result = CliRunner().invoke(app, ["export", str(run), "--format", fmt, "--out", str(out), "--sample-rate", "44100"])
    assert result.exit_code == 0, result.output
    run_file, metadata = load_exported(out, fmt)
    assert (metadata["sample_rate"], metadata["window_samples"]) == ("44100", "88200")
    windows = _windows(clips, 44100)
    assert np.abs(run_file(windows.numpy()) - _pytorch(run, windows, 44100)).max() <= TOLERANCE


def test_exported_file_matches_pytorch_on_real_clips(run, shared_data, tmp_path):
    pytest.importorskip("onnxruntime")
    paths = sorted(shared_data.glob("*/*.mp3"))[::60][:2]
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(out), *[f"--check={path}" for path in paths]])
    assert result.exit_code == 0, result.output
    windows = _windows(paths, 22050, 3.0)[::3]  # every third 3-s window of the two 30-s clips
    got = load_exported(out, "onnx")[0](windows.numpy())
    assert np.abs(got - _pytorch(run, windows, 22050)).max() <= TOLERANCE


def test_a_failed_check_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "TOLERANCE", -1.0)  # nothing can pass
    loaded = LoadedModel(_OtherArchitecture().eval(), InferenceSpec(["a", "b", "c"], 1.0, 22050, "device", 15.0), tmp_path / "x.pt", None)
    with pytest.raises(export_module.ExportCheckError, match="not written"):
        export_module.export_run(loaded, tmp_path / "out" / "model.pt", "torchscript")
    assert list((tmp_path / "out").iterdir()) == []


def test_missing_onnxruntime_names_the_extra_in_one_line(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert re.fullmatch(r"error: ONNX export needs onnx and onnxruntime \((onnx|onnxruntime) is missing\): pip install 'streamgenre\[export\]'", line)


def test_bad_format_and_missing_run_are_one_line(run, tmp_path):
    for args in (["export", str(run), "--format", "tflite"], ["export", str(tmp_path / "nothing")], ["export", str(run), "--sample-rate", "0"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and result.output.startswith("error:") and len(result.output.strip().splitlines()) == 1


def test_readme_example_runs_without_streamgenre(run, clips, tmp_path):
    pytest.importorskip("onnxruntime")
    section = README.read_text().split("## Exporting a run")[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    assert "streamgenre" not in code and len(code.strip().splitlines()) <= 12
    assert CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "model.onnx")]).exit_code == 0
    (tmp_path / "song.mp3").write_bytes(clips[0].read_bytes())
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    genre, probability = done.stdout.split()
    assert genre in GENRES and 0.5 <= float(probability) <= 1.0


class _OtherArchitecture(torch.nn.Module):
    """Not the paper's CNN: no mel, no 288x432 resize; only the `model(waveform, sample_rate)` contract."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 4, kernel_size=64, stride=32)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        features = torch.relu(self.conv(waveform.unsqueeze(1))).mean(dim=-1)  # (batch, 4), any length
        return self.head(features)


@pytest.mark.parametrize(("name", "claim"), [("paper", "about ([0-9.]+) MB with the paper CNN"), ("resnet", "and ([0-9.]+) MB with the ResNet")])
def test_readme_states_the_exported_file_size(name, claim, tmp_path):
    from streamgenre.model import GenreClassifier, ModelConfig

    model = GenreClassifier(ModelConfig(n_classes=5, name=name)).eval()
    loaded = LoadedModel(model, InferenceSpec(list("abcde"), 3.0, 22050, "device", 15.0), tmp_path / "x.pt", None)
    size_mb = export_module.export_run(loaded, tmp_path / "model.pt", "torchscript").size_bytes / 1e6
    stated = float(re.search(claim, README.read_text()).group(1))
    assert abs(size_mb - stated) <= 0.1 * stated, f"{name}: the README says {stated} MB, the export is {size_mb:.2f} MB"


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_any_model_with_the_inference_contract_exports(fmt, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    loaded = LoadedModel(_OtherArchitecture().eval(), InferenceSpec(["a", "b", "c"], 1.0, 22050, "device", 15.0), tmp_path / "x.pt", None)
    result = export_module.export_run(loaded, tmp_path / "other", fmt)
    assert result.check.max_abs_diff <= TOLERANCE and result.metadata["window_samples"] == "22050"
    waveforms = torch.randn(5, 12345)
    with torch.inference_mode():
        expected = torch.softmax(loaded.model(waveforms), dim=1).numpy()
    assert np.abs(load_exported(result.path, fmt)[0](waveforms.numpy()) - expected).max() <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_musicnn_exports_with_its_own_frontend(fmt, tmp_path):
    """The pretrained model, its 16-kHz log-mel frontend and folded filters inside, matches PyTorch."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    from streamgenre.model import GenreClassifier, ModelConfig

    torch.manual_seed(0)
    model = GenreClassifier(ModelConfig(n_classes=3, name="musicnn")).eval()
    frontend = model.config.frontend
    loaded = LoadedModel(model, InferenceSpec(["a", "b", "c"], frontend.window_s, frontend.sample_rate, "device", None), tmp_path / "m.pt", None)
    result = export_module.export_run(loaded, tmp_path / "musicnn", fmt)
    assert result.check.max_abs_diff <= TOLERANCE and result.metadata["sample_rate"] == "16000" and result.metadata["window_samples"] == "48000"


@pytest.mark.slow
def test_the_tagger_exports_50_tag_sigmoids_with_the_tag_names(clips, tmp_path):
    from streamgenre.export import export_run
    from streamgenre.models.musicnn import MSD_TAGS

    loaded = load_for_inference("musicnn")
    result = export_run(loaded, tmp_path / "tagger.pt", "torchscript")
    run_file, metadata = load_exported(result.path, "torchscript")
    assert json.loads(metadata["labels"]) == list(MSD_TAGS) and "sigmoid" in metadata["output"]
    windows = _windows(clips, 16000, duration_s=3.0)
    with torch.inference_mode():
        expected = torch.sigmoid(loaded.model(windows, sample_rate=16000)).numpy()
    got = run_file(windows.numpy())
    assert got.shape == (len(windows), 50) and np.abs(got - expected).max() <= TOLERANCE
    assert not np.allclose(got.sum(axis=1), 1.0, atol=0.1)


def _other(tmp_path: Path) -> LoadedModel:
    torch.manual_seed(0)
    return LoadedModel(_OtherArchitecture().eval(), InferenceSpec(["a", "b", "c"], 1.0, 22050, "device", 15.0), tmp_path / "x.pt", None)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_nan_probabilities_fail_the_check(fmt, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    loaded = _other(tmp_path)
    with torch.no_grad():
        loaded.model.head.weight[0, 0] = float("nan")
    with pytest.raises(export_module.ExportCheckError, match="NaN probabilities.*not written"):
        export_module.export_run(loaded, tmp_path / "out" / "m.pt", fmt)
    assert list((tmp_path / "out").iterdir()) == []


def test_an_absurd_sample_rate_is_refused_at_once(tmp_path):
    for rate in (1, 10_000_000):
        with pytest.raises(export_module.InputError, match=f"--sample-rate must be between 1000 and 384000 Hz, got {rate}"):
            export_module.export_run(_other(tmp_path), tmp_path / "m.pt", "torchscript", sample_rate=rate)


def test_a_full_disk_is_one_line_and_leaves_nothing(run, tmp_path):
    """A file-size limit makes every write past 100 kB fail as a full disk does (EFBIG instead of ENOSPC)."""
    code = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY)); "
        "from streamgenre.cli import app; sys.argv = ['streamgenre'] + sys.argv[1:]; app()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "export", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.pt")], capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [f"error: cannot write {tmp_path / 'm.pt'}: File too large; nothing was written"]
    assert list(tmp_path.iterdir()) == []


def test_a_killed_exports_temporary_is_removed_by_the_next_export(tmp_path):
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout)
    (tmp_path / f".m.pt.{gone}-x-0123abcd.streamgenre-tmp").write_bytes(b"half a model")
    export_module.export_run(_other(tmp_path), tmp_path / "m.pt", "torchscript")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["m.pt"]


def test_a_fifo_to_check_on_is_refused_not_waited_for(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.mp3")
    with pytest.raises(export_module.InputError, match="cannot use .*pipe.mp3 to check the export: not a regular file \\(a FIFO\\)"):
        export_module.export_run(_other(tmp_path), tmp_path / "m.pt", "torchscript", check_files=[tmp_path / "pipe.mp3"])
