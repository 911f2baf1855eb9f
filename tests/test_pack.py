"""`pack` and `info` end to end on tiny generated MP3s, checked with stdlib tarfile and csv."""

from __future__ import annotations

import csv
import json
import re
import shutil
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

import streamgenre
import streamgenre.pack
from streamgenre.cli import app
from streamgenre.errors import InputError
from streamgenre.pack import PackConfig, pack
from streamgenre.shards import INDEX_NAME, REJECTED_NAME, file_sha256, read_index
from streamgenre.synth import encode_mp3, make_clip
from tests.conftest import write_broken_files, write_tracks_csv


def _samples(out: Path) -> dict[str, dict]:
    """Every sample of every shard, read with tarfile: key -> {meta, mp3, shard}."""
    samples: dict[str, dict] = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, extension = member.name.split(".", 1)
                samples.setdefault(key, {"shard": shard.name})[extension] = tar.extractfile(member).read()
    for sample in samples.values():
        sample["meta"] = json.loads(sample.pop("json"))
    return samples


def _rejected(out: Path) -> dict[str, str]:
    """rejected.csv as file name -> reason."""
    with open(out / REJECTED_NAME, newline="") as stream:
        return {Path(row["path"]).name: row["reason"] for row in csv.DictReader(stream)}


def _clip(genre: str, seed: int, duration_s: float = 2.0) -> bytes:
    return encode_mp3(make_clip(genre, seed, duration_s), 22050)


@pytest.fixture(scope="module")
def packed_tiny(tiny_corpus, tmp_path_factory):
    """The tiny corpus (3 genres x 6 clips of 8 s) packed with 2 workers, at most 4 clips a shard."""
    config = PackConfig(source=tiny_corpus, out=tmp_path_factory.mktemp("packed") / "shards", max_count=4, workers=2)
    return config, pack(config, progress=False)


def test_mp3s_round_trip_byte_identical_with_their_labels(packed_tiny):
    config, report = packed_tiny
    samples = _samples(config.out)
    assert len(samples) == report.packed == 18
    for key, sample in samples.items():
        meta = sample["meta"]
        assert sample["mp3"] == Path(meta["source"]).read_bytes()
        assert key == meta["track_id"] == Path(meta["source"]).stem and "." not in key
        assert meta["label"] == report.index.labels.index(meta["genre"]) and meta["genre"] == Path(meta["source"]).parent.name
        assert meta["split"] == sample["shard"].split("-")[0]
        assert (meta["sample_rate"], meta["channels"], meta["duration_s"], meta["short"]) == (22050, 1, 8.0, True)
    assert report.short_count == 18 and report.rejected == {}


def test_index_counts_sizes_and_hashes_match_the_shards(packed_tiny):
    config, report = packed_tiny
    index = read_index(config.out)
    assert index == report.index and index.labels == ["ambient", "electronic", "rock"]
    found = Counter((sample["meta"]["split"], sample["meta"]["genre"]) for sample in _samples(config.out).values())
    assert {(split, genre): count for split, genres in index.counts.items() for genre, count in genres.items() if count} == found
    assert all(index.counts[split][genre] == expected for genre in index.labels for split, expected in (("train", 4), ("val", 1), ("test", 1)))
    for entry in index.shards:
        path = config.out / entry.name
        assert (entry.size_bytes, entry.sha256) == (path.stat().st_size, file_sha256(path))
    assert sorted(entry.name for entry in index.shards) == sorted(path.name for path in config.out.glob("*.tar"))
    assert index.version == streamgenre.__version__ and index.options["max_count"] == 4 and index.options["seed"] == 0
    assert (config.out / REJECTED_NAME).read_text() == "path,track_id,genre,reason,detail\n"


def test_max_count_gives_several_shards_that_each_mix_genres(packed_tiny):
    config, report = packed_tiny
    train = report.index.split_shards("train")
    assert [entry.name for entry in train] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    genres_per_shard: dict[str, set[str]] = {}
    for sample in _samples(config.out).values():
        genres_per_shard.setdefault(sample["shard"], set()).add(sample["meta"]["genre"])
    assert all(entry.count <= 4 for entry in report.index.shards)
    assert all(len(genres_per_shard[entry.name]) > 1 for entry in train)


def test_one_worker_writes_the_same_shards_as_two(packed_tiny, tmp_path):
    config, report = packed_tiny
    serial = pack(PackConfig(source=config.source, out=tmp_path / "serial", max_count=4, workers=1), progress=False)
    assert serial.index.shards == report.index.shards


def test_every_rejected_file_is_listed_with_its_reason(tmp_path, chord_mp3):
    clips = tmp_path / "clips"
    clips.mkdir()
    rows = []
    for number in range(3):
        for genre in ("folk", "rock"):
            (clips / f"{genre}{number}.mp3").write_bytes(_clip(genre, number))
            rows.append(f"clips/{genre}{number}.mp3,{genre},artist{number}")
    broken = write_broken_files(tmp_path / "broken", chord_mp3)
    (tmp_path / "broken" / "blip.mp3").write_bytes(chord_mp3[:1500])  # decodes, to a few milliseconds
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "rock0.mp3").write_bytes(_clip("rock", 9))
    rows += [f"{path},rock," for path in broken.values()]
    rows += ["broken/blip.mp3,folk,", "again/rock0.mp3,rock,", "clips/unlabelled.mp3,,", "clips/gone.mp3,folk,"]
    (clips / "unlabelled.mp3").write_bytes(_clip("folk", 7))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,genre,artist\n" + "\n".join(rows) + "\n")
    report = pack(PackConfig(source=manifest, out=tmp_path / "out", workers=1), progress=False)
    assert report.packed == 6
    assert _rejected(tmp_path / "out") == {
        "empty.mp3": "empty file",
        "notes.mp3": "no decodable audio",
        "truncated.mp3": "no decodable audio",
        "blip.mp3": "too short",
        "rock0.mp3": "duplicate track id",
        "unlabelled.mp3": "missing label",
        "gone.mp3": "unreadable",
    }
    assert report.rejected == {"no decodable audio": 2, "empty file": 1, "too short": 1, "duplicate track id": 1, "missing label": 1, "unreadable": 1}
    assert {sample["meta"]["artist"] for sample in _samples(tmp_path / "out").values()} == {"artist0", "artist1", "artist2"}


def _fma(root: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """A miniature FMA: ``audio/NNN/NNNNNN.mp3`` and a tracks.csv; returns (audio, tracks.csv, bytes by id)."""
    rows = [(number, genre, split, "small", str(number % 3)) for number, (genre, split) in enumerate(
        [(genre, split) for genre in ("Folk", "Hip-Hop", "Pop") for split in ("training", "training", "validation", "test")], start=2)]
    rows += [(148, "", "training", "small", "9"), (200, "Rock", "training", "medium", "8"), (99134, "Pop", "training", "small", "7")]
    originals = {}
    for number, genre, *_ in rows:
        key = f"{number:06d}"
        originals[key] = _clip(genre.lower() if genre.lower() in ("folk", "rock") else "hiphop", number)
    originals["099134"] = b"ID3" + bytes(400)  # like fma_small's broken files: a header and no audio
    originals["000999"] = _clip("folk", 999)  # a file tracks.csv does not know
    audio = root / "audio"
    for key, data in originals.items():
        (audio / key[:3]).mkdir(parents=True, exist_ok=True)
        (audio / key[:3] / f"{key}.mp3").write_bytes(data)
    return audio, write_tracks_csv(root / "tracks.csv", rows), originals


def _check_fma_pack(out: Path, originals: dict[str, bytes]) -> None:
    samples = _samples(out)
    assert sorted(samples) == [f"{number:06d}" for number in range(2, 14)]
    assert all(sample["mp3"] == originals[key] for key, sample in samples.items())
    assert Counter(sample["meta"]["split"] for sample in samples.values()) == {"train": 6, "val": 3, "test": 3}
    assert samples["000004"]["meta"]["split"] == "val" and samples["000005"]["meta"]["split"] == "test"
    assert (samples["000007"]["meta"]["genre"], samples["000007"]["meta"]["label"], samples["000007"]["meta"]["artist"]) == ("Hip-Hop", 1, "1")
    assert read_index(out).labels == ["Folk", "Hip-Hop", "Pop"]
    rejected = {name.rsplit("/", 1)[-1]: reason for name, reason in _rejected(out).items()}
    assert rejected == {"000148.mp3": "missing label", "000999.mp3": "missing label", "099134.mp3": "no decodable audio"}


def test_fma_tree_takes_labels_splits_and_artists_from_tracks_csv(tmp_path):
    audio, tracks_csv, originals = _fma(tmp_path)
    pack(PackConfig(source=audio, metadata=tracks_csv, subset="small", out=tmp_path / "out", workers=1), progress=False)
    _check_fma_pack(tmp_path / "out", originals)


def test_fma_zip_is_packed_without_extracting_it(tmp_path):
    audio, tracks_csv, originals = _fma(tmp_path)
    archive = tmp_path / "fma_small.zip"
    with zipfile.ZipFile(archive, "w") as opened:
        for path in sorted(audio.rglob("*.mp3")):
            opened.write(path, f"fma_small/{path.relative_to(audio)}")
    shutil.rmtree(audio)
    pack(PackConfig(source=archive, metadata=tracks_csv, subset="small", out=tmp_path / "out", workers=2), progress=False)
    _check_fma_pack(tmp_path / "out", originals)
    assert not list(tmp_path.rglob("*.mp3"))  # nothing was extracted


def test_genres_option_filters_and_orders_the_labels(tiny_corpus, tmp_path):
    report = pack(PackConfig(source=tiny_corpus, out=tmp_path / "out", genres=("rock", "ambient"), max_per_genre=4, workers=1), progress=False)
    assert report.index.labels == ["rock", "ambient"]
    assert {(sample["meta"]["genre"], sample["meta"]["label"]) for sample in _samples(tmp_path / "out").values()} == {("rock", 0), ("ambient", 1)}
    assert report.rejected == {"genre not selected": 6, "over --max-per-genre": 4}
    assert all(sum(report.index.counts[split][genre] for split in report.index.counts) == 4 for genre in ("rock", "ambient"))
    with pytest.raises(InputError, match="'jazz' not in the source; known genres: ambient, electronic, rock"):
        pack(PackConfig(source=tiny_corpus, out=tmp_path / "other", genres=("jazz",)), progress=False)


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_an_interrupted_pack_leaves_no_index_and_no_temp_dir(tiny_corpus, tmp_path, monkeypatch, error):
    real_write_shard, calls = streamgenre.pack.write_shard, []

    def fail_on_second_shard(*args):
        calls.append(args)
        if len(calls) == 2:
            raise error("stopped mid-way")
        return real_write_shard(*args)

    monkeypatch.setattr(streamgenre.pack, "write_shard", fail_on_second_shard)
    config = PackConfig(source=tiny_corpus, out=tmp_path / "shards", max_count=4, workers=1)
    with pytest.raises(error):
        pack(config, progress=False)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / INDEX_NAME).write_text("{}")  # an earlier pack, which --overwrite must keep on failure
    calls.clear()
    with pytest.raises(error):
        pack(PackConfig(source=tiny_corpus, out=tmp_path / "shards", max_count=4, workers=1, overwrite=True), progress=False)
    assert [path.name for path in tmp_path.iterdir()] == ["shards"] and (tmp_path / "shards" / INDEX_NAME).read_text() == "{}"


def test_a_non_empty_dir_needs_overwrite_and_a_readme_survives(tiny_corpus, tmp_path):
    out = tmp_path / "shards"
    out.mkdir()
    (out / "README.md").write_text("tracked readme")
    config = PackConfig(source=tiny_corpus, out=out, genres=("rock",), workers=1)
    pack(config, progress=False)  # a DIR holding only README.md counts as empty
    (out / "stale.tar").write_bytes(b"old")
    with pytest.raises(InputError, match="is not empty .*--overwrite"):
        pack(config, progress=False)
    pack(PackConfig(source=tiny_corpus, out=out, genres=("ambient",), workers=1, overwrite=True), progress=False)
    assert (out / "README.md").read_text() == "tracked readme" and not (out / "stale.tar").exists()
    assert read_index(out).labels == ["ambient"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["shards"]
    with pytest.raises(InputError, match="holds SOURCE"):
        pack(PackConfig(source=out, out=out, overwrite=True), progress=False)


def _write(root: Path, relative: str, text: str) -> Path:
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    (root / relative).write_text(text)
    return root / relative


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (lambda root: [str(root / "missing")], "does not exist"),
        (lambda root: [str(_write(root, "empty/.keep", "").parent)], "has no genre folders"),
        (lambda root: [str(_write(root, "list.csv", "file,label\na.mp3,rock\n"))], "lacks the column"),
        (lambda root: [str(root / "clips"), "--metadata", str(_write(root, "tracks.csv", ",set\n,split\ntrack_id,\n"))], "track.genre_top"),
        (lambda root: [str(root / "clips"), "--genres", "rock,jazz"], "known genres: folk, rock"),
        (lambda root: [str(root / "clips"), "--shard-size", "big"], "not a size"),
        (lambda root: [str(root / "clips")], "no file could be packed (2 rejected: 2 no decodable audio)"),
    ],
)
def test_cli_bad_source_is_one_error_line_and_exit_2(tmp_path, arguments, message):
    for genre in ("folk", "rock"):
        _write(tmp_path, f"clips/{genre}/{genre}.mp3", "not audio")
    result = CliRunner().invoke(app, ["pack", *arguments(tmp_path), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_cli_pack_prints_a_summary_and_info_shows_counts_per_genre(tiny_corpus, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["pack", str(tiny_corpus), "--out", str(out), "--max-count", "5", "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "packed 18 clips (train 12, val 3, test 3) into 5 shards" in result.stdout
    result = CliRunner().invoke(app, ["info", str(out)])
    assert result.exit_code == 0, result.output
    for genre in ("ambient", "electronic", "rock"):
        assert re.search(rf"^\s*\d\s+{genre}\s+4\s+1\s+1\s+6$", result.stdout, re.MULTILINE)
    assert re.search(r"^\s+total\s+12\s+3\s+3\s+18$", result.stdout, re.MULTILINE)
    assert "shards: 5 (train 3, val 1, test 1)" in result.stdout and "max_count=5" in result.stdout


def test_real_clips_pack_from_the_manifest_with_artists_in_one_split(shared_data, tmp_path):
    with open(shared_data / "manifest.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    report = pack(PackConfig(source=shared_data / "manifest.csv", out=tmp_path / "out", workers=2), progress=False)
    assert report.packed == len(rows) == 133 and report.rejected == {} and report.short_count == 0
    samples = _samples(tmp_path / "out")
    assert Counter(sample["meta"]["genre"] for sample in samples.values()) == Counter(row["genre"] for row in rows)
    splits_of_artist: dict[str, set[str]] = {}
    for sample in samples.values():
        splits_of_artist.setdefault(sample["meta"]["artist"], set()).add(sample["meta"]["split"])
    assert all(len(splits) == 1 for splits in splits_of_artist.values())
    assert all(report.index.split_count(split) > 0 for split in ("train", "val", "test"))
    assert {sample["meta"]["channels"] for sample in samples.values()} == {2}
