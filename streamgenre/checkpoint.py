"""Self-describing checkpoints: weights plus everything needed to rebuild and feed the model.

A checkpoint alone can predict: it carries the model config (frontend settings included), the
label names and the window the model was trained on. Saved atomically, never half-written.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from streamgenre import __version__
from streamgenre.errors import CheckpointError
from streamgenre.model import GenreClassifier, ModelConfig
from streamgenre.stream import StreamConfig

CHECKPOINT_FORMAT = 1
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"


def save_checkpoint(path: Path, bundle: dict[str, Any]) -> None:
    """Write `bundle` (see `make_bundle`) to `path` via a temporary file and an atomic rename."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        torch.save(bundle, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def make_bundle(model: GenreClassifier, labels: list[str], stream: StreamConfig, **state: Any) -> dict[str, Any]:
    """The dict saved in a checkpoint: format, version, configs, labels, weights and `state`."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": __version__,
        "model_config": model.config.to_dict(),
        "labels": list(labels),
        "stream": asdict(stream),
        "model": model.state_dict(),
        **state,
    }


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint bundle on the CPU; a run directory means its best.pt (else last.pt).

    Raises:
        CheckpointError: missing, unreadable or of another format.
    """
    path = resolve_checkpoint(Path(path))
    try:
        bundle = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError) as exn:
        raise CheckpointError(f"cannot read checkpoint {path}: {exn}") from exn
    if not isinstance(bundle, dict) or bundle.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a streamgenre checkpoint of format {CHECKPOINT_FORMAT}")
    return bundle


def resolve_checkpoint(path: Path) -> Path:
    """A file stays as it is; a run directory gives its best.pt, or last.pt if no best exists."""
    if path.is_dir():
        for name in (BEST_NAME, LAST_NAME):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path} holds no {BEST_NAME} or {LAST_NAME}: is it a `streamgenre train` output?")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    return path


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference, with the facts needed to feed it."""

    model: GenreClassifier
    labels: list[str]
    stream: StreamConfig
    path: Path
    shards: str | None  # where it was trained, for evaluating on the same packed data


def load_for_inference(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the model in eval mode on `device` from a checkpoint or run directory."""
    resolved = resolve_checkpoint(Path(path))
    bundle = load_checkpoint(resolved)
    model = GenreClassifier(ModelConfig.from_dict(bundle["model_config"]))
    model.load_state_dict(bundle["model"])
    model.to(device).eval()
    known = {f.name for f in fields(StreamConfig)}
    stream = StreamConfig(**{k: v for k, v in bundle["stream"].items() if k in known})
    return LoadedModel(model, bundle["labels"], stream, resolved, bundle.get("train_config", {}).get("shards"))
