"""Input discovery: every SOURCE kind yields the right tracks, and bad sources fail clearly."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import pytest

from streamgenre.errors import InputError
from streamgenre.sources import Track, discover, read_fma_metadata, track_key
from tests.conftest import write_tracks_csv

FMA_ROWS = [
    (2, "Hip-Hop", "training", "small", "1"),
    (5, "Pop", "validation", "small", "2"),
    (10, "Pop", "test", "small", "3"),
    (148, "", "training", "small", "4"),  # no genre_top: a track with several top genres
    (200, "Rock", "training", "medium", "5"),  # outside --subset small
    (300, "Folk", "training", "large", "6"),
]


def _fma_tree(root: Path) -> Path:
    """``root/audio/NNN/NNNNNN.mp3`` for every FMA_ROWS id and one id tracks.csv lacks."""
    for track_id in [row[0] for row in FMA_ROWS] + [999]:
        path = root / "audio" / f"{track_id:06d}"[:3] / f"{track_id:06d}.mp3"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"bytes of {track_id}".encode())
    (root / "audio" / "README.txt").write_text("not a track")
    write_tracks_csv(root / "tracks.csv", FMA_ROWS)
    return root / "audio"


def test_tracks_csv_header_is_flattened_to_dotted_names(tmp_path):
    rows = read_fma_metadata(write_tracks_csv(tmp_path / "tracks.csv", FMA_ROWS))
    assert sorted(rows) == [2, 5, 10, 148, 200, 300]
    assert (rows[2].genre, rows[2].split, rows[2].subset, rows[2].artist) == ("Hip-Hop", "train", "small", "1")
    assert (rows[5].split, rows[10].split) == ("val", "test")
    assert rows[148].genre is None


def test_fma_tree_joins_files_with_tracks_csv_and_filters_the_subset(tmp_path):
    audio = _fma_tree(tmp_path)
    tracks = {track.track_id: track for track in discover(audio, tmp_path / "tracks.csv", subset="small")}
    assert sorted(tracks) == ["000002", "000005", "000010", "000148", "000999"]  # no 200 (medium), 300 (large)
    assert tracks["000002"] == Track("000002", "Hip-Hop", audio / "000" / "000002.mp3", None, "train", "1")
    assert tracks["000148"].genre is None and tracks["000999"].genre is None
    medium = {track.track_id for track in discover(audio, tmp_path / "tracks.csv", subset="medium")}
    assert "000200" in medium and "000300" not in medium  # FMA's subsets nest


def test_fma_zip_members_are_read_from_the_archive(tmp_path):
    audio = _fma_tree(tmp_path)
    archive = tmp_path / "fma_small.zip"
    with zipfile.ZipFile(archive, "w") as opened:
        for path in sorted(audio.rglob("*")):
            if path.is_file():
                opened.write(path, f"fma_small/{path.relative_to(audio)}")
    tracks = {track.track_id: track for track in discover(archive, tmp_path / "tracks.csv")}
    assert sorted(tracks) == ["000002", "000005", "000010", "000148", "000200", "000300", "000999"]
    track = tracks["000010"]
    assert (track.path, track.member, track.source) == (archive, "fma_small/000/000010.mp3", f"{archive}:fma_small/000/000010.mp3")
    assert track.read_bytes() == b"bytes of 10"
    with pytest.raises(OSError, match="cannot read"):
        Track("x", "Pop", archive, "fma_small/000/missing.mp3").read_bytes()


def _files(root: Path, *relatives: str) -> None:
    for relative in relatives:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"x")


def test_folder_per_genre_labels_by_folder_and_lists_hidden_and_top_level_files_as_problems(tmp_path):
    _files(tmp_path, "Rock/a.mp3", "Rock/live/b.song.mp3", "Jazz/c.mp3", "Jazz/.DS_Store", "README.md", ".hidden/d.mp3")
    tracks = list(discover(tmp_path))
    assert [(track.track_id, track.genre) for track in tracks if not track.problem] == [("c", "Jazz"), ("a", "Rock"), ("live_b_song", "Rock")]
    problems = {track.path.relative_to(tmp_path).as_posix(): track.problem[0] for track in tracks if track.problem}
    assert problems == {".hidden": "hidden", "README.md": "not in a genre folder", "Jazz/.DS_Store": "hidden"}


def test_folder_pack_ids_are_unique_per_file_even_where_cleaning_merges_names(tmp_path):
    names = ["album1/01.mp3", "album2/01.mp3", "my song.mp3", "my_song.mp3", "Тема.mp3", "主题.mp3", "x.flac", "x.wav", "solo.mp3"]
    _files(tmp_path, *(f"Rock/{name}" for name in names), "Jazz/01.mp3", "Jazz/album1/01.mp3")
    tracks = [track for track in discover(tmp_path) if not track.problem]
    ids = {track.path.relative_to(tmp_path).as_posix(): track.track_id for track in tracks}
    assert len(ids) == len(set(ids.values())) == 11
    assert ids["Rock/solo.mp3"] == "solo" and ids["Jazz/01.mp3"] == "01"  # no hash where nothing merges
    assert re.fullmatch(r"album1_01-[0-9a-f]{8}", ids["Rock/album1/01.mp3"]) and re.fullmatch(r"my_song-[0-9a-f]{8}", ids["Rock/my song.mp3"])
    assert all(track_key(track_id) == track_id for track_id in ids.values())
    assert {track.track_id for track in discover(tmp_path) if not track.problem} == set(ids.values())  # stable between runs


def test_unreadable_folders_and_broken_links_are_listed_not_dropped(tmp_path, monkeypatch):
    _files(tmp_path, "Rock/a.mp3", "Rock/locked/b.mp3", "Jazz/c.mp3")
    (tmp_path / "Jazz" / "gone.mp3").symlink_to(tmp_path / "nowhere.mp3")
    (tmp_path / "Jazz" / "loop").symlink_to(tmp_path / "Jazz")
    real_scandir = os.scandir

    def scandir(path):  # the tests may run as root, which chmod cannot lock out
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    tracks = list(discover(tmp_path))
    assert sorted(track.track_id for track in tracks if not track.problem) == ["a", "c"]
    problems = {track.path.name: track.problem for track in tracks if track.problem}
    assert problems["locked"] == ("unreadable", "cannot list this folder: Permission denied") and problems["gone.mp3"] == ("unreadable", "a broken link")
    assert problems["loop"][0] == "unreadable" and "already read" in problems["loop"][1]


def test_a_link_into_another_genre_is_listed_not_packed_twice(tmp_path):
    _files(tmp_path, "src/Rock/a.mp3", "src/Jazz/b.mp3", "outside/c.mp3")
    (tmp_path / "src" / "Rock" / "jazz too").symlink_to(tmp_path / "src" / "Jazz")
    (tmp_path / "src" / "Rock" / "more").symlink_to(tmp_path / "outside")
    tracks = list(discover(tmp_path / "src"))
    assert sorted((track.genre, track.track_id) for track in tracks if not track.problem) == [("Jazz", "b"), ("Rock", "a"), ("Rock", "more_c")]
    assert [track.problem[0] for track in tracks if track.path.name == "jazz too"] == ["link into SOURCE"]


def test_manifest_resolves_relative_paths_and_reads_optional_columns(tmp_path):
    elsewhere = tmp_path / "elsewhere.mp3"
    manifest = tmp_path / "lists" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text(f"path,genre,split,artist,extra\nclips/a.mp3,Rock,training,band,1\n{elsewhere},Jazz,,,2\nclips/c.mp3,,test,,3\n")
    tracks = list(discover(manifest))
    assert tracks[0] == Track("a", "Rock", manifest.parent / "clips" / "a.mp3", None, "train", "band")
    assert tracks[1] == Track("elsewhere", "Jazz", elsewhere)
    assert tracks[2].genre is None and tracks[2].split == "test"


@pytest.mark.parametrize(
    ("content", "message"),
    [("file,label\na.mp3,Rock\n", "lacks the column.*path, genre"), ("path,genre,split\na.mp3,Rock,holdout\n", "line 2: split 'holdout'")],
)
def test_bad_manifest_is_an_input_error(tmp_path, content, message):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(content)
    with pytest.raises(InputError, match=message):
        list(discover(manifest))


def test_bad_tracks_csv_is_an_input_error(tmp_path):
    audio = _fma_tree(tmp_path)
    plain = tmp_path / "plain.csv"
    plain.write_text("track_id,genre_top\n2,Pop\n")
    with pytest.raises(InputError, match="third row must start with 'track_id'"):
        list(discover(audio, plain))
    no_genre = tmp_path / "no_genre.csv"
    no_genre.write_text(",set\n,split\ntrack_id,\n2,training\n")
    with pytest.raises(InputError, match="lacks the column.*track.genre_top"):
        list(discover(audio, no_genre))


@pytest.mark.parametrize(
    ("make", "metadata", "subset", "message"),
    [
        (lambda root: root / "missing", None, None, "does not exist"),
        (lambda root: root, None, None, "has no genre folders"),
        (lambda root: root, None, "small", "--subset needs --metadata"),
        (lambda root: _zip(root), None, None, "pass --metadata"),
        (lambda root: _text(root, "notes.txt"), None, None, "not a folder, an FMA zip or a .csv"),
        (lambda root: _text(root, "list.csv"), "tracks.csv", None, "--metadata is for an FMA tree"),
        (lambda root: root, "missing.csv", None, "--metadata .*missing.csv does not exist"),
    ],
)
def test_bad_source_is_an_input_error(tmp_path, make, metadata, subset, message):
    with pytest.raises(InputError, match=message):
        list(discover(make(tmp_path), tmp_path / metadata if metadata else None, subset))


def test_track_key_is_safe_for_webdataset():
    assert track_key("01. Intro (live).mp3") == "01__Intro__live__mp3"
    assert "." not in track_key("a.b.c") and track_key("") == "_"


def _zip(root: Path) -> Path:
    with zipfile.ZipFile(root / "fma_small.zip", "w") as opened:
        opened.writestr("fma_small/000/000002.mp3", b"x")
    return root / "fma_small.zip"


def _text(root: Path, name: str) -> Path:
    (root / name).write_text("path,genre\n")
    return root / name


def test_manifest_may_start_with_a_byte_order_mark_but_must_be_utf8(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes("path,genre\na.mp3,Rock\n".encode("utf-8-sig"))
    assert [track.genre for track in discover(manifest)] == ["Rock"]
    manifest.write_bytes("path,genre\nb\u00e9b\u00e9.mp3,Rock\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"manifest.csv is not UTF-8 text \(byte 0xe9 at offset 12\): save it as UTF-8"):
        list(discover(manifest))


def test_a_link_back_into_source_is_listed_and_each_file_is_found_once(tmp_path):
    _files(tmp_path, "hyperrogue/a.mp3", "rock/b.mp3", "jazz/c.mp3")
    (tmp_path / "hyperrogue" / "loop").symlink_to("..")
    (tmp_path / "hyperrogue" / "again.mp3").symlink_to(tmp_path / "rock" / "b.mp3")
    tracks = list(discover(tmp_path))
    packed = sorted((track.genre, track.path.relative_to(tmp_path).as_posix()) for track in tracks if not track.problem)
    assert packed == [("hyperrogue", "hyperrogue/a.mp3"), ("jazz", "jazz/c.mp3"), ("rock", "rock/b.mp3")]
    assert {track.path.name: track.problem[0] for track in tracks if track.problem} == {"loop": "link into SOURCE", "again.mp3": "link into SOURCE"}
