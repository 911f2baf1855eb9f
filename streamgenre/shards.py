"""The on-disk contract of a packed directory, read and written here only.

A packed DIR holds ``{split}-{i:06d}.tar`` shards (members ``<key>.mp3`` and ``<key>.json`` per
sample), ``index.json`` (`ShardIndex`) and ``rejected.csv``. Knows nothing about decoding.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any

from streamgenre.errors import ShardFormatError
from streamgenre.files import atomic_write

SPLITS = ("train", "val", "test")
INDEX_NAME = "index.json"
REJECTED_NAME = "rejected.csv"
AUDIO_MEMBER = "mp3"
META_MEMBER = "json"
INDEX_FORMAT = 1
_TAR_MTIME = 946684800  # 2000-01-01: fixed so the same input gives the same sha256


def shard_name(split: str, number: int) -> str:
    """``train-000003.tar`` for split ``train``, shard 3."""
    return f"{split}-{number:06d}.tar"


@dataclass(frozen=True)
class ShardEntry:
    """One shard file as listed in index.json."""

    name: str
    split: str
    count: int
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class SampleMeta:
    """A sample's ``json`` member: what `pack` writes, and what every reader parses and checks.

    Only `genre` is required to read a sample; the rest is what pack records (older or hand-made
    shards may lack it). `short` flags a clip under 30 s, `source` is the file it came from.
    """

    genre: str
    track_id: str | None = None
    label: int | None = None
    split: str | None = None
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    source: str | None = None
    short: bool | None = None
    artist: str | None = None

    def __post_init__(self):
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None:
                if item.name == "genre":
                    raise ShardFormatError("sample json lacks 'genre'")
                continue
            kind = _META_TYPES[item.name]
            if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                raise ShardFormatError(f"sample json field {item.name!r} is {value!r}, not a {_TYPE_NAMES[kind]}")
        if self.duration_s is not None and not (math.isfinite(self.duration_s) and self.duration_s >= 0):
            raise ShardFormatError(f"sample json duration_s {self.duration_s!r} is not a duration")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, without the fields that are unknown (None)."""
        return {name: value for name, value in asdict(self).items() if value is not None}

    def to_json(self) -> bytes:
        """The member's bytes, keys sorted so the same sample always gives the same bytes."""
        return json.dumps(self.to_dict(), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SampleMeta:
        """Parse and check a ``json`` member; unknown keys are ignored (newer writers may add some).

        Raises:
            ShardFormatError: not UTF-8 JSON, not an object, no genre, or a field of the wrong type.
        """
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, ValueError) as exn:
            raise ShardFormatError(f"sample json is not valid JSON: {exn}") from None
        if not isinstance(value, dict):
            raise ShardFormatError(f"sample json is a {type(value).__name__}, not an object")
        known = {item.name for item in fields(cls)}
        value = {name: item for name, item in value.items() if name in known}
        if isinstance(value.get("duration_s"), int) and not isinstance(value.get("duration_s"), bool):
            value["duration_s"] = float(value["duration_s"])
        if "genre" not in value:
            raise ShardFormatError("sample json lacks 'genre'")
        return cls(**value)


_META_TYPES = {
    "genre": str,
    "track_id": str,
    "label": int,
    "split": str,
    "duration_s": float,
    "sample_rate": int,
    "channels": int,
    "source": str,
    "short": bool,
    "artist": str,
}
_TYPE_NAMES = {str: "string", int: "whole number", float: "number", bool: "true/false"}


@dataclass(frozen=True)
class ShardIndex:
    """index.json: label names in index order, per-split per-genre counts, every shard."""

    labels: list[str]
    counts: dict[str, dict[str, int]]
    shards: list[ShardEntry]
    options: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    format: int = INDEX_FORMAT

    def split_count(self, split: str, genres: Iterable[str] | None = None) -> int:
        """Samples in `split`, only those of `genres` if given."""
        per_genre = self.counts.get(split, {})
        wanted = per_genre.keys() if genres is None else genres
        return sum(per_genre.get(genre, 0) for genre in wanted)

    def split_shards(self, split: str) -> list[ShardEntry]:
        """The shards of `split`, in name order."""
        return sorted((entry for entry in self.shards if entry.split == split), key=lambda entry: entry.name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (see `from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ShardIndex:
        """Rebuild from `to_dict` output, checking every field's type.

        Raises:
            ShardFormatError: not an object, unknown or missing keys, or a value of the wrong type.
        """
        if not isinstance(data, dict):
            raise ShardFormatError(f"index.json holds {json.dumps(data)[:40]}, not a streamgenre index object")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown or data.get("format") != INDEX_FORMAT:
            why = f"unknown keys: {sorted(unknown)}" if unknown else f"its format is {data.get('format')!r}"
            raise ShardFormatError(f"index.json is not a streamgenre index of format {INDEX_FORMAT} ({why}); pack the source again")
        missing = sorted({"labels", "counts", "shards"} - set(data))
        if missing:
            raise ShardFormatError(f"index.json is malformed: it lacks {', '.join(missing)}")
        _check(isinstance(data["labels"], list) and all(isinstance(label, str) for label in data["labels"]), "labels", "a list of names")
        counts = data["counts"]
        _check(isinstance(counts, dict) and all(isinstance(per, dict) for per in counts.values()), "counts", "split -> genre -> count")
        for split, per_genre in counts.items():
            for genre, count in per_genre.items():
                _check(_is_count(count), f"counts.{split}.{genre}", "a whole number >= 0", count)
        _check(isinstance(data["shards"], list) and all(isinstance(entry, dict) for entry in data["shards"]), "shards", "a list of objects")
        _check(isinstance(data.get("options", {}), dict), "options", "an object")
        _check(isinstance(data.get("version", ""), str), "version", "a string")
        shards = []
        for number, entry in enumerate(data["shards"]):
            names = {f.name for f in fields(ShardEntry)}
            if set(entry) != names:
                raise ShardFormatError(f"index.json shards[{number}] has keys {sorted(entry)}; expected {sorted(names)}")
            for name in ("name", "split", "sha256"):
                _check(isinstance(entry[name], str), f"shards[{number}].{name}", "a string", entry[name])
            for name in ("count", "size_bytes"):
                _check(_is_count(entry[name]), f"shards[{number}].{name} ({entry['name']})", "a whole number >= 0", entry[name])
            shards.append(ShardEntry(**entry))
        return cls(**{**data, "shards": shards})


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check(ok: bool, where: str, expected: str, value: Any = None) -> None:
    if not ok:
        found = "" if value is None else f" (found {json.dumps(value)[:40]})"
        raise ShardFormatError(f"index.json is malformed: {where} must be {expected}{found}")


def read_index(directory: str | Path) -> ShardIndex:
    """Load ``DIR/index.json``; a URL prefix (``pipe:``/``http``) is read through webdataset's gopen.

    Raises:
        ShardFormatError: the index is missing or malformed.
    """
    location = str(directory).rstrip("/")
    try:
        if is_remote(location):
            import webdataset as wds

            with wds.gopen(member_url(location, INDEX_NAME)) as stream:
                data = json.load(stream)
        elif Path(location).is_file():
            raise ShardFormatError(f"{location} is a file; give the directory `streamgenre pack` wrote (it holds {INDEX_NAME})")
        else:
            data = json.loads((Path(location) / INDEX_NAME).read_text())
    except FileNotFoundError as exn:
        raise ShardFormatError(f"{location} has no {INDEX_NAME}: is it a directory made by `streamgenre pack`?") from exn
    except (OSError, ValueError) as exn:
        raise ShardFormatError(f"cannot read {member_url(location, INDEX_NAME)}: {_failure(exn)}") from exn
    return ShardIndex.from_dict(data)


_PIPE_EXIT = re.compile(r"\): exit (-?\d+) \(")


def _failure(exn: Exception) -> str:
    """An error's text; a failed ``pipe:`` command (webdataset prints its arguments) as its exit status."""
    text = str(exn)
    status = _PIPE_EXIT.search(text)
    return f"the command exited with status {status.group(1)}" if status else text


def shard_urls(directory: str | Path, index: ShardIndex, split: str) -> list[str]:
    """Every shard URL of `split` under `directory` (a local path or a URL prefix)."""
    return [member_url(str(directory), entry.name) for entry in index.split_shards(split)]


def member_url(location: str, name: str) -> str:
    """The URL of file `name` in a packed location: ``{name}`` in it is replaced, else ``/name`` is appended.

    The placeholder lets a command put the file name mid-string, e.g.
    ``pipe:aws s3 cp s3://bucket/shards/{name} -``.
    """
    if "{name}" in location:
        return location.replace("{name}", name)
    return f"{location.rstrip('/')}/{name}"


def is_remote(location: str) -> bool:
    """True for anything webdataset opens itself: ``pipe:`` commands and URLs."""
    return location.startswith("pipe:") or "://" in location


def write_index(path: Path, index: ShardIndex) -> None:
    """Write index.json atomically."""
    with atomic_write(path) as stream:
        stream.write(json.dumps(index.to_dict(), indent=2).encode())


def write_shard(path: Path, samples: Iterable[tuple[str, bytes, dict[str, Any] | SampleMeta]]) -> ShardEntry:
    """Write a reproducible tar of ``(key, mp3_bytes, metadata)`` samples; returns its entry.

    Members are ``key.json`` then ``key.mp3`` per sample, with fixed mtime, owner and mode, so
    identical input gives an identical file (and sha256). The name encodes the split.
    """
    count = 0
    with atomic_write(path) as stream, tarfile.open(fileobj=stream, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, audio, meta in samples:
            meta_bytes = meta.to_json() if isinstance(meta, SampleMeta) else json.dumps(meta, sort_keys=True).encode()
            _add_member(tar, f"{key}.{META_MEMBER}", meta_bytes)
            _add_member(tar, f"{key}.{AUDIO_MEMBER}", audio)
            count += 1
    return ShardEntry(path.name, path.name.rsplit("-", 1)[0], count, path.stat().st_size, file_sha256(path))


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = _TAR_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(payload))


# -- verification ----------------------------------------------------------------------------
_KEY_OF_MEMBER = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's grouping: the key ends at the first '.'


@dataclass(frozen=True)
class ShardCheck:
    """What reading one shard end to end found; `problem` is None for an intact shard."""

    entry: ShardEntry
    samples: int  # samples a reader gets out of it
    size_bytes: int
    sha256: str
    problem: str | None = None


def verify_shards(location: str | Path, index: ShardIndex) -> Iterator[ShardCheck]:
    """Stream every shard of `index` once, checking its size, sha256 and sample count against the index.

    A local folder and a remote location (``pipe:`` command, URL prefix) are read the same way,
    block by block, so memory stays flat whatever the shard size.
    """
    for entry in sorted(index.shards, key=lambda entry: entry.name):
        yield verify_shard(member_url(str(location), entry.name), entry, index.labels)


def verify_shard(url: str, entry: ShardEntry, labels: list[str] | None = None) -> ShardCheck:
    """Read one shard (a path or anything webdataset's gopen opens) and compare it with its entry.

    With `labels` (index.json's), each sample's json member must name one of them (and, where it
    gives a label number, that genre's): a sample of another genre would be skipped by every reader.
    """
    reader = _HashingReader()
    problems = []
    try:
        stream = _open_shard(url)
    except Exception as exn:  # noqa: BLE001 (gopen raises whatever its scheme raises; all mean "cannot open")
        return ShardCheck(entry, 0, 0, "", f"cannot open: {_failure(exn)}")
    try:
        reader.stream = stream
        samples, tar_problem, label_problem = _count_samples(reader, labels)
        reader.drain()
        problems += [problem for problem in (tar_problem, label_problem) if problem]
    except Exception as exn:  # noqa: BLE001 (a failing pipe or connection, mid-stream)
        problems.append(f"read failed after {reader.size} bytes: {_failure(exn)}")
        samples = 0
    finally:
        try:
            stream.close()
        except Exception as exn:  # noqa: BLE001 (webdataset's pipes report a failed command when closed)
            problems.append(f"read failed: {_failure(exn)}")
    sha256 = reader.digest.hexdigest()
    if reader.size != entry.size_bytes:
        problems.append(f"{reader.size} bytes, index.json says {entry.size_bytes}")
    if sha256 != entry.sha256:
        problems.append("sha256 differs from index.json")
    if samples != entry.count:
        problems.append(f"{samples} readable samples, index.json says {entry.count}")
    return ShardCheck(entry, samples, reader.size, sha256, "; ".join(problems) or None)


def _open_shard(url: str) -> IO[bytes]:
    if is_remote(url):
        import webdataset as wds

        return wds.gopen(url)
    return open(url, "rb")


def _count_samples(reader: _HashingReader, labels: list[str] | None = None) -> tuple[int, str | None, str | None]:
    """Samples as webdataset groups them (consecutive members sharing a key), read as a stream.

    Returns:
        ``(samples, tar problem, label problem)``; the label problem names the samples whose
        json member is malformed or whose genre (or label number) does not match `labels`.
    """
    samples, key, mislabelled = 0, None, []
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                match = _KEY_OF_MEMBER.match(member.name)
                if not member.isreg() or not match:
                    continue
                if match.group(1) != key:
                    samples, key = samples + 1, match.group(1)
                if labels is not None and match.group(2) == META_MEMBER:
                    problem = _label_problem(tar.extractfile(member).read(), labels)
                    mislabelled += [f"{key} ({problem})"] if problem else []
    except (tarfile.TarError, EOFError, OSError) as exn:
        return samples, f"tar damaged after {samples} samples: {exn}", None
    if not mislabelled:
        return samples, None, None
    return samples, None, f"{len(mislabelled)} samples do not match index.json's labels, e.g. {mislabelled[0]}"


def _label_problem(data: bytes, labels: list[str]) -> str | None:
    """Why a sample's json member does not fit index.json's `labels`; None when it does."""
    try:
        meta = SampleMeta.from_json(data)
    except ShardFormatError as exn:
        return str(exn)
    if meta.genre not in labels:
        return f"genre {meta.genre!r} is not in index.json"
    if meta.label is not None and meta.label != labels.index(meta.genre):
        return f"label {meta.label} but {meta.genre!r} is label {labels.index(meta.genre)}"
    return None


class _HashingReader(io.RawIOBase):
    """A read-only stream that hashes and counts every byte read through it."""

    def __init__(self):
        super().__init__()
        self.stream: IO[bytes] | None = None
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size if size is not None and size >= 0 else 1 << 20)
        self.digest.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read what the tar reader left (end-of-archive padding, or the rest after damage)."""
        while self.read(1 << 20):
            pass
