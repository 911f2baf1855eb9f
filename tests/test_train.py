"""End-to-end training on tiny packed sets: outputs, learning, recipes, resume, locks, no intermediates."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import streamgenre.train as train_module
from streamgenre.checkpoint import load_checkpoint, load_for_inference
from streamgenre.errors import InputError, StreamgenreError
from streamgenre.lock import LOCK_NAME
from streamgenre.model import GenreClassifier, ModelConfig
from streamgenre.recipes import MODERN, PAPER, learning_rate
from streamgenre.stream import iterate_epoch, make_loader, open_split
from streamgenre.train import train
from tests.conftest import tiny_train_config, write_packed_dir

GENRES = ["ambient", "rock"]


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_packed")
    write_packed_dir(root, GENRES, {"train": 4, "val": 1, "test": 1}, per_shard=4, clip_s=3.0)
    return root


def _files_outside(root: Path, run: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.suffix in (".png", ".wav") and run not in p.parents}


@pytest.mark.slow
def test_training_learns_and_writes_every_output(packed, tmp_path):
    run = tmp_path / "run"
    before = _files_outside(tmp_path.parent, run) | _files_outside(packed, run)
    result = train(tiny_train_config(packed, run, epochs=10))
    assert len(result.history) == 10
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.test is not None and result.test["accuracy"] >= 0.75  # chance is 0.5
    assert 0 <= result.test["window_accuracy"] <= 1 and "val_window_accuracy" in result.history[-1]
    scores = [row["val_accuracy"] for row in result.history]
    assert result.best_epoch == scores.index(max(scores)) + 1  # best.pt: the first epoch with the best whole-clip val accuracy
    assert load_checkpoint(run / "best.pt")["epoch"] == result.best_epoch
    for name in ("last.pt", "best.pt", "history.json", "history.csv", "loss.png", "accuracy.png", "confusion_matrix.png", "report.json", "report.txt"):
        assert (run / name).is_file(), name
    report = json.loads((run / "report.json").read_text())
    assert set(report["per_class"]) == set(GENRES) and report["samples"] == 4
    assert _files_outside(tmp_path.parent, run) | _files_outside(packed, run) == before  # no PNG/WAV elsewhere
    assert not (run / LOCK_NAME).exists()  # the lock goes with the run


@pytest.mark.slow
def test_paper_recipe_is_the_papers_plain_loop(packed, tmp_path):
    """Adam at a constant rate, one window per clip at the offset, plain cross-entropy: step for step."""
    config = tiny_train_config(packed, tmp_path / "run", epochs=1)
    assert (PAPER.optimizer, PAPER.lr, PAPER.schedule, PAPER.batch_size, PAPER.epochs, PAPER.windows_per_clip, PAPER.offset_s) == (
        "adam",
        5e-4,
        "constant",
        25,
        20,
        1,
        15.0,
    )
    assert (PAPER.mixup_alpha, PAPER.label_smoothing, PAPER.clip_grad_norm, PAPER.weight_decay) == (0, 0, None, 0) and PAPER.augment.freq_masks == 0
    train(config)
    torch.manual_seed(config.seed)
    model = GenreClassifier(ModelConfig(n_classes=2))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    model.train()
    for batch in iterate_epoch(make_loader(open_split(str(packed), "train"), config.stream, workers=0), 0):
        loss = torch.nn.functional.cross_entropy(model(batch.waveforms, sample_rate=batch.sample_rate), batch.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert all(torch.equal(trained[key], value) for key, value in model.state_dict().items())


def test_modern_schedule_warms_up_then_decays_as_a_pure_function_of_the_step():
    rates = [learning_rate(MODERN, step, 100) for step in range(100)]
    peak = rates.index(max(rates))
    assert max(rates) == pytest.approx(MODERN.lr) and 5 <= peak <= 10  # 10% warm-up
    assert rates[:peak] == sorted(rates[:peak]) and rates[peak:] == sorted(rates[peak:], reverse=True)
    assert rates[-1] < 0.01 * MODERN.lr and learning_rate(MODERN, 150, 100) == learning_rate(MODERN, 100, 100)


def test_checkpoint_alone_rebuilds_the_model(packed, tmp_path):
    train(tiny_train_config(packed, tmp_path / "run", epochs=1))
    loaded = load_for_inference(tmp_path / "run")
    bundle = load_checkpoint(tmp_path / "run" / "best.pt")
    assert loaded.labels == GENRES and loaded.spec.offset_s == 0.5 and loaded.spec.window_s == 2.0
    waveform = torch.randn(2, 44100, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        probs = loaded.model.predict_proba(waveform)
    assert probs.shape == (2, 2) and torch.allclose(probs.sum(dim=1), torch.ones(2))
    assert bundle["epoch"] == 1 and bundle["train_config"]["seed"] == 0
    assert bundle["train_config"]["shards"] == str(packed.resolve())  # found again from any folder


@pytest.mark.slow
@pytest.mark.parametrize(("model", "recipe", "epochs"), [("paper", "modern", 2), ("resnet", "modern", 2), ("musicnn", "probe", 3)])
def test_resume_after_an_interrupted_epoch_equals_an_uninterrupted_run(packed, tmp_path, monkeypatch, model, recipe, epochs):
    """musicnn's probe replays its later epochs from memory (`streamgenre.replay`): a resumed run rebuilds the same replay."""
    config = dict(recipe=recipe, model=model, windows_per_clip=2, epochs=epochs)
    straight = train(tiny_train_config(packed, tmp_path / "straight", **config))
    validate = train_module._validate
    calls = []

    def interrupt_in_epoch_two(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return validate(*args)

    monkeypatch.setattr(train_module, "_validate", interrupt_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_train_config(packed, tmp_path / "split", **config))
    monkeypatch.setattr(train_module, "_validate", validate)
    assert load_checkpoint(tmp_path / "split" / "last.pt")["epoch"] == 1
    resumed = train(tiny_train_config(packed, tmp_path / "split", resume=True, **config))
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [row["train_loss"] for row in resumed.history] == [row["train_loss"] for row in straight.history]
    assert [row["lr"] for row in resumed.history] == [row["lr"] for row in straight.history]


def test_probe_epochs_after_the_first_are_replayed_from_memory_without_decoding(packed, tmp_path, monkeypatch):
    passes = []
    iterate = train_module.iterate_epoch

    def counting(loader, epoch):
        passes.append(Path(loader.dataset.urls[0]).name.split("-")[0])  # the split a shard belongs to: train-000000.tar
        return iterate(loader, epoch)

    monkeypatch.setattr(train_module, "iterate_epoch", counting)
    result = train(tiny_train_config(packed, tmp_path / "probe", recipe="probe", model="musicnn", windows_per_clip=2, epochs=3))
    assert passes.count("train") == 1 and passes.count("val") == 3  # validation still streams (its windows are cached)
    windows = [row["train_windows"] for row in result.history]
    assert windows == [windows[0]] * 3 and windows[0] == 4 * 4 * 2  # every recorded window, every epoch
    assert result.history[2]["train_loss"] < result.history[0]["train_loss"]


def test_resume_of_a_probe_saved_before_widths_rebuilds_its_linear_head(packed, tmp_path):
    """A previous release saved no width: its musicnn runs have a linear head, and today's default is 256 units."""
    from streamgenre.checkpoint import save_checkpoint
    from streamgenre.train import resumed_config

    run = tmp_path / "legacy"
    train(tiny_train_config(packed, run, recipe="probe", model="musicnn", windows_per_clip=1, epochs=1, width=0))
    bundle = load_checkpoint(run / "last.pt")
    bundle["train_config"]["width"] = bundle["model_config"]["width"] = None  # what that release wrote
    save_checkpoint(run / "last.pt", bundle)
    resumed = resumed_config(tiny_train_config(packed, run, recipe="probe", model="musicnn", windows_per_clip=1, epochs=2, resume=True), {"recipe.epochs"})
    assert resumed.width == 0
    result = train(resumed)
    assert len(result.history) == 2
    assert load_checkpoint(run / "last.pt")["model_config"]["width"] == 0


def test_resume_refuses_settings_that_would_change_the_run(packed, tmp_path):
    train(tiny_train_config(packed, tmp_path / "run", epochs=1))
    with pytest.raises(InputError, match="recipe.lr 0.0005 -> 0.1"):
        train(tiny_train_config(packed, tmp_path / "run", epochs=1, lr=0.1, resume=True))


@pytest.mark.slow
def test_resume_with_more_epochs_extends_the_run_on_the_longer_schedule(packed, tmp_path):
    """Constant rate: the extension is the longer run step for step. Cosine: the added epochs follow the longer curve to zero."""
    train(tiny_train_config(packed, tmp_path / "paper", epochs=1))
    train(tiny_train_config(packed, tmp_path / "paper", epochs=2, resume=True))
    train(tiny_train_config(packed, tmp_path / "paper-straight", epochs=2))
    a, b = (load_checkpoint(tmp_path / name / "last.pt")["model"] for name in ("paper", "paper-straight"))
    assert all(torch.equal(a[key], b[key]) for key in a)
    train(tiny_train_config(packed, tmp_path / "cosine", recipe="modern", windows_per_clip=1, epochs=1))
    extended = train(tiny_train_config(packed, tmp_path / "cosine", recipe="modern", windows_per_clip=1, epochs=3, resume=True))
    rates = [row["lr"] for row in extended.history]  # each epoch's rate at its end
    assert rates[0] < 1e-3 * MODERN.lr and 0.1 * MODERN.lr < rates[1] < MODERN.lr and rates[2] < 1e-3 * MODERN.lr
    with pytest.raises(InputError, match="already trained 3 epochs"):
        train(tiny_train_config(packed, tmp_path / "cosine", recipe="modern", windows_per_clip=1, epochs=2, resume=True))


def test_existing_run_needs_resume_and_resume_needs_a_run(packed, tmp_path):
    with pytest.raises(InputError, match="--resume"):
        train(tiny_train_config(packed, tmp_path / "nothing", resume=True))
    train(tiny_train_config(packed, tmp_path / "once", epochs=1))
    with pytest.raises(InputError, match="already holds a run"):
        train(tiny_train_config(packed, tmp_path / "once", epochs=1))


def test_a_folder_in_use_is_refused_and_a_stale_lock_is_taken_over(packed, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(str(os.getpid()))  # a live owner
    with pytest.raises(InputError, match="in use by another streamgenre process"):
        train(tiny_train_config(packed, run, epochs=1))
    (run / LOCK_NAME).write_text("999999999")  # no such process
    train(tiny_train_config(packed, run, epochs=1))
    assert (run / "last.pt").is_file() and not (run / LOCK_NAME).exists()


def test_diverging_loss_stops_with_a_clear_message(packed, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "_mixed_loss", lambda *args: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(StreamgenreError, match="training diverged.*lower --lr"):
        train(tiny_train_config(packed, tmp_path / "run", epochs=1))
    assert not (tmp_path / "run" / "best.pt").exists()  # nothing saved from a NaN model


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), 0.0, -1.0])
def test_non_finite_or_non_positive_learning_rates_are_refused(lr):
    with pytest.raises(InputError, match="--lr must be a finite number > 0"):
        PAPER.with_options(lr=lr)


def test_too_many_undecodable_samples_stop_the_run(tmp_path):
    write_packed_dir(tmp_path / "bad", GENRES, {"train": 2}, per_shard=2, clip_s=3.0, corrupt_key="train0001")
    with pytest.raises(StreamgenreError, match="were skipped .* > --max-skip-fraction"):
        train(tiny_train_config(tmp_path / "bad", tmp_path / "run", epochs=1))


def test_compile_wraps_the_trained_model_and_checkpoints_keep_plain_weights(packed, tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model: compiled.append(model) or model)  # compiling for real takes minutes
    train(tiny_train_config(packed, tmp_path / "run", epochs=1, compile=True))
    assert len(compiled) == 1 and isinstance(compiled[0], GenreClassifier)
    assert all(not key.startswith("_orig_mod") for key in load_checkpoint(tmp_path / "run" / "last.pt")["model"])


@pytest.mark.slow
def test_a_time_budget_stops_after_the_epoch_that_spends_it_and_resume_may_change_it(packed, tmp_path):
    result = train(tiny_train_config(packed, tmp_path / "run", epochs=3, time_budget_s=1e-3))
    assert len(result.history) == 1 and result.history[0]["elapsed_s"] >= result.history[0]["seconds"] > 0
    resumed = train(tiny_train_config(packed, tmp_path / "run", epochs=3, resume=True))  # no budget: runs to the end
    first, *rest = resumed.history
    assert len(rest) == 2 and all(row["elapsed_s"] >= first["elapsed_s"] + row["seconds"] for row in rest)  # the wall time goes on counting


@pytest.mark.parametrize("budget", [0.0, -1.0, float("inf"), float("nan")])
def test_a_time_budget_must_be_positive_seconds(packed, tmp_path, budget):
    with pytest.raises(InputError, match="time budget"):
        tiny_train_config(packed, tmp_path / "run", time_budget_s=budget)


def _relabelled(packed: Path, tmp_path: Path) -> Path:
    """A copy of `packed` whose index.json lists other genres than its samples have."""
    import shutil

    relabelled = tmp_path / "relabelled"
    shutil.copytree(packed, relabelled)
    index = json.loads((relabelled / "index.json").read_text())
    index["labels"] = ["jazz", "blues"]
    (relabelled / "index.json").write_text(json.dumps(index))
    return relabelled


def test_samples_of_a_genre_not_in_the_index_are_counted_skips_and_stop_the_run_before_a_checkpoint(packed, tmp_path):
    relabelled = _relabelled(packed, tmp_path)
    with pytest.raises(StreamgenreError, match=r"train: 16 of 16 samples were skipped \(100.0% > --max-skip-fraction"):
        train(tiny_train_config(relabelled, tmp_path / "run", epochs=1))
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "best.pt").exists()


def test_an_epoch_of_0_windows_writes_no_checkpoint(packed, tmp_path):
    relabelled = _relabelled(packed, tmp_path)
    with pytest.raises(StreamgenreError, match="epoch 1 read 0 windows .16 samples skipped.: nothing was trained and no checkpoint was written"):
        train(tiny_train_config(relabelled, tmp_path / "run", epochs=1, max_skip_fraction=1.0))
    assert not (tmp_path / "run" / "last.pt").exists()


def test_the_test_report_counts_skips(packed, tmp_path):
    from tests.conftest import write_packed_dir

    root = tmp_path / "with_bad"
    write_packed_dir(root, GENRES, {"train": 2, "test": 1}, per_shard=4, clip_s=3.0, corrupt_key="test0001")
    with pytest.raises(StreamgenreError, match=r"test: 1 of 4 samples were skipped"):
        train(tiny_train_config(root, tmp_path / "run", epochs=1))
    result = train(tiny_train_config(root, tmp_path / "run2", epochs=1, max_skip_fraction=0.5))
    assert result.test["skipped"] == 1 and result.test["samples"] == 3


@pytest.mark.slow
def test_two_runs_with_the_same_seed_and_two_loader_workers_are_bit_identical(packed, tmp_path):
    """Same seed, same weights: worker order, shuffle buffers, random windows, mixup and SpecAugment are all seeded."""
    states = []
    for name in ("a", "b"):
        train(tiny_train_config(packed, tmp_path / name, recipe="modern", workers=2, epochs=1, windows_per_clip=2))
        states.append(load_checkpoint(tmp_path / name / "last.pt")["model"])
    assert states[0].keys() == states[1].keys() and all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_the_log_names_the_thread_and_loader_worker_counts_that_same_seed_weights_depend_on():
    """Issue 22: 1 torch thread and 2 (taskset, OMP_NUM_THREADS, a smaller container) give other bits with the same seed."""
    line = train_module.machine_line(torch.device("cpu"), 2)
    assert f"{torch.get_num_threads()} torch threads" in line and "2 loader workers" in line
    assert "threads" not in train_module.machine_line(torch.device("cuda"), 0)


def test_a_window_too_short_for_the_models_fft_names_duration_before_training(packed, tmp_path):
    shortest = r"it needs windows of at least 0.047 s \(1025 samples at 22050 Hz\)$"
    with pytest.raises(InputError, match=r"^--duration 0.01 s is too short for model 'paper': " + shortest):
        tiny_train_config(packed, tmp_path / "run", duration_s=0.01)
