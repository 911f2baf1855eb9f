"""The scripts in scripts/: the classic baseline runs on a packed directory and learns a separable set."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_packed_dir

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("baseline")
    write_packed_dir(root, ["ambient", "electronic"], {"train": 2, "test": 1}, per_shard=6, clip_s=16.0)
    return root


def test_baseline_reads_the_splits_and_separates_two_synthetic_genres(packed):
    pytest.importorskip("librosa")
    result = _load("baseline_features").run(str(packed))
    assert (result["train_clips"], result["test_clips"]) == (12, 6)
    for mode in ("whole_clip", "single_window"):
        for model in ("logreg", "svm"):
            assert result[mode][model]["accuracy"] >= 5 / 6, (mode, model, result[mode][model])


def test_baseline_command_line_writes_json(packed, tmp_path):
    pytest.importorskip("librosa")
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "baseline_features.py"), str(packed), "--json", str(tmp_path / "b.json")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "whole_clip" in done.stdout and json.loads((tmp_path / "b.json").read_text())["test_clips"] == 6
