"""The scripts in scripts/: the classic baseline runs on a packed directory and learns a separable set."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

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


def test_probe_levers_head_learns_two_separable_clusters_of_embeddings(monkeypatch):
    """The lever study's replica of the probe's head, on 1506-d 'embeddings' of two shifted clusters."""
    monkeypatch.syspath_prepend(str(SCRIPTS))  # it imports musicnn_embeddings beside it
    levers = _load("probe_levers")
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 6)
    clips = [torch.from_numpy((rng.normal(size=(10, 1506)) + 2.0 * label).astype(np.float32)) for label in labels]
    inputs, targets = levers.training_rows(clips[:4], labels[:4].tolist(), 8, False, rng)
    assert inputs.shape == (32, 1506) and targets.tolist() == [0] * 8 + [1] * 8 + [0] * 8 + [1] * 8
    inputs, targets = levers.training_rows(clips[:4], labels[:4].tolist(), 8, True, rng)  # 8 clip means per clip
    assert inputs.shape == (32, 1506) and targets.tolist() == [0] * 8 + [1] * 8 + [0] * 8 + [1] * 8
    train, test = np.arange(8), np.arange(8, 12)
    for lever in (levers.LEVERS[name] for name in levers.LEVERS if "8 windows" in name or "subsets" in name):
        assert levers.fold_accuracy(clips, labels, train, test, lever, 2, seed=0) == 1.0


def test_fold_manifests_keep_the_test_fold_and_hold_out_validation_only_for_recipes_that_choose_an_epoch(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.syspath_prepend(str(SCRIPTS))  # it imports baseline_features beside it
    study = _load("accuracy_study")
    rows = [f"{genre}/{artist}-{take}.mp3,{genre},{genre}{artist}" for genre in ("a", "b") for artist in range(8) for take in range(2)]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,genre,artist\n" + "\n".join(rows) + "\n")

    def splits(validated: bool) -> list[str]:
        with open(study.write_fold_manifest(manifest, tmp_path, 0, 4, validated), newline="") as handle:
            return [row["split"] for row in csv.DictReader(handle)]

    validated, everything = splits(True), splits(False)
    assert validated.count("test") == everything.count("test") == 8 and validated.count("val") > 0 and "val" not in everything
    assert [part == "test" for part in validated] == [part == "test" for part in everything]
    assert [
        study.validates(name, {}) for name in ("paper recipe + paper CNN", "modern recipe + resnet", "probe recipe + musicnn", "finetune recipe + musicnn")
    ] == [True, True, False, False]
