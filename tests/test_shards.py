"""The on-disk contract under damage: sample json, index.json, and `info --verify`."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamgenre.cli import app
from streamgenre.errors import ShardFormatError
from streamgenre.shards import SampleMeta, read_index, shard_name
from tests.conftest import write_packed_dir


def flip_header_byte(path: Path, member: int) -> None:
    """Flip one bit in the name field of the tar header of the `member`-th member (a bad checksum)."""
    with tarfile.open(path) as tar:
        offset = tar.getmembers()[member].offset
    data = bytearray(path.read_bytes())
    data[offset + 3] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def packed(tmp_path) -> Path:
    write_packed_dir(tmp_path / "packed", ["ambient", "rock"], {"train": 2, "val": 1}, per_shard=3, clip_s=1.0)
    return tmp_path / "packed"


def test_sample_meta_round_trips_what_pack_writes():
    meta = SampleMeta("rock", track_id="a-1", label=1, split="train", duration_s=29.98, sample_rate=44100, channels=2, source="x.mp3", short=True)
    assert SampleMeta.from_json(meta.to_json()) == meta
    assert json.loads(meta.to_json()) == {**meta.to_dict()} and "artist" not in meta.to_dict()
    assert SampleMeta.from_json(b'{"genre": "rock", "duration_s": 8, "future_field": 1}').duration_s == 8.0


@pytest.mark.parametrize(
    "data",
    [
        b"\x89garbage",
        b"[1, 2]",
        b"null",
        b'{"duration_s": 3.0}',
        b'{"genre": 5}',
        b'{"genre": "rock", "duration_s": "long"}',
        b'{"genre": "rock", "label": true}',
    ],
)
def test_garbage_sample_json_is_a_shard_format_error(data):
    with pytest.raises(ShardFormatError, match="sample json"):
        SampleMeta.from_json(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("null", "not a streamgenre index"),
        ("[]", "not a streamgenre index"),
        ("COUNT", "shards[0].count"),
        ("LABELS", "labels must be a list"),
        ("GENRE", "counts.train.ambient"),
    ],
)
def test_malformed_index_is_one_format_error(packed, text, message):
    index = json.loads((packed / "index.json").read_text())
    if text == "COUNT":
        index["shards"][0]["count"] = "3"
    elif text == "LABELS":
        index["labels"] = "ambient,rock"
    elif text == "GENRE":
        index["counts"]["train"]["ambient"] = None
    else:
        index = json.loads(text)
    (packed / "index.json").write_text(json.dumps(index))
    with pytest.raises(ShardFormatError, match=message.replace("[", r"\[")):
        read_index(packed)
    result = CliRunner().invoke(app, ["info", str(packed)])
    assert result.exit_code == 2 and result.output.startswith("error:") and result.output.count("\n") == 1


def test_verify_passes_an_intact_pack(packed):
    result = CliRunner().invoke(app, ["info", str(packed), "--verify", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "all 3 shards match index.json" in result.stdout


def test_verify_lists_each_damaged_shard_and_exits_1(packed):
    flip_header_byte(packed / shard_name("train", 1), member=2)  # the second sample's json header
    data = bytearray((packed / shard_name("val", 0)).read_bytes())
    data[2000] ^= 0x40  # inside a member's payload: the tar still reads, the hash does not match
    (packed / shard_name("val", 0)).write_bytes(bytes(data))
    result = CliRunner().invoke(app, ["info", str(packed), "--verify", "--quiet"])
    assert result.exit_code == 1
    damaged = [line for line in result.stderr.splitlines() if line.startswith("damaged:")]
    assert len(damaged) == 2
    assert damaged[0].startswith("damaged: train-000001.tar:") and "1 readable samples, index.json says 3" in damaged[0]
    assert damaged[1].startswith("damaged: val-000000.tar:") and "sha256" in damaged[1] and "readable samples" not in damaged[1]
    assert "2 of 3 shards are damaged: train-000001.tar, val-000000.tar" in result.stdout


def test_verify_reads_remote_locations_and_reports_missing_shards(packed):
    (packed / shard_name("train", 0)).unlink()
    result = CliRunner().invoke(app, ["info", f"pipe:cat {packed}/{{name}}", "--verify", "--quiet"])
    assert result.exit_code == 1
    assert "damaged: train-000000.tar:" in result.stderr and "1 of 3 shards are damaged" in result.stdout


def test_verify_checks_each_samples_genre_against_the_index(packed):
    index = json.loads((packed / "index.json").read_text())
    index["labels"] = ["jazz", "rock"]  # 'ambient' samples no longer have a label
    (packed / "index.json").write_text(json.dumps(index))
    result = CliRunner().invoke(app, ["info", str(packed), "--verify", "--quiet"])
    assert result.exit_code == 1
    assert "samples do not match index.json's labels, e.g." in result.stderr and "genre 'ambient' is not in index.json" in result.stderr


@pytest.mark.parametrize(("index", "why"), [({"format": 99}, "its format is 99"), ({"format": 1, "mystery": 1}, "unknown keys: ['mystery']")])
def test_an_index_of_another_format_says_what_is_wrong_with_it(tmp_path, index, why):
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(ShardFormatError, match=re.escape(f"not a streamgenre index of format 1 ({why}); pack the source again")):
        read_index(str(tmp_path))


def test_a_file_given_for_the_shards_directory_is_called_a_file(packed):
    result = CliRunner().invoke(app, ["info", str(packed / "index.json")])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output == f"error: {packed / 'index.json'} is a file; give the directory `streamgenre pack` wrote (it holds index.json)\n"
