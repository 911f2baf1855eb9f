"""musicnn in PyTorch: parity with TensorFlow, its frontend against librosa, the shipped weights, the probe."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from streamgenre.errors import CheckpointError, InputError
from streamgenre.model import GenreClassifier, ModelConfig
from streamgenre.models.musicnn import MSD_TAGS, MUSICNN_FRONTEND, WEIGHTS_PATH, WEIGHTS_SHA256, pretrained_backbone, pretrained_state
from streamgenre.recipes import PROBE
from streamgenre.train import TrainConfig, build_trained_model, make_optimizer, set_learning_rate

FIXTURE = Path(__file__).parent / "fixtures" / "musicnn_msd_reference.npz"
PARITY = 1e-4  # the bound; measured 3e-6 (logits) to 9e-5 (pooled, values up to ~30)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    """TensorFlow's outputs for three mel patches (scripts/make_musicnn_fixture.py, TF 2.21, oneDNN off)."""
    with np.load(FIXTURE) as data:
        return {name: data[name] for name in data.files}


def _as_input(mel: np.ndarray) -> torch.Tensor:
    """musicnn's (batch, frames, 96) patches -> the backbone's (batch, 1, 96, frames)."""
    return torch.from_numpy(mel.astype(np.float32)).transpose(1, 2).unsqueeze(1)


@pytest.mark.parametrize("fold", [False, True])
def test_backbone_matches_tensorflow_on_the_reference_mels(reference, fold):
    backbone = pretrained_backbone(fold=fold).eval()
    with torch.inference_mode():
        outputs = backbone(_as_input(reference["mel"]))
    for name in ("logits", "penultimate", "pooled"):
        assert np.abs(getattr(outputs, name).numpy() - reference[name]).max() < PARITY, name
    assert np.abs(torch.sigmoid(outputs.logits).numpy() - reference["tags"]).max() < 1e-6
    assert np.abs(outputs.pooled[:, 0::2].numpy() - reference["max_pool"]).max() < PARITY  # max and mean interleave
    assert np.abs(outputs.pooled[:, 1::2].numpy() - reference["mean_pool"]).max() < PARITY


def test_folding_the_dead_filters_computes_a_fraction_and_changes_nothing_measurable(reference):
    exact, folded = pretrained_backbone(fold=False).eval(), pretrained_backbone().eval()
    assert [len(block.alive) for block in (*folded.timbral, *folded.temporal)] == [23, 14, 3, 7, 17]
    mel = _as_input(reference["mel"])
    with torch.inference_mode():
        a, b = exact(mel), folded(mel)
    assert torch.equal(a.logits, b.logits) or (a.logits - b.logits).abs().max() < 1e-6
    assert (a.pooled - b.pooled).abs().max() < 1e-6


def test_the_tag_vocabulary_is_msd_top_50_in_output_order():
    assert len(MSD_TAGS) == len(set(MSD_TAGS)) == 50
    assert MSD_TAGS[:5] == ("rock", "pop", "alternative", "indie", "electronic") and MSD_TAGS[-1] == "happy"


def test_log_compression_stays_float32_under_autocast():
    from streamgenre.frontend import MelFrontend

    loud = torch.ones(1, 48000)  # 10000 * mel overflows float16 for a full-scale signal
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = MelFrontend(MUSICNN_FRONTEND).features(loud)
    assert features.dtype == torch.float32 and torch.isfinite(features).all()


def test_shipped_weights_are_the_checked_file():
    assert WEIGHTS_PATH.is_file() and WEIGHTS_PATH.stat().st_size < 4_000_000
    state = pretrained_state()
    assert sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var"))) == 787_159


def test_a_damaged_or_missing_weight_file_is_one_clear_line(tmp_path):
    damaged = tmp_path / "msd_musicnn.npz"
    shutil.copy(WEIGHTS_PATH, damaged)
    with open(damaged, "r+b") as handle:
        handle.seek(100_000)
        handle.write(b"\xff" * 16)
    with pytest.raises(CheckpointError, match="damaged .*reinstall streamgenre") as caught:
        pretrained_state(damaged, WEIGHTS_SHA256)
    assert "\n" not in str(caught.value)
    with pytest.raises(CheckpointError, match="missing .*reinstall streamgenre"):
        pretrained_state(tmp_path / "absent.npz", WEIGHTS_SHA256)


def _tones(count: int, seconds: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Low tones (label 0) and high tones (label 1) in a little noise, at 16 kHz."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    labels = torch.tensor([0, 1] * (count // 2))
    pitches = [rng.uniform(150, 300) if label == 0 else rng.uniform(2500, 4000) for label in labels.tolist()]
    waves = np.stack([0.5 * np.sin(2 * np.pi * hz * t) + rng.normal(0, 0.02, t.size) for hz in pitches]).astype(np.float32)
    return torch.from_numpy(waves), labels


def test_the_probe_learns_a_separable_set_and_leaves_the_backbone_as_it_was():
    torch.manual_seed(0)
    model = build_trained_model(ModelConfig(n_classes=2, name="musicnn"), PROBE).train()
    before = {name: value.clone() for name, value in model.cnn.backbone.state_dict().items()}
    optimizer = make_optimizer(model, PROBE)
    assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == 1506 * 256 + 256 + 256 * 2 + 2  # the head alone
    waveforms, labels = _tones(8)
    for step in range(20):
        set_learning_rate(optimizer, PROBE.with_options(lr=1e-2, warmup_fraction=0.0), step, 20)
        loss = torch.nn.functional.cross_entropy(model(waveforms, sample_rate=16000), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.inference_mode():
        assert (model(waveforms, sample_rate=16000).argmax(dim=1) == labels).all()
    after = model.cnn.backbone.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)  # weights and batch-norm statistics
    assert model.cnn.cache.misses == 8 and model.cnn.cache.hits == 19 * 8 + 8  # steps 2-20 and the eval pass from the cache


def test_a_run_saved_before_the_hidden_layer_rebuilds_its_linear_head_and_new_runs_keep_their_width():
    legacy = ModelConfig(n_classes=3, name="musicnn").to_dict() | {"width": None}  # what the previous release saved
    linear = GenreClassifier(ModelConfig.from_dict(legacy))
    assert [type(layer).__name__ for layer in linear.cnn.head] == ["BatchNorm1d", "Dropout", "Linear"]
    assert ModelConfig(n_classes=3, name="musicnn").to_dict()["width"] == 256
    assert ModelConfig.from_dict(ModelConfig(n_classes=3, name="musicnn", width=64).to_dict()).width == 64
    with pytest.raises(InputError, match="--width -1: model 'musicnn' needs a width >= 0"):
        ModelConfig(n_classes=3, name="musicnn", width=-1)


def test_the_cache_gives_exactly_what_the_backbone_computes():
    model = build_trained_model(ModelConfig(n_classes=3, name="musicnn"), PROBE).eval()
    waveforms, _ = _tones(4)
    with torch.inference_mode():
        first = model(waveforms, sample_rate=16000)
        again = model(waveforms.flip(0), sample_rate=16000)
    assert torch.equal(first.flip(0), again) and model.cnn.cache.hits == 4


def test_finetune_trains_the_backbone_slower_and_scratch_models_refuse_pretrained_recipes(tmp_path):
    from streamgenre.recipes import FINETUNE

    model = build_trained_model(ModelConfig(n_classes=2, name="musicnn"), FINETUNE)
    optimizer = make_optimizer(model, FINETUNE)
    set_learning_rate(optimizer, FINETUNE, 500, 1000)
    head, backbone = optimizer.param_groups
    assert backbone["lr"] == pytest.approx(0.1 * head["lr"]) and len(backbone["params"]) > len(head["params"])
    with pytest.raises(InputError, match="--recipe probe trains a pretrained backbone, which model 'resnet' has not; give --model musicnn"):
        TrainConfig(shards=str(tmp_path), out=tmp_path / "run", recipe=PROBE, model="resnet").model_config(3)


def test_a_pretrained_model_keeps_its_own_frontend():
    from dataclasses import replace

    with pytest.raises(InputError, match="pretrained on its own frontend"):
        ModelConfig(n_classes=3, name="musicnn", frontend=replace(MUSICNN_FRONTEND, n_mels=128))
    assert GenreClassifier(ModelConfig(n_classes=3, name="musicnn")).frontend.config.sample_rate == 16000


@pytest.mark.slow
def test_a_probe_run_trains_resumes_evaluates_and_predicts_from_the_command_line(tmp_path):
    """`train --model musicnn` end to end on a tiny pack: the probe default, resume, evaluate, predict."""
    import json
    import tarfile

    from typer.testing import CliRunner

    from streamgenre.cli import app
    from tests.conftest import write_packed_dir

    shards = tmp_path / "shards"
    write_packed_dir(shards, ["ambient", "rock"], {"train": 1, "val": 1, "test": 1}, per_shard=4, clip_s=6.0)
    run = tmp_path / "run"
    common = ["train", str(shards), "--out", str(run), "--model", "musicnn", "--windows-per-clip", "2", "--workers", "0", "--quiet"]
    result = CliRunner().invoke(app, [*common, "--epochs", "1"])
    assert result.exit_code == 0, result.output
    saved = torch.load(run / "last.pt", weights_only=True)
    assert saved["train_config"]["recipe"]["name"] == "probe" and saved["spec"]["sample_rate"] == 16000
    result = CliRunner().invoke(app, [*common, "--resume", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert len(json.loads((run / "history.json").read_text())) == 2
    best, last = (torch.load(run / name, weights_only=True)["model"] for name in ("best.pt", "last.pt"))
    assert all(torch.equal(best[key], last[key]) for key in last)  # the probe keeps its last epoch, not a pick on validation
    result = CliRunner().invoke(app, ["evaluate", str(run), "--windows", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    with tarfile.open(next(shards.glob("test-*.tar"))) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".mp3"))
        (tmp_path / "song.mp3").write_bytes(tar.extractfile(member).read())
    result = CliRunner().invoke(app, ["predict", str(run), str(tmp_path / "song.mp3"), "--json"])
    assert result.exit_code == 0, result.output
    top = json.loads(result.output.strip().splitlines()[-1])["top"]
    assert {item["genre"] for item in top} <= {"ambient", "rock"} and sum(item["probability"] for item in top) <= 1.0 + 1e-5


def test_the_genre_tags_are_a_fixed_subset_named_in_the_readme():
    from streamgenre.models.musicnn import GENRE_TAGS

    left_out = {"00s", "60s", "70s", "80s", "90s", "female vocalists", "female vocalist", "male vocalists", "beautiful", "Mellow", "chill", "sad"}
    assert list(GENRE_TAGS) == [tag for tag in MSD_TAGS if tag in GENRE_TAGS] and len(GENRE_TAGS) == 30
    assert not left_out & set(GENRE_TAGS) and {"rock", "jazz", "blues", "country", "Hip-Hop", "metal", "pop"} <= set(GENRE_TAGS)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = "\n".join(line for line in readme.splitlines() if line.startswith("| `"))
    assert all(f"| `{tag}` | {genre} |" in table for tag, genre in GENRE_TAGS.items())
