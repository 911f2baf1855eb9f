"""Decode audio bytes with PyAV: probe a whole file, or decode only the window a model needs.

Knows nothing about shards, labels or models. Every PyAV/FFmpeg failure leaves this module as
a `DecodeError` naming the cause; a failure after some audio has decoded is a
`DamagedAudioError` saying where, never a silently shorter clip.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from streamgenre.errors import DamagedAudioError, DecodeError
from streamgenre.files import require_regular_file
from streamgenre.units import Seconds

# Decode this much audio before the window: an MP3 frame after a seek can lean on the bit
# reservoir of earlier frames, and the resampler's filter needs context on both sides.
_MARGIN_S = 0.1
_RESAMPLE_BLOCK = 16384
_INT_SCALES = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


@dataclass(frozen=True)
class AudioInfo:
    """What a full decode of a file found (durations from decoded samples, not headers)."""

    sample_rate: int
    channels: int
    duration_s: Seconds
    codec: str


def probe(data: bytes) -> AudioInfo:
    """Decode all of `data` to prove it holds audio and measure its true duration.

    Raises:
        DecodeError: empty bytes, not a media file, no audio stream, or no decodable audio.
        DamagedAudioError: the audio decodes, then fails part-way.
    """
    with _open(data) as container:
        stream = _audio_stream(container)
        total = 0
        try:
            for frame in container.decode(stream):
                total += frame.samples
        except av.FFmpegError as exn:
            raise _decode_failure(exn, total / stream.codec_context.sample_rate) from exn
        if total == 0:
            raise DecodeError("no decodable audio in the file")
        rate = stream.codec_context.sample_rate
        return AudioInfo(rate, stream.codec_context.channels, total / rate, stream.codec_context.name)


@dataclass(frozen=True)
class Window:
    """A stretch of a clip: `duration_s` of audio from `offset_s` on."""

    offset_s: Seconds
    duration_s: Seconds


@dataclass(frozen=True)
class Audio:
    """Decoded audio: float32 `samples`, ``(samples,)`` mono or ``(channels, samples)``, at `sample_rate`."""

    samples: torch.Tensor
    sample_rate: int


def decode(data: bytes, window: Window | None = None, rate: int | None = None, mono: bool = True) -> Audio:
    """Decode `data`: the whole file, or only `window`; at the file's own rate, or resampled to `rate`.

    The one way the package decodes a clip held in memory (`decode_blocks` streams long files).
    A window seeks and decodes only the frames around it and has exactly
    ``round(duration_s * rate)`` samples: one running past the end is zero-padded, and an offset
    past the end falls back to the last full window. Down-mixing happens before resampling.

    Raises:
        DecodeError: empty bytes, not a media file, no audio stream, or no decodable audio.
        DamagedAudioError: the audio (or the window) decodes, then fails part-way.
    """
    if window is None:
        return _decode_whole(data, rate, mono)
    span = _decode_span(data, window.offset_s, window.duration_s)
    if rate is None:
        count = round(window.duration_s * span.sample_rate)
        samples = _pad_to(span.samples[:, span.offset_index : span.offset_index + count], count)
        return Audio(torch.from_numpy(_finish(samples, mono)), span.sample_rate)
    if mono:  # down-mix first: one channel to resample instead of two
        span.samples = span.samples.mean(axis=0, keepdims=True)
    return Audio(torch.from_numpy(_finish(_resample_span(span, rate, window.duration_s), mono)), rate)


def _decode_whole(data: bytes, rate: int | None, mono: bool) -> Audio:
    with _open(data) as container:
        stream = _audio_stream(container)
        samples = _frames_to_array(container.decode(stream), stream)  # (channels, samples)
        native = stream.codec_context.sample_rate
    if mono:  # down-mix first: one channel to resample instead of two
        samples = samples.mean(axis=0, keepdims=True)
    if rate is not None and rate != native:
        samples = np.stack([resample(channel, native, rate) for channel in samples])
    return Audio(torch.from_numpy(_finish(samples, mono)), native if rate is None else rate)


def decode_blocks(source: bytes | str | Path, sample_rate: int | None = None) -> tuple[int, Iterator[np.ndarray]]:
    """Open a file (or bytes) and decode it block by block: mono float32, at its own rate or resampled.

    Nothing but the block being decoded is held, so memory does not grow with the file's length
    (`predict` cuts windows out of a stream of hours). The blocks are the samples `decode(data, rate=sample_rate)`
    would return (mono; None: the file's own rate), cut into pieces.

    Returns:
        ``(rate, blocks)``: the rate of the blocks, and a generator of ``(samples,)`` arrays that
        closes the file when it ends or is closed.

    Raises:
        DecodeError: not an audio file (at once); the generator raises it, or `DamagedAudioError`,
            when decoding fails part-way.
        OSError: the file cannot be read.
    """
    opened = _open(source)
    try:
        stream = _audio_stream(opened.container)
    except DecodeError:
        opened.container.close()
        raise
    native = stream.codec_context.sample_rate
    rate = native if sample_rate is None else sample_rate
    return rate, _blocks(opened.container, stream, native, rate)


def _blocks(container, stream, native: int, rate: int) -> Iterator[np.ndarray]:
    resampler = None if rate == native else av.AudioResampler(format="flt", layout="mono", rate=rate)
    decoded = 0
    with container:
        try:
            for frame in container.decode(stream):
                mono = np.ascontiguousarray(_frame_to_float(frame).mean(axis=0), dtype=np.float32)
                decoded += frame.samples
                if resampler is None:
                    yield mono
                else:
                    yield from _resampled(resampler, mono, native)
        except av.FFmpegError as exn:
            raise _decode_failure(exn, decoded / native) from exn
        if resampler is not None:
            yield from _resampled(resampler, None, native)


def _resampled(resampler: av.AudioResampler, mono: np.ndarray | None, from_rate: int) -> Iterator[np.ndarray]:
    """Feed one block (None: flush) through a stateful resampler, as `resample` does."""
    if mono is None:
        outputs = resampler.resample(None)
    else:
        frame = av.AudioFrame.from_ndarray(mono[None, :], format="flt", layout="mono")
        frame.sample_rate = from_rate
        outputs = resampler.resample(frame)
    for out in outputs:
        yield out.to_ndarray()[0]


def resample(waveform: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample a mono float32 ``(samples,)`` array with FFmpeg's resampler (swresample).

    Fed in blocks of `_RESAMPLE_BLOCK` samples: the output is identical, and swresample is
    about 4x faster on 16k-sample blocks than on one 150k-sample frame.
    """
    if from_rate == to_rate:
        return waveform
    resampler = av.AudioResampler(format="flt", layout="mono", rate=to_rate)
    chunks = []
    for start in range(0, len(waveform), _RESAMPLE_BLOCK):
        block = np.ascontiguousarray(waveform[None, start : start + _RESAMPLE_BLOCK], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
        frame.sample_rate = from_rate
        chunks += [out.to_ndarray()[0] for out in resampler.resample(frame)]
    chunks += [out.to_ndarray()[0] for out in resampler.resample(None)]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


@dataclass
class _Span:
    """Decoded native-rate audio around a window, placed on the clip's sample grid."""

    samples: np.ndarray  # (channels, samples) float32
    sample_rate: int
    first_index: int  # clip sample number of samples[:, 0]
    offset_s: Seconds  # the window's start after the past-the-end fallback

    @property
    def offset_index(self) -> int:
        """Where the window starts in `samples` (the same rounding as slicing a full decode)."""
        return max(0, round(self.offset_s * self.sample_rate) - self.first_index)


def _decode_span(data: bytes, offset_s: Seconds, duration_s: Seconds) -> _Span:
    with _open(data) as container:
        stream = _audio_stream(container)
        rate = stream.codec_context.sample_rate
        origin = _stream_origin(stream)
        offset_s = _clamp_offset(offset_s, duration_s, _estimated_duration(container, stream))
        first_s = max(0.0, offset_s - _MARGIN_S)
        if first_s > 0:
            container.seek(int((origin + Fraction(first_s)) / stream.time_base), stream=stream)
        stop_s = offset_s + duration_s + _MARGIN_S
        frames, first_pts = _frames_until(container.decode(stream), stream, origin + Fraction(stop_s))
        start_s = float(first_pts * stream.time_base - origin) if first_pts is not None else 0.0
        if start_s > offset_s + 1.0 / rate:  # the seek overshot the window: decode from the top
            container.seek(0, stream=stream)
            frames, first_pts = _frames_until(container.decode(stream), stream, origin + Fraction(stop_s))
            start_s = 0.0
        samples = _frames_to_array(frames, stream)
    return _Span(samples, rate, round(start_s * rate), offset_s)


def _resample_span(span: _Span, sample_rate: int, duration_s: Seconds) -> np.ndarray:
    """Resample a span so that its samples sit on the same grid as a full-file resample."""
    count = round(duration_s * sample_rate)
    if span.sample_rate == sample_rate:
        return _pad_to(span.samples[:, span.offset_index : span.offset_index + count], count)
    ratio = span.sample_rate / sample_rate
    window_start = round(span.offset_s * sample_rate)  # on the output grid, like a full decode
    margin = min(round(_MARGIN_S * sample_rate), window_start)
    first = max(0, round((window_start - margin) * ratio) - span.first_index)
    last = first + math.ceil((count + 2 * margin) * ratio)
    out = np.stack([resample(channel[first:last], span.sample_rate, sample_rate) for channel in span.samples])
    return _pad_to(out[:, margin : margin + count], count)


def _frames_until(frames, stream, stop_time: Fraction) -> tuple[list, int | None]:
    """Collect decoded frames until one ends at or after `stop_time` (stream seconds).

    Raises:
        DecodeError: no frame decodes; `DamagedAudioError` when one fails after others did.
    """
    kept, first_pts = [], None
    stop_pts = float(stop_time / stream.time_base)  # compared in pts units: no Fraction per frame
    pts_per_sample = float(1 / (stream.time_base * stream.codec_context.sample_rate))
    try:
        for frame in frames:
            if first_pts is None:
                first_pts = frame.pts
            kept.append(frame)
            if frame.pts is not None and frame.pts + frame.samples * pts_per_sample >= stop_pts:
                break
    except av.FFmpegError as exn:
        decoded = sum(frame.samples for frame in kept) / stream.codec_context.sample_rate
        start = float(first_pts * stream.time_base - _stream_origin(stream)) if first_pts is not None else 0.0
        raise _decode_failure(exn, decoded, start) from exn
    return kept, first_pts


def _frames_to_array(frames, stream) -> np.ndarray:
    """Stack decoded frames into one float32 ``(channels, samples)`` array.

    Raises:
        DecodeError: no frame decodes; `DamagedAudioError` when one fails after others did.
    """
    chunks = []
    try:
        for frame in frames:
            chunks.append(_frame_to_float(frame))
    except av.FFmpegError as exn:
        raise _decode_failure(exn, sum(chunk.shape[1] for chunk in chunks) / stream.codec_context.sample_rate) from exn
    if not chunks:
        return np.zeros((stream.codec_context.channels or 1, 0), np.float32)
    return np.concatenate(chunks, axis=1)


def _decode_failure(exn: av.FFmpegError, decoded_s: float, start_s: float = 0.0) -> DecodeError:
    """The error for an FFmpeg failure `decoded_s` seconds into a decode that began at `start_s`."""
    reason = exn.strerror or str(exn)
    if decoded_s <= 0:
        return DecodeError(f"cannot decode audio: {reason}")
    return DamagedAudioError(f"damaged audio after {start_s + decoded_s:.2f} s: {reason}")


def _frame_to_float(frame: av.AudioFrame) -> np.ndarray:
    array = frame.to_ndarray()
    if frame.format.is_packed:  # interleaved: (1, samples * channels)
        array = array.reshape(-1, len(frame.layout.channels)).T
    if array.dtype.kind in "iu":
        base = frame.format.name.rstrip("p")
        array = (array.astype(np.float32) - (128.0 if base == "u8" else 0.0)) / _INT_SCALES[base]
    return array.astype(np.float32, copy=False)


def _finish(samples: np.ndarray, mono: bool) -> np.ndarray:
    samples = samples.mean(axis=0) if mono else samples
    return np.ascontiguousarray(samples, dtype=np.float32)


def _pad_to(samples: np.ndarray, count: int) -> np.ndarray:
    if samples.shape[1] >= count:
        return samples[:, :count]
    return np.pad(samples, ((0, 0), (0, count - samples.shape[1])))


def _clamp_offset(offset_s: Seconds, duration_s: Seconds, total_s: Seconds | None) -> Seconds:
    """Move an offset past the end back to the last full window (or 0 for a short clip)."""
    if total_s is not None and offset_s + duration_s > total_s:
        return max(0.0, total_s - duration_s)
    return offset_s


def _estimated_duration(container, stream) -> Seconds | None:
    if stream.duration is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _stream_origin(stream) -> Fraction:
    """Stream time of the first sample (MP3 encoder delay makes it slightly above zero)."""
    return stream.start_time * stream.time_base if stream.start_time is not None else Fraction(0)


class _open:
    """Open bytes (or a file, read as needed) as a PyAV container, turning any failure into a `DecodeError`.

    Raises:
        OSError: a file that cannot be read, or is not a regular file.
    """

    def __init__(self, data: bytes | str | Path):
        if isinstance(data, (str, Path)):
            require_regular_file(data)  # a FIFO would block forever, /dev/zero never end
            with open(data, "rb") as readable:  # a missing or unreadable file: OSError, as for bytes read before
                empty = not readable.read(1)
            source = os.fspath(data)
        else:
            empty, source = not data, io.BytesIO(data)
        if empty:
            raise DecodeError("empty file (0 bytes)")
        try:
            self.container = av.open(source, mode="r")
        except av.FFmpegError as exn:
            raise DecodeError(f"not an audio file FFmpeg can read ({(exn.strerror or str(exn)).lower()})") from exn
        except (UnicodeDecodeError, ValueError) as exn:
            raise DecodeError(f"not an audio file FFmpeg can read ({exn})") from exn

    def __enter__(self):
        return self.container

    def __exit__(self, *exc_info):
        self.container.close()


def _audio_stream(container):
    """The first audio stream, if it is one: FFmpeg opens many non-audio files as a 0-Hz or 0-channel stream.

    Raises:
        DecodeError: no audio stream, or one without a sample rate or channels.
    """
    if not container.streams.audio:
        raise DecodeError("the file has no audio stream")
    stream = container.streams.audio[0]
    context = stream.codec_context
    if not context.sample_rate or context.sample_rate <= 0 or not context.channels or context.channels <= 0:
        raise DecodeError(f"not audio: FFmpeg finds a {context.name} stream of {context.sample_rate or 0} Hz and {context.channels or 0} channels")
    return stream
