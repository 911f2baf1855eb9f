"""`streamgenre tag`: write each file's predicted genre into the file's own genre tag.

The prediction is `predict`'s (`predict_files`, the whole clip heard). A `GenreVocabulary`
says which outputs name a genre and under what name: a run's labels as they are, the pretrained
tagger's genre tags (`GENRE_TAGS`), or a user's ``--map`` CSV. The tag is the format's own genre
field, written by mutagen: ID3 TCON (MP3), the Vorbis comment GENRE (FLAC, Ogg Vorbis, Opus)
and ``©gen`` (M4A/MP4), one value per genre. Safe by default: nothing is written without
`write`; unsure predictions and files that already have a genre are left alone unless asked.

A write never edits the file in place: the file is copied beside itself, the copy is tagged,
flushed to disk and renamed over the original, so an interruption leaves the original as it
was or fully tagged. mutagen rewrites only tag blocks; the audio frames stay byte-identical.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from streamgenre.checkpoint import LoadedModel
from streamgenre.errors import InputError
from streamgenre.files import atomic_path, remove_stale_temporaries, require_regular_file
from streamgenre.predict import predict_files
from streamgenre.windows import WindowPlan

log = logging.getLogger(__name__)
EXTRA_HINT = "pip install 'streamgenre[tag]'"
CSV_COLUMNS = ("path", "current_genre", "predicted_genre", "probability", "action", "error")

# What the plan says per file; "write" becomes "written" once done.
WRITE, WRITTEN, UNSURE, HAS_GENRE, SAME, ERROR = "write", "written", "skip: unsure", "skip: has a genre", "skip: same genre", "error"


@dataclass
class TagRow:
    """One file in the plan: what it has, what the model says, and what is (or was) done."""

    path: str
    current: list[str]
    action: str
    predicted: list[tuple[str, float]] = field(default_factory=list)  # the genres to write, most likely first
    error: str | None = None

    @property
    def current_text(self) -> str:
        """The genre the file has now, several values joined by ``; ``; empty if none."""
        return "; ".join(self.current)

    @property
    def predicted_text(self) -> str:
        """The genres to write, joined by ``; ``; empty if none."""
        return "; ".join(genre for genre, _ in self.predicted)

    @property
    def probability(self) -> float | None:
        """The top genre's probability (None: nothing predicted)."""
        return self.predicted[0][1] if self.predicted else None

    def to_json(self) -> dict:
        """The object printed per line by ``tag --json``: ``genres`` lists each genre to write with its probability."""
        row = {"path": self.path, "current_genre": self.current, "predicted_genre": self.predicted_text or None, "action": self.action}
        row["probability"] = None if self.probability is None else round(self.probability, 6)
        row["genres"] = [{"genre": genre, "probability": round(probability, 6)} for genre, probability in self.predicted]
        if self.error:
            row["error"] = self.error
        return row

    def to_csv(self) -> list[str]:
        """The row written by ``tag --csv``, in `CSV_COLUMNS` order."""
        probability = "" if self.probability is None else f"{self.probability:.6f}"
        return [self.path, self.current_text, self.predicted_text, probability, self.action, self.error or ""]


@dataclass(frozen=True)
class GenreVocabulary:
    """Which model outputs name a genre, and the genre name written for each.

    Several labels may name one genre (``--map``: metal and heavy metal -> Metal); the genre's
    probability is then its most likely label's. For a tagger's independent tags that is a
    lower bound on "any of them"; for a softmax it is the largest share.
    """

    genre_of: dict[str, str]  # model label -> genre name

    def rank(self, scores: list[tuple[str, float]]) -> list[tuple[str, float]]:
        """``(label, probability)`` pairs -> ``(genre, probability)``, one per genre, most likely first."""
        best: dict[str, float] = {}
        for label, probability in scores:
            genre = self.genre_of.get(label)
            if genre is not None and probability > best.get(genre, -1.0):
                best[genre] = probability
        return sorted(best.items(), key=lambda item: -item[1])


def genre_vocabulary(loaded: LoadedModel, map_path: Path | None = None) -> GenreVocabulary:
    """The `loaded` model's genres (`LoadedModel.genres`, else every label), or those of a ``--map`` CSV."""
    if map_path is not None:
        return GenreVocabulary(read_genre_map(map_path, loaded.labels))
    return GenreVocabulary(dict(loaded.genres) if loaded.genres is not None else {label: label for label in loaded.labels})


def read_genre_map(path: Path, labels: list[str]) -> dict[str, str]:
    """A ``tag,genre`` CSV (header row first) -> {model label: genre}; labels match case-insensitively.

    Only the mapped labels count as genres, so the map is also the way to narrow the vocabulary.

    Raises:
        InputError: unreadable file, wrong header, empty cell, a tag given twice or not one of `labels`.
    """
    canonical = {label.casefold(): label for label in labels}
    genre_of: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            rows = list(csv.reader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as exn:
        raise InputError(f"--map {path}: cannot read it: {exn}") from exn
    if not rows or [cell.strip().casefold() for cell in rows[0]] != ["tag", "genre"]:
        raise InputError(f"--map {path}: the first row must be the header tag,genre")
    for line, row in enumerate(rows[1:], start=2):
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if len(cells) != 2 or not all(cells):
            raise InputError(f"--map {path}, line {line}: expected tag,genre, got {','.join(row)!r}")
        tag, genre = cells
        label = canonical.get(tag.casefold())
        if label is None:
            raise InputError(f"--map {path}, line {line}: {tag!r} is not one of the model's tags; known: {', '.join(labels)}")
        if label in genre_of:
            raise InputError(f"--map {path}, line {line}: {tag!r} is mapped twice")
        genre_of[label] = genre
    if not genre_of:
        raise InputError(f"--map {path}: maps no tag to a genre")
    return genre_of


class TagFormatError(Exception):
    """A file mutagen cannot read, or whose format has no genre field we write."""


def require_mutagen() -> None:
    """Fail with one line naming the extra when mutagen is not installed."""
    try:
        import mutagen  # noqa: F401
    except ImportError:
        raise InputError(f"tagging needs mutagen: {EXTRA_HINT}") from None


def check_tag_options(min_probability: float, top: int) -> None:
    """Refuse impossible `tag_files` options; the command line calls it before any model is loaded or line printed."""
    if not 0.0 <= min_probability <= 1.0:
        raise InputError(f"--min-probability must be between 0 and 1, got {min_probability}")
    if top < 1:
        raise InputError(f"--top must be >= 1, got {top}")


def tag_files(
    loaded: LoadedModel,
    paths: list[Path],
    plan: WindowPlan,
    device: torch.device,
    min_probability: float = 0.0,
    overwrite: bool = False,
    write: bool = False,
    vocabulary: GenreVocabulary | None = None,
    top: int = 1,
) -> Iterator[TagRow]:
    """Yield one row per path, in order; with `write`, each file is tagged as soon as it is heard.

    Each file gets its `top` most likely genres of `vocabulary` (default: `genre_vocabulary`)
    that reach `min_probability`; a file whose best genre does not is left alone.
    Files mutagen cannot read are not predicted; files PyAV cannot decode get an error row;
    the others are still planned (and written).
    """
    check_tag_options(min_probability, top)
    vocabulary = vocabulary or genre_vocabulary(loaded)
    _remove_stale_copies(paths)
    current: dict[int, list[str]] = {}
    readable: list[Path] = []
    errors: dict[int, str] = {}
    for number, path in enumerate(paths):
        try:
            current[number] = read_genre(path)
            readable.append(path)
        except TagFormatError as exn:
            errors[number] = str(exn)
    predictions = predict_files(loaded, readable, plan, len(loaded.labels), device)
    for number, path in enumerate(paths):
        if number in errors:
            yield TagRow(str(path), [], ERROR, error=errors[number])
            continue
        prediction = next(predictions)
        if prediction.error:
            yield TagRow(str(path), current[number], ERROR, error=f"cannot decode: {prediction.error}")
            continue
        ranked = vocabulary.rank(prediction.top)
        genres = ranked[:1] + [item for item in ranked[1:top] if item[1] >= min_probability]
        row = TagRow(str(path), current[number], _decide(current[number], genres, min_probability, overwrite), genres)
        if row.action == WRITE and (problem := _unwritable(path)):
            row.action, row.error = ERROR, problem
        if write and row.action == WRITE:
            try:
                write_genre(path, [genre for genre, _ in genres])
                row.action = WRITTEN
            except (TagFormatError, OSError) as exn:
                row.action, row.error = ERROR, f"cannot write the tag: {exn}"
        yield row


def _remove_stale_copies(paths: list[Path]) -> None:
    """Remove the temporary copies a `tag --write` killed mid-write left beside these files."""
    names: dict[Path, set[str]] = {}
    for path in paths:
        target = Path(os.path.realpath(path))
        names.setdefault(target.parent, set()).add(target.name)
    for folder, targets in names.items():
        for busy in remove_stale_temporaries(folder, targets):
            log.warning("left %s: another streamgenre process is writing it", busy)


def _decide(current: list[str], genres: list[tuple[str, float]], min_probability: float, overwrite: bool) -> str:
    if genres[0][1] < min_probability:
        return UNSURE
    if [value.casefold() for value in current] == [genre.casefold() for genre, _ in genres]:
        return SAME
    if current and not overwrite:
        return HAS_GENRE
    return WRITE


def _unwritable(path: Path) -> str | None:
    """Why `path` must not be replaced: a read-only file (no write bit for anyone) or folder."""
    target = Path(os.path.realpath(path))
    try:
        mode = os.stat(target).st_mode
    except OSError as exn:
        return f"cannot write the tag: {exn}"
    if not mode & 0o222 or not os.access(target, os.W_OK):
        return "the file is read-only: not tagged"
    if not os.access(target.parent, os.W_OK):
        return f"its folder {target.parent} is not writable (the tagged copy is written beside the file)"
    return None


# -- formats ---------------------------------------------------------------------------------
def _open(path: Path, kind=None):
    """The mutagen file object of `path` (of class `kind` when given) and its format name."""
    import mutagen

    try:
        require_regular_file(path)  # mutagen would block on a FIFO
        audio = kind(path) if kind else mutagen.File(path)
    except (mutagen.MutagenError, OSError) as exn:
        raise TagFormatError(f"cannot read its tags: {exn}") from None
    if audio is None:
        raise TagFormatError("not an audio format mutagen knows")
    name = type(audio).__name__
    if name not in _FIELDS:
        raise TagFormatError(f"cannot tag {name} files (tagged formats: MP3, FLAC, Ogg Vorbis, Opus, M4A)")
    return audio, name


# The field each supported mutagen class keeps its genre in.
_FIELDS = {"MP3": "TCON", "FLAC": "GENRE", "OggVorbis": "GENRE", "OggOpus": "GENRE", "OggFLAC": "GENRE", "MP4": "\xa9gen"}


def read_genre(path: Path) -> list[str]:
    """The genre values the file's own tag holds now (empty if none).

    Raises:
        TagFormatError: mutagen cannot read the file, or it is of a format we do not tag.
    """
    audio, name = _open(path)
    tags = audio.tags
    if tags is None:
        return []
    if name == "MP3":
        return [genre for frame in tags.getall("TCON") for genre in frame.genres]
    return [str(value) for value in tags.get(_FIELDS[name], [])]


def write_genre(path: Path, genres: list[str]) -> None:
    """Make `genres` the file's genre values, atomically; other tags and the audio stay as they are.

    Several genres are several values, as each format keeps them: TCON's list (ID3v2.4 separates
    them with NUL; mutagen joins them with "/" in an ID3v2.3 tag), repeated Vorbis GENRE
    comments, several ``©gen`` items. The file is copied to a temporary file in its folder (same mode, same owner where allowed),
    the copy is tagged, then `files.atomic_path` fsyncs it and renames it over the original (a symlink's target).

    Raises:
        TagFormatError: the format cannot be read or tagged.
        OSError: the folder is not writable, the disk is full, ...
    """
    from mutagen.id3 import TCON

    target = Path(os.path.realpath(path))
    _, name = _open(target)  # fail before copying anything
    with atomic_path(target) as temporary:
        shutil.copyfile(target, temporary)
        shutil.copymode(target, temporary)
        _copy_owner(target, temporary)
        audio, _ = _open(temporary, kind=_class_of(name))
        if audio.tags is None:
            audio.add_tags()
        if name == "MP3":
            version = 3 if audio.tags.version[:2] == (2, 3) else 4  # keep an ID3v2.3 tag at v2.3
            audio.tags.delall("TCON")
            audio.tags.add(TCON(encoding=3, text=genres))
            audio.save(v2_version=version)
        else:
            audio.tags[_FIELDS[name]] = genres
            audio.save()


def _class_of(name: str):
    from mutagen.flac import FLAC
    from mutagen.mp3 import MP3
    from mutagen.mp4 import MP4
    from mutagen.oggflac import OggFLAC
    from mutagen.oggopus import OggOpus
    from mutagen.oggvorbis import OggVorbis

    return {"MP3": MP3, "FLAC": FLAC, "OggVorbis": OggVorbis, "OggOpus": OggOpus, "OggFLAC": OggFLAC, "MP4": MP4}[name]


def _copy_owner(source: Path, destination: Path) -> None:
    """Give the copy the original's owner and group where this user may (e.g. as root)."""
    info = source.stat()
    if hasattr(os, "chown") and (info.st_uid, info.st_gid) != (os.getuid(), os.getgid()):
        try:
            os.chown(destination, info.st_uid, info.st_gid)
        except PermissionError:
            pass
