"""Checkpoints: loaded without running code, old formats still load, damaged ones are one clear error."""

from __future__ import annotations

import random
from dataclasses import asdict

import numpy as np
import pytest
import torch

from streamgenre.checkpoint import load_for_inference
from streamgenre.errors import CheckpointError
from streamgenre.frontend import FrontendConfig
from streamgenre.model import GenreClassifier, ModelConfig


class _RunsCode:
    """Unpickling this calls a function of the attacker's choice (here: writes a file)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"format": 2, "payload": _RunsCode(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="could run code"):
        load_for_inference(tmp_path / "evil.pt")
    assert not marker.exists()


def test_format_1_checkpoints_with_numpy_rng_state_still_load(tmp_path):
    """What the first release wrote: the loader's config under "stream", numpy and random states."""
    model = GenreClassifier(ModelConfig(n_classes=3))
    frontend = asdict(FrontendConfig())
    stream = {
        "offset_s": 15.0,
        "duration_s": 3.0,
        "sample_rate": 22050,
        "batch_size": 25,
        "shuffle_buffer": 64,
        "shuffle_shards": True,
        "seed": 0,
        "resample": "device",
        "whole_clips": False,
    }
    bundle = {
        "format": 1,
        "version": "0.1.0",
        "model_config": {"n_classes": 3, "dropout": 0.5, "frontend": frontend},
        "labels": ["a", "b", "c"],
        "stream": stream,
        "model": {key: value.contiguous() for key, value in model.state_dict().items()},
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()},
        "train_config": {"shards": "/data/shards", "seed": 0},
    }
    torch.save(bundle, tmp_path / "old.pt")
    loaded = load_for_inference(tmp_path / "old.pt")
    assert loaded.labels == ["a", "b", "c"] and loaded.spec.window_s == 3.0 and loaded.spec.offset_s == 15.0 and loaded.shards == "/data/shards"
    assert loaded.model.config.name == "paper"
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(torch.ones(1, 22050)), model.eval()(torch.ones(1, 22050)))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all\n", bytes(range(256)) * 40], ids=["empty", "text", "random bytes"])
def test_damaged_checkpoints_are_one_clear_error(tmp_path, content):
    (tmp_path / "bad.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_for_inference(tmp_path / "bad.pt")


def test_weights_that_do_not_fit_their_config_are_refused(tmp_path):
    model = GenreClassifier(ModelConfig(n_classes=3))
    bundle = {
        "format": 2,
        "model_config": ModelConfig(n_classes=4).to_dict(),
        "model": model.state_dict(),
        "spec": {"labels": ["a", "b", "c", "d"], "window_s": 3.0, "sample_rate": 22050, "resample": "device", "offset_s": None},
    }
    torch.save(bundle, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_for_inference(tmp_path / "mismatch.pt")


def _saved_model(tmp_path):
    from streamgenre.checkpoint import InferenceSpec, make_bundle, save_checkpoint

    model = GenreClassifier(ModelConfig(n_classes=2, frontend=FrontendConfig()))
    save_checkpoint(tmp_path / "best.pt", make_bundle(model, InferenceSpec(["a", "b"], 3.0, 22050, "device", 15.0)))
    return tmp_path / "best.pt"


def test_weights_damaged_inside_a_tensor_are_refused(tmp_path):
    path = _saved_model(tmp_path)
    data = bytearray(path.read_bytes())
    weight = data.find(torch.load(path, weights_only=True)["model"]["cnn.classifier.2.weight"].numpy().tobytes()[:64])
    assert weight > 0  # zip members are stored uncompressed: the tensor's bytes are there as they are
    data[weight : weight + 4096] = bytes(b ^ 0xFF for b in data[weight : weight + 4096])
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="best.pt is damaged: its weights do not match the checksum saved with them"):
        load_for_inference(path)


def test_a_checkpoint_without_a_checksum_still_loads(tmp_path):
    path = _saved_model(tmp_path)
    bundle = torch.load(path, weights_only=True)
    del bundle["model_sha256"]  # as versions before the checksum wrote them
    torch.save(bundle, path)
    assert load_for_inference(path).labels == ["a", "b"]


@pytest.mark.parametrize("content", [bytes(random.Random(0).randbytes(5000)), b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x00" * 50], ids=["random", "mp3"])
def test_a_file_that_is_no_checkpoint_says_so_not_that_it_could_run_code(tmp_path, content):
    (tmp_path / "song.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match=r"song.pt is not a checkpoint \(not a file torch.save wrote\)"):
        load_for_inference(tmp_path / "song.pt")
