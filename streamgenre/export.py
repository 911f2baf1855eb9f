"""`streamgenre export`: a trained run as one ONNX or TorchScript file that any runtime can call.

The file maps ``(batch, samples)`` mono float32 waveforms at one fixed sample rate to
``(batch, n_classes)`` genre probabilities: the whole frontend (resampling to the model's rate,
mel, dB, normalisation, resize) and the softmax are inside, so a caller needs only a decoder.
The pretrained tagger (``export musicnn``) exports the same way, with 50 tag sigmoids instead.
Batch and time axes are dynamic. Labels, rate and window length travel in the file's metadata.

Nothing is assumed to work: the file is built in memory, written to a temporary name
(`files.atomic_path`), loaded back by its own runtime (onnxruntime, `torch.jit.load`), compared
against PyTorch on audio windows (a NaN anywhere fails), and only then renamed into place. onnx and onnxruntime are optional (the ``export`` extra).
"""

from __future__ import annotations

import io
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from streamgenre import __version__
from streamgenre.audio import decode
from streamgenre.checkpoint import LoadedModel
from streamgenre.errors import DecodeError, InputError, StreamgenreError
from streamgenre.files import atomic_path, check_writable, read_regular_file, remove_stale_temporaries
from streamgenre.synth import make_clip
from streamgenre.windows import WindowPlan

FORMATS = ("onnx", "torchscript")
INPUT_NAME = "waveform"
OUTPUT_NAME = "probabilities"
METADATA_FILE = "streamgenre.json"  # TorchScript: the metadata as an extra file in the archive
ONNX_OPSET = 17
# Largest |p_exported - p_pytorch| accepted on the check windows. Measured differences are
# ~1e-7 (float32 rounding); 1e-4 still catches any real divergence (a wrong op, a frozen shape).
TOLERANCE = 1e-4
CHECK_WINDOWS_PER_CLIP = 4
CHECK_BATCH = 16
SYNTHETIC_CHECK_GENRES = ("rock", "ambient", "electronic")
EXTRA_HINT = "pip install 'streamgenre[export]'"
# Rates a waveform input may have: below 1 kHz nothing of music is left (and a resampler from 1 Hz
# runs for minutes); 384 kHz is the highest rate audio hardware records.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384_000


class ExportCheckError(StreamgenreError):
    """The exported file does not reproduce PyTorch's probabilities within the tolerance."""


class ProbabilityModel(nn.Module):
    """Any streamgenre classifier as waveforms at `sample_rate` -> probabilities, as `LoadedModel.probabilities` gives them.

    Only ``model(waveform, sample_rate=...) -> logits`` is used, so every architecture that
    `load_for_inference` returns exports the same way. `sample_rate` is fixed when exported:
    if it differs from the model's own rate, the model's resampler is traced into the file.
    """

    def __init__(self, loaded: LoadedModel, sample_rate: int):
        super().__init__()
        self.model = loaded.model
        self.to_probabilities = loaded.probabilities
        self.sample_rate = sample_rate

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` float32 -> ``(batch, n_classes)`` probabilities (softmax rows sum to 1)."""
        return self.to_probabilities(self.model(waveform, sample_rate=self.sample_rate))


@dataclass(frozen=True)
class CheckResult:
    """How the exported file compared with PyTorch."""

    windows: int
    source: str  # "synthetic clips" or the checked files
    max_abs_diff: float
    tolerance: float
    same_top: bool  # every window has the same most likely genre in both


@dataclass(frozen=True)
class ExportResult:
    """What `export_run` wrote."""

    path: Path
    format: str
    size_bytes: int
    seconds: float
    metadata: dict[str, str]
    check: CheckResult


_OUTPUTS = {False: "softmax over labels", True: "an independent sigmoid per label (tags)"}


def export_metadata(loaded: LoadedModel, sample_rate: int, fmt: str) -> dict[str, str]:
    """String key/values stored in the file: enough to feed it and read its output."""
    window_s = float(loaded.spec.window_s)
    return {
        "labels": json.dumps(list(loaded.labels)),
        "sample_rate": str(sample_rate),
        "window_seconds": repr(window_s),
        "window_samples": str(round(window_s * sample_rate)),
        "input": f"{INPUT_NAME}: float32 (batch, samples), mono, in [-1, 1], at sample_rate Hz",
        "output": f"{OUTPUT_NAME}: float32 (batch, n_labels), {_OUTPUTS[loaded.multi_label]}; average over a clip's windows",
        "format": fmt,
        "streamgenre_version": __version__,
        "checkpoint": loaded.path.name,
    }


def export_run(
    loaded: LoadedModel,
    out: Path,
    fmt: str,
    sample_rate: int | None = None,
    check_files: list[Path] | None = None,
) -> ExportResult:
    """Write `loaded` as one `fmt` file at `out`, checked against PyTorch before it lands there.

    Args:
        loaded: a model from `load_for_inference`, on the CPU.
        out: the file to write (replaced atomically).
        fmt: ``onnx`` or ``torchscript``.
        sample_rate: rate of the waveforms the file takes [default: the run's, `loaded.spec.sample_rate`].
        check_files: audio files whose windows the check runs on [default: synthetic clips].

    Raises:
        InputError: unknown format, bad rate, or onnx/onnxruntime missing for ONNX.
        ExportCheckError: the exported file disagrees with PyTorch beyond `TOLERANCE`.
    """
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    rate = int(loaded.spec.sample_rate if sample_rate is None else sample_rate)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InputError(f"--sample-rate must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, got {rate}")
    if fmt == "onnx":
        _require_onnx()
    out = Path(out)
    check_writable(out, "--out")
    remove_stale_temporaries(out.parent, {out.name})  # what an export killed mid-write left
    loaded.model.cpu().eval()
    wrapper = ProbabilityModel(loaded, rate).eval()
    windows, source = _check_windows(loaded, rate, check_files)
    metadata = export_metadata(loaded, rate, fmt)
    started = time.perf_counter()
    data = _WRITERS[fmt](wrapper, windows[:2], metadata)  # in memory: a full disk cannot abort a C++ writer
    seconds = time.perf_counter() - started
    try:
        with atomic_path(out) as temporary:
            temporary.write_bytes(data)
            check = check_exported(wrapper, temporary, fmt, windows, source)
            _require_agreement(check, fmt)
    except OSError as exn:
        raise InputError(f"cannot write {out}: {exn.strerror or exn}; nothing was written") from None
    return ExportResult(out, fmt, out.stat().st_size, seconds, metadata, check)


def _require_agreement(check: CheckResult, fmt: str) -> None:
    """Refuse a file that disagrees with PyTorch beyond the tolerance, or gives NaN (on either side) anywhere."""
    if check.max_abs_diff <= check.tolerance:  # False for NaN
        return
    if check.max_abs_diff != check.max_abs_diff:
        raise ExportCheckError(
            f"the {fmt} file or PyTorch gives NaN probabilities on {check.windows} windows of {check.source}: the checkpoint's weights are broken; not written"
        )
    raise ExportCheckError(
        f"the {fmt} file differs from PyTorch by up to {check.max_abs_diff:.2e} in probability "
        f"(tolerance {check.tolerance:.0e}) on {check.windows} windows of {check.source}; not written"
    )


def check_exported(wrapper: ProbabilityModel, path: Path, fmt: str, windows: torch.Tensor, source: str) -> CheckResult:
    """Run `windows` through PyTorch and through the file's own runtime; compare probabilities."""
    run, _ = load_exported(path, fmt)
    expected, got = [], []
    for chunk in windows.split(CHECK_BATCH):  # bounded memory: a window's activations are ~4 MB
        with torch.inference_mode():
            expected.append(wrapper(chunk).numpy())
        got.append(run(chunk.numpy()))
    expected, got = np.concatenate(expected), np.concatenate(got)
    diff = float(np.abs(got - expected).max())
    same_top = bool((got.argmax(axis=1) == expected.argmax(axis=1)).all())
    return CheckResult(len(windows), source, diff, TOLERANCE, same_top)


def load_exported(path: Path, fmt: str) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, str]]:
    """The exported file as ``waveforms (batch, samples) -> probabilities``, and its metadata.

    Loads with the file's own runtime only: onnxruntime for ONNX, `torch.jit.load` for TorchScript.
    """
    if fmt == "onnx":
        ort = _require_onnx()
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        return (lambda waveforms: session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(waveforms, np.float32)})[0]), metadata
    extra = {METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    metadata = json.loads(extra[METADATA_FILE])

    def run(waveforms: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(waveforms, np.float32))).numpy()

    return run, metadata


def _write_onnx(wrapper: ProbabilityModel, example: torch.Tensor, metadata: dict[str, str]) -> bytes:
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy (TorchScript-based) exporter needs no onnxscript; its deprecation notice and
        # the tracer's "treated as a constant" notes are expected (the check below proves the result).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (example,),
            buffer,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch", 1: "samples"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=ONNX_OPSET,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = "streamgenre genre classifier: " + metadata["input"] + " -> " + metadata["output"]
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _write_torchscript(wrapper: ProbabilityModel, example: torch.Tensor, metadata: dict[str, str]) -> bytes:
    # Traced, not scripted: nnAudio and julius use Python that `torch.jit.script` cannot compile.
    # The trace is checked on a different batch size and length, so neither is frozen into it.
    other = torch.cat([example, example[:1]])[:, : max(example.shape[1] * 3 // 4, 1)]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        wrapper(example)  # builds a resampler from another --sample-rate now: built inside the trace, the check's second trace differs
        traced = torch.jit.trace(wrapper, (example,), check_inputs=[(other,)])
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={METADATA_FILE: json.dumps(metadata)})  # deprecated, still the format
    return buffer.getvalue()


_WRITERS = {"onnx": _write_onnx, "torchscript": _write_torchscript}


def _check_windows(loaded: LoadedModel, rate: int, files: list[Path] | None) -> tuple[torch.Tensor, str]:
    """Windows at `rate` for the check: of the given files, else of synthetic music clips."""
    plan = WindowPlan(duration_s=loaded.spec.window_s, windows=CHECK_WINDOWS_PER_CLIP)
    clip_s = max(4 * float(loaded.spec.window_s), 6.0)
    if files:
        waveforms = []
        for path in files:
            try:
                waveforms.append(decode(read_regular_file(Path(path)), rate=rate).samples)
            except (DecodeError, OSError) as exn:
                raise InputError(f"cannot use {path} to check the export: {exn}") from exn
        source = ", ".join(Path(path).name for path in files) if len(files) <= 3 else f"{len(files)} files"
    else:
        waveforms = [torch.from_numpy(make_clip(genre, seed=i, duration_s=clip_s, sample_rate=rate)) for i, genre in enumerate(SYNTHETIC_CHECK_GENRES)]
        source = "synthetic clips"
    return torch.cat([plan.cut(waveform.float(), rate) for waveform in waveforms]), source


def _require_onnx():
    """onnxruntime (and onnx), or one line saying which extra to install."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as exn:
        raise InputError(f"ONNX export needs onnx and onnxruntime ({exn.name} is missing): {EXTRA_HINT}") from None
    return onnxruntime
