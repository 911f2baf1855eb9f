"""End-to-end training on tiny packed sets: outputs, learning, resume, no intermediates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from streamgenre.checkpoint import load_checkpoint, load_for_inference
from streamgenre.errors import InputError
from streamgenre.stream import StreamConfig
from streamgenre.train import TrainConfig, train
from tests.conftest import write_packed_dir

GENRES = ["ambient", "rock"]


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_packed")
    write_packed_dir(root, GENRES, {"train": 4, "val": 1, "test": 1}, per_shard=4, clip_s=3.0)
    return root


def _config(packed: Path, out: Path, **changes) -> TrainConfig:
    stream = StreamConfig(offset_s=0.5, duration_s=2.0, batch_size=4, shuffle_buffer=8, seed=0)
    settings = {"epochs": 2, "workers": 0, "progress": False, **changes}
    return TrainConfig(shards=str(packed), out=out, stream=stream, **settings)


def _files_outside(root: Path, run: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.suffix in (".png", ".wav") and run not in p.parents}


def test_training_learns_and_writes_every_output(packed, tmp_path):
    run = tmp_path / "run"
    before = _files_outside(tmp_path.parent, run) | _files_outside(packed, run)
    result = train(_config(packed, run, epochs=10))
    assert len(result.history) == 10
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.test is not None and result.test["accuracy"] >= 0.75  # chance is 0.5
    for name in ("last.pt", "best.pt", "history.json", "history.csv", "loss.png", "accuracy.png", "confusion_matrix.png", "report.json", "report.txt"):
        assert (run / name).is_file(), name
    report = json.loads((run / "report.json").read_text())
    assert set(report["per_class"]) == set(GENRES) and report["samples"] == 4
    assert _files_outside(tmp_path.parent, run) | _files_outside(packed, run) == before  # no PNG/WAV elsewhere


def test_checkpoint_alone_rebuilds_the_model(packed, tmp_path):
    train(_config(packed, tmp_path / "run", epochs=1))
    loaded = load_for_inference(tmp_path / "run")
    bundle = load_checkpoint(tmp_path / "run" / "best.pt")
    assert loaded.labels == GENRES and loaded.stream.offset_s == 0.5 and loaded.stream.duration_s == 2.0
    waveform = torch.randn(2, 44100, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        probs = loaded.model.predict_proba(waveform)
    assert probs.shape == (2, 2) and torch.allclose(probs.sum(dim=1), torch.ones(2))
    assert bundle["epoch"] == 1 and bundle["train_config"]["seed"] == 0


def test_resume_equals_training_straight_through(packed, tmp_path):
    straight = train(_config(packed, tmp_path / "straight"))
    train(_config(packed, tmp_path / "split", epochs=1))
    resumed = train(_config(packed, tmp_path / "split", resume=True))
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [row["train_loss"] for row in resumed.history] == [row["train_loss"] for row in straight.history]


def test_existing_run_needs_resume_and_resume_needs_a_run(packed, tmp_path):
    with pytest.raises(InputError, match="--resume"):
        train(_config(packed, tmp_path / "nothing", resume=True))
    train(_config(packed, tmp_path / "once", epochs=1))
    with pytest.raises(InputError, match="already holds a run"):
        train(_config(packed, tmp_path / "once", epochs=1))


def test_too_many_undecodable_samples_stop_the_run(tmp_path):
    write_packed_dir(tmp_path / "bad", GENRES, {"train": 2}, per_shard=2, clip_s=3.0, corrupt_key="train0001")
    from streamgenre.errors import StreamgenreError

    with pytest.raises(StreamgenreError, match="failed to decode"):
        train(_config(tmp_path / "bad", tmp_path / "run", epochs=1))
