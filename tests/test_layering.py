"""Data flows one way: each module imports only the streamgenre modules listed for it here.

The table is documentation too: `cli` sits on top, `frontend`, `dist`, `lock` and `progress`
at the bottom (they import nothing of ours but `errors`/`units`/`paper`/`config`, which any module
may import); `files` (atomic writes, regular-file reads, on `lock`'s liveness check) sits just above
them, under `audio`, `sources` and every writer. A subpackage (`bench/`) is one entry: its modules share its row.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "streamgenre"
BASE = {"errors", "units", "paper", "config", "__init__"}
ALLOWED = {
    "__main__": {"cli"},
    "errors": set(),
    "units": set(),
    "paper": set(),
    "config": set(),
    "audio": {"files"},
    "synth": set(),
    "shards": {"files"},
    "frontend": {"paper"},
    "windows": set(),
    "lock": set(),
    "files": {"lock"},
    "staging": {"lock"},
    "progress": set(),
    "augment": set(),
    "models": {"frontend", "models"},
    "recipes": {"augment", "paper", "windows"},
    "dist": set(),
    "plots": {"files"},
    "sources": {"files"},
    "splits": {"shards", "sources"},
    "pack": {"audio", "dist", "files", "progress", "sources", "splits", "shards", "staging"},
    "stream": {"audio", "dist", "paper", "shards", "windows"},
    "model": {"augment", "frontend", "models"},
    "checkpoint": {"files", "model", "models"},
    "replay": {"model", "recipes"},
    "evaluate": {"checkpoint", "dist", "files", "plots", "progress", "shards", "stream", "windows"},
    "predict": {"audio", "checkpoint", "files", "windows"},
    "tag": {"checkpoint", "files", "predict", "windows"},
    "export": {"audio", "checkpoint", "files", "synth", "windows"},
    "train": {
        "checkpoint",
        "dist",
        "evaluate",
        "files",
        "lock",
        "model",
        "models",
        "paper",
        "plots",
        "progress",
        "recipes",
        "replay",
        "shards",
        "stream",
        "windows",
    },
    "bench": {
        "audio",
        "checkpoint",
        "dist",
        "files",
        "frontend",
        "model",
        "models",
        "pack",
        "plots",
        "predict",
        "progress",
        "recipes",
        "shards",
        "stream",
        "synth",
        "train",
        "windows",
    },
    "demo": {"dist", "files", "pack", "progress", "recipes", "stream", "synth", "train"},
    "cli": {
        "bench",
        "checkpoint",
        "demo",
        "dist",
        "evaluate",
        "export",
        "files",
        "model",
        "models",
        "pack",
        "plots",
        "predict",
        "progress",
        "recipes",
        "shards",
        "stream",
        "tag",
        "train",
        "units",
        "windows",
    },
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


def _modules() -> dict[str, list[Path]]:
    """Each top-level module's files: one for a module, every file for a subpackage."""
    modules = {path.stem: [path] for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    modules.update({folder.name: sorted(folder.rglob("*.py")) for folder in PACKAGE.iterdir() if (folder / "__init__.py").is_file()})
    return modules


def test_every_module_is_in_the_table():
    assert set(_modules()) == set(ALLOWED)


def test_imports_follow_the_table():
    for name, paths in sorted(_modules().items()):
        for path in paths:
            extra = _imported_modules(path) - ALLOWED[name] - BASE - {name}
            assert not extra, f"{path.relative_to(PACKAGE)} imports {sorted(extra)}, which the layering table does not allow"


def test_importing_the_package_pulls_in_no_heavy_library():
    import subprocess
    import sys

    code = "import sys, streamgenre, streamgenre.cli; print(sorted(m for m in ('torch', 'av', 'webdataset') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
