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
    rows = [
        (number, genre, split, "small", str(number % 3))
        for number, (genre, split) in enumerate(
            [(genre, split) for genre in ("Folk", "Hip-Hop", "Pop") for split in ("training", "training", "validation", "test")], start=2
        )
    ]
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


@pytest.mark.parametrize(("error", "raised"), [(KeyboardInterrupt, KeyboardInterrupt), (OSError, InputError)])  # a disk error: one line
def test_an_interrupted_pack_leaves_no_index_and_no_temp_dir(tiny_corpus, tmp_path, monkeypatch, error, raised):
    real_write_shard, calls = streamgenre.pack.write_shard, []

    def fail_on_second_shard(*args):
        calls.append(args)
        if len(calls) == 2:
            raise error("stopped mid-way")
        return real_write_shard(*args)

    monkeypatch.setattr(streamgenre.pack, "write_shard", fail_on_second_shard)
    config = PackConfig(source=tiny_corpus, out=tmp_path / "shards", max_count=4, workers=1)
    with pytest.raises(raised):
        pack(config, progress=False)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / INDEX_NAME).write_text("{}")  # an earlier pack, which --overwrite must keep on failure
    calls.clear()
    with pytest.raises(raised):
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


# -- nothing lost, nothing silent --------------------------------------------------------------
def _one_error_line(result, message: str) -> None:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory, chord_mp3) -> Path:
    """Genre folders with names that clean to the same id, a hidden file, a stray top-level file, a damaged clip."""
    from tests.test_audio import damage_middle

    root = tmp_path_factory.mktemp("messy")
    names = ["album1/01.mp3", "album2/01.mp3", "my song.mp3", "my_song.mp3", "Тема.mp3", "主题.mp3"]
    for number, name in enumerate(names):
        for genre in ("folk", "rock"):
            (root / genre / name).parent.mkdir(parents=True, exist_ok=True)
            (root / genre / name).write_bytes(_clip(genre, number))
    (root / "rock" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "notes.txt").write_text("not in a genre folder")
    (root / "rock" / "damaged.mp3").write_bytes(damage_middle(chord_mp3))
    return root


def test_folder_pack_keeps_every_file_whose_name_cleans_to_a_taken_id(messy_folder, tmp_path):
    report = pack(PackConfig(source=messy_folder, out=tmp_path / "out", workers=1), progress=False)
    assert report.packed == 12
    samples = _samples(tmp_path / "out")
    assert sorted(Path(s["meta"]["source"]).relative_to(messy_folder).as_posix() for s in samples.values()) == sorted(
        f"{genre}/{name}" for genre in ("folk", "rock") for name in ["album1/01.mp3", "album2/01.mp3", "my song.mp3", "my_song.mp3", "Тема.mp3", "主题.mp3"]
    )
    assert _rejected(tmp_path / "out") == {".DS_Store": "hidden", "notes.txt": "not in a genre folder", "damaged.mp3": "damaged audio"}
    with open(tmp_path / "out" / REJECTED_NAME, newline="") as stream:
        damaged = next(row for row in csv.DictReader(stream) if row["reason"] == "damaged audio")
    assert damaged["detail"].startswith("damaged audio after ")


def test_a_real_duplicate_in_a_manifest_names_both_paths(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "song.mp3").write_bytes(_clip("rock", 1))
    (tmp_path / "list.csv").write_text("path,genre\na/song.mp3,rock\nb/song.mp3,rock\n")
    pack(PackConfig(source=tmp_path / "list.csv", out=tmp_path / "out", workers=1, val=0, test=0), progress=False)
    with open(tmp_path / "out" / REJECTED_NAME, newline="") as stream:
        (row,) = list(csv.DictReader(stream))
    assert row["reason"] == "duplicate track id" and row["path"].endswith("b/song.mp3") and row["detail"].endswith("a/song.mp3")


def test_an_unreadable_genre_folder_is_listed(messy_folder, tmp_path, monkeypatch):
    import os

    real_scandir = os.scandir

    def scandir(path):  # chmod cannot lock root out, so the listing is made to fail
        if Path(path).name == "album2":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report = pack(PackConfig(source=messy_folder, out=tmp_path / "out", workers=1, genres=("folk",)), progress=False)
    assert report.packed == 5
    with open(tmp_path / "out" / REJECTED_NAME, newline="") as stream:
        rows = {(Path(row["path"]).relative_to(messy_folder).as_posix(), row["reason"]): row["detail"] for row in csv.DictReader(stream)}
    assert rows["folk/album2", "unreadable"] == "cannot list this folder: Permission denied"
    assert rows["rock/album2", "unreadable"] == "cannot list this folder: Permission denied"


def test_out_inside_source_is_refused(tiny_corpus, tmp_path):
    source = tmp_path / "music"
    shutil.copytree(tiny_corpus, source)
    result = CliRunner().invoke(app, ["pack", str(source), "--out", str(source / "shards"), "--quiet"])
    _one_error_line(result, "is inside SOURCE")
    assert not (source / "shards").exists()


@pytest.mark.parametrize(("val", "test"), [(0.89, 0.1), (0.5, 0.49)])
def test_fractions_that_leave_a_genre_no_training_clip_are_refused(tiny_corpus, tmp_path, val, test):
    result = CliRunner().invoke(app, ["pack", str(tiny_corpus), "--out", str(tmp_path / "out"), "--val", str(val), "--test", str(test), "--quiet"])
    _one_error_line(result, "leave no training clip for ambient (6 clips)")
    assert list(tmp_path.iterdir()) == []


def test_an_out_that_cannot_be_written_is_one_line(tiny_corpus, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("a file, not a folder")
    result = CliRunner().invoke(app, ["pack", str(tiny_corpus), "--out", str(tmp_path / "file" / "shards"), "--quiet"])
    _one_error_line(result, "cannot write to --out")

    def read_only(path, samples):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(streamgenre.pack, "write_shard", read_only)
    result = CliRunner().invoke(app, ["pack", str(tiny_corpus), "--out", str(tmp_path / "out"), "--workers", "1", "--quiet"])
    _one_error_line(result, f"cannot write the pack to {tmp_path / 'out'}: Permission denied")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]


def test_non_utf8_manifest_is_one_line(tmp_path):
    (tmp_path / "list.csv").write_bytes("path,genre\ncaf\xe9.mp3,rock\n".encode("latin-1"))
    result = CliRunner().invoke(app, ["pack", str(tmp_path / "list.csv"), "--out", str(tmp_path / "out"), "--quiet"])
    _one_error_line(result, "is not UTF-8 text")


def test_sigterm_cleans_up_like_ctrl_c(tiny_corpus, tmp_path, monkeypatch):
    import os
    import signal

    def terminated(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the pack")

    monkeypatch.setattr(streamgenre.pack, "write_shard", terminated)
    with pytest.raises(SystemExit) as stopped:
        pack(PackConfig(source=tiny_corpus, out=tmp_path / "shards", workers=1), progress=False)
    assert stopped.value.code == 128 + signal.SIGTERM and list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_killed_packs_staging_folder_is_removed_by_the_next_pack(tiny_corpus, tmp_path, caplog):
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = tmp_path / f".shards.tmp-{int(dead.stdout)}-0123abcd"
    stale.mkdir()
    (stale / "train-000000.tar").write_bytes(b"half a shard")
    busy = tmp_path / f".shards.tmp-{os.getpid()}-4567cdef"  # a pack still running (this process)
    busy.mkdir()
    with caplog.at_level("WARNING", logger="streamgenre.pack"):
        pack(PackConfig(source=tiny_corpus, out=tmp_path / "shards", workers=1, genres=("rock",)), progress=False)
    assert sorted(path.name for path in tmp_path.iterdir()) == [busy.name, "shards"]
    assert f"removed {stale}" in caplog.text and str(busy) not in caplog.text
    assert not (tmp_path / "shards" / ".owner.json").exists()


_POOL_CHILD = """
import sys, time
from streamgenre.pack import _worker_pool
with _worker_pool(2) as pool:
    print(pool.submit(int, "1").result(), flush=True)  # the pool is started (workers wait for work)
    print(*pool._processes, flush=True)
    time.sleep(60)
"""


def test_pool_workers_exit_when_the_pack_process_is_killed():
    import os
    import signal
    import subprocess
    import sys
    import time

    child = subprocess.Popen([sys.executable, "-c", _POOL_CHILD], stdout=subprocess.PIPE, text=True)
    child.stdout.readline()
    workers = [int(pid) for pid in child.stdout.readline().split()]
    assert len(workers) == 2
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped by init, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_genre_with_no_packable_file_is_left_out_of_the_labels(tiny_corpus, tmp_path, caplog):
    source = tmp_path / "music"
    shutil.copytree(tiny_corpus, source)
    (source / "old shards").mkdir()
    (source / "old shards" / "train-000000.tar").write_bytes(b"not audio" * 100)
    with caplog.at_level("WARNING", logger="streamgenre.pack"):
        report = pack(PackConfig(source=source, out=tmp_path / "out", workers=1), progress=False)
    assert report.index.labels == ["ambient", "electronic", "rock"] and "'old shards'" in caplog.text
    assert _rejected(tmp_path / "out") == {"train-000000.tar": "no decodable audio"}


def test_a_pack_killed_while_replacing_dir_gets_the_old_dir_back(tiny_corpus, tmp_path, caplog):
    import subprocess
    import sys

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout)
    retired = tmp_path / f".shards.old-{dead}-0123abcd"
    retired.mkdir()
    (retired / INDEX_NAME).write_text("{}")
    with caplog.at_level("WARNING", logger="streamgenre.pack"), pytest.raises(InputError, match="not empty"):
        pack(PackConfig(source=tiny_corpus, out=tmp_path / "shards", workers=1), progress=False)
    assert (tmp_path / "shards" / INDEX_NAME).read_text() == "{}" and "restored" in caplog.text


def test_a_fifo_or_a_device_in_a_manifest_is_rejected_not_read(tiny_corpus, tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.mp3")
    rows = [f"{path},{path.parent.name}" for path in sorted(tiny_corpus.glob("*/*.mp3"))]
    (tmp_path / "manifest.csv").write_text("path,genre\n" + "\n".join([*rows, f"{tmp_path / 'pipe.mp3'},rock", "/dev/zero,rock"]) + "\n")
    pack(PackConfig(source=tmp_path / "manifest.csv", out=tmp_path / "out", workers=1), progress=False)
    rejected = (tmp_path / "out" / "rejected.csv").read_text()
    assert (
        "pipe.mp3,pipe,rock,unreadable,not a regular file (a FIFO)" in rejected and "/dev/zero,zero,rock,unreadable,not a regular file (a device)" in rejected
    )
