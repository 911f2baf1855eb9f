"""`streamgenre demo`: the whole pipeline on embedded data, with no download.

Synthesises a five-genre MP3 corpus with `synth`, packs it with `pack`, trains the paper's CNN
on the 3-s window at 0:15 and evaluates it. Everything lands under one folder (``demo/``); the
corpus is reused when a previous demo made the same one.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from streamgenre.errors import InputError
from streamgenre.pack import PackConfig, PackReport, pack
from streamgenre.recipes import PAPER
from streamgenre.stream import StreamConfig, default_workers
from streamgenre.synth import GENRES, write_clip
from streamgenre.train import TrainConfig, TrainResult, train

_MARKER = "streamgenre-demo.json"


@dataclass(frozen=True)
class DemoConfig:
    """Size of the synthetic corpus and of the training run."""

    out: Path = Path("demo")
    clips_per_genre: int = 100
    clip_s: float = 30.0
    epochs: int = 12
    seed: int = 0
    workers: int | None = None
    stream: StreamConfig = field(default_factory=lambda: StreamConfig(offset_s=15.0))
    progress: bool = True

    def __post_init__(self):
        if self.clips_per_genre < 5:
            raise InputError(f"--clips-per-genre must be >= 5 so every split gets each genre, got {self.clips_per_genre}")
        if self.clip_s < self.stream.duration_s:
            raise InputError(f"--clip-length {self.clip_s}s is shorter than the {self.stream.duration_s}s window")


@dataclass
class DemoResult:
    """Where everything went, and how training did."""

    corpus: Path
    shards: Path
    run: Path
    pack: PackReport
    train: TrainResult


def run_demo(config: DemoConfig) -> DemoResult:
    """Make (or reuse) the corpus, pack it, train and evaluate; returns paths and results."""
    out = config.out
    _claim(out)
    corpus, shards, run = out / "corpus", out / "shards", out / "run"
    workers = default_workers() if config.workers is None else config.workers
    _synthesise(corpus, config, workers)
    report = pack(PackConfig(source=corpus, out=shards, val=0.1, test=0.2, seed=config.seed, workers=workers, overwrite=True, max_count=32), progress=config.progress)
    if run.exists():
        shutil.rmtree(run)  # a previous demo's run: the demo folder is ours to replace
    recipe = PAPER.with_options(epochs=config.epochs, offset_s=config.stream.offset_s)
    result = train(TrainConfig(shards=str(shards), out=run, recipe=recipe, seed=config.seed, workers=workers, progress=config.progress))
    return DemoResult(corpus, shards, run, report, result)


def _claim(out: Path) -> None:
    """Refuse to write into a non-empty folder that a demo did not make."""
    marker = out / _MARKER
    if out.exists() and any(out.iterdir()) and not marker.exists():
        raise InputError(f"{out} exists and was not made by `streamgenre demo`; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    marker.touch()


def _synthesise(corpus: Path, config: DemoConfig, workers: int) -> None:
    """Write the corpus unless the same one is already there (its settings sit in corpus.json)."""
    settings = {"clips_per_genre": config.clips_per_genre, "clip_s": config.clip_s, "seed": config.seed, "genres": list(GENRES)}
    stamp = corpus.parent / "corpus.json"
    if stamp.exists() and json.loads(stamp.read_text()) == settings:
        return
    if corpus.exists():
        shutil.rmtree(corpus)
    corpus.mkdir(parents=True)
    jobs = [(genre, index) for genre in GENRES for index in range(config.clips_per_genre)]
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(write_clip, corpus, genre, index, config.clip_s, config.seed) for genre, index in jobs]
        for future in tqdm(futures, desc="synthesising MP3s", unit="clip", disable=not config.progress):
            future.result()
    stamp.write_text(json.dumps(settings))
