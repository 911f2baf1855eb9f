"""Shared fixtures: tiny MP3 corpora made with `streamgenre.synth`, broken files, real clips."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from streamgenre.shards import ShardIndex, shard_name, write_index, write_shard
from streamgenre.synth import encode_mp3, make_clip, write_corpus

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A folder per genre: 3 genres x 6 clips of 8 s (22.05 kHz mono MP3)."""
    root = tmp_path_factory.mktemp("tiny_corpus")
    write_corpus(root, clips_per_genre=6, duration_s=8.0, seed=1, genres=("ambient", "electronic", "rock"))
    return root


@pytest.fixture(scope="session")
def chord_mp3() -> bytes:
    """One 8-s synthetic clip as MP3 bytes."""
    return encode_mp3(make_clip("folk", seed=3, duration_s=8.0), 22050)


@pytest.fixture(scope="session")
def stereo_44k_mp3() -> bytes:
    """A 44.1 kHz stereo clip, like FMA's, for resampling and down-mix paths."""
    return encode_mp3(make_clip("rock", seed=4, duration_s=8.0, sample_rate=44100), 44100, bitrate=128_000, channels=2)


def write_broken_files(folder: Path, good_mp3: bytes) -> dict[str, Path]:
    """Zero-byte, text-named-.mp3 and truncated files in `folder`; returns them by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "empty": folder / "empty.mp3",
        "text": folder / "notes.mp3",
        "truncated": folder / "truncated.mp3",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not audio, just a text file with an .mp3 name\n")
    files["truncated"].write_bytes(good_mp3[:200])
    return files


@pytest.fixture
def shared_data() -> Path:
    """The real music clips beside the repo (../shared/data); skips when absent."""
    if not (SHARED_DATA / "manifest.csv").exists():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def write_packed_dir(
    root: Path,
    genres: list[str],
    shards_per_split: dict[str, int],
    per_shard: int,
    clip_s: float = 4.0,
    corrupt_key: str | None = None,
    sample_rate: int = 22050,
    channels: int = 1,
) -> dict[str, str]:
    """Write shards + index.json directly (no `pack`), genres alternating; returns key -> genre.

    Keys are ``<split><shard:02d><slot:02d>``; `corrupt_key` gets bytes that are not audio.
    """
    root.mkdir(parents=True, exist_ok=True)
    genre_of, entries, counts = {}, [], {}
    for split, shard_count in shards_per_split.items():
        for number in range(shard_count):
            samples = []
            for slot in range(per_shard):
                key = f"{split}{number:02d}{slot:02d}"
                genre = genres[(number + slot) % len(genres)]
                clip = make_clip(genre, seed=zlib.crc32(key.encode()), duration_s=clip_s, sample_rate=sample_rate)
                audio = b"garbage, not audio" if key == corrupt_key else encode_mp3(clip, sample_rate, channels=channels)
                meta = {"track_id": key, "genre": genre, "label": genres.index(genre), "split": split, "duration_s": clip_s}
                samples.append((key, audio, meta))
                genre_of[key] = genre
                counts.setdefault(split, {}).setdefault(genre, 0)
                counts[split][genre] += 1
            entries.append(write_shard(root / shard_name(split, number), samples))
    write_index(root / "index.json", ShardIndex(labels=list(genres), counts=counts, shards=entries))
    return genre_of


# FMA's tracks.csv header as pandas writes it: top-level names, sub-names, then 'track_id'.
# Extra columns (album.*, artist.name, track.genres, track.title) are there to be ignored.
_FMA_HEADER = (
    ["", "album", "album", "artist", "artist", "set", "set", "track", "track", "track"],
    ["", "comments", "title", "id", "name", "split", "subset", "genre_top", "genres", "title"],
    ["track_id", "", "", "", "", "", "", "", "", ""],
)


def write_tracks_csv(path: Path, rows: list[tuple[int, str, str, str, str]]) -> Path:
    """A miniature FMA tracks.csv with the real 3-row header; rows are (id, genre_top, split, subset, artist id)."""
    import csv

    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerows(_FMA_HEADER)
        for track_id, genre, split, subset, artist in rows:
            writer.writerow([track_id, "0", "An album, with a comma", artist, f"Artist {artist}", split, subset, genre, "[12, 25]", f"Track {track_id}"])
    return path


def tiny_train_config(shards: Path, out: Path, recipe: str = "paper", **changes):
    """A seconds-long training run on a tiny packed dir: 2-s windows at 0:00.5, batch 4, 2 epochs.

    Keyword arguments that name recipe fields (epochs, lr, windows_per_clip, ...) change the
    recipe; the rest change the `TrainConfig`.
    """
    from dataclasses import fields

    from streamgenre.recipes import Recipe, recipe_named
    from streamgenre.train import TrainConfig

    recipe_fields = {f.name for f in fields(Recipe)}
    recipe_changes = {"offset_s": 0.5 if recipe == "paper" else None, "batch_size": 4, "epochs": 2, "val_windows": 2}
    recipe_changes.update({k: v for k, v in changes.items() if k in recipe_fields})
    settings = {"duration_s": 2.0, "shuffle_buffer": 8, "workers": 0, "progress": False}
    settings.update({k: v for k, v in changes.items() if k not in recipe_fields})
    return TrainConfig(shards=str(shards), out=out, recipe=recipe_named(recipe).with_options(**recipe_changes), **settings)


@pytest.fixture(scope="session")
def run(tmp_path_factory) -> Path:
    """A run trained for 2 epochs (paper recipe) on 8 clips of two synthetic genres, ambient and rock.

    Shared by the inference tests (predict, export, tag): trained once per session.
    """
    from streamgenre.train import train

    root = tmp_path_factory.mktemp("tiny_run")
    write_packed_dir(root / "packed", ["ambient", "rock"], {"train": 2}, per_shard=4, clip_s=3.0)
    train(tiny_train_config(root / "packed", root / "run", epochs=2))
    return root / "run"
