"""Native-rate loading with resampling inside the model vs resampling in the loader (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamgenre.frontend import FrontendConfig, MelFrontend
from streamgenre.stream import StreamConfig, iterate_epoch, make_loader, open_split
from tests.conftest import write_packed_dir


@pytest.fixture(scope="module")
def packed_44k(tmp_path_factory):
    root = tmp_path_factory.mktemp("packed44k")
    write_packed_dir(root, ["folk", "rock"], {"train": 2}, per_shard=3, clip_s=4.0, sample_rate=44100, channels=2)
    return root


def _batches(root, resample: str) -> dict[str, tuple[torch.Tensor, int]]:
    config = StreamConfig(offset_s=0.5, duration_s=3.0, batch_size=3, shuffle_buffer=0, shuffle_shards=False, resample=resample)
    loader = make_loader(open_split(str(root), "train"), config, workers=0)
    return {key: (batch.waveforms[i], batch.sample_rate) for batch in iterate_epoch(loader, 0) for i, key in enumerate(batch.keys)}


def test_device_path_ships_native_rate_mono_and_cpu_path_ships_22k(packed_44k):
    native, resampled = _batches(packed_44k, "device"), _batches(packed_44k, "cpu")
    assert native.keys() == resampled.keys() and len(native) == 6
    assert {(w.shape, rate) for w, rate in native.values()} == {((132300,), 44100)}
    assert {(w.shape, rate) for w, rate in resampled.values()} == {((66150,), 22050)}


def test_device_resampling_gives_the_same_spectrogram_image_as_cpu_resampling(packed_44k):
    native, resampled = _batches(packed_44k, "device"), _batches(packed_44k, "cpu")
    frontend = MelFrontend(FrontendConfig()).eval()
    keys = sorted(native)
    with torch.inference_mode():
        on_device = frontend(torch.stack([native[k][0] for k in keys]), sample_rate=44100)
        on_cpu = frontend(torch.stack([resampled[k][0] for k in keys]))
    for a, b in zip(on_device, on_cpu):
        assert np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1] > 0.99
