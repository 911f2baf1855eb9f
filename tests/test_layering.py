"""Data flows one way: each module imports only the streamgenre modules listed for it here.

The table is documentation too: `cli` sits on top, `audio`, `frontend`, `shards`, `dist` and
`plots` at the bottom (they import nothing of ours but `errors`/`units`).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "streamgenre"
BASE = {"errors", "units", "__init__"}
ALLOWED = {
    "__main__": {"cli"},
    "errors": set(),
    "units": set(),
    "audio": set(),
    "synth": set(),
    "shards": set(),
    "frontend": set(),
    "dist": set(),
    "plots": set(),
    "sources": set(),
    "splits": {"shards", "sources"},
    "pack": {"audio", "sources", "splits", "shards"},
    "stream": {"audio", "shards"},
    "model": {"frontend"},
    "checkpoint": {"model", "stream"},
    "evaluate": {"checkpoint", "dist", "plots", "shards", "stream"},
    "predict": {"audio", "checkpoint", "evaluate"},
    "train": {"checkpoint", "dist", "evaluate", "frontend", "model", "plots", "shards", "stream"},
    "bench": {"audio", "dist", "frontend", "model", "pack", "plots", "shards", "stream", "train"},
    "demo": {"pack", "stream", "synth", "train"},
    "cli": {"bench", "checkpoint", "demo", "dist", "evaluate", "pack", "predict", "shards", "stream", "train"},
}


def _imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("streamgenre"):
            parts = node.module.split(".")
            found.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("streamgenre.")}
    return found


def test_every_module_is_in_the_table():
    assert {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"} == set(ALLOWED)


def test_imports_follow_the_table():
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem == "__init__":
            continue
        extra = _imported_modules(path) - ALLOWED[path.stem] - BASE
        assert not extra, f"{path.stem} imports {sorted(extra)}, which the layering table does not allow"


def test_importing_the_package_pulls_in_no_heavy_library():
    import subprocess
    import sys

    code = "import sys, streamgenre, streamgenre.cli; print(sorted(m for m in ('torch', 'av', 'webdataset') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
