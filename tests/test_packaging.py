"""The wheel a stranger installs holds what the tree holds: every module, and the data files models ship."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _package_files(root: Path) -> set[str]:
    """Files under root/streamgenre as the wheel names them, bytecode left out."""
    files = (path for path in (root / "streamgenre").rglob("*") if path.is_file() and "__pycache__" not in path.parts)
    return {path.relative_to(root).as_posix() for path in files}


@pytest.mark.slow
def test_the_wheel_carries_every_module_and_a_models_weight_files(tmp_path):
    """Built from a copy of the tree plus a stand-in weights file, as a model with pretrained weights would add one."""
    source = tmp_path / "source"
    shutil.copytree(ROOT / "streamgenre", source / "streamgenre", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    weights = source / "streamgenre" / "models" / "weights"
    weights.mkdir(exist_ok=True)
    (weights / "stand-in.npz").write_bytes(b"not real weights")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("streamgenre-*.whl")
    packed = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("streamgenre/")}
    assert packed == _package_files(source)
    assert "streamgenre/models/weights/stand-in.npz" in packed and "streamgenre/models/resnet.py" in packed
