"""Domain exceptions: the CLI turns these into one-line errors (exit 2).

Anything else escaping a command is a bug: the CLI prints it as one line too, with a hint to
rerun with ``streamgenre --debug`` for the traceback.
"""

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


class StreamgenreError(Exception):
    """Base class for every error the user can cause or fix."""


class InputError(StreamgenreError):
    """Bad user input: a missing path, an unknown genre, a malformed option value."""


class DecodeError(StreamgenreError):
    """Audio bytes that PyAV/FFmpeg cannot decode (or that hold no audio)."""


class DamagedAudioError(DecodeError):
    """Audio that decodes for a while, then fails: a file damaged mid-way (never returned short)."""


class ShardFormatError(StreamgenreError):
    """A shard, index.json or shard directory that is missing, truncated or malformed."""


class CheckpointError(StreamgenreError):
    """A checkpoint that is missing, unreadable or from an incompatible version."""


def look_up(option: str, name: str, known: Mapping[str, T]) -> T:
    """`known[name]`, or an `InputError` that names the option and every known name."""
    if name not in known:
        raise InputError(f"{option} {name!r} is not known; known: {', '.join(known)}")
    return known[name]
