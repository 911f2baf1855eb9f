"""Stage 8, the memory harness: peak RSS of a streaming epoch and of the paper's held tensors.

Each measurement runs in a fresh interpreter (`python -m streamgenre.bench.child`), so the peak
it reports is its own and not the benchmark's.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from streamgenre.bench.baseline import PaperRun, load_paper_png
from streamgenre.bench.core import BenchConfig, ClipSet, Comparison, stage_bar, stream_config
from streamgenre.checkpoint import load_for_inference
from streamgenre.predict import predict_files
from streamgenre.stream import SplitSource, StreamConfig, iterate_epoch, make_loader
from streamgenre.windows import WindowPlan


def memory_comparisons(clip_set: ClipSet, paper: PaperRun | None, config: BenchConfig) -> list[Comparison]:
    """Stage 8: peak RSS of a streaming epoch and of the paper's held tensors, at 1x and `rss_scale` x the clips."""
    comparisons = []
    scales = (1, config.rss_scale)
    runs = 1 if paper is None else 2
    with stage_bar("8 peak RSS (subprocesses)", runs * sum(scales) * clip_set.count, config.progress) as bar:
        for scale in scales:
            stream_request = {"source": asdict(clip_set.source(scale)), "workers": max(config.workers), "stream": asdict(stream_config(config, "device"))}
            streaming = in_subprocess("stream_epoch_rss", stream_request)["peak_bytes"]
            bar.update(scale * clip_set.count)
            held = None if paper is None else in_subprocess("paper_tensors_rss", {"pngs": [str(p) for p in paper.pngs] * scale})["peak_bytes"]
            bar.update(0 if paper is None else scale * clip_set.count)
            comparisons.append(Comparison(f"peak RSS, {scale}x the clips ({scale * clip_set.count})", streaming, held, "bytes"))
    return comparisons


def stream_epoch_rss(request: dict[str, Any]) -> dict[str, int]:
    """One loader epoch over `source` (a `SplitSource` as a dict); run by `in_subprocess`.

    `peak_bytes` is the main process's peak RSS plus the largest loader worker's times the
    worker count: pages shared after fork count once per process, so it errs high.
    """
    loader = make_loader(SplitSource(**request["source"]), StreamConfig(**request["stream"]), request["workers"], split_nodes=False)
    clips = sum(len(batch) for batch in iterate_epoch(loader, 0))  # the workers exit (and are reaped) at the end
    main, worker = _own_peak_rss_bytes(), _rusage_peak_bytes(resource.RUSAGE_CHILDREN)  # workers: forked, not exec'd
    return {"clips": clips, "main_bytes": main, "worker_bytes": worker, "workers": loader.num_workers, "peak_bytes": main + loader.num_workers * worker}


def paper_tensors_rss(request: dict[str, Any]) -> dict[str, int]:
    """Hold the listed PNGs as tensors, as the paper's notebook did; run by `in_subprocess`."""
    images = [load_paper_png(Path(path)) for path in request["pngs"]]
    return {"clips": len(images), "peak_bytes": _own_peak_rss_bytes()}


def predict_rss(request: dict[str, Any]) -> dict[str, float]:
    """`predict` as the CLI runs it (the whole file, window after window) on the listed files; run by `in_subprocess`.

    One untimed forward pass first keeps one-off costs out of the time. Returns files, windows,
    seconds and the peak RSS of this interpreter, model included.
    """
    device = torch.device(request["device"])
    loaded = load_for_inference(request["checkpoint"], device)
    plan = WindowPlan(loaded.spec.window_s, hop_s=loaded.spec.window_s)  # the CLI's default plan
    with torch.inference_mode():
        loaded.model(torch.zeros(1, round(loaded.spec.window_s * loaded.spec.sample_rate), device=device))
    started = time.perf_counter()
    results = list(predict_files(loaded, [Path(path) for path in request["paths"]], plan, top=3, device=device))
    seconds = time.perf_counter() - started
    errors = [result.error for result in results if result.error]
    if errors:
        raise RuntimeError(f"predict failed on {len(errors)} file(s): {errors[0]}")
    return {"files": len(results), "windows": sum(result.windows for result in results), "seconds": seconds, "peak_bytes": _own_peak_rss_bytes()}


def in_subprocess(function: str, request: dict[str, Any]) -> dict[str, int]:
    """Run `function` (a name `streamgenre.bench.child` knows) on `request` in a fresh interpreter."""
    command = [sys.executable, "-m", "streamgenre.bench.child", function, json.dumps(request)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode:
        raise RuntimeError(f"bench subprocess {function} failed with exit code {completed.returncode}:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout)


def _own_peak_rss_bytes() -> int:
    """This process's peak RSS: VmHWM where Linux has it, because ru_maxrss keeps the parent's peak across exec."""
    try:
        status = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        status = []
    peaks = [int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:")]  # kB
    return peaks[0] if peaks else _rusage_peak_bytes(resource.RUSAGE_SELF)


def _rusage_peak_bytes(who: int) -> int:
    return resource.getrusage(who).ru_maxrss * (1 if sys.platform == "darwin" else 1024)  # KiB on Linux
