"""`pack`: turn a SOURCE of MP3s into train/val/test WebDataset shards, index.json and rejected.csv.

sources -> select (labels, --genres, duplicate ids, --max-per-genre) -> probe (a full decode of
every file, in a process pool) -> splits -> shard plan -> one job per shard -> index.json and
rejected.csv. Everything is written to a staging folder beside DIR that replaces DIR only when
all of it succeeded. MP3 bytes are copied, never re-encoded, and read from the source once per
stage, so memory does not grow with the corpus.

A pack killed outright (SIGKILL, power loss) cannot clean up: its staging folder names its
process, and the next pack into the same DIR removes it once that process is gone. SIGTERM
cleans up like Ctrl-C. Pool workers exit by themselves when the pack process dies.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import random
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import streamgenre
from streamgenre.audio import AudioInfo, probe
from streamgenre.dist import default_workers
from streamgenre.errors import DamagedAudioError, DecodeError, InputError
from streamgenre.files import atomic_write
from streamgenre.progress import progress_bar
from streamgenre.shards import (
    INDEX_NAME,
    REJECTED_NAME,
    SPLITS,
    SampleMeta,
    ShardEntry,
    ShardIndex,
    shard_name,
    write_index,
    write_shard,
)
from streamgenre.sources import SUBSETS, Track, discover
from streamgenre.splits import assign_splits, label_names
from streamgenre.staging import make_staging, publish, remove_stale_staging
from streamgenre.units import Seconds

log = logging.getLogger(__name__)

# FMA's clips are 30 s; shorter ones are kept but flagged `short` in their json. The tolerance
# (about two MP3 frames) keeps a full clip that decodes a few milliseconds short unflagged.
SHORT_CLIP_S = 30.0
_SHORT_TOLERANCE_S = 0.05
DEFAULT_SHARD_SIZE = 256_000_000
# Two 512-byte tar headers, the json member and padding: what a sample adds beyond its MP3.
_SAMPLE_OVERHEAD_BYTES = 2048
_KEPT_NAMES = ("README.md",)  # a DIR holding only these counts as empty, and they survive a pack

MISSING_LABEL = "missing label"
NOT_SELECTED = "genre not selected"
DUPLICATE_ID = "duplicate track id"
OVER_CAP = "over --max-per-genre"
UNREADABLE = "unreadable"
EMPTY_FILE = "empty file"
NO_AUDIO = "no decodable audio"
DAMAGED = "damaged audio"
TOO_SHORT = "too short"
REJECTED_COLUMNS = ("path", "track_id", "genre", "reason", "detail")


@dataclass(frozen=True)
class PackConfig:
    """What to pack and how; sizes and durations are already parsed (bytes, seconds).

    `val` and `test` are fractions per genre, used only for tracks whose source gives no split.
    `min_duration_s` rejects clips with less decodable audio than that as "too short": a file
    that decodes to a few milliseconds is a truncated download, not a clip. `workers` None means
    one process per usable CPU core.
    """

    source: Path
    out: Path = Path("shards")
    metadata: Path | None = None
    subset: str | None = None
    genres: tuple[str, ...] | None = None
    val: float = 0.1
    test: float = 0.1
    seed: int = 0
    max_per_genre: int | None = None
    shard_size_bytes: int = DEFAULT_SHARD_SIZE
    max_count: int | None = None
    workers: int | None = None
    overwrite: bool = False
    min_duration_s: Seconds = 1.0

    def __post_init__(self):
        if not (0 <= self.val < 1 and 0 <= self.test < 1 and self.val + self.test < 1):
            raise InputError(f"--val {self.val} and --test {self.test} must be fractions in [0, 1) that leave some training data")
        if self.subset is not None and self.subset not in SUBSETS:
            raise InputError(f"--subset {self.subset!r} is not one of {', '.join(SUBSETS)}")
        for name in ("max_per_genre", "max_count", "workers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.shard_size_bytes < 1:
            raise InputError(f"--shard-size must be > 0 bytes, got {self.shard_size_bytes}")
        if self.min_duration_s < 0:
            raise InputError(f"--min-duration must be >= 0 s, got {self.min_duration_s}")

    def options(self) -> dict[str, Any]:
        """The settings that shape the output, JSON-ready, for index.json (workers do not)."""
        return {
            "source": str(self.source),
            "metadata": str(self.metadata) if self.metadata else None,
            "subset": self.subset,
            "genres": list(self.genres) if self.genres else None,
            "val": self.val,
            "test": self.test,
            "seed": self.seed,
            "max_per_genre": self.max_per_genre,
            "shard_size_bytes": self.shard_size_bytes,
            "max_count": self.max_count,
            "min_duration_s": self.min_duration_s,
        }


@dataclass(frozen=True)
class Rejection:
    """One input file that was not packed, and why (a row of rejected.csv)."""

    path: str
    track_id: str
    genre: str | None
    reason: str
    detail: str

    @classmethod
    def of(cls, track: Track, reason: str, detail: str) -> Rejection:
        """The rejection of `track` for `reason`."""
        return cls(track.source, track.track_id, track.genre, reason, detail)


@dataclass(frozen=True)
class PackReport:
    """What a pack produced: the index it wrote, rejections per reason, and how long it took."""

    out: Path
    index: ShardIndex
    rejected: dict[str, int]  # reason -> files, most frequent first
    short_count: int  # packed clips under SHORT_CLIP_S
    elapsed_s: Seconds

    @property
    def packed(self) -> int:
        """Clips written to shards."""
        return sum(entry.count for entry in self.index.shards)

    @property
    def rejected_path(self) -> Path:
        """Where every rejected file is listed with its reason."""
        return self.out / REJECTED_NAME


@dataclass(frozen=True)
class _Probed:
    """A track that decoded, with what the decode found."""

    track: Track
    info: AudioInfo
    size_bytes: int


@dataclass(frozen=True)
class _ShardJob:
    """One shard to write: its final name is fixed before any job runs."""

    path: Path
    samples: tuple[tuple[Track, SampleMeta], ...]


def pack(config: PackConfig, progress: bool = True) -> PackReport:
    """Pack `config.source` into `config.out`; see the module docstring for the stages.

    Raises:
        InputError: a bad SOURCE, option or output folder, or no file could be packed.
    """
    started = time.perf_counter()
    remove_stale_staging(config.out)
    _check_out(config)
    tracks = list(discover(config.source, config.metadata, config.subset))
    if not tracks:
        raise InputError(f"SOURCE {config.source} holds no files to pack")
    labels = label_names((track.genre for track in tracks if track.genre and not track.problem), config.genres)
    rejected: list[Rejection] = []
    chosen = _select(tracks, labels, config, rejected)
    _check_training_clips(chosen, config)  # before minutes of probing; again after it
    with _terminate_as_exit():
        staging = make_staging(config.out)
        try:
            with _worker_pool(config.workers or default_workers()) as pool:
                probed = _probe_all(chosen, config.min_duration_s, pool, rejected, progress)
                labels = _labels_with_clips(labels, probed)
                jobs = _plan_shards(probed, labels, config, staging)
                entries = _write_shards(jobs, pool, progress)
            index = ShardIndex(labels, _count(jobs, labels), entries, config.options(), streamgenre.__version__)
            write_index(staging / INDEX_NAME, index)
            _write_rejected(staging / REJECTED_NAME, rejected)
            publish(staging, config.out, _KEPT_NAMES)
        except BaseException as exn:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exn, OSError):
                raise _os_failure(exn, config, staging) from exn
            raise
    reasons = dict(Counter(rejection.reason for rejection in rejected).most_common())
    short = sum(meta.short for job in jobs for _, meta in job.samples)
    return PackReport(config.out, index, reasons, short, time.perf_counter() - started)


# -- output folder ---------------------------------------------------------------------------
def _check_out(config: PackConfig) -> None:
    """Refuse a non-empty DIR without --overwrite, and a DIR that --overwrite would take SOURCE with."""
    out = config.out
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; pass a folder")
    source, target = config.source.resolve(), out.resolve()
    if source == target or target in source.parents:
        raise InputError(f"--out {out} holds SOURCE {config.source}; pack into another folder")
    if source.is_dir() and source in target.parents:
        raise InputError(f"--out {out} is inside SOURCE {config.source}: a later pack would read the shards as music; pack into a folder outside it")
    if out.is_dir() and not config.overwrite:
        extra = sorted(entry.name for entry in out.iterdir() if entry.name not in _KEPT_NAMES)
        if extra:
            raise InputError(f"--out {out} is not empty (it holds {extra[0]} and {len(extra) - 1} more); pass --overwrite to replace it")


def _os_failure(exn: OSError, config: PackConfig, staging: Path) -> InputError:
    """One line for a file-system error while packing: a write into DIR, or a SOURCE file that went away."""
    name = Path(exn.filename) if exn.filename else None
    reason = exn.strerror or str(exn)
    if name is None or staging in name.parents or name == staging or config.out in (name, *name.parents):
        return InputError(f"cannot write the pack to {config.out}: {reason}")
    return InputError(f"cannot read {name} (did SOURCE change during the pack?): {reason}")


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """Make SIGTERM unwind like Ctrl-C (cleaning the staging folder) instead of killing at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- selection -------------------------------------------------------------------------------
def _select(tracks: list[Track], labels: list[str], config: PackConfig, rejected: list[Rejection]) -> list[Track]:
    """Drop (and record) listed entries with a problem, tracks without a label, of unselected genres, with a taken id, or over the cap.

    Order matters: a duplicate id is judged among selected tracks only, and the cap counts
    only tracks that passed every other check.
    """
    wanted, first = set(labels), {}
    listed, tracks = tracks, []
    for track in listed:  # what the source listed but cannot use: a hidden file, an unreadable folder
        if track.problem:
            rejected.append(Rejection.of(track, *track.problem))
        else:
            tracks.append(track)

    def unlabelled(track: Track) -> str | None:
        return None if track.genre else "the source gives no genre for this file"

    def unselected(track: Track) -> str | None:
        return None if track.genre in wanted else f"{track.genre!r} is not in --genres"

    def taken(track: Track) -> str | None:  # the first track (in source order) keeps the id
        return None if first.setdefault(track.track_id, track) is track else f"same id as {first[track.track_id].source}"

    tracks = _keep(tracks, rejected, MISSING_LABEL, unlabelled)
    tracks = _keep(tracks, rejected, NOT_SELECTED, unselected)
    tracks = _keep(tracks, rejected, DUPLICATE_ID, taken)
    if config.max_per_genre is None:
        return tracks
    kept = _capped(tracks, config.max_per_genre, config.seed)
    return _keep(tracks, rejected, OVER_CAP, lambda track: None if track.track_id in kept else f"over the {config.max_per_genre} kept for {track.genre!r}")


def _keep(tracks: list[Track], rejected: list[Rejection], reason: str, why_not: Callable[[Track], str | None]) -> list[Track]:
    """The tracks for which `why_not` gives None; the others are recorded with its answer."""
    kept = []
    for track in tracks:
        detail = why_not(track)
        if detail is None:
            kept.append(track)
        else:
            rejected.append(Rejection.of(track, reason, detail))
    return kept


def _capped(tracks: list[Track], cap: int, seed: int) -> set[str]:
    """A seeded random `cap` track ids per genre; random, so a given split keeps its proportions.

    The cap applies before probing (probing a whole FMA-large for a small cap would take hours),
    so a broken file among the chosen leaves its genre one short.
    """
    by_genre: dict[str, list[str]] = {}
    for track in tracks:
        by_genre.setdefault(track.genre, []).append(track.track_id)
    rng = random.Random(seed)
    return {track_id for genre in sorted(by_genre) for track_id in rng.sample(by_genre[genre], min(cap, len(by_genre[genre])))}


def _check_training_clips(tracks: list[Track], config: PackConfig) -> None:
    """Refuse --val/--test fractions that would leave a genre without a single training clip.

    Only genres split by the fractions count: a split given by the source is the source's choice.
    """
    assignment = assign_splits(tracks, config.val, config.test, config.seed)
    by_fraction = {track.genre for track in tracks if not track.split}
    trained = {track.genre for track in tracks if assignment[track.track_id] == "train"}
    starved = sorted(by_fraction - trained)
    if starved:
        totals = Counter(track.genre for track in tracks)
        named = ", ".join(f"{genre} ({totals[genre]} clips)" for genre in starved[:3]) + (f" and {len(starved) - 3} more" if len(starved) > 3 else "")
        raise InputError(f"--val {config.val:g} and --test {config.test:g} leave no training clip for {named}: lower them")


# -- probing ---------------------------------------------------------------------------------
def _probe_all(tracks: list[Track], min_duration_s: Seconds, pool, rejected: list[Rejection], progress: bool) -> list[_Probed]:
    """Decode every track fully (in the pool); returns those that hold enough audio, in input order."""
    probed = []
    chunksize = max(1, min(16, len(tracks) // 64))  # fewer round trips, yet a smooth progress bar
    results = _map(pool, partial(_probe_track, min_duration_s=min_duration_s), tracks, chunksize)
    for result in progress_bar(results, total=len(tracks), desc="probing", unit="file", enabled=progress):
        (probed if isinstance(result, _Probed) else rejected).append(result)
    if not probed:
        reasons = Counter(rejection.reason for rejection in rejected).most_common()
        raise InputError(f"no file could be packed ({len(rejected)} rejected: " + ", ".join(f"{count} {reason}" for reason, count in reasons) + ")")
    return probed


def _probe_track(track: Track, min_duration_s: Seconds) -> _Probed | Rejection:
    """Read and fully decode one track (runs in a worker process)."""
    try:
        data = track.read_bytes()
    except OSError as exn:
        return Rejection.of(track, UNREADABLE, str(exn))
    if not data:
        return Rejection.of(track, EMPTY_FILE, "0 bytes")
    try:
        info = probe(data)
    except DamagedAudioError as exn:
        return Rejection.of(track, DAMAGED, str(exn))
    except DecodeError as exn:
        return Rejection.of(track, NO_AUDIO, str(exn))
    if info.duration_s < min_duration_s:
        return Rejection.of(track, TOO_SHORT, f"{info.duration_s:.3f} s of audio, under --min-duration {min_duration_s:g} s")
    return _Probed(track, info, len(data))


def _labels_with_clips(labels: list[str], probed: list[_Probed]) -> list[str]:
    """Drop (and say so) the genres none of whose files could be packed: a model cannot learn an empty class."""
    present = {item.track.genre for item in probed}
    empty = [genre for genre in labels if genre not in present]
    if empty:
        log.warning("no file of %s could be packed (see rejected.csv): left out of the labels", ", ".join(map(repr, empty)))
    return [genre for genre in labels if genre in present]


# -- shard plan and writing ------------------------------------------------------------------
def _plan_shards(probed: list[_Probed], labels: list[str], config: PackConfig, staging: Path) -> list[_ShardJob]:
    """Split, shuffle each split (seeded, so every shard mixes genres) and cut it into shards."""
    _check_training_clips([item.track for item in probed], config)  # broken files may have thinned a genre
    splits = assign_splits([item.track for item in probed], config.val, config.test, config.seed)
    jobs = []
    for split in SPLITS:
        members = [item for item in probed if splits[item.track.track_id] == split]
        random.Random(f"{config.seed}:{split}").shuffle(members)
        for number, chunk in enumerate(_chunks(members, config.max_count, config.shard_size_bytes)):
            samples = tuple((item.track, _sample_meta(item, labels.index(item.track.genre), split)) for item in chunk)
            jobs.append(_ShardJob(staging / shard_name(split, number), samples))
    return jobs


def _chunks(items: list[_Probed], max_count: int | None, max_bytes: int) -> Iterator[list[_Probed]]:
    """Consecutive runs of at most `max_count` items and about `max_bytes` (never empty)."""
    chunk, size = [], 0
    for item in items:
        item_bytes = item.size_bytes + _SAMPLE_OVERHEAD_BYTES
        if chunk and (len(chunk) == max_count or size + item_bytes > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += item_bytes
    if chunk:
        yield chunk


def _sample_meta(item: _Probed, label: int, split: str) -> SampleMeta:
    """The sample's json member: its label, where it came from and what the decode found."""
    track, info = item.track, item.info
    return SampleMeta(
        track_id=track.track_id,
        genre=track.genre,
        label=label,
        split=split,
        duration_s=round(info.duration_s, 3),
        sample_rate=info.sample_rate,
        channels=info.channels,
        source=track.source,
        short=info.duration_s < SHORT_CLIP_S - _SHORT_TOLERANCE_S,
        artist=track.artist or None,
    )


def _write_shards(jobs: list[_ShardJob], pool, progress: bool) -> list[ShardEntry]:
    """Write every shard (one job each, in the pool); entries come back in plan order."""
    entries = []
    with progress_bar(total=sum(len(job.samples) for job in jobs), desc="writing shards", unit="clip", enabled=progress) as bar:
        for job, entry in zip(jobs, _map(pool, _write_shard_job, jobs, 1)):
            entries.append(entry)
            bar.update(len(job.samples))
    return entries


def _write_shard_job(job: _ShardJob) -> ShardEntry:
    """Write one shard, reading each MP3 from the source only as the tar needs it."""
    return write_shard(job.path, ((track.track_id, track.read_bytes(), meta) for track, meta in job.samples))


def _count(jobs: list[_ShardJob], labels: list[str]) -> dict[str, dict[str, int]]:
    """Samples per split and genre, every split and label listed (zeros included)."""
    counts = {split: dict.fromkeys(labels, 0) for split in SPLITS}
    for job in jobs:
        for _, meta in job.samples:
            counts[meta.split][meta.genre] += 1
    return counts


def _write_rejected(path: Path, rejected: list[Rejection]) -> None:
    """rejected.csv, one row per file not packed, in path order."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(REJECTED_COLUMNS)
    for rejection in sorted(rejected, key=lambda rejection: (rejection.path, rejection.reason)):
        writer.writerow([rejection.path, rejection.track_id, rejection.genre or "", rejection.reason, rejection.detail])
    with atomic_write(path) as stream:
        stream.write(text.getvalue().encode())


# -- worker pool -----------------------------------------------------------------------------
@contextmanager
def _worker_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """A process pool, or None for one worker (everything then runs in this process).

    On an error or Ctrl-C the queued jobs are cancelled, so the pack stops within one job
    instead of finishing the whole queue; workers ignore SIGINT and leave it to this process.
    """
    if workers == 1:
        yield None
        return
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(os.getpid(),))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _init_worker(parent: int) -> None:
    """Leave Ctrl-C to the parent, and exit once the parent is gone (killed with SIGKILL, say).

    A worker of a dead parent would otherwise wait forever for work, holding its memory.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="streamgenre-parent-watch", daemon=True).start()


_PARENT_POLL_S = 0.5


def _map(pool: ProcessPoolExecutor | None, function: Callable, items: Iterable, chunksize: int) -> Iterator:
    """`function` over `items`, in order, in the pool or (without one) right here."""
    return map(function, items) if pool is None else pool.map(function, items, chunksize=chunksize)
