"""Synthesise a small labelled music corpus and encode it to MP3 with PyAV.

This is the embedded default data (`streamgenre demo`) and the test fixture factory: the
project makes it itself, so it ships under the project's own licence and needs no download.
Five toy "genres" differ the way real ones do (tempo and drum pattern, harmonic vs percussive,
timbre, register); every clip draws its key, tempo, instruments and mix at random, so the task
is learnable but not trivial. Deterministic for a given seed; never touches global RNGs.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, replace
from pathlib import Path

import av
import numpy as np

from streamgenre.paper import PAPER_SAMPLE_RATE
from streamgenre.units import Seconds

SYNTH_SAMPLE_RATE = PAPER_SAMPLE_RATE  # the rate the model hears, so the demo's loader need not resample
GENRES = ("ambient", "electronic", "folk", "hiphop", "rock")
# Minor/major scale steps used to pick chord roots and melody notes.
_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}


@dataclass(frozen=True)
class _Style:
    """The knobs that make a genre: ranges are sampled per clip."""

    bpm: tuple[float, float]
    kick: tuple[int, ...]  # sixteenth-note steps (of 16) with a kick
    snare: tuple[int, ...]
    hat: tuple[int, ...]
    swing: float
    bass_octave: int  # MIDI octave of the bass line (0 = none)
    chord_octave: int
    chord_harmonics: tuple[float, ...]  # amplitude of harmonics 1..n: the timbre
    chord_attack_s: float
    chord_decay_s: float
    chord_steps: tuple[int, ...]  # when chords (re)strike within a bar
    lead: bool
    drive: float  # >0 clips the harmonic part like a distorted guitar
    noise: float


_STYLES = {
    "ambient": _Style((60, 80), (), (), (), 0.0, 2, 5, (1.0, 0.3, 0.1), 1.2, 4.0, (0,), True, 0.0, 0.02),
    "electronic": _Style(
        (120, 134), (0, 4, 8, 12), (4, 12), (2, 6, 10, 14), 0.0, 2, 4, (1.0, 0.8, 0.6, 0.5, 0.4, 0.3), 0.005, 0.25, (0, 3, 6, 10), True, 0.0, 0.01
    ),
    "folk": _Style((90, 120), (0, 8), (), (4, 12), 0.1, 3, 4, (1.0, 0.5, 0.33, 0.25, 0.2), 0.002, 0.8, (0, 4, 8, 12), True, 0.0, 0.01),
    "hiphop": _Style((78, 96), (0, 7, 10), (4, 12), (0, 2, 4, 6, 8, 10, 12, 14), 0.2, 1, 4, (1.0, 0.2), 0.01, 0.6, (0,), False, 0.0, 0.03),
    "rock": _Style(
        (100, 150),
        (0, 8, 10),
        (4, 12),
        (0, 2, 4, 6, 8, 10, 12, 14),
        0.0,
        2,
        3,
        (1.0, 0.7, 0.5, 0.4, 0.3, 0.2, 0.1),
        0.005,
        0.4,
        (0, 2, 4, 6, 8, 10, 12, 14),
        False,
        4.0,
        0.02,
    ),
}


# Traits that travel together when a clip borrows from another genre.
_PARTS = (
    ("kick", "snare", "hat", "swing"),
    ("chord_harmonics", "chord_attack_s", "chord_decay_s", "chord_steps", "drive"),
    ("bass_octave", "chord_octave", "lead", "noise"),
)
_BORROW_PROBABILITY = 0.3


def make_clip(genre: str, seed: int, duration_s: Seconds = 30.0, sample_rate: int = SYNTH_SAMPLE_RATE) -> np.ndarray:
    """Render one clip of `genre` as float32 mono ``(samples,)`` in [-1, 1].

    Raises:
        KeyError: `genre` is not one of `GENRES`.
    """
    rng = np.random.default_rng([seed, GENRES.index(genre)])
    style = _borrow_traits(_STYLES[genre], rng)
    n = round(duration_s * sample_rate)
    out = np.zeros(n, np.float32)
    bpm = rng.uniform(*style.bpm)
    step_s = 60.0 / bpm / 4  # a sixteenth note
    root = 48 + int(rng.integers(0, 12))  # MIDI note of the key
    scale = _SCALES["minor" if rng.random() < 0.5 else "major"]
    progression = [int(rng.choice([0, 3, 4, 5])) for _ in range(4)]
    brightness = rng.uniform(0.6, 1.4)
    harmonic = np.zeros(n, np.float32)
    # A clip repeats a handful of notes (4 chords, 4 bass notes, 7 lead notes), so each tone is
    # rendered once and reused: the same samples as rendering it every time, several times faster.
    tone = functools.lru_cache(maxsize=None)(_tone)
    for step in range(int(duration_s / step_s)):
        bar, beat = divmod(step, 16)
        start = step * step_s + (style.swing * step_s if beat % 2 else 0.0) + rng.normal(0, 0.003)
        degree = progression[bar % 4]
        if beat in style.kick:
            _add(out, start, _kick(sample_rate, rng), sample_rate, 0.9)
        if beat in style.snare:
            _add(out, start, _snare(sample_rate, rng), sample_rate, 0.5)
        if beat in style.hat:
            _add(out, start, _hat(sample_rate, rng), sample_rate, 0.15 * rng.uniform(0.6, 1.0))
        if beat in style.chord_steps:
            length = min(style.chord_decay_s * 3, 16 * step_s)
            for note in _triad(root, scale, degree, style.chord_octave):
                sound = tone(_hz(note), length, style.chord_harmonics, style.chord_attack_s, style.chord_decay_s, brightness, sample_rate)
                _add(harmonic, start, sound, sample_rate, 0.12)
        if style.bass_octave and beat % 4 == 0:
            note = root + scale[degree] + 12 * (style.bass_octave - 4)
            _add(harmonic, start, tone(_hz(note), 4 * step_s, (1.0, 0.4), 0.005, 0.3, 1.0, sample_rate), sample_rate, 0.35)
        if style.lead and beat % 2 == 0 and rng.random() < 0.45:
            note = root + 12 + scale[int(rng.integers(0, 7))]
            _add(harmonic, start, tone(_hz(note), 2 * step_s, (1.0, 0.5, 0.25), 0.01, 0.2, brightness, sample_rate), sample_rate, 0.12)
    if style.drive:
        harmonic = np.tanh(style.drive * harmonic) / np.tanh(style.drive)
    out += harmonic + rng.normal(0, style.noise, n).astype(np.float32)
    return (out / max(1e-6, float(np.abs(out).max())) * rng.uniform(0.5, 0.9)).astype(np.float32)


def _borrow_traits(style: _Style, rng: np.random.Generator) -> _Style:
    """Give a clip some traits of another genre now and then, as real genres blur into each other.

    Each part (groove, harmony, mix) is borrowed from a random other genre with probability
    `_BORROW_PROBABILITY`, so no single feature separates the genres.
    """
    others = [other for other in _STYLES.values() if other is not style]
    changes = {}
    for part in _PARTS:
        if rng.random() < _BORROW_PROBABILITY:
            donor = others[int(rng.integers(len(others)))]
            changes.update({name: getattr(donor, name) for name in part})
    return replace(style, **changes)


# LAME's speed/quality knob (0 slowest .. 9 fastest; LAME's own default is 3). 7 is its "fast"
# mode: about 1.6x faster than the default, and encoding is most of a synthetic clip's cost;
# the bitrate (and so the size) is the same.
LAME_QUALITY = 7


def encode_mp3(waveform: np.ndarray, sample_rate: int, bitrate: int = 96_000, channels: int = 1) -> bytes:
    """Encode float32 mono ``(samples,)`` audio to MP3 bytes (duplicated to stereo if asked)."""
    buffer = io.BytesIO()
    layout = "stereo" if channels == 2 else "mono"
    with av.open(buffer, mode="w", format="mp3") as container:
        options = {"compression_level": str(LAME_QUALITY)}
        stream = container.add_stream("libmp3lame", rate=sample_rate, layout=layout, options=options)
        stream.bit_rate = bitrate
        planes = np.repeat(waveform[None, :].astype(np.float32), channels, axis=0)
        frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def write_corpus(
    out_dir: Path,
    clips_per_genre: int,
    duration_s: Seconds = 30.0,
    seed: int = 0,
    genres: tuple[str, ...] = GENRES,
    sample_rate: int = SYNTH_SAMPLE_RATE,
) -> list[Path]:
    """Write ``out_dir/<genre>/<genre>-NNNN.mp3`` for every genre; returns the paths written."""
    return [write_clip(out_dir, genre, index, duration_s, seed, sample_rate) for genre in genres for index in range(clips_per_genre)]


def write_clip(out_dir: Path, genre: str, index: int, duration_s: Seconds, seed: int, sample_rate: int = SYNTH_SAMPLE_RATE) -> Path:
    """Render, encode and write clip `index` of `genre` (a pure function of its arguments)."""
    clip = make_clip(genre, seed * 100_003 + index, duration_s, sample_rate)
    path = out_dir / genre / f"{genre}-{index:04d}.mp3"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_mp3(clip, sample_rate))
    return path


def _add(buffer: np.ndarray, start_s: float, sound: np.ndarray, sample_rate: int, gain: float) -> None:
    begin = max(0, round(start_s * sample_rate))
    end = min(len(buffer), begin + len(sound))
    if end > begin:
        buffer[begin:end] += gain * sound[: end - begin]


def _hz(midi_note: float) -> float:
    return 440.0 * 2 ** ((midi_note - 69) / 12)


def _triad(root: int, scale: tuple[int, ...], degree: int, octave: int) -> list[int]:
    base = root + 12 * (octave - 4)
    return [base + scale[(degree + k) % 7] + 12 * ((degree + k) // 7) for k in (0, 2, 4)]


def _tone(freq: float, length_s: float, harmonics: tuple[float, ...], attack_s: float, decay_s: float, brightness: float, sample_rate: int) -> np.ndarray:
    t = np.arange(round(length_s * sample_rate), dtype=np.float32) / sample_rate
    wave = np.zeros_like(t)
    for k, amplitude in enumerate(harmonics, start=1):
        if k * freq < sample_rate / 2:
            wave += (amplitude * brightness ** (k - 1)) * np.sin(2 * np.pi * k * freq * t)
    envelope = np.minimum(1.0, t / max(attack_s, 1e-4)) * np.exp(-t / decay_s)
    return wave * envelope


def _kick(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(round(0.25 * sample_rate), dtype=np.float32) / sample_rate
    sweep = rng.uniform(40, 60) + rng.uniform(80, 140) * np.exp(-t * 30)
    return np.sin(2 * np.pi * np.cumsum(sweep) / sample_rate) * np.exp(-t * 12)


def _snare(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(round(0.18 * sample_rate), dtype=np.float32) / sample_rate
    noise = rng.normal(0, 1, len(t)).astype(np.float32)
    return (0.7 * noise + 0.5 * np.sin(2 * np.pi * rng.uniform(170, 220) * t)) * np.exp(-t * 25)


def _hat(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(0, 1, round(0.05 * sample_rate)).astype(np.float32)
    high = np.diff(noise, prepend=0.0)  # a first difference tilts the noise towards the top
    return high * np.exp(-np.arange(len(high), dtype=np.float32) / (0.01 * sample_rate))
