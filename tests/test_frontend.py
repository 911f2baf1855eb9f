"""MelFrontend: librosa compatibility, batch consistency, shapes, resampling on the device, configs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from streamgenre.audio import resample
from streamgenre.errors import InputError
from streamgenre.frontend import FrontendConfig, MelFrontend, normalize_per_example, power_to_db
from streamgenre.synth import make_clip

THREE_S = 66150  # the paper's 3-s window at 22050 Hz


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))])
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(scope="module")
def frontend() -> MelFrontend:
    """The paper's frontend on the CPU, built once (its filters take ~0.3 s)."""
    return MelFrontend(FrontendConfig())


@pytest.fixture
def device_frontend(frontend, device) -> MelFrontend:
    return copy.deepcopy(frontend).to(device)


def _clips(*genres: str, sample_rate: int = 22050) -> torch.Tensor:
    """``(len(genres), 3 s)`` synthetic music, one clip per genre."""
    return torch.from_numpy(np.stack([make_clip(g, seed=7, duration_s=3.0, sample_rate=sample_rate) for g in genres]))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize("genre", ["rock", "ambient"])
def test_librosa_compatibility_of_mel_power_and_db(frontend, genre):
    librosa = pytest.importorskip("librosa")
    waveform = make_clip(genre, seed=7, duration_s=3.0)
    # The paper's librosa (< 0.10) padded centred frames by reflection; 0.10 switched to zeros.
    expected = librosa.feature.melspectrogram(y=waveform, sr=22050, pad_mode="reflect")  # (128, 130)
    power = frontend.spectrogram(torch.from_numpy(waveform)[None])  # (1, 128, 130)
    got = power[0].double().numpy()
    assert got.shape == expected.shape == (128, 130)
    assert _corr(got, expected) > 0.999999
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-5  # measured ~1e-6
    expected_db = librosa.power_to_db(expected, ref=np.max, top_db=80.0)
    got_db = power_to_db(power, top_db=80.0)[0].double().numpy()
    assert _corr(got_db, expected_db) > 0.999999
    assert np.abs(got_db - expected_db).max() < 1e-3  # dB; measured ~2e-4 (float32 STFT)


def test_power_to_db_uses_each_examples_own_peak():
    base = np.random.default_rng(0).exponential(size=(4, 5))
    power = torch.from_numpy(np.stack([base, 1e-6 * base]))  # the same clip, loud and quiet
    db = power_to_db(power, top_db=20.0).numpy()
    expected = 10 * np.log10(np.maximum(base / base.max(), 1e-2))  # ref=np.max, floored at -top_db
    np.testing.assert_allclose(db[0], expected, atol=1e-9)
    np.testing.assert_allclose(db[1], expected, atol=1e-9)


def test_normalize_per_example_gives_zero_mean_unit_std_and_keeps_silence_finite():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(np.stack([rng.normal(5.0, 3.0, (4, 6)), np.zeros((4, 6))]))
    out = normalize_per_example(x)
    assert out[0].mean().item() == pytest.approx(0.0, abs=1e-9)
    assert out[0].std(correction=0).item() == pytest.approx(1.0)
    assert torch.equal(out[1], torch.zeros(4, 6))


def test_output_shape_and_silence_is_finite(device_frontend, device):
    waveform = torch.cat([_clips("folk"), torch.zeros(1, THREE_S)]).to(device)
    image = device_frontend(waveform)
    assert image.shape == (2, 3, 288, 432) and image.dtype == torch.float32
    assert torch.isfinite(image).all()
    assert torch.equal(image[1], torch.zeros(3, 288, 432))
    assert torch.equal(image[0, 0], image[0, 2])  # channels are copies


def test_batch_consistency(device_frontend, device):
    waveform = _clips("rock", "ambient", "hiphop").to(device)
    waveform[1] *= 0.01  # a quiet clip: per-example dB reference and normalisation make it irrelevant
    batched = device_frontend(waveform)
    one_by_one = torch.cat([device_frontend(waveform[i : i + 1]) for i in range(len(waveform))])
    # Loose enough for TF32 convolutions on CUDA; a batch-wide dB reference would be off by ~1.
    torch.testing.assert_close(batched, one_by_one, atol=2e-3, rtol=1e-3)


def test_autocast_keeps_frontend_in_float32(frontend):
    waveform = _clips("electronic")
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):  # without the guard the STFT and mel matmul run in bf16
        image = frontend(waveform)
    assert image.dtype == torch.float32
    torch.testing.assert_close(image, frontend(waveform))


def test_resampling_on_the_device_matches_ffmpeg_resampling(frontend, device):
    clip_44k = _clips("rock", "folk", sample_rate=44100)  # (2, 132300)
    on_device = MelFrontend(FrontendConfig(input_sample_rate=44100)).to(device)(clip_44k.to(device)).cpu()
    by_ffmpeg = torch.from_numpy(np.stack([resample(clip.numpy(), 44100, 22050) for clip in clip_44k]))
    assert by_ffmpeg.shape == (2, THREE_S)
    reference = frontend(by_ffmpeg)
    for got, expected in zip(on_device.numpy(), reference.numpy()):
        assert _corr(got, expected) > 0.99
    # The same frontend also takes a per-call rate (batches at a file's native rate).
    torch.testing.assert_close(frontend(clip_44k, sample_rate=44100), on_device, atol=2e-3, rtol=1e-3)


def test_filters_are_buffers_kept_out_of_the_state_dict(frontend):
    assert not list(frontend.parameters())
    assert frontend.state_dict() == {}
    assert {name for name, _ in frontend.named_buffers()} >= {"mel_basis", "window"}


@pytest.mark.parametrize("waveform", [torch.zeros(THREE_S), torch.zeros(2, 1024)], ids=["1-D", "shorter than n_fft/2"])
def test_bad_waveform_raises_input_error(frontend, waveform):
    with pytest.raises(InputError):
        frontend(waveform)


def test_config_round_trips_and_rejects_unknown_keys():
    config = FrontendConfig(input_sample_rate=44100, f_max=8000.0)
    assert FrontendConfig.from_dict(config.to_dict()) == config
    with pytest.raises(InputError, match="hop"):
        FrontendConfig.from_dict({**config.to_dict(), "hop": 256})


@pytest.mark.parametrize(
    "changes",
    [{"n_fft": 0}, {"hop_length": -1}, {"f_max": 20000.0}, {"f_min": 9000.0, "f_max": 8000.0}, {"top_db": 0.0}, {"input_sample_rate": 0}],
)
def test_invalid_config_raises_input_error(changes):
    with pytest.raises(InputError):
        FrontendConfig(**changes)


@pytest.mark.parametrize("name", ["paper", "resnet", "musicnn"])
def test_each_models_declared_frontend_matches_librosa_on_real_audio(name, shared_data):
    """The features a model hears (before any resize), against librosa with the declared settings, on a real clip."""
    librosa = pytest.importorskip("librosa")
    from streamgenre.audio import Window, decode
    from streamgenre.models import model_spec

    config = model_spec(name).frontend
    clip = sorted(shared_data.glob("*/*.mp3"))[0]
    waveform = decode(clip.read_bytes(), Window(10.0, config.window_s), rate=config.sample_rate).samples.numpy()
    mel = librosa.feature.melspectrogram(
        y=waveform, sr=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop_length, n_mels=config.n_mels, fmin=config.f_min, pad_mode="reflect"
    )
    if config.compression == "db":
        db = librosa.power_to_db(mel, ref=np.max, top_db=config.top_db)
        expected = (db - db.mean()) / db.std()
    else:
        expected = np.log10(1 + 10000 * mel)
    got = MelFrontend(config).features(torch.from_numpy(waveform)[None])[0].double().numpy()
    assert got.shape == expected.shape == (config.n_mels, 1 + len(waveform) // config.hop_length)
    assert np.abs(got - expected).max() < 1e-3  # float32 STFT against librosa's float64
