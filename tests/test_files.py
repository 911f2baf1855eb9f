"""Atomic writes, recognisable temporaries and their clean-up, regular-file inputs, process liveness."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import streamgenre.files
from streamgenre.errors import InputError
from streamgenre.files import (
    NotRegularFileError,
    atomic_write,
    check_writable,
    is_temporary,
    remove_stale_temporaries,
    require_regular_file,
    temporary_name,
)
from streamgenre.lock import Owner


def dead_pid() -> int:
    """The pid of a process that has exited."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "index.json"
    target.write_bytes(b"old")
    with pytest.raises(OSError), atomic_write(target) as stream:
        stream.write(b"half of the new")
        raise OSError(28, "No space left on device")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["index.json"]


def test_the_file_and_its_folder_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(handle):
        synced.append(os.path.realpath(f"/proc/self/fd/{handle}"))
        real(handle)

    monkeypatch.setattr(streamgenre.files.os, "fsync", fsync)
    with atomic_write(tmp_path / "a.bin") as stream:
        stream.write(b"x")
    assert is_temporary(Path(synced[0])) and synced[1:] == [str(tmp_path)]


def test_temporaries_of_gone_writers_are_removed_and_live_ones_kept(tmp_path):
    gone = tmp_path / f".m.pt.{dead_pid()}-x-0123abcd.streamgenre-tmp"
    recycled = tmp_path / f".m.pt.{os.getppid()}-1-0123abcd.streamgenre-tmp"  # a live pid, but another start time
    live = tmp_path / f".m.pt.{os.getppid()}-x-4567cdef.streamgenre-tmp"
    other = tmp_path / f".other.pt.{dead_pid()}-x-89abcdef.streamgenre-tmp"
    for path in (gone, recycled, live, other):
        path.write_bytes(b"half")
    assert remove_stale_temporaries(tmp_path, {"m.pt"}) == [live]
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, other.name])


def test_temporary_names_are_recognisable_and_not_audio():
    name = temporary_name("song.mp3")
    assert is_temporary(Path(name)) and name.startswith(".song.mp3.") and not name.endswith(".mp3")
    assert not is_temporary(Path(".song.mp3.tmp")) and not is_temporary(Path("song.mp3"))


def test_a_recycled_pid_is_not_the_owner():
    me = Owner.me()
    assert me.alive() is True
    assert Owner(me.pid, me.host, "1").alive() is False  # same pid, started at another time
    assert Owner(dead_pid(), me.host).alive() is False
    assert Owner(me.pid, "another-host").alive() is None


def test_only_regular_files_are_read(tmp_path):
    fifo = tmp_path / "pipe.mp3"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a FIFO"), (Path("/dev/zero"), "a device"), (tmp_path, "a folder")):
        with pytest.raises(NotRegularFileError, match=kind):
            require_regular_file(path)
    (tmp_path / "ok.mp3").write_bytes(b"x")
    require_regular_file(tmp_path / "ok.mp3")


def test_an_unwritable_output_is_refused_before_any_work(tmp_path):
    (tmp_path / "notes").write_text("a file, not a folder")  # unwritable even for root
    with pytest.raises(InputError, match="cannot write --csv .*notes/plan.csv: .*notes is a file, not a folder"):
        check_writable(tmp_path / "notes" / "plan.csv", "--csv")
    with pytest.raises(InputError, match="--csv .* is a folder"):
        check_writable(tmp_path, "--csv")
    check_writable(tmp_path / "new" / "plan.csv", "--csv")
    assert os.listdir(tmp_path / "new") == []
