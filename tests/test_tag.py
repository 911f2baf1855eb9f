"""`streamgenre tag` on generated MP3, FLAC, Ogg Vorbis, Opus and M4A files, read back with mutagen."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

import streamgenre.tag as tag_module
from streamgenre.cli import app
from streamgenre.synth import encode_mp3, make_clip
from tests.conftest import write_broken_files

mutagen = pytest.importorskip("mutagen")

GENRES = ["ambient", "rock"]
# suffix: (container, codec, sample format, layout, codec rate, codec options); mp3 uses encode_mp3.
ENCODINGS = {
    ".flac": ("flac", "flac", "s16", "mono", 22050, {}),
    ".ogg": ("ogg", "vorbis", "fltp", "stereo", 22050, {"strict": "experimental"}),  # FFmpeg's vorbis encoder: stereo only
    ".opus": ("ogg", "libopus", "s16", "mono", 48000, {}),
    ".m4a": ("ipod", "aac", "fltp", "mono", 22050, {}),
}
SUFFIXES = [".mp3", *ENCODINGS]


def encode(suffix: str, seed: int = 0, seconds: float = 4.0) -> bytes:
    """A synthetic clip in the format of `suffix`; skips the test if this PyAV lacks the encoder."""
    clip = make_clip("rock", seed, seconds, 22050)
    if suffix == ".mp3":
        return encode_mp3(clip, 22050)
    container, codec, sample_format, layout, rate, options = ENCODINGS[suffix]
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV has no {codec} encoder")
    channels = 2 if layout == "stereo" else 1
    frame = av.AudioFrame.from_ndarray(np.repeat(clip[None, :], channels, axis=0), format="fltp", layout=layout)
    frame.sample_rate = 22050
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout, options=options)
        resampler = av.AudioResampler(format=sample_format, layout=layout, rate=rate)
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            out.mux(stream.encode(chunk))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def library(folder: Path, suffixes=SUFFIXES) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, suffix in enumerate(suffixes):
        path = folder / f"song{number}{suffix}"
        path.write_bytes(encode(suffix, seed=number))
        paths.append(path)
    return paths


def packets(path: Path) -> list[bytes]:
    """The compressed audio frames, as the demuxer hands them out."""
    with av.open(str(path)) as container:
        return [bytes(packet) for packet in container.demux(audio=0) if packet.size]


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])


def genre_tag(path: Path) -> list[str]:
    """The genre as mutagen reads it back, by the field the issue names per format."""
    audio = mutagen.File(path)
    if path.suffix == ".mp3":
        return list(audio.tags["TCON"].text) if audio.tags and "TCON" in audio.tags else []
    if path.suffix == ".m4a":
        return list(audio.tags.get("\xa9gen", [])) if audio.tags else []
    return list(audio.tags.get("GENRE", [])) if audio.tags else []


def set_tags(path: Path, genre: str | None = None, title: str = "A title") -> None:
    """Give the file a title (and a genre) with mutagen, as a tagger would have."""
    from mutagen.id3 import TCON, TIT2

    audio = mutagen.File(path)
    if audio.tags is None:
        audio.add_tags()
    if path.suffix == ".mp3":
        audio.tags.add(TIT2(encoding=3, text=[title]))
        if genre:
            audio.tags.add(TCON(encoding=3, text=[genre]))
    elif path.suffix == ".m4a":
        audio.tags["\xa9nam"] = [title]
        if genre:
            audio.tags["\xa9gen"] = [genre]
    else:
        audio.tags["TITLE"] = [title]
        if genre:
            audio.tags["GENRE"] = [genre]
    audio.save()


def title_tag(path: Path) -> str:
    tags = mutagen.File(path).tags
    if path.suffix == ".mp3":
        return str(tags["TIT2"])
    return (tags["\xa9nam"] if path.suffix == ".m4a" else tags["TITLE"])[0]


def digest(paths: list[Path]) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}


def tag(*args: str):
    return CliRunner().invoke(app, ["tag", *args])


def rows(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize(("option", "message"), [(["--top", "0"], "--top must be >= 1"), (["--min-probability", "2"], "--min-probability must be between 0")])
def test_an_impossible_option_is_one_line_before_the_table_header(tmp_path, option, message):
    result = tag(str(tmp_path / "no-run-needed"), str(tmp_path), *option)
    assert result.exit_code != 0 and message in result.output
    assert "action" not in result.output  # no header printed, and the missing run is not even read


def test_dry_run_prints_the_plan_and_changes_nothing(run, tmp_path):
    paths = library(tmp_path / "music")
    set_tags(paths[0], genre="Jazz")
    before = digest(paths)
    result = tag(str(run), str(tmp_path / "music"), "--csv", str(tmp_path / "plan.csv"))
    assert result.exit_code == 0, result.output
    assert digest(paths) == before
    assert sorted(p.name for p in (tmp_path / "music").iterdir()) == sorted(p.name for p in paths)  # no temporary files
    assert "nothing written: add --write to tag" in result.stdout
    with open(tmp_path / "plan.csv", newline="") as stream:
        plan = list(csv.DictReader(stream))
    assert [row["path"] for row in plan] == [str(p) for p in paths]
    assert list(plan[0])[:4] == ["path", "current_genre", "predicted_genre", "probability"]
    assert plan[0]["current_genre"] == "Jazz" and plan[0]["action"] == "skip: has a genre"
    assert {row["action"] for row in plan[1:]} == {"write"}
    assert all(row["predicted_genre"] in GENRES and 0.5 <= float(row["probability"]) <= 1.0 for row in plan)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_write_tags_the_genre_keeps_other_tags_and_the_audio(run, tmp_path, suffix):
    (path,) = library(tmp_path, [suffix])
    set_tags(path)  # a title that must survive
    os.chmod(path, 0o640)
    frames, audio = packets(path), decoded(path)
    result = tag(str(run), str(path), "--write", "--json")
    assert result.exit_code == 0, result.output
    (row,) = rows(result)
    assert row["action"] == "written" and row["predicted_genre"] in GENRES
    assert genre_tag(path) == [row["predicted_genre"]]
    assert title_tag(path) == "A title"
    assert packets(path) == frames  # the compressed audio frames, byte for byte
    assert np.array_equal(decoded(path), audio)
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert list(tmp_path.iterdir()) == [path]


def test_tag_predicts_what_predict_predicts(run, tmp_path):
    paths = library(tmp_path, [".mp3", ".flac"])
    tagged = rows(tag(str(run), *map(str, paths), "--json"))
    predicted = [json.loads(line) for line in CliRunner().invoke(app, ["predict", str(run), *map(str, paths), "--json", "--top", "1"]).stdout.splitlines()]
    assert [(r["predicted_genre"], r["probability"]) for r in tagged] == [(p["top"][0]["genre"], p["top"][0]["probability"]) for p in predicted]


def test_existing_genre_is_kept_unless_overwrite_existing(run, tmp_path):
    paths = library(tmp_path, [".mp3", ".flac", ".m4a"])
    for path in paths:
        set_tags(path, genre="Jazz")
    result = tag(str(run), str(tmp_path), "--write", "--json")
    assert result.exit_code == 0 and {row["action"] for row in rows(result)} == {"skip: has a genre"}
    assert all(genre_tag(path) == ["Jazz"] for path in paths)
    result = tag(str(run), str(tmp_path), "--write", "--json", "--overwrite-existing")
    assert result.exit_code == 0, result.output
    for row, path in zip(rows(result), paths):
        assert row["current_genre"] == ["Jazz"] and row["action"] == "written"
        assert genre_tag(path) == [row["predicted_genre"]]
        assert title_tag(path) == "A title"


def test_min_probability_leaves_unsure_files_alone(run, tmp_path):
    paths = library(tmp_path, [".mp3", ".opus"])
    before = digest(paths)
    result = tag(str(run), str(tmp_path), "--write", "--json", "--min-probability", "0.9999")
    assert result.exit_code == 0, result.output
    assert {row["action"] for row in rows(result)} == {"skip: unsure"}
    assert digest(paths) == before


def test_unreadable_files_get_one_line_each_and_the_rest_are_tagged(run, tmp_path):
    (good,) = library(tmp_path, [".flac"])
    broken = write_broken_files(tmp_path / "broken", encode(".mp3"))
    (tmp_path / "broken" / "noise.wav").write_bytes(b"RIFF....not really a wave file")
    result = tag(str(run), str(tmp_path), "--write")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 4 and all(any(line.startswith(f"error: {path}:") for line in errors) for path in broken.values())
    assert "Traceback" not in result.output
    assert genre_tag(good) and genre_tag(good)[0] in GENRES


def test_read_only_file_is_reported_not_replaced(run, tmp_path):
    (path,) = library(tmp_path, [".mp3"])
    os.chmod(path, 0o444)
    before = digest([path])
    result = tag(str(run), str(path), "--write")
    assert result.exit_code == 1 and "read-only" in result.stderr
    assert digest([path]) == before


@pytest.mark.parametrize("where", ["save", "rename"])
def test_interrupted_write_leaves_the_file_as_it_was(run, tmp_path, monkeypatch, where):
    (path,) = library(tmp_path, [".flac"])
    before = digest([path])

    def crash_mid_save(self, *args, **kwargs):
        with open(self.filename, "r+b") as stream:  # half-written tag, then the power goes
            stream.write(b"\0" * 4096)
        raise KeyboardInterrupt

    def crash_before_rename(*args):
        raise KeyboardInterrupt

    if where == "save":
        monkeypatch.setattr("mutagen.flac.FLAC.save", crash_mid_save)
    else:
        monkeypatch.setattr(tag_module.os, "replace", crash_before_rename)
    result = tag(str(run), str(path), "--write")
    assert result.exit_code == 130
    assert digest([path]) == before
    assert list(tmp_path.iterdir()) == [path]  # the temporary copy is gone


def test_missing_mutagen_names_the_extra_in_one_line(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mutagen", None)
    result = tag(str(run), str(tmp_path))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: tagging needs mutagen: pip install 'streamgenre[tag]'"]


# -- no run folder: the pretrained tagger's genre tags -----------------------------------------
def test_the_tagger_plans_then_writes_its_top_genres_in_every_format(tmp_path):
    from streamgenre.models.musicnn import GENRE_TAGS

    paths = library(tmp_path / "music")
    before, frames = digest(paths), {path: packets(path) for path in paths}
    planned = rows(tag("musicnn", str(tmp_path / "music"), "--json", "--top", "2"))
    assert digest(paths) == before
    assert [row["action"] for row in planned] == ["write"] * len(paths)
    result = tag("musicnn", str(tmp_path / "music"), "--json", "--top", "2", "--write")
    assert result.exit_code == 0, result.output
    for row, path in zip(rows(result), paths):
        genres = [item["genre"] for item in row["genres"]]
        assert row["action"] == "written" and len(genres) == 2 and set(genres) <= set(GENRE_TAGS.values())
        assert genre_tag(path) == genres and row["predicted_genre"] == "; ".join(genres)
        assert packets(path) == frames[path]
    assert rows(result)[0]["genres"] == planned[0]["genres"]


def test_a_map_names_the_genres_each_from_its_most_likely_tag(tmp_path):
    (path,) = library(tmp_path / "music", [".flac"])
    mapping = tmp_path / "tags.csv"
    mapping.write_text("tag,genre\nrock,Guitar\nMetal,Guitar\nelectronic,Machines\nambient,Machines\nHIP-HOP,Beats\n")
    (row,) = rows(tag("musicnn", str(path), "--json", "--map", str(mapping), "--top", "3"))
    (predicted,) = [json.loads(line) for line in CliRunner().invoke(app, ["predict", "musicnn", str(path), "--json"]).stdout.splitlines()]
    tags = {item["genre"]: item["probability"] for item in predicted["top"]}
    expected = {"Guitar": max(tags["rock"], tags["metal"]), "Machines": max(tags["electronic"], tags["ambient"]), "Beats": tags["Hip-Hop"]}
    assert [item["genre"] for item in row["genres"]] == sorted(expected, key=expected.get, reverse=True)
    assert {item["genre"]: item["probability"] for item in row["genres"]} == expected


def test_a_genre_longer_than_its_column_still_leaves_the_next_column_apart(tmp_path):
    (path,) = library(tmp_path / "music", [".mp3"])
    long_name = "Progressive Electronic Soundscapes"
    mapping = tmp_path / "tags.csv"
    mapping.write_text("tag,genre\n" + "".join(f"{tag},{long_name}\n" for tag in ("rock", "electronic", "ambient", "pop", "Metal")))
    result = tag("musicnn", str(path), "--map", str(mapping))
    (line,) = [line for line in result.output.splitlines() if str(path) in line]
    assert f"{long_name}  " in line, line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tag,genre\nrock,Rock\nrokc,Rock\n", "line 3: 'rokc' is not one of the model's tags; known: rock, pop, alternative,"),
        ("genre,tag\nRock,rock\n", "the first row must be the header tag,genre"),
        ("tag,genre\nrock,\n", "line 2: expected tag,genre, got 'rock,'"),
    ],
)
def test_a_bad_map_is_one_clear_line(tmp_path, text, message):
    (path,) = library(tmp_path / "music", [".mp3"])
    (tmp_path / "tags.csv").write_text(text)
    result = tag("musicnn", str(path), "--map", str(tmp_path / "tags.csv"))
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: --map {tmp_path / 'tags.csv'}") and message in line


def _dead_pid() -> int:
    import subprocess
    import sys

    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout)


def test_a_killed_writes_temporary_is_not_music_and_is_removed_by_the_next_tag(run, tmp_path):
    (path,) = library(tmp_path, [".mp3"])
    left = tmp_path / f".{path.name}.{_dead_pid()}-x-0123abcd.streamgenre-tmp"
    left.write_bytes(path.read_bytes())  # a whole copy, as a SIGKILL before the rename leaves it
    result = tag(str(run), str(tmp_path), "--write")
    assert result.exit_code == 0, result.output
    assert "1 file: 1 written" in result.output and not left.exists()


def test_an_unwritable_csv_is_refused_before_any_file_is_tagged(run, tmp_path):
    (path,) = library(tmp_path / "music", [".mp3"])
    before = digest([path])
    (tmp_path / "plans").write_text("a file, not a folder")
    result = tag(str(run), str(path), "--write", "--csv", str(tmp_path / "plans" / "plan.csv"))
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        f"error: cannot write --csv {tmp_path / 'plans' / 'plan.csv'}: {tmp_path / 'plans'} is a file, not a folder"
    ]
    assert digest([path]) == before


def test_a_fifo_is_an_error_line_not_a_hang(run, tmp_path):
    import os
    import subprocess
    import sys

    (path,) = library(tmp_path, [".mp3"])
    os.mkfifo(tmp_path / "pipe.mp3")
    command = [sys.executable, "-m", "streamgenre", "tag", str(run), str(tmp_path / "pipe.mp3"), str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)  # the timeout only guards against the hang
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: {tmp_path / 'pipe.mp3'}: cannot read its tags: not a regular file (a FIFO)" in result.stderr
