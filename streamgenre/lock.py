"""One writer per folder: a lock file holding the owner's pid, with stale locks detected.

Two trainings into the same `--out` would overwrite each other's checkpoints; the second is
refused while the first runs. A lock left by a process that is gone (kill -9, power loss) is
taken over with a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streamgenre.errors import InputError

log = logging.getLogger(__name__)
LOCK_NAME = ".streamgenre.lock"


def process_alive(pid: int) -> bool:
    """True if a process with `pid` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold `folder`'s lock for the block; refuse if a live process holds it.

    Raises:
        InputError: another live process holds the lock, or the folder cannot be written.
    """
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _take(path)
    except (FileExistsError, NotADirectoryError) as exn:
        raise InputError(f"{folder} is a file, not a folder") from exn
    except PermissionError as exn:
        raise InputError(f"cannot write to {folder}: {exn.strerror}") from exn
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _take(path: Path) -> None:
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(path)
            if owner is not None and process_alive(owner):
                raise InputError(f"{path.parent} is in use by another streamgenre process (pid {owner}); wait for it or choose another --out") from None
            log.warning("removing a stale lock in %s (its process %s is gone)", path.parent, owner)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(descriptor, "w") as stream:
            stream.write(str(os.getpid()))
        return
    raise InputError(f"could not lock {path.parent}: another process keeps taking it")


def _owner(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
