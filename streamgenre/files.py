"""Files written whole or not at all, temporaries that can be told apart, inputs that are regular files.

The one atomic-write policy of the package: write a temporary file in the target's folder under
a recognisable name (`temporary_name`), fsync it, rename it over the target, fsync the folder.
A write error (a full disk) is an `OSError` and leaves the target as it was. A process killed
mid-write leaves its temporary behind; `remove_stale_temporaries` (called by the next run of the
same command) removes those whose writer is gone. Inputs are read only when they are regular
files: a FIFO would block forever and ``/dev/zero`` never ends.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import secrets
import stat
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from streamgenre.errors import InputError
from streamgenre.lock import Owner

log = logging.getLogger(__name__)

TEMPORARY_SUFFIX = ".streamgenre-tmp"
# .<target name>.<pid>-<start ticks or x>-<random>.streamgenre-tmp
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)-(?P<started>\d+|x)-[0-9a-f]{8}" + re.escape(TEMPORARY_SUFFIX) + "$")


def temporary_name(target: str) -> str:
    """A hidden name beside `target` that says whose temporary it is (this process) and for what."""
    me = Owner.me()
    return f".{target}.{me.pid}-{me.started or 'x'}-{secrets.token_hex(4)}{TEMPORARY_SUFFIX}"


def is_temporary(path: Path) -> bool:
    """True for a temporary file of an atomic write (never an input, whatever its suffix)."""
    return _TEMPORARY.match(path.name) is not None


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds, it becomes `path`, durably.

    The block writes the temporary by any means (a library's ``save(filename)``); then it is
    fsynced, renamed over `path` and the folder fsynced. On any error, or Ctrl-C, it is removed.
    """
    path = Path(path)
    temporary = path.with_name(temporary_name(path.name))
    try:
        yield temporary
        _fsync_file(temporary)
        os.replace(temporary, path)
        fsync_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def atomic_write(path: Path) -> Iterator[io.BufferedWriter]:
    """Open a temporary file for writing; it replaces `path` only if the block succeeds (see `atomic_path`)."""
    with atomic_path(path) as temporary, open(temporary, "wb") as stream:
        yield stream


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """`path` holds `data`, or (after any error) what it held before."""
    with atomic_write(path) as stream:
        stream.write(data)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as stream:
        os.fsync(stream.fileno())


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def remove_stale_temporaries(folder: Path, targets: Collection[str] | None = None) -> list[Path]:
    """Remove the temporaries in `folder` (of the files named `targets`, default: of any) whose writer is gone.

    Returns the ones left because another process that still runs (or runs on another host) is writing them.
    """
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    kept = []
    for name in names:
        match = _TEMPORARY.match(name)
        if match is None or (targets is not None and match["target"] not in targets):
            continue
        owner = Owner(int(match["pid"]), Owner.me().host, None if match["started"] == "x" else match["started"])
        if owner.alive() is False:
            (Path(folder) / name).unlink(missing_ok=True)
            log.warning("removed %s, left by streamgenre process %d that was killed while writing %s", Path(folder) / name, owner.pid, match["target"])
        elif owner.pid != os.getpid():
            kept.append(Path(folder) / name)
    return kept


class NotRegularFileError(OSError):
    """An input that is not a regular file (a FIFO, a device, a socket): reading it could block or never end."""

    def __str__(self) -> str:
        return self.strerror


def require_regular_file(path: Path) -> None:
    """Raise unless `path` (links followed) is a regular file.

    Raises:
        NotRegularFileError: a FIFO, device, socket or folder.
        OSError: the path does not exist or cannot be looked at.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        kind = (
            "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file"
        )
        raise NotRegularFileError(errno.EINVAL, f"not a regular file ({kind}): only regular files are read", str(path))


def read_regular_file(path: Path) -> bytes:
    """The bytes of `path`, if it is a regular file (`require_regular_file`)."""
    require_regular_file(path)
    return Path(path).read_bytes()


def check_writable(path: Path, option: str) -> None:
    """Fail now, before any work, if a file cannot be written at `path` (its folder is made if missing).

    Raises:
        InputError: naming `option`, the path and the reason.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name")
    _probe_folder(path.parent, option, path)


def check_writable_folder(folder: Path, option: str) -> None:
    """Fail now, before any work, if files cannot be written into `folder` (made if missing).

    Raises:
        InputError: naming `option`, the folder and the reason.
    """
    _probe_folder(Path(folder), option, Path(folder))


def _probe_folder(folder: Path, option: str, given: Path) -> None:
    """Create and remove a temporary file in `folder` (made if missing), as the real write will."""
    probe = folder / temporary_name("write-check")
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir():
        raise InputError(f"cannot write {option} {given}: {existing} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
    except OSError as exn:
        raise InputError(f"cannot write {option} {given}: {exn.strerror or exn}; choose a writable place") from None
    probe.unlink()
