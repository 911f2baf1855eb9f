"""The registered models and GenreClassifier: shapes, parameter counts, configs, augmentation, learning."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from streamgenre.augment import SPEC_AUGMENT, AugmentConfig
from streamgenre.errors import InputError
from streamgenre.frontend import FrontendConfig
from streamgenre.model import GenreClassifier, ModelConfig, count_parameters, describe_model
from streamgenre.models import model_names, model_spec
from streamgenre.models.paper import FLATTEN_FEATURES, PaperCNN
from streamgenre.models.resnet import ShortChunkResNet
from streamgenre.recipes import MODERN, PAPER

README = Path(__file__).resolve().parents[1] / "README.md"
HALF_SECOND = 11025  # at 22050 Hz; the frontend resizes any length to 288x432


def _noise(batch: int, samples: int = HALF_SECOND, seed: int = 0) -> torch.Tensor:
    """Seeded ``(batch, samples)`` white noise, leaving the global RNG alone."""
    return torch.from_numpy(np.random.default_rng(seed).normal(0.0, 0.1, (batch, samples)).astype(np.float32))


def test_conv_stack_flattens_to_the_papers_9856_features():
    features = PaperCNN(n_classes=8).features(torch.zeros(1, 3, 288, 432))
    assert features.shape == (1, 128, 7, 11)
    assert features[0].numel() == FLATTEN_FEATURES == 9856


def test_paper_cnn_parameter_count_for_8_classes():
    # Per block, Conv2d(in, out, 3x3) weights + biases, then BatchNorm2d weight + bias (2 * out):
    #   3->8: 216 + 8 + 16 = 240          8->16: 1152 + 16 + 32 = 1200
    #   16->32: 4608 + 32 + 64 = 4704     32->64: 18432 + 64 + 128 = 18624
    #   64->128: 73728 + 128 + 256 = 74112                     blocks: 98880
    # Linear(9856, 8): 9856 * 8 + 8 = 78856.                   total: 177736
    assert sum(p.numel() for p in PaperCNN(n_classes=8).parameters()) == 177736


def test_logits_and_probabilities_have_one_row_per_waveform():
    model = GenreClassifier(ModelConfig(n_classes=5)).eval()
    with torch.inference_mode():
        logits = model(_noise(3))
        probs = model.predict_proba(_noise(3))
    assert logits.shape == probs.shape == (3, 5)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3))
    assert (probs >= 0).all()


def test_state_dict_holds_only_cnn_weights():
    keys = GenreClassifier(ModelConfig(n_classes=2)).state_dict().keys()
    assert keys and all(key.startswith("cnn.") for key in keys)


def test_config_round_trips_through_json():
    config = ModelConfig(n_classes=5, dropout=0.3, frontend=FrontendConfig(input_sample_rate=44100))
    restored = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert GenreClassifier(restored).config == config


@pytest.mark.parametrize(
    "data",
    [
        {"n_classes": 5, "drop": 0.5},
        {"n_classes": 5, "frontend": {"n_fft": 2048, "window": "hann"}},
        {"dropout": 0.5},
    ],
    ids=["unknown key", "unknown frontend key", "missing n_classes"],
)
def test_from_dict_rejects_unknown_and_missing_keys(data):
    with pytest.raises(InputError):
        ModelConfig.from_dict(data)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_classes": 1},
        {"n_classes": 5, "dropout": 1.0},
        {"n_classes": 5, "frontend": FrontendConfig(image_width=256)},
        {"n_classes": 5, "name": "resnet", "frontend": FrontendConfig()},
    ],
    ids=["one class", "dropout 1", "not the paper's image", "resnet given an image"],
)
def test_invalid_config_raises_input_error(kwargs):
    with pytest.raises(InputError):
        ModelConfig(**kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("name", model_names())
def test_model_learns_a_separable_toy_set(name):
    """Low tones vs high tones in noise: the whole model, frontend included, must fit them."""
    rng = np.random.default_rng(0)
    t = np.arange(HALF_SECOND) / 22050
    labels = torch.tensor([0, 1] * 6)
    pitches = [rng.uniform(150, 400) if label == 0 else rng.uniform(2000, 4000) for label in labels.tolist()]
    waveforms = torch.from_numpy(
        np.stack([0.5 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 0.05, t.size) for hz in pitches]).astype(np.float32)
    )  # (12, 11025)
    torch.manual_seed(0)
    model = GenreClassifier(ModelConfig(n_classes=2, name=name)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)  # the paper's optimiser and rate
    losses = []
    for _ in range(15):
        logits = model(waveforms)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert (logits.argmax(dim=1) == labels).all()  # 100% train accuracy
    assert losses[-1] < 0.1 * losses[0]


def test_resnet_parameter_count_and_any_window_length():
    # stem 1->32 conv (288) + BN (64); blocks (w->w, w->2w, 2w->2w, 2w->4w) with w = 32:
    #   32->32: 9216 + 9216 + 4 * 32 = 18560;  32->64: 18432 + 36864 + 4 * 64 + 1x1 2048 + 128 = 57728
    #   64->64: 36864 * 2 + 256 = 73984;       64->128: 73728 + 147456 + 512 + 8192 + 256 = 230144
    #   Linear(128, 5): 645.                    total: 352 + 18560 + 57728 + 73984 + 230144 + 645 = 381413
    assert sum(p.numel() for p in ShortChunkResNet(n_classes=5).parameters()) == 381413
    model = GenreClassifier(ModelConfig(n_classes=5, name="resnet")).eval()
    with torch.inference_mode():
        assert model(_noise(2, samples=22050)).shape == model(_noise(2, samples=5 * 22050)).shape == (2, 5)
    assert model.frontend(_noise(1, samples=66150)).shape == (1, 1, 128, 130)  # the mel at its own resolution


def test_models_state_their_size_and_cost():
    paper, resnet = (describe_model(ModelConfig(n_classes=5, name=name)) for name in ("paper", "resnet"))
    assert paper.parameters == 148165 and resnet.parameters == 381413
    assert 0.25 < paper.backbone_gflops < 0.35 and 0.3 < resnet.backbone_gflops < 0.4 and paper.frontend_gflops == resnet.frontend_gflops


def test_readme_and_model_docstrings_state_what_each_model_builds():
    """The Models table, and a model file's docstring where it counts them, give its parameters for 5 genres; the ResNet's widths are the built ones."""
    readme = README.read_text().split("\n## Models\n")[1].split("\n## ")[0]
    for name in model_names():
        facts = describe_model(ModelConfig(n_classes=5, name=name))
        (row,) = [line for line in readme.splitlines() if line.startswith(f"| `{name}`")]
        assert f"| {facts.parameters:,}" in row and f"| {facts.backbone_gflops:.2f} |" in row, row
        docstring = sys.modules[model_spec(name).build.__module__].__doc__
        assert f"{facts.parameters:,}" in docstring or not re.search(r"[0-9,]+ parameters", docstring), name
    resnet = ShortChunkResNet(n_classes=5)
    widths = [block.body[0].out_channels for block in resnet.blocks]  # (w, 2w, 2w, 4w) with w = 32
    assert f"{'/'.join(map(str, widths))} channels" in readme
    assert ", ".join(f"{width // widths[0]}w".replace("1w", "w") for width in widths) in sys.modules[ShortChunkResNet.__module__].__doc__


def test_unknown_model_and_misplaced_width_are_input_errors():
    with pytest.raises(InputError, match="known: paper, resnet"):
        ModelConfig(n_classes=5, name="vgg")
    with pytest.raises(InputError, match="no width"):
        ModelConfig(n_classes=5, name="paper", width=16)


def test_augmentation_changes_training_output_but_never_eval_output():
    augment = AugmentConfig(gain_db=6.0, freq_masks=2, freq_mask_bins=20, time_masks=2, time_mask_frames=20)
    model = GenreClassifier(ModelConfig(n_classes=3, dropout=0.0), augment)
    model.eval()
    with torch.inference_mode():
        first, second = model(_noise(4)), model(_noise(4))
    assert torch.equal(first, second)  # eval: no augmentation, same input -> same output
    model.train()
    masked = model.spec_augment(torch.ones(4, 128, 130))
    assert (masked == 0).any() and not torch.equal(masked[0], masked[1])  # random bands, per example
    assert model.spec_augment.eval()(torch.ones(4, 128, 130)).eq(1).all()


def test_augmentation_is_the_recipes_alone_and_old_configs_that_stored_it_still_load():
    config = ModelConfig(n_classes=3)
    assert "augment" not in config.to_dict()  # a checkpoint stores it once, in the recipe
    old = {**config.to_dict(), "augment": SPEC_AUGMENT.to_dict()}  # as 0.1.0 wrote it
    assert ModelConfig.from_dict(old) == config


def test_each_augmentation_switches_on_its_own():
    both = replace(SPEC_AUGMENT, gain_db=6.0)
    assert both.switched(spec_augment=False) == AugmentConfig(gain_db=6.0)  # --no-spec-augment keeps the gain
    assert both.switched(gain_db=0.0) == SPEC_AUGMENT  # --gain 0 keeps the masks
    assert AugmentConfig().switched(spec_augment=True) == SPEC_AUGMENT and both.switched() == both
    assert MODERN.augment.spec_augment and not PAPER.augment.spec_augment


def test_checkpoints_without_a_model_name_are_the_paper_cnn():
    old = {"n_classes": 5, "dropout": 0.5, "frontend": ModelConfig(n_classes=5).frontend.to_dict()}  # a format-1 config
    config = ModelConfig.from_dict(old)
    assert config.name == "paper" and count_parameters(GenreClassifier(config)) == 148165
