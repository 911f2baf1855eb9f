"""The streaming loader: shapes, label round trip, worker/rank splitting, corrupt samples."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from streamgenre.errors import InputError, ShardFormatError
from streamgenre.shards import shard_name
from streamgenre.stream import (
    SkipTally,
    StreamConfig,
    batch_windows,
    decode_windows,
    iterate_epoch,
    make_loader,
    open_split,
)
from tests.conftest import write_packed_dir

GENRES = ["ambient", "rock"]


def _write_packed(root: Path, corrupt_key: str | None = None) -> dict[str, str]:
    """4 train shards x 3 clips of 4 s, genres alternating; returns key -> genre."""
    return write_packed_dir(root, GENRES, {"train": 4}, per_shard=3, corrupt_key=corrupt_key)


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("packed")
    return root, _write_packed(root)


def _epoch_keys(loader, epoch=0) -> list[str]:
    return [key for batch in iterate_epoch(loader, epoch) for key in batch.keys]


def test_batches_have_exact_shapes_dtypes_and_labels(packed):
    root, genre_of = packed
    source = open_split(str(root), "train")
    loader = make_loader(source, StreamConfig(offset_s=1.0, duration_s=2.0, batch_size=4, seed=1), workers=0)
    batches = list(iterate_epoch(loader, 0))
    assert [len(b) for b in batches] == [4, 4, 4]
    for batch in batches:
        assert batch.waveforms.shape == (4, 44100) and batch.waveforms.dtype == torch.float32
        assert batch.labels.dtype == torch.int64 and batch.sample_rate == 22050
        assert [GENRES[label] for label in batch.labels.tolist()] == [genre_of[key] for key in batch.keys]


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_every_sample_once_per_epoch_whatever_the_workers(packed, workers):
    root, genre_of = packed
    loader = make_loader(open_split(str(root), "train"), StreamConfig(offset_s=0.0, duration_s=0.5, batch_size=5), workers=workers)
    keys = _epoch_keys(loader)
    assert sorted(keys) == sorted(genre_of)


def test_two_ranks_read_disjoint_shards_covering_the_split(packed, monkeypatch):
    root, genre_of = packed
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        loader = make_loader(open_split(str(root), "train"), StreamConfig(offset_s=0.0, duration_s=0.5), workers=2)
        seen.append(set(_epoch_keys(loader)))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(genre_of)


def test_order_changes_with_epoch_and_repeats_with_seed(packed):
    root, _ = packed
    config = StreamConfig(offset_s=None, duration_s=0.5, batch_size=2, shuffle_buffer=8, seed=3)
    loader = make_loader(open_split(str(root), "train"), config, workers=0)
    first, again, second = _epoch_keys(loader, 0), _epoch_keys(loader, 0), _epoch_keys(loader, 1)
    assert first == again
    assert first != second and sorted(first) == sorted(second)


def test_genre_subset_drops_other_genres_and_relabels(packed):
    root, genre_of = packed
    source = open_split(str(root), "train", genres=["rock"])
    batches = list(iterate_epoch(make_loader(source, StreamConfig(offset_s=0.0, duration_s=0.5), workers=0), 0))
    keys = [k for b in batches for k in b.keys]
    assert sorted(keys) == sorted(k for k, g in genre_of.items() if g == "rock")
    assert all(label == 0 for b in batches for label in b.labels.tolist())


def test_corrupt_sample_mid_shard_is_skipped_and_counted(tmp_path):
    genre_of = _write_packed(tmp_path / "bad", corrupt_key="train0101")
    loader = make_loader(open_split(str(tmp_path / "bad"), "train"), StreamConfig(offset_s=0.0, duration_s=0.5, batch_size=4), workers=2)
    batches = list(iterate_epoch(loader, 0))
    keys = sorted(k for b in batches for k in b.keys)
    assert keys == sorted(k for k in genre_of if k != "train0101")
    assert sum(b.skipped for b in batches) == 1


def test_missing_shard_stops_with_its_name(tmp_path):
    _write_packed(tmp_path / "gone")
    os.remove(tmp_path / "gone" / shard_name("train", 2))
    loader = make_loader(open_split(str(tmp_path / "gone"), "train"), StreamConfig(offset_s=0.0, duration_s=0.5), workers=0)
    with pytest.raises(ShardFormatError, match="train-000002.tar"):
        list(iterate_epoch(loader, 0))


def test_truncated_shard_stops_with_its_name(tmp_path):
    _write_packed(tmp_path / "cut")
    path = tmp_path / "cut" / shard_name("train", 1)
    path.write_bytes(path.read_bytes()[:5000])
    loader = make_loader(open_split(str(tmp_path / "cut"), "train"), StreamConfig(offset_s=0.0, duration_s=0.5), workers=1)
    with pytest.raises(ShardFormatError, match="train-000001.tar"):
        list(iterate_epoch(loader, 0))


def test_stages_work_on_plain_lists():
    items = [*_fake_decoded(5, rate=22050), *_fake_decoded(2, rate=44100)]
    from streamgenre.stream import _Skipped

    items.insert(3, _Skipped("x", "bad"))
    batches = list(batch_windows(items, batch_size=2))
    assert [(len(b), b.sample_rate) for b in batches] == [(2, 22050), (2, 22050), (2, 44100), (1, 22050)]
    assert sum(b.skipped for b in batches) == 1


def test_random_offsets_stay_inside_the_clip_and_change_with_the_epoch(chord_mp3):
    sample = {"__key__": "k", "__url__": "u", "json": b'{"genre": "folk", "duration_s": 8.0}', "mp3": chord_mp3}
    config = StreamConfig(offset_s=None, duration_s=3.0)
    out = [item for epoch in range(4) for item in decode_windows([sample], {"folk": 0}, config, epoch)]
    assert all(item.waveform.shape == (66150,) for item in out)
    assert len({float(item.waveform[:100].abs().sum()) for item in out}) == 4  # a new window each epoch


def test_windows_per_clip_come_from_one_decode_at_distinct_stratified_offsets(chord_mp3, monkeypatch):
    import streamgenre.stream as stream_module
    from streamgenre.windows import random_offsets

    calls = []
    original = stream_module.decode
    monkeypatch.setattr(stream_module, "decode", lambda data, window=None, rate=None: calls.append(window) or original(data, window, rate))
    sample = {"__key__": "k", "__url__": "u", "json": b'{"genre": "folk", "duration_s": 8.0}', "mp3": chord_mp3}
    out = list(decode_windows([sample], {"folk": 0}, StreamConfig(offset_s=None, duration_s=1.0, windows_per_clip=5), epoch=2))
    assert len(out) == 5 and calls == [None]  # one container, one whole decode, five windows
    offsets = random_offsets("k", 0, 2, 5, 8.0, 1.0)
    assert offsets == sorted(offsets) and len(set(offsets)) == 5
    assert all(7.0 * i / 5 <= offset < 7.0 * (i + 1) / 5 for i, offset in enumerate(offsets))  # one per fifth
    assert offsets == random_offsets("k", 0, 2, 5, 8.0, 1.0) != random_offsets("k", 0, 3, 5, 8.0, 1.0)
    full = original(chord_mp3).samples
    for item, offset in zip(out, offsets):
        start = round(offset * 22050)
        torch.testing.assert_close(item.waveform, full[start : start + 22050])


def _window_fingerprints(loader, epoch: int) -> list[tuple[str, float]]:
    return sorted((key, round(float(w.double().sum()), 3)) for batch in iterate_epoch(loader, epoch) for key, w in zip(batch.keys, batch.waveforms))


def test_each_clip_gives_k_windows_per_epoch_the_same_whatever_the_workers(packed):
    root, genre_of = packed
    config = StreamConfig(offset_s=None, duration_s=0.5, batch_size=4, windows_per_clip=3, window_buffer=8, seed=5)
    by_workers = {workers: _window_fingerprints(make_loader(open_split(str(root), "train"), config, workers=workers), 1) for workers in (0, 2)}
    keys = [key for key, _ in by_workers[0]]
    assert sorted(set(keys)) == sorted(genre_of) and all(keys.count(key) == 3 for key in genre_of)
    assert len(set(by_workers[0])) == 3 * len(genre_of)  # three distinct windows per clip
    assert by_workers[0] == by_workers[2]  # the windows depend on seed, epoch and key, not on the workers
    assert by_workers[0] != _window_fingerprints(make_loader(open_split(str(root), "train"), config, workers=0), 2)


def test_window_shuffle_mixes_clips_within_a_bounded_buffer():
    from streamgenre.stream import _Decoded, shuffle_windows

    items = [_Decoded(f"clip{i // 4}", torch.zeros(1), 0, 22050) for i in range(40)]  # 4 windows per clip, in a row
    out = list(shuffle_windows(items, size=8, rng=random.Random(0)))
    assert sorted(item.key for item in out) == sorted(item.key for item in items)
    first_batch = {item.key for item in out[:4]}
    assert len(first_batch) > 1  # a batch of 4 no longer holds one clip's windows only


def _fake_decoded(count: int, rate: int):
    from streamgenre.stream import _Decoded

    return [_Decoded(f"{rate}-{i}", torch.zeros(10), 0, rate) for i in range(count)]


def test_pipe_location_with_name_placeholder_reads_like_a_folder(packed):
    root, genre_of = packed
    location = f"pipe:cat {root}/{{name}}"
    loader = make_loader(open_split(location, "train"), StreamConfig(offset_s=0.0, duration_s=0.5), workers=0)
    assert sorted(_epoch_keys(loader)) == sorted(genre_of)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_flipped_bit_in_a_tar_header_stops_the_epoch_naming_the_shard(tmp_path, workers):
    from tests.test_shards import flip_header_byte

    _write_packed(tmp_path / "flip")
    flip_header_byte(tmp_path / "flip" / shard_name("train", 2), member=2)  # the tar reader stops there, silently
    loader = make_loader(open_split(str(tmp_path / "flip"), "train"), StreamConfig(offset_s=0.0, duration_s=0.5), workers=workers)
    with pytest.raises(ShardFormatError, match=r"train-000002.tar is damaged: 1 samples read, index.json lists 3"):
        list(iterate_epoch(loader, 0))


def test_a_garbage_json_member_is_skipped_and_counted(tmp_path):
    import tarfile

    genre_of = _write_packed(tmp_path / "json")
    path = tmp_path / "json" / shard_name("train", 1)
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name == "train0101.json")
    data = bytearray(path.read_bytes())
    data[member.offset_data : member.offset_data + 2] = b"\xff{"  # same size, no longer JSON
    path.write_bytes(bytes(data))
    loader = make_loader(open_split(str(tmp_path / "json"), "train"), StreamConfig(offset_s=0.0, duration_s=0.5), workers=1)
    batches = list(iterate_epoch(loader, 0))
    assert sorted(k for b in batches for k in b.keys) == sorted(k for k in genre_of if k != "train0101")
    assert sum(b.skipped for b in batches) == 1


def test_negative_workers_is_an_input_error(packed):
    from streamgenre.errors import InputError

    with pytest.raises(InputError, match="--workers must be >= 0"):
        make_loader(open_split(str(packed[0]), "train"), StreamConfig(), workers=-1)


def test_a_clip_damaged_inside_the_window_is_a_counted_skip(chord_mp3):
    from streamgenre.stream import _Skipped
    from tests.test_audio import damage_middle

    sample = {"__key__": "k", "__url__": "u", "json": b'{"genre": "folk", "duration_s": 8.0}', "mp3": damage_middle(chord_mp3)}
    whole = StreamConfig(whole_clips=True)
    for config in (StreamConfig(offset_s=3.0, duration_s=3.0), StreamConfig(offset_s=3.0, duration_s=3.0, resample="cpu"), whole):
        (item,) = decode_windows([sample], {"folk": 0}, config)
        assert isinstance(item, _Skipped) and "damaged audio after" in item.reason


def test_a_fixed_window_past_the_clip_end_is_counted_and_a_repeated_genre_refused(packed):
    root, genre_of = packed  # 4-s clips
    loader = make_loader(open_split(str(root), "train"), StreamConfig(offset_s=3.5, duration_s=1.0, batch_size=4), workers=0)
    tally = SkipTally()
    windows = sum(len(batch) for batch in tally.passing(iterate_epoch(loader, 0)))
    assert windows == tally.clamped == len(genre_of)
    with pytest.raises(InputError, match="rock more than once"):
        open_split(str(root), "train", genres=["rock", "rock", "ambient"])


def test_a_genre_not_in_the_index_is_a_skip_and_an_unselected_one_is_left_out(chord_mp3):
    from streamgenre.stream import _Skipped, decode_windows

    genres = (("a", "rock"), ("b", "jazz"), ("c", "folk"))
    samples = [{"__key__": key, "json": json.dumps({"genre": genre}).encode(), "mp3": chord_mp3} for key, genre in genres]
    out = list(decode_windows(samples, {"folk": 0}, StreamConfig(offset_s=0.0, duration_s=0.5), known_genres=frozenset({"folk", "rock"})))
    assert [(type(item).__name__, item.key) for item in out] == [("_Skipped", "b"), ("_Decoded", "c")]
    assert isinstance(out[0], _Skipped) and out[0].reason == "genre 'jazz' is not in index.json"


_EPOCH_ORDER = """
import sys, torch
from streamgenre.stream import StreamConfig, iterate_epoch, make_loader, open_split
config = StreamConfig(offset_s=None, duration_s=0.5, batch_size=2, shuffle_buffer=4, windows_per_clip=2, window_buffer=3, seed=7)
loader = make_loader(open_split(sys.argv[1], "train"), config, workers=2)
for epoch in (0, 1):
    for batch in iterate_epoch(loader, epoch):
        print(epoch, batch.keys, torch.sum(batch.waveforms).item())
"""


@pytest.mark.slow
def test_the_stream_is_the_same_under_two_hash_seeds(packed):
    """Issue 22: nothing in the shard order, shuffle buffers or windows may come from str hashing (PYTHONHASHSEED)."""
    root, _ = packed
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        done = subprocess.run([sys.executable, "-c", _EPOCH_ORDER, str(root)], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1] and outputs[0].count("\n") >= 6


def test_a_negative_shuffle_buffer_is_refused_naming_the_option():
    with pytest.raises(InputError, match="--shuffle-buffer must be >= 0 samples"):
        StreamConfig(shuffle_buffer=-1)
