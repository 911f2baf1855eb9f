"""Stream packed shards into batches of waveforms: shards -> samples -> decoded windows -> batches.

The loader ships raw waveforms only; spectrograms are the model's job. Each stage is a
generator from an iterator to an iterator, so it is tested by feeding it a list. Per-sample
decode failures (undecodable audio, a garbage json member) are counted and skipped; a missing
shard, or one that yields fewer samples than index.json lists, stops the run naming the shard.
"""

from __future__ import annotations

import logging
import math
import random
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial

import torch
import webdataset as wds

from streamgenre.audio import Window, decode
from streamgenre.dist import check_workers, default_workers
from streamgenre.errors import DecodeError, InputError, ShardFormatError, StreamgenreError
from streamgenre.paper import DEFAULT_OFFSET_S, PAPER_BATCH_SIZE, PAPER_SAMPLE_RATE, PAPER_WINDOW_S, RESAMPLE_PLACES
from streamgenre.shards import AUDIO_MEMBER, META_MEMBER, SampleMeta, ShardIndex, read_index, shard_urls
from streamgenre.units import Seconds
from streamgenre.windows import check_windows_per_clip, random_offsets, slice_windows

log = logging.getLogger(__name__)
# A fixed window may overrun a clip's measured end by this much (decoder rounding) unnoticed.
_CLAMP_TOLERANCE_S = 0.05


@dataclass(frozen=True)
class StreamConfig:
    """Which window of each clip to decode, and how to batch and shuffle.

    `offset_s=None` draws random windows per sample per epoch (augmentation): `windows_per_clip`
    of them, stratified over the clip (`windows.random_offsets`), from one decode of the clip.
    `resample="device"` ships audio at the file's own rate and leaves resampling to the model.
    `window_buffer` windows are shuffled after decoding, so a batch mixes windows of many clips.
    `fresh_windows=False` draws each clip's random windows once (as in epoch 0) and keeps them.
    """

    offset_s: Seconds | None = DEFAULT_OFFSET_S
    duration_s: Seconds = PAPER_WINDOW_S
    sample_rate: int = PAPER_SAMPLE_RATE
    batch_size: int = PAPER_BATCH_SIZE
    shuffle_buffer: int = 64  # shard order is shuffled too; each buffered sample holds a whole MP3
    shuffle_shards: bool = True
    seed: int = 0
    resample: str = "device"
    whole_clips: bool = False  # decode each clip in full (multi-window evaluation); the offset is unused
    windows_per_clip: int = 1
    window_buffer: int = 128  # decoded windows held for shuffling in each loader worker
    fresh_windows: bool = True  # new random windows every epoch; False: the same ones (a frozen backbone's cache then hits)

    def __post_init__(self):
        check_windows_per_clip(self.windows_per_clip, self.offset_s)
        if self.duration_s <= 0:
            raise InputError(f"--duration must be > 0 seconds, got {self.duration_s}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.resample not in RESAMPLE_PLACES:
            raise InputError(f"--resample must be {' or '.join(RESAMPLE_PLACES)}, got {self.resample!r}")
        if self.shuffle_buffer < 0:
            raise InputError(f"--shuffle-buffer must be >= 0 samples (0 or 1: no shuffling), got {self.shuffle_buffer}")


@dataclass
class Batch:
    """A batch of same-rate waveforms, or an error to raise in the main process.

    `skipped` counts samples that failed to decode since the previous batch of this worker,
    so the training loop can total them across worker processes.
    """

    waveforms: torch.Tensor  # (batch, time) float32
    labels: torch.Tensor  # (batch,) int64
    keys: list[str]
    sample_rate: int
    skipped: int = 0
    error: str | None = None
    clamped: int = 0  # windows moved back because the clip ends before offset + duration

    def __len__(self) -> int:
        return len(self.keys)

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True) so CUDA copies can be non_blocking."""
        self.waveforms = self.waveforms.pin_memory()
        self.labels = self.labels.pin_memory()
        return self


@dataclass
class _Skipped:
    key: str
    reason: str


@dataclass
class _Fatal:
    message: str


@dataclass
class _Decoded:
    key: str
    waveform: torch.Tensor  # (time,)
    label: int
    sample_rate: int
    clamped: bool = False


class ShardStream(torch.utils.data.IterableDataset):
    """Batches from one split of a packed directory, split across nodes and DataLoader workers.

    Call `set_epoch` before each pass (like DistributedSampler): workers are re-created each
    epoch from a pickled copy, so the shard and sample order must come from the epoch number.
    """

    def __init__(
        self,
        urls: list[str],
        label_of_genre: dict[str, int],
        config: StreamConfig,
        split_nodes: bool = True,
        counts: list[int] | None = None,
        known_genres: frozenset[str] | None = None,
    ):
        super().__init__()
        if not urls:
            raise InputError("no shards to read")
        self.urls = urls
        self.expected = dict(zip(urls, counts, strict=True)) if counts is not None else None
        self.label_of_genre = label_of_genre
        self.known_genres = known_genres  # None: the labels themselves (see `decode_windows`)
        self.config = config
        self.split_nodes = split_nodes
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the shard order and random windows of the next pass."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[Batch]:
        rank, _world_size, worker, _num_workers = wds.utils.pytorch_worker_info()
        seed = _stream_seed(self.config.seed, self.epoch, rank, worker)
        pipeline = wds.DataPipeline(
            wds.SimpleShardList(self.urls),
            partial(shuffle_shards, seed=self.config.seed + self.epoch, enabled=self.config.shuffle_shards),
            *([wds.split_by_node] if self.split_nodes else []),
            wds.split_by_worker,
            partial(read_shards, expected=self.expected),
            *([wds.shuffle(self.config.shuffle_buffer, initial=self.config.shuffle_buffer, seed=seed)] if self.config.shuffle_buffer > 1 else []),
            partial(decode_windows, label_of_genre=self.label_of_genre, config=self.config, epoch=self.epoch, known_genres=self.known_genres),
            *([partial(shuffle_windows, size=self.config.window_buffer, rng=random.Random(seed))] if self.config.windows_per_clip > 1 else []),
            partial(batch_windows, batch_size=1 if self.config.whole_clips else self.config.batch_size),
        )
        return iter(pipeline)


def _stream_seed(seed: int, epoch: int, rank: int, worker: int) -> int:
    return hash((seed, epoch, rank, worker)) & 0x7FFFFFFF


def shuffle_shards(urls: Iterable[dict], seed: int, enabled: bool = True) -> Iterator[dict]:
    """The same shard order on every rank and worker for a given seed and epoch."""
    urls = list(urls)
    if enabled:
        random.Random(seed).shuffle(urls)
    yield from urls


def read_shards(sources: Iterable[dict], expected: dict[str, int] | None = None) -> Iterator[dict | _Fatal]:
    """Open each shard URL and yield its samples; a shard that fails yields one `_Fatal`.

    `expected` maps a URL to its sample count in index.json. A tar reader stops quietly at a
    damaged header (one flipped bit drops the rest of the shard), so a shard that yields another
    number of samples than listed is a `_Fatal` too, never a silent loss.
    """
    for source in sources:
        url = source["url"]
        count = 0
        try:
            for sample in wds.tariterators.tarfile_samples([source]):
                count += 1
                yield sample
        except (OSError, tarfile.TarError, ValueError, EOFError) as exn:
            yield _Fatal(f"cannot read shard {url}: {_reason(exn)}")
            return
        wanted = None if expected is None else expected.get(url)
        if wanted is not None and count != wanted:
            yield _Fatal(f"shard {url} is damaged: {count} samples read, index.json lists {wanted}; check it with `streamgenre info --verify`")
            return


def iter_samples(source: SplitSource) -> Iterator[tuple[str, SampleMeta, bytes]]:
    """Every sample of a split in shard order, as ``(key, meta, mp3 bytes)``: for scripts and tools.

    Unlike the training stream this does not skip: a damaged shard or a malformed sample is an error.

    Raises:
        ShardFormatError: a shard that cannot be read or ends early, or a sample without valid members.
    """
    expected = dict(zip(source.urls, source.counts, strict=True)) if source.counts else None
    for sample in read_shards(({"url": url} for url in source.urls), expected):
        if isinstance(sample, _Fatal):
            raise ShardFormatError(sample.message)
        if META_MEMBER not in sample or AUDIO_MEMBER not in sample:
            raise ShardFormatError(f"sample {sample['__key__']} in {sample.get('__url__')} lacks its {META_MEMBER} or {AUDIO_MEMBER} member")
        yield sample["__key__"], SampleMeta.from_json(sample[META_MEMBER]), sample[AUDIO_MEMBER]


def _reason(exn: Exception) -> str:
    """The cause of a read failure, without the stream reprs webdataset appends to its arguments."""
    first = str(exn.args[0]) if exn.args and isinstance(exn, (tarfile.TarError, EOFError)) else str(exn)
    return first.split(" @ <", 1)[0] or type(exn).__name__


def decode_windows(
    samples: Iterable[dict | _Fatal], label_of_genre: dict[str, int], config: StreamConfig, epoch: int = 0, known_genres: frozenset[str] | None = None
) -> Iterator[_Decoded | _Skipped | _Fatal]:
    """Decode the configured window(s) of each sample.

    Samples of genres index.json lists but `label_of_genre` leaves out (a ``--genres`` subset)
    are dropped; a sample whose genre index.json does not list at all (`known_genres`, default:
    the selected ones) is a counted skip, never a silent loss.
    """
    known_genres = frozenset(label_of_genre) if known_genres is None else known_genres
    for sample in samples:
        if isinstance(sample, _Fatal):
            yield sample
            continue
        key = sample["__key__"]
        if META_MEMBER not in sample or AUDIO_MEMBER not in sample:
            yield _Skipped(key, f"missing {META_MEMBER} or {AUDIO_MEMBER} member in {sample.get('__url__')}")
            continue
        try:
            meta = SampleMeta.from_json(sample[META_MEMBER])
        except ShardFormatError as exn:
            log.warning("skipping %s from %s: %s", key, sample.get("__url__"), exn)
            yield _Skipped(key, str(exn))
            continue
        if meta.genre not in label_of_genre:
            if meta.genre not in known_genres:
                log.warning("skipping %s from %s: its genre %r is not in index.json", key, sample.get("__url__"), meta.genre)
                yield _Skipped(key, f"genre {meta.genre!r} is not in index.json")
            continue
        clip_s = config.duration_s if meta.duration_s is None else meta.duration_s
        try:
            windows, rate = _decode(sample[AUDIO_MEMBER], key, clip_s, config, epoch)
        except DecodeError as exn:
            log.warning("skipping %s from %s: %s", key, sample.get("__url__"), exn)
            yield _Skipped(key, str(exn))
            continue
        known_s = math.inf if meta.duration_s is None else meta.duration_s
        clamped = config.offset_s is not None and not config.whole_clips and config.offset_s + config.duration_s > known_s + _CLAMP_TOLERANCE_S
        for waveform in windows:
            yield _Decoded(key, waveform, label_of_genre[meta.genre], rate, clamped)


def _decode(data: bytes, key: str, clip_s: Seconds, config: StreamConfig, epoch: int) -> tuple[list[torch.Tensor], int]:
    """The sample's windows (or whole clip) and their rate.

    Several random windows come from one full decode, sliced: on 30-s 44.1 kHz MP3s that
    measured as cheap as 8 seeks and half the cost of 16. A single window seeks and decodes
    only its frames.
    """
    rate = None if config.resample == "device" else config.sample_rate  # "device": the file's own rate
    if config.whole_clips:
        audio = decode(data, rate=rate)
        return [audio.samples], audio.sample_rate
    if config.offset_s is not None:
        offsets = [config.offset_s]
    else:
        drawn_in = epoch if config.fresh_windows else 0
        offsets = random_offsets(key, config.seed, drawn_in, config.windows_per_clip, clip_s, config.duration_s)
    if len(offsets) == 1:
        audio = decode(data, Window(offsets[0], config.duration_s), rate)
        return [audio.samples], audio.sample_rate
    audio = decode(data, rate=rate)
    window = round(config.duration_s * audio.sample_rate)
    starts = [min(round(offset * audio.sample_rate), max(0, audio.samples.shape[-1] - window)) for offset in offsets]
    return list(slice_windows(audio.samples, window, starts)), audio.sample_rate


def shuffle_windows(items: Iterable[_Decoded | _Skipped | _Fatal], size: int, rng: random.Random) -> Iterator[_Decoded | _Skipped | _Fatal]:
    """Shuffle decoded windows through a buffer of `size`, so one clip's windows spread over batches.

    Skips and fatal errors pass straight through; memory stays at `size` windows.
    """
    buffer: list[_Decoded] = []
    for item in items:
        if not isinstance(item, _Decoded):
            yield item
            continue
        buffer.append(item)
        if len(buffer) >= size:
            yield buffer.pop(rng.randrange(len(buffer)))
    rng.shuffle(buffer)
    yield from buffer


def batch_windows(items: Iterable[_Decoded | _Skipped | _Fatal], batch_size: int) -> Iterator[Batch]:
    """Group decoded windows into batches of one sample rate; skips ride on the next batch."""
    pending: dict[int, list[_Decoded]] = {}
    skipped = 0
    for item in items:
        if isinstance(item, _Fatal):
            yield _empty_batch(skipped, error=item.message)
            return
        if isinstance(item, _Skipped):
            skipped += 1
            continue
        group = pending.setdefault(item.sample_rate, [])
        group.append(item)
        if len(group) == batch_size:
            yield _collate(pending.pop(item.sample_rate), skipped)
            skipped = 0
    for group in pending.values():
        yield _collate(group, skipped)
        skipped = 0
    if skipped:
        yield _empty_batch(skipped)


def _collate(items: list[_Decoded], skipped: int) -> Batch:
    return Batch(
        waveforms=torch.stack([item.waveform for item in items]),  # (batch, time)
        labels=torch.tensor([item.label for item in items], dtype=torch.int64),
        keys=[item.key for item in items],
        sample_rate=items[0].sample_rate,
        skipped=skipped,
        clamped=sum(item.clamped for item in items),
    )


def _empty_batch(skipped: int, error: str | None = None) -> Batch:
    return Batch(torch.zeros(0, 0), torch.zeros(0, dtype=torch.int64), [], 0, skipped, error)


def evaluation_stream(duration_s: Seconds, sample_rate: int, resample: str, offset_s: Seconds | None, whole_clips: bool) -> StreamConfig:
    """Validation and test read every sample once, in order: whole clips, or one window at `offset_s`.

    A model trained on random windows has no offset of its own: it is heard at the default 0:15.
    """
    offset = DEFAULT_OFFSET_S if offset_s is None else offset_s
    return StreamConfig(
        offset,
        duration_s,
        sample_rate,
        batch_size=1 if whole_clips else PAPER_BATCH_SIZE,
        shuffle_buffer=0,
        shuffle_shards=False,
        resample=resample,
        whole_clips=whole_clips,
    )


@dataclass(frozen=True)
class SplitSource:
    """Everything the loader needs to know about one split of a packed directory.

    `counts` (one per URL, from index.json) lets the loader notice a shard that ends early;
    `known_labels` (index.json's, default: `labels`) tells a genre left out by ``--genres`` from
    one the index does not know (a skip).
    """

    urls: list[str]
    labels: list[str]
    sample_count: int
    counts: list[int] | None = None
    known_labels: list[str] | None = None


def open_split(directory: str, split: str, genres: list[str] | None = None, index: ShardIndex | None = None, given_by: str = "--genres") -> SplitSource:
    """Resolve a split's shard URLs and label names from index.json (optionally a genre subset).

    `given_by` names where `genres` came from in the messages (the user's option, or a checkpoint).

    Raises:
        InputError: an unknown genre or a split with no shards.
        ShardFormatError: no readable index.json.
    """
    index = index or read_index(directory)
    labels = list(genres) if genres else list(index.labels)
    repeated = sorted({genre for genre in labels if labels.count(genre) > 1})
    if repeated:
        raise InputError(f"{given_by} names {', '.join(repeated)} more than once; each genre is one class")
    unknown = [genre for genre in labels if genre not in index.labels]
    if unknown:
        raise InputError(f"{given_by} names {', '.join(unknown)}, not in the packed labels of {directory} (known: {', '.join(index.labels)})")
    urls = shard_urls(directory, index, split)
    if not urls:
        raise InputError(f"{directory} has no {split} shards (splits present: {', '.join(sorted({e.split for e in index.shards}))})")
    return SplitSource(urls, labels, index.split_count(split, labels), [entry.count for entry in index.split_shards(split)], list(index.labels))


def make_loader(
    source: SplitSource, config: StreamConfig, workers: int | None = None, pin_memory: bool = False, split_nodes: bool = True
) -> torch.utils.data.DataLoader:
    """A DataLoader of `Batch` objects; batching happens inside the (per-worker) stream.

    `split_nodes=False` lets one process read the whole split even inside a torchrun job.
    """
    check_workers(workers)
    workers = default_workers() if workers is None else workers
    workers = min(workers, len(source.urls))  # a worker with no shard would only idle
    known = frozenset(source.known_labels or source.labels)
    dataset = ShardStream(source.urls, {genre: i for i, genre in enumerate(source.labels)}, config, split_nodes, source.counts, known)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )


def expected_batches(source: SplitSource, config: StreamConfig, workers: int) -> int:
    """An upper-bound estimate of batches per epoch (each worker may end on a part batch)."""
    return math.ceil(source.sample_count * config.windows_per_clip / config.batch_size) + max(0, workers - 1)


@dataclass
class SkipTally:
    """The one count of skipped samples, for every consumer of a stream (train, validation, test, evaluate).

    A sample is skipped when its audio does not decode, its json member is malformed, or its
    genre is not in index.json; worker processes report skips on the batches, totalled here.
    """

    total: int = 0
    clamped: int = 0  # windows taken earlier than asked: the clip ends before offset + duration
    rows: int = 0  # windows (or whole clips) that did come through

    def passing(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        """Yield the batches that hold samples; count every batch's skips and clamped windows."""
        for batch in batches:
            self.total += batch.skipped
            self.clamped += batch.clamped
            self.rows += len(batch)
            if len(batch):
                yield batch

    def check(self, max_fraction: float, split: str) -> None:
        """`check_skips` on this tally's counts."""
        check_skips(self.total, self.rows, max_fraction, split)


def check_skips(skipped: int, read: int, max_fraction: float, split: str) -> None:
    """Say how many samples were skipped, and stop above `max_fraction` of those seen.

    Raises:
        StreamgenreError: more than `max_fraction` skipped.
    """
    seen = read + skipped
    if skipped:
        log.warning("%s: %d of %d samples were skipped (undecodable audio, a malformed json member or a genre not in index.json)", split, skipped, seen)
    if seen and skipped / seen > max_fraction:
        raise StreamgenreError(
            f"{split}: {skipped} of {seen} samples were skipped ({skipped / seen:.1%} > --max-skip-fraction {max_fraction:.1%}); "
            "the warnings above say why; check the shards with `streamgenre info --verify` or re-pack them"
        )


def warn_clamped(clamped: int, windows: int, config: StreamConfig) -> None:
    """Say (once) that some clips end before the fixed window: they were heard earlier instead.

    The window is named by its times, not as --offset/--duration: evaluate has no --duration and
    may take its offset from the checkpoint, and train's may be the recipe's and the model's own.
    """
    log.warning(
        "%d of %d clips end before the end of the %gs window at %gs: their last full window was used instead",
        clamped,
        windows,
        config.duration_s,
        config.offset_s,
    )


def iterate_epoch(loader: torch.utils.data.DataLoader, epoch: int) -> Iterator[Batch]:
    """Set the epoch on the loader's stream and yield its non-empty batches.

    Raises:
        ShardFormatError: a worker could not read a shard.
    """
    loader.dataset.set_epoch(epoch)
    for batch in loader:
        if batch.error:
            raise ShardFormatError(batch.error)
        yield batch
