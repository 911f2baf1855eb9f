"""audio.decode: a window against a full decode, on synthetic and (when present) real MP3s."""

from __future__ import annotations

import numpy as np
import pytest

from streamgenre.audio import Window, decode, probe
from streamgenre.errors import DecodeError
from tests.conftest import write_broken_files


def _window(data: bytes, offset_s: float, duration_s: float, sample_rate: int = 22050):
    return decode(data, Window(offset_s, duration_s), sample_rate).samples


def _corr(a, b) -> float:
    return float(np.corrcoef(np.asarray(a), np.asarray(b))[0, 1])


def test_probe_measures_decoded_duration_and_format(stereo_44k_mp3):
    info = probe(stereo_44k_mp3)
    assert (info.sample_rate, info.channels) == (44100, 2)
    assert info.duration_s == pytest.approx(8.0, abs=0.05)


@pytest.mark.parametrize("offset_s", [0.0, 0.05, 2.5, 4.99])
@pytest.mark.parametrize("fixture", ["chord_mp3", "stereo_44k_mp3"])
def test_window_matches_slice_of_full_decode(request, fixture, offset_s):
    data = request.getfixturevalue(fixture)
    full = decode(data, rate=22050).samples.numpy()
    window = _window(data, offset_s, 3.0).numpy()
    start = round(offset_s * 22050)
    assert window.shape == (66150,) and window.dtype == np.float32
    assert _corr(window, full[start : start + 66150]) > 0.99


@pytest.mark.parametrize("sample_rate, duration_s", [(22050, 3.0), (16000, 1.0), (44100, 0.5)])
def test_window_has_exact_sample_count(stereo_44k_mp3, sample_rate, duration_s):
    assert _window(stereo_44k_mp3, 1.0, duration_s, sample_rate).shape == (round(duration_s * sample_rate),)


def test_window_of_a_short_clip_is_zero_padded(chord_mp3):
    window = _window(chord_mp3, 0.0, 10.0).numpy()  # the clip lasts 8 s
    assert window.shape == (220500,)
    assert np.abs(window[: 7 * 22050]).max() > 0.05
    assert np.all(window[round(8.1 * 22050) :] == 0)


def test_offset_past_the_end_falls_back_to_the_last_full_window(chord_mp3):
    info = probe(chord_mp3)
    last = _window(chord_mp3, info.duration_s - 3.0, 3.0).numpy()
    past = _window(chord_mp3, 60.0, 3.0).numpy()
    assert _corr(last, past) > 0.999


def test_native_window_keeps_rate_and_channels(stereo_44k_mp3):
    audio = decode(stereo_44k_mp3, Window(2.0, 3.0), mono=False)
    assert audio.sample_rate == 44100 and audio.samples.shape == (2, 132300)
    mono = decode(stereo_44k_mp3, Window(2.0, 3.0)).samples
    np.testing.assert_allclose(mono.numpy(), audio.samples.numpy().mean(axis=0), atol=1e-6)


def test_whole_file_at_its_own_rate_or_resampled(stereo_44k_mp3):
    native = decode(stereo_44k_mp3)
    assert native.sample_rate == 44100 and native.samples.shape == (round(probe(stereo_44k_mp3).duration_s * 44100),)
    resampled = decode(stereo_44k_mp3, rate=22050)
    assert resampled.sample_rate == 22050 and abs(resampled.samples.shape[0] - native.samples.shape[0] / 2) <= 1


def test_broken_files_raise_decode_error(tmp_path, chord_mp3):
    for path in write_broken_files(tmp_path, chord_mp3).values():
        with pytest.raises(DecodeError):
            probe(path.read_bytes())


def test_real_clips_window_matches_full_decode(shared_data):
    data = next(iter(sorted(shared_data.glob("*/*.mp3")))).read_bytes()
    full = decode(data, rate=22050).samples.numpy()
    window = _window(data, 15.0, 3.0).numpy()
    assert _corr(window, full[15 * 22050 : 18 * 22050]) > 0.99


def damage_middle(data: bytes, size: int = 2000) -> bytes:
    """`data` with `size` bytes in the middle zeroed: FFmpeg decodes the first half, then fails."""
    middle = len(data) // 2
    return data[:middle] + bytes(size) + data[middle + size :]


def test_damage_mid_file_is_an_error_saying_where_never_a_short_clip(chord_mp3):
    from streamgenre.errors import DamagedAudioError

    damaged = damage_middle(chord_mp3)
    readers = (probe, decode, lambda data: decode(data, rate=16000), lambda data: _window(data, 3.0, 3.0), lambda data: decode(data, Window(3.0, 3.0)))
    for read in readers:
        with pytest.raises(DamagedAudioError, match=r"damaged audio after [34]\.\d\d s: Invalid data"):
            read(damaged)
    assert _window(damaged, 0.5, 2.0).shape == (44100,)  # a window before the damage still decodes


def test_a_non_audio_file_says_so_without_an_errno(tmp_path, chord_mp3):
    with pytest.raises(DecodeError, match=r"^not an audio file FFmpeg can read \(invalid data found when processing input\)$"):
        probe(write_broken_files(tmp_path, chord_mp3)["text"].read_bytes())


def test_a_0_hz_stream_is_not_audio_for_any_reader(tmp_path):
    from streamgenre.audio import decode_blocks
    from tests.test_predict import _opens_at_0_hz, random_mp3s

    junk = next(path for path in random_mp3s(tmp_path, 6) if _opens_at_0_hz(path))
    with pytest.raises(DecodeError, match="not audio: FFmpeg finds a mp3.* stream of 0 Hz"):
        rate, blocks = decode_blocks(junk)
        list(blocks)
