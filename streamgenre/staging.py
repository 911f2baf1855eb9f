"""Pack's staging folders: a whole packed DIR is built beside DIR, then swapped in by renames.

A staging folder names the process that made it (`lock.Owner`, in ``.owner.json`` and its pid
in the folder's name), so a later pack can tell a folder left by a killed pack (removed, or the
old DIR put back) from one still in use (left alone). Knows nothing about shards or audio.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
from pathlib import Path

from streamgenre.errors import InputError
from streamgenre.lock import Owner

log = logging.getLogger(__name__)
_OWNER_NAME = ".owner.json"


def make_staging(out: Path) -> Path:
    """A fresh hidden folder beside DIR (same file system, so publishing is a rename).

    Raises:
        InputError: the folder beside DIR cannot be written.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        staging.mkdir()
    except OSError as exn:
        raise InputError(f"cannot write to --out {out} (a pack is written beside it, in {out.parent}, then moved): {exn.strerror or exn}") from None
    try:
        (staging / _OWNER_NAME).write_text(json.dumps(Owner.me().to_dict()))
    except OSError as exn:
        shutil.rmtree(staging, ignore_errors=True)
        raise InputError(f"cannot write to --out {out}: {exn.strerror or exn}") from None
    return staging


def remove_stale_staging(out: Path) -> None:
    """Remove the staging folders of packs into `out` that were killed (their process is gone).

    If a pack died between retiring the old DIR and moving the new one in, the old DIR is put back.
    """
    if not out.parent.is_dir():
        return
    prefix = f".{out.name}."
    for path in sorted(out.parent.iterdir()):
        kind = path.name[len(prefix) :].split("-", 1)[0] if path.name.startswith(prefix) else None
        if kind not in ("tmp", "old") or not path.is_dir():
            continue
        owner = _read_owner(path)
        alive = None if owner is None else owner.alive()
        if alive is None:
            log.warning(
                "left %s in place: it looks like an interrupted pack's, but which process made it cannot be told; remove it by hand if no pack runs", path
            )
        elif not alive:
            if kind == "old" and not out.exists():
                path.rename(out)
                log.warning("restored %s from %s, left by pack process %d that was killed while replacing it", out, path.name, owner.pid)
            else:
                shutil.rmtree(path, ignore_errors=True)
                log.warning("removed %s, left by pack process %d that is gone (killed before it finished)", path, owner.pid)


def _read_owner(path: Path) -> Owner | None:
    """The owner of a staging folder: its owner file, else the pid in its name (this host assumed)."""
    try:
        owner = Owner.from_dict(json.loads((path / _OWNER_NAME).read_text()))
        if owner is not None:
            return owner
    except (OSError, ValueError):
        pass
    parts = path.name.rsplit(".", 1)[-1].split("-")  # tmp-<pid>-<hex>
    return Owner(int(parts[1]), socket.gethostname()) if len(parts) == 3 and parts[1].isdigit() else None


def publish(staging: Path, out: Path, kept_names: tuple[str, ...]) -> None:
    """Move the finished staging folder to DIR, keeping DIR's files named in `kept_names` and dropping the rest of it."""
    (staging / _OWNER_NAME).unlink(missing_ok=True)  # the pid in the folder's name still says whose it is
    for name in kept_names:
        if (out / name).is_file():
            shutil.copy2(out / name, staging / name)
    if not out.exists():
        staging.rename(out)
        return
    retired = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
    out.rename(retired)
    staging.rename(out)
    shutil.rmtree(retired)
