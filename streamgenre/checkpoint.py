"""Self-describing checkpoints: weights plus the inference contract needed to rebuild and feed the model.

A checkpoint alone can predict: it carries the model config (backbone, width, dropout, frontend)
and an `InferenceSpec` (labels, window, sample rate, where to resample). It is saved atomically,
never half-written, and loaded with `torch.load(weights_only=True)`, so a checkpoint from
anywhere cannot run code: only tensors and plain Python values come back.

`load_for_inference` also takes the name of a pretrained tagger (`PRETRAINED_TAGGERS`) in a
checkpoint's place: a model nobody here trained, whose outputs are independent tags.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from streamgenre import __version__
from streamgenre.config import config_from_dict
from streamgenre.errors import CheckpointError, InputError
from streamgenre.files import atomic_path
from streamgenre.model import GenreClassifier, ModelConfig
from streamgenre.models.musicnn import GENRE_TAGS, MSD_TAGS, MUSICNN_FRONTEND, MusicnnTagger
from streamgenre.paper import RESAMPLE_PLACES

T = TypeVar("T")

CHECKPOINT_FORMAT = 2  # 2: an "spec" entry; 1 (read only): the loader's config under "stream"
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"
# Format-1 checkpoints kept numpy's RNG state; these rebuild its array and nothing else.
# numpy 2 moved numpy.core to numpy._core (numpy 1.x, which pyproject allows, has only the former).
_MULTIARRAY = (np._core if hasattr(np, "_core") else np.core).multiarray
_LEGACY_SAFE_GLOBALS = [_MULTIARRAY._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


@dataclass(frozen=True)
class InferenceSpec:
    """How to feed a trained model: what it was trained to hear, and what its outputs mean.

    `offset_s` is the training window's start (None: random windows), the single-window
    default of `evaluate`; `resample` says whether audio reaches the model at the file's own
    rate ("device") or at `sample_rate` ("cpu").
    """

    labels: list[str]
    window_s: float
    sample_rate: int
    resample: str
    offset_s: float | None

    def __post_init__(self):
        """Checked here, as it is read from a checkpoint: the loader would otherwise refuse these values as options nobody typed."""
        if len(self.labels) < 1 or not all(isinstance(label, str) for label in self.labels):
            raise InputError(f"labels must be a list of names, got {self.labels!r}")
        if not (math.isfinite(self.window_s) and self.window_s > 0):
            raise InputError(f"window_s must be > 0 seconds, got {self.window_s}")
        if not (isinstance(self.sample_rate, int) and self.sample_rate > 0):
            raise InputError(f"sample_rate must be a whole number of Hz > 0, got {self.sample_rate!r}")
        if self.resample not in RESAMPLE_PLACES:
            raise InputError(f"resample must be {' or '.join(RESAMPLE_PLACES)}, got {self.resample!r}")
        if self.offset_s is not None and not self.offset_s >= 0:
            raise InputError(f"offset_s must be None or >= 0 seconds, got {self.offset_s}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InferenceSpec:
        """Rebuild from `asdict` output; unknown or missing keys raise `InputError`."""
        return config_from_dict(cls, data)


def saved_settings(bundle: dict[str, Any], path: Path, rebuild: Callable[[], T]) -> T:
    """`rebuild()` a config saved in checkpoint `path`; an `InputError` in it is the checkpoint's fault.

    Nobody typed these values now, so a message that only named an option (``--duration must
    be > 0``) would blame the wrong thing: it names the checkpoint, who saved it, and what to do.

    Raises:
        CheckpointError: a saved setting this version does not know or accept.
    """
    try:
        return rebuild()
    except InputError as exn:
        saved_by = bundle.get("version") or "an unknown version"
        raise CheckpointError(
            f"{path}: a setting saved in it by streamgenre {saved_by} (not given on this command line) is not one "
            f"streamgenre {__version__} accepts: {exn}; use the streamgenre that saved it, or train the run again"
        ) from exn


def save_checkpoint(path: Path, bundle: dict[str, Any]) -> None:
    """Write `bundle` (see `make_bundle`) to `path` via a temporary file and an atomic rename."""
    with atomic_path(path) as temporary:
        torch.save(bundle, temporary)


def make_bundle(model: GenreClassifier, spec: InferenceSpec, **state: Any) -> dict[str, Any]:
    """The dict saved in a checkpoint: format, version, model config, inference spec, weights (with their checksum) and `state`."""
    weights = model.state_dict()
    return {
        "format": CHECKPOINT_FORMAT,
        "version": __version__,
        "model_config": model.config.to_dict(),
        "spec": asdict(spec),
        "model": weights,
        "model_sha256": weights_checksum(weights),
        **state,
    }


def weights_checksum(weights: dict[str, torch.Tensor]) -> str:
    """sha256 of every tensor's name, dtype, shape and bytes: a flipped byte anywhere changes it.

    A zip checkpoint stores each tensor's bytes without any check, so damage inside a weight
    would otherwise load and score silently differently.
    """
    digest = hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint bundle on the CPU; a run directory means its best.pt (else last.pt).

    Raises:
        CheckpointError: missing, unreadable, unsafe (it would run code) or of another format.
    """
    path = resolve_checkpoint(Path(path))
    _require_torch_file(path)
    try:
        with torch.serialization.safe_globals(_LEGACY_SAFE_GLOBALS):
            bundle = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exn:
        raise CheckpointError(
            f"{path} is not a plain streamgenre checkpoint: it holds objects that could run code when loaded ({_first_line(exn)}); refusing to load it"
        ) from exn
    except (OSError, RuntimeError, EOFError, ValueError, UnicodeDecodeError) as exn:
        raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(exn)}") from exn
    if not isinstance(bundle, dict) or bundle.get("format") not in (1, CHECKPOINT_FORMAT):
        raise CheckpointError(f"{path} is not a streamgenre checkpoint of format 1 or {CHECKPOINT_FORMAT}")
    _verify_weights(bundle, path)
    return bundle


def _require_torch_file(path: Path) -> None:
    """Refuse a file `torch.save` did not write (an MP3, random bytes) before unpickling it."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(2)
        is_zip = zipfile.is_zipfile(path)
    except OSError as exn:
        raise CheckpointError(f"cannot read checkpoint {path}: {exn.strerror or exn}") from None
    if not is_zip and head[:1] != b"\x80":  # a zip archive (torch >= 1.6) or a bare pickle (older)
        raise CheckpointError(f"{path} is not a checkpoint (not a file torch.save wrote); give a run folder or its best.pt/last.pt")


def _verify_weights(bundle: dict[str, Any], path: Path) -> None:
    """Check the weights against the checksum saved with them (checkpoints older than it have none)."""
    expected = bundle.get("model_sha256")
    if expected is None or not isinstance(bundle.get("model"), dict):
        return
    try:
        actual = weights_checksum(bundle["model"])
    except (AttributeError, RuntimeError, TypeError):
        actual = None
    if actual != expected:
        raise CheckpointError(f"{path} is damaged: its weights do not match the checksum saved with them; use another checkpoint or retrain")


def _first_line(exn: BaseException) -> str:
    lines = [line.strip() for line in str(exn).splitlines() if line.strip()]
    return lines[-1] if lines else type(exn).__name__


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


def bundle_spec(bundle: dict[str, Any], path: Path) -> InferenceSpec:
    """The inference spec of the bundle loaded from `path`; format-1 bundles derive it from their loader config.

    Raises:
        CheckpointError: the spec is missing, or holds keys or values this version does not accept.
    """
    if "spec" in bundle:
        return saved_settings(bundle, path, lambda: InferenceSpec.from_dict(bundle["spec"]))
    try:
        stream, labels = bundle["stream"], list(bundle["labels"])
        return saved_settings(bundle, path, lambda: InferenceSpec(labels, stream["duration_s"], stream["sample_rate"], stream["resample"], stream["offset_s"]))
    except (KeyError, TypeError) as exn:
        raise CheckpointError(f"{path} says nothing of how to feed its model (no inference spec: {exn}); train the run again") from exn


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference, with the facts needed to feed it and to read its outputs.

    `model` maps ``(batch, samples)`` waveforms (``sample_rate=`` their rate) to logits.
    `multi_label` says the outputs are independent tags (a sigmoid each) rather than genres
    competing in one softmax; `genres` maps the labels that name a genre to the genre name
    `tag` writes (None: every label, as it is).
    """

    model: nn.Module
    spec: InferenceSpec
    path: Path  # the checkpoint file, or the pretrained tagger's name
    shards: str | None  # where it was trained, for evaluating on the same packed data
    multi_label: bool = False
    genres: dict[str, str] | None = None

    @property
    def labels(self) -> list[str]:
        """Output names in output order: genres, or a tagger's tags."""
        return self.spec.labels

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """``(batch, labels)`` logits -> float32 probabilities: sigmoids for tags, else a softmax (rows sum to 1)."""
        logits = logits.float()
        return torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=1)


def build_model(bundle: dict[str, Any], path: Path) -> GenreClassifier:
    """The bundle's model with its weights loaded (still in training mode, on the CPU).

    Raises:
        CheckpointError: the config is unknown or the weights do not fit it.
    """
    try:
        model = GenreClassifier(saved_settings(bundle, path, lambda: ModelConfig.from_dict(bundle["model_config"])))
        model.load_state_dict(bundle["model"])
    except (InputError, KeyError, RuntimeError, TypeError) as exn:
        raise CheckpointError(f"{path}: the weights do not fit the model they describe: {_first_line(exn)}") from exn
    return model


PRETRAINED_TAGGERS = ("musicnn",)


def pretrained_tagger(name: str) -> LoadedModel:
    """The pretrained MSD musicnn as a `LoadedModel`: 50 tags heard in its own 3-s windows, on the CPU, in eval mode."""
    frontend = MUSICNN_FRONTEND
    spec = InferenceSpec(list(MSD_TAGS), frontend.window_s, frontend.sample_rate, "device", None)
    return LoadedModel(MusicnnTagger().eval(), spec, Path(name), None, multi_label=True, genres=dict(GENRE_TAGS))


def load_for_inference(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the model in eval mode on `device` from a checkpoint or run directory, or a pretrained tagger's name.

    A name in `PRETRAINED_TAGGERS` is the tagger unless a file or folder of that name exists:
    a run the user called ``musicnn`` keeps working as it did.
    """
    if str(path) in PRETRAINED_TAGGERS and not Path(path).exists():
        loaded = pretrained_tagger(str(path))
        loaded.model.to(device)
        return loaded
    resolved = resolve_checkpoint(Path(path))
    bundle = load_checkpoint(resolved)
    model = build_model(bundle, resolved).to(device).eval()
    return LoadedModel(model, bundle_spec(bundle, resolved), resolved, bundle.get("train_config", {}).get("shards"))
