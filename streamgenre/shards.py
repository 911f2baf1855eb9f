"""The on-disk contract of a packed directory, read and written here only.

A packed DIR holds ``{split}-{i:06d}.tar`` shards (members ``<key>.mp3`` and ``<key>.json`` per
sample), ``index.json`` (`ShardIndex`) and ``rejected.csv``. Knows nothing about decoding.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from streamgenre.errors import ShardFormatError

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
    def from_dict(cls, data: dict[str, Any]) -> ShardIndex:
        """Rebuild from `to_dict` output; unknown or missing keys raise `ShardFormatError`."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown or data.get("format") != INDEX_FORMAT:
            raise ShardFormatError(f"index.json is not a streamgenre index of format {INDEX_FORMAT} (unknown keys: {sorted(unknown)})")
        try:
            shards = [ShardEntry(**entry) for entry in data["shards"]]
            return cls(**{**data, "shards": shards})
        except (KeyError, TypeError) as exn:
            raise ShardFormatError(f"index.json is malformed: {exn}") from exn


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
        else:
            data = json.loads((Path(location) / INDEX_NAME).read_text())
    except FileNotFoundError as exn:
        raise ShardFormatError(f"{location} has no {INDEX_NAME}: is it a directory made by `streamgenre pack`?") from exn
    except (OSError, ValueError) as exn:
        raise ShardFormatError(f"cannot read {location}/{INDEX_NAME}: {exn}") from exn
    return ShardIndex.from_dict(data)


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


@contextmanager
def atomic_write(path: Path) -> Iterator[io.BufferedWriter]:
    """Open ``path.tmp`` for writing and move it over `path` only if the block succeeds."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_shard(path: Path, samples: Iterable[tuple[str, bytes, dict[str, Any]]]) -> ShardEntry:
    """Write a reproducible tar of ``(key, mp3_bytes, metadata)`` samples; returns its entry.

    Members are ``key.json`` then ``key.mp3`` per sample, with fixed mtime, owner and mode, so
    identical input gives an identical file (and sha256). The name encodes the split.
    """
    count = 0
    with atomic_write(path) as stream:
        with tarfile.open(fileobj=stream, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, audio, meta in samples:
                _add_member(tar, f"{key}.{META_MEMBER}", json.dumps(meta, sort_keys=True).encode())
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
