"""torchrun / DDP on CPU (gloo): two processes train together and write one set of outputs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from streamgenre.dist import DistInfo, dist_info_from_env
from streamgenre.errors import InputError
from streamgenre.stream import SplitSource
from streamgenre.train import _check_enough_shards
from tests.conftest import write_packed_dir


def test_dist_info_reads_torchrun_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = dist_info_from_env()
    assert info == DistInfo(rank=3, world_size=4, local_rank=1) and not info.is_main and info.enabled


def test_too_few_shards_for_processes_times_workers_is_a_clear_error():
    source = SplitSource(urls=["a.tar", "b.tar", "c.tar"], labels=["x", "y"], sample_count=9)
    with pytest.raises(InputError, match="at least 4 are needed"):
        _check_enough_shards(source, DistInfo(rank=0, world_size=2), workers=2)
    _check_enough_shards(source, DistInfo(), workers=8)  # one process just uses fewer workers


@pytest.mark.slow
def test_two_processes_under_torchrun_cover_the_split_once(tmp_path):
    genre_of = write_packed_dir(tmp_path / "packed", ["ambient", "rock"], {"train": 4, "val": 2, "test": 1}, per_shard=4, clip_s=2.0)
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "streamgenre",
        "train",
        str(tmp_path / "packed"),
        "--out",
        str(run),
        "--epochs",
        "1",
        "--workers",
        "1",
        "--device",
        "cpu",
        "--offset",
        "0.5s",
        "--duration",
        "1s",
        "--batch-size",
        "4",
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((run / "history.json").read_text())
    train_keys = [k for k in genre_of if k.startswith("train")]
    # All-reduced over both ranks: each sample once means the ranks' shards were disjoint and complete.
    assert history[0]["train_windows"] == len(train_keys)
    assert history[0]["val_clips"] == 8
    assert sorted(p.name for p in run.iterdir() if p.suffix == ".pt") == ["best.pt", "last.pt"]
    assert json.loads((run / "report.json").read_text())["samples"] == 4
    assert done.stdout.count("test: whole-clip accuracy") == 1  # only rank 0 prints


@pytest.mark.parametrize(
    ("name", "gpus", "says"),
    [
        ("cuda:5", 0, "--device cuda:5 was asked for, but torch sees no CUDA device"),
        ("cuda:2", 2, "--device cuda:2 was asked for, but torch sees 2 CUDA devices"),
    ],
)
def test_a_cuda_device_that_is_not_there_is_named_as_typed(monkeypatch, name, gpus, says):
    import torch

    from streamgenre.dist import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    with pytest.raises(InputError, match=re.escape(says)):
        resolve_device(name)
