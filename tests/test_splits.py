"""Split assignment and label order: stratified by genre, grouped by artist, seeded."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from streamgenre.errors import InputError
from streamgenre.shards import SPLITS
from streamgenre.sources import Track
from streamgenre.splits import assign_splits, label_names, split_targets


def _tracks(per_genre: int, genres=("Folk", "Pop", "Rock"), per_artist: int = 0) -> list[Track]:
    """`per_genre` tracks of each genre; with `per_artist`, artists of that many consecutive tracks (across genres)."""
    tracks = []
    for number in range(per_genre * len(genres)):
        genre = genres[number % len(genres)]
        artist = f"artist{number // per_artist}" if per_artist else None
        tracks.append(Track(f"t{number:04d}", genre, Path(f"{number}.mp3"), artist=artist))
    return tracks


def _split_counts(tracks: list[Track], assignment: dict[str, str]) -> dict[tuple[str, str], int]:
    return Counter((assignment[track.track_id], track.genre) for track in tracks)


def test_label_names_are_sorted_or_in_the_requested_order():
    assert label_names(["Rock", "Folk", "Rock", "Hip-Hop"]) == ["Folk", "Hip-Hop", "Rock"]
    assert label_names(["Rock", "Folk", "Hip-Hop"], ["Rock", "Hip-Hop"]) == ["Rock", "Hip-Hop"]


def test_unknown_or_repeated_genre_is_an_input_error_listing_the_known_ones():
    with pytest.raises(InputError, match="'Jaz' not in the source; known genres: Folk, Rock"):
        label_names(["Rock", "Folk"], ["Rock", "Jaz"])
    with pytest.raises(InputError, match="Rock more than once"):
        label_names(["Rock", "Folk"], ["Rock", "Rock"])


@pytest.mark.parametrize(
    ("total", "val", "test", "expected"),
    [(6, 0.1, 0.1, (4, 1, 1)), (20, 0.1, 0.1, (16, 2, 2)), (3, 0.1, 0.1, (1, 1, 1)), (2, 0.1, 0.1, (2, 0, 0)), (10, 0.0, 0.25, (7, 0, 3))],
)
def test_split_targets_round_and_keep_every_genre_in_held_out_splits(total, val, test, expected):
    assert split_targets(total, val, test) == dict(zip(SPLITS, expected))


def test_splits_are_stratified_by_genre():
    tracks = _tracks(20)
    counts = _split_counts(tracks, assign_splits(tracks, 0.1, 0.1, seed=0))
    for genre in ("Folk", "Pop", "Rock"):
        assert [counts[split, genre] for split in SPLITS] == [16, 2, 2]


def test_no_artist_spans_two_splits_and_every_split_gets_every_genre():
    tracks = _tracks(30, per_artist=4)  # 23 artists, most with tracks of several genres
    assignment = assign_splits(tracks, 0.15, 0.15, seed=3)
    splits_of_artist: dict[str, set[str]] = {}
    for track in tracks:
        splits_of_artist.setdefault(track.artist, set()).add(assignment[track.track_id])
    assert all(len(splits) == 1 for splits in splits_of_artist.values())
    counts = _split_counts(tracks, assignment)
    assert all(counts[split, genre] >= 2 for split in SPLITS for genre in ("Folk", "Pop", "Rock"))


def test_given_splits_are_kept_and_an_artists_other_tracks_join_them():
    tracks = [
        Track("a", "Rock", Path("a.mp3"), split="test", artist="band"),
        Track("b", "Rock", Path("b.mp3"), artist="band"),
        *_tracks(5, genres=("Rock",)),
    ]
    assignment = assign_splits(tracks, 0.2, 0.2, seed=0)
    assert assignment["a"] == assignment["b"] == "test"
    assert Counter(assignment.values()) == {"train": 4, "val": 1, "test": 2}


def test_assignment_is_seeded():
    tracks = _tracks(20, per_artist=2)
    assert assign_splits(tracks, 0.1, 0.1, seed=1) == assign_splits(list(tracks), 0.1, 0.1, seed=1)
    assert assign_splits(tracks, 0.1, 0.1, seed=1) != assign_splits(tracks, 0.1, 0.1, seed=2)


def test_a_zero_fraction_split_stays_empty():
    tracks = _tracks(7, per_artist=3)
    assert "val" not in assign_splits(tracks, 0.0, 0.3, seed=0).values()
