"""Who owns a folder or a file being written: one liveness check, and one writer per run folder.

A process is named by its pid, its host and its start time, so that a pid the system reused for
another process is not taken for the owner. The train lock, pack's staging folders and the
temporary files of atomic writes all ask `Owner.alive` whether whoever left them still runs.
Two trainings into the same `--out` would overwrite each other's checkpoints; the second is
refused while the first runs. A lock left by a process that is gone is taken over with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from streamgenre.errors import InputError

log = logging.getLogger(__name__)
LOCK_NAME = ".streamgenre.lock"


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


@dataclass(frozen=True)
class Owner:
    """A process as another process can recognise it later: pid, host and start time."""

    pid: int
    host: str
    started: str | None = None  # None: unknown (an older record, or no /proc): the pid alone decides

    @classmethod
    def me(cls) -> Owner:
        """This process."""
        return cls(os.getpid(), socket.gethostname(), process_start(os.getpid()))

    @classmethod
    def from_dict(cls, data: Any) -> Owner | None:
        """An owner record as `to_dict` wrote it; None when it is not one."""
        if not isinstance(data, dict) or not isinstance(data.get("pid"), int) or not isinstance(data.get("host"), str):
            return None
        started = data.get("started")
        return cls(data["pid"], data["host"], started if isinstance(started, str) else None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    def alive(self) -> bool | None:
        """True while this process runs, False once it is gone, None if it runs on another host (cannot be told)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, under another user
        return self.started is None or process_start(self.pid) in (None, self.started)


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
            if owner is not None and owner.alive() is not False:
                raise InputError(f"{path.parent} is in use by another streamgenre process (pid {owner.pid}); wait for it or choose another --out") from None
            log.warning("removing a stale lock in %s (its process %s is gone)", path.parent, owner.pid if owner else None)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(descriptor, "w") as stream:
            stream.write(json.dumps(Owner.me().to_dict()))
        return
    raise InputError(f"could not lock {path.parent}: another process keeps taking it")


def _owner(path: Path) -> Owner | None:
    """The lock's owner: a JSON record, or a bare pid (as older versions wrote it; this host assumed)."""
    try:
        text = path.read_text().strip()
        data = json.loads(text)
    except (OSError, ValueError):
        return None
    if isinstance(data, int) and not isinstance(data, bool):
        return Owner(data, socket.gethostname())
    return Owner.from_dict(data)
