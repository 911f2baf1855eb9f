"""`streamgenre demo`: the whole pipeline on embedded data, with no download.

Synthesises a five-genre MP3 corpus with `synth`, packs it with `pack`, trains the paper's CNN
on the 3-s window at 0:15 and evaluates it. Everything lands under one folder (``demo/``); the
corpus is reused when a previous demo made the same one.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from streamgenre.dist import check_workers, default_workers
from streamgenre.errors import InputError
from streamgenre.files import check_writable_folder
from streamgenre.pack import PackConfig, PackReport, pack
from streamgenre.paper import DEFAULT_OFFSET_S
from streamgenre.progress import progress_bar
from streamgenre.recipes import PAPER, Recipe
from streamgenre.stream import StreamConfig
from streamgenre.synth import GENRES, write_clip
from streamgenre.train import TrainConfig, TrainResult, train

log = logging.getLogger(__name__)

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
    stream: StreamConfig = field(default_factory=lambda: StreamConfig(offset_s=DEFAULT_OFFSET_S))
    progress: bool = True

    def __post_init__(self):
        if self.clips_per_genre < 5:
            raise InputError(f"--clips-per-genre must be >= 5 so every split gets each genre, got {self.clips_per_genre}")
        if self.clip_s < self.stream.duration_s:
            raise InputError(f"--clip-length {self.clip_s}s is shorter than the {self.stream.duration_s}s window")
        check_workers(self.workers)  # before minutes of synthesis, not after
        self.recipe()  # its own checks (--epochs >= 1, ...), before minutes of synthesis too

    def recipe(self) -> Recipe:
        """The training recipe: the paper's loop on the fixed window, with 3 windows per clip for validation and test.

        3, not the default 10: 10 made validation half of the demo.
        """
        return PAPER.with_options(epochs=self.epochs, offset_s=self.stream.offset_s, val_windows=3)


@dataclass(frozen=True)
class SynthesisReport:
    """How many clips were synthesised and how long it took (0 clips: the corpus was reused)."""

    clips: int
    seconds: float

    @property
    def clips_per_s(self) -> float:
        return self.clips / max(self.seconds, 1e-9)


@dataclass
class DemoResult:
    """Where everything went, and how training did."""

    corpus: Path
    shards: Path
    run: Path
    pack: PackReport
    train: TrainResult
    synthesis: SynthesisReport


def run_demo(config: DemoConfig) -> DemoResult:
    """Make (or reuse) the corpus, pack it, train and evaluate; returns paths and results."""
    out = config.out
    _claim(out)
    corpus, shards, run = out / "corpus", out / "shards", out / "run"
    workers = default_workers() if config.workers is None else config.workers
    synthesis = _synthesise(corpus, config, workers)
    log.info(f"packing the corpus into {shards}")
    report = pack(
        PackConfig(source=corpus, out=shards, val=0.1, test=0.2, seed=config.seed, workers=workers, overwrite=True, max_count=32), progress=config.progress
    )
    if run.exists():
        shutil.rmtree(run)  # a previous demo's run: the demo folder is ours to replace
    log.info(f"training the paper's CNN for {config.epochs} epochs on the window at {config.stream.offset_s:g} s, into {run}")
    result = train(TrainConfig(shards=str(shards), out=run, recipe=config.recipe(), seed=config.seed, workers=workers, progress=config.progress))
    return DemoResult(corpus, shards, run, report, result, synthesis)


def _claim(out: Path) -> None:
    """Refuse to write into a non-empty folder that a demo did not make (or into a file, or where nothing can be written)."""
    check_writable_folder(out, "--out")  # makes it if missing; a file there is the user's --out, not an unexpected error
    marker = out / _MARKER
    if any(out.iterdir()) and not marker.exists():
        raise InputError(f"{out} exists and was not made by `streamgenre demo`; choose another --out")
    marker.touch()


def _synthesise(corpus: Path, config: DemoConfig, workers: int) -> SynthesisReport:
    """Write the corpus unless the same one is already there (its settings sit in corpus.json)."""
    settings = {"clips_per_genre": config.clips_per_genre, "clip_s": config.clip_s, "seed": config.seed, "genres": list(GENRES)}
    stamp = corpus.parent / "corpus.json"
    if stamp.exists() and json.loads(stamp.read_text()) == settings:
        log.info(f"reusing the corpus in {corpus}")
        return SynthesisReport(0, 0.0)
    started = time.perf_counter()
    if corpus.exists():
        shutil.rmtree(corpus)
    corpus.mkdir(parents=True)
    jobs = [(genre, index) for genre in GENRES for index in range(config.clips_per_genre)]
    log.info(f"synthesising {len(jobs)} MP3 clips of {config.clip_s:g} s into {corpus} ({workers} processes)")
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(write_clip, corpus, genre, index, config.clip_s, config.seed) for genre, index in jobs]
        for future in progress_bar(futures, desc="synthesising MP3s", unit="clip", enabled=config.progress):
            future.result()
    stamp.write_text(json.dumps(settings))
    return SynthesisReport(len(jobs), time.perf_counter() - started)
