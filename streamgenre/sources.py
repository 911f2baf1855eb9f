"""Find the tracks of a SOURCE and say how to read each one: input discovery, nothing more.

A SOURCE is an FMA audio tree or ``fma_*.zip`` with ``tracks.csv``, a folder per genre, or a
CSV manifest. Discovery reads metadata and lists files; it never opens audio, so a broken file
is found later (by `pack`, which decodes everything) and reported there, not here. What the
listing itself cannot use (a folder it cannot read, a hidden file, a broken link) is yielded
too, as a `Track` carrying a `problem`, so that pack lists it in rejected.csv: nothing vanishes.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from streamgenre.errors import InputError
from streamgenre.files import read_regular_file

logger = logging.getLogger(__name__)

SUBSETS = ("small", "medium", "large")
# FMA's set.split values -> ours; a manifest may use either spelling.
SPLIT_NAMES = {"training": "train", "validation": "val", "test": "test", "train": "train", "val": "val"}
MANIFEST_COLUMNS = ("path", "genre")
_FMA_GENRE, _FMA_SPLIT, _FMA_SUBSET, _FMA_ARTIST = "track.genre_top", "set.split", "set.subset", "artist.id"
_FMA_FILE = re.compile(r"^(\d+)\.mp3$")
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_ID_HASH_CHARS = 8

# Reasons a listed entry is not a track (rows of rejected.csv, beside pack's own reasons).
UNREADABLE = "unreadable"
HIDDEN = "hidden"
NOT_IN_GENRE = "not in a genre folder"
LINKED = "link into SOURCE"


@dataclass(frozen=True)
class Track:
    """One input file: where its bytes are and what the source says about it.

    `genre` is None when the source gives no label (the track is rejected, not guessed);
    `split` and `artist` are None when unknown. `member` names the file inside the zip at
    `path`; without it `path` is the file itself. `problem` is ``(reason, detail)`` for an
    entry the listing found but cannot use (pack rejects it with that reason).
    """

    track_id: str
    genre: str | None
    path: Path
    member: str | None = None
    split: str | None = None
    artist: str | None = None
    problem: tuple[str, str] | None = None

    @property
    def source(self) -> str:
        """The file as a user would name it: ``path`` or ``archive.zip:member``."""
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    def read_bytes(self) -> bytes:
        """The file's bytes, read again on every call (nothing is cached but the open archive).

        Raises:
            OSError: the file or archive member cannot be read.
        """
        if self.member is None:
            return read_regular_file(self.path)  # a FIFO or /dev/zero named in a manifest: refused, not read
        try:
            return _open_archive(self.path, os.getpid()).read(self.member)
        except (zipfile.BadZipFile, KeyError, RuntimeError) as exn:
            raise OSError(f"cannot read {self.member} from {self.path}: {exn}") from exn


def track_key(name: str) -> str:
    """A webdataset-safe sample key: webdataset splits keys at the first '.', so only [A-Za-z0-9_-]."""
    return _UNSAFE_KEY_CHARS.sub("_", name) or "_"


def discover(source: Path, metadata: Path | None = None, subset: str | None = None) -> Iterator[Track]:
    """Yield the tracks of `source` in a fixed (sorted) order.

    A folder with `metadata` is an FMA tree, a zip an FMA archive (needs `metadata`), a folder
    without it a folder per genre, a ``.csv`` a manifest.

    Raises:
        InputError: `source` or `metadata` is missing, of an unknown kind, or lacks columns.
    """
    if not source.exists():
        raise InputError(f"SOURCE {source} does not exist")
    if subset is not None and metadata is None:
        raise InputError("--subset needs --metadata tracks.csv (it filters FMA's set.subset column)")
    if source.is_dir():
        return _fma_tree(source, metadata, subset) if metadata else _genre_folders(source)
    if zipfile.is_zipfile(source):
        if metadata is None:
            raise InputError(f"{source} is a zip: pass --metadata tracks.csv to read it as an FMA archive")
        return _fma_zip(source, metadata, subset)
    if source.suffix.lower() == ".csv":
        if metadata is not None:
            raise InputError("--metadata is for an FMA tree or zip; a manifest carries its own genre column")
        return _manifest(source)
    raise InputError(f"SOURCE {source} is not a folder, an FMA zip or a .csv manifest")


# -- folder per genre ------------------------------------------------------------------------
def _genre_folders(root: Path) -> Iterator[Track]:
    """Every file below ``root/<genre>/``, with an id unique per file (see `_unique_ids`).

    Hidden entries, files directly in `root`, folders that cannot be listed and broken links
    are yielded with a `problem`, so that they are listed as rejected instead of vanishing.
    """
    try:
        entries = _sorted_entries(root)
    except OSError as exn:
        raise InputError(f"cannot list SOURCE {root}: {exn.strerror or exn}") from None
    folders = [entry for entry in entries if entry.is_dir() and not entry.name.startswith(".")]
    if not folders:
        raise InputError(f"{root} has no genre folders: expected {root}/<genre>/<file>.mp3 (or pass --metadata for an FMA tree)")
    found: list[tuple[Path, str | None, Path, tuple[str, str] | None]] = []  # (path, genre, path within the genre, problem)
    for entry in entries:
        if entry.name.startswith("."):
            found.append((entry, None, Path(entry.name), (HIDDEN, "names starting with '.' are not packed")))
        elif entry not in folders:
            found.append((entry, None, Path(entry.name), (NOT_IN_GENRE, f"directly in SOURCE; put it in {root}/<genre>/ to pack it")))
    genre_roots = frozenset(folder.resolve() for folder in folders)
    for folder in folders:
        found += [(path, folder.name, path.relative_to(folder), problem) for path, problem in _walk(folder, genre_roots, {folder.resolve()})]
    ids = _unique_ids([(genre, relative) for _, genre, relative, problem in found if problem is None])
    for path, genre, relative, problem in found:
        track_id = ids[genre, relative] if problem is None else ""
        yield Track(track_id, genre, path, problem=problem)


def _sorted_entries(folder: Path) -> list[Path]:
    with os.scandir(folder) as listing:
        return sorted(Path(entry.path) for entry in listing)


def _walk(folder: Path, genre_roots: frozenset[Path], seen: set[Path]) -> Iterator[tuple[Path, tuple[str, str] | None]]:
    """Files below `folder` in path order, each with None or the problem that keeps it out.

    A linked folder is followed, unless it leads into a genre folder or to a folder holding one
    (SOURCE itself: its files are packed from there, under their own genre) or back up the walk
    (`seen`: the real paths walked). A linked file inside a genre folder is packed from there
    only: a file reached twice is packed once, under its real folder.
    """
    try:
        entries = _sorted_entries(folder)
    except OSError as exn:
        yield folder, (UNREADABLE, f"cannot list this folder: {exn.strerror or exn}")
        return
    for path in entries:
        if path.name.startswith("."):
            yield path, (HIDDEN, "names starting with '.' are not packed")
        elif path.is_dir():
            real = path.resolve()
            if real in seen:
                yield path, (UNREADABLE, f"a link to {real}, a folder already read")
            elif path.is_symlink() and any(real == root or root in real.parents or real in root.parents for root in genre_roots):
                yield path, (LINKED, f"a link to {real}, which holds or is in a genre folder: packed from there under its own genre")
            else:
                yield from _walk(path, genre_roots, seen | {real})
        elif path.is_file():
            real = path.resolve()
            inside = path.is_symlink() and any(root in real.parents for root in genre_roots)
            yield path, (LINKED, f"a link to {real}, packed from there under its own genre") if inside else None
        else:
            kind = "a broken link" if path.is_symlink() else "not a regular file"
            yield path, (UNREADABLE, kind)


def _unique_ids(files: list[tuple[str, Path]]) -> dict[tuple[str, Path], str]:
    """A track id per ``(genre, path within the genre folder)``, unique across the whole SOURCE.

    The id is the path without its suffix, made key-safe (``album1/01.mp3`` -> ``album1_01``).
    Where that merges names (``album1/01`` in two genres, ``my song``/``my_song``, two
    non-Latin names, ``x.flac``/``x.wav``), each gets a short hash of its genre and path.
    """
    base = {file: track_key(file[1].with_suffix("").as_posix()) for file in files}
    taken = Counter(base.values())
    ids = {file: key if taken[key] == 1 else f"{key}-{_path_hash(file, _ID_HASH_CHARS)}" for file, key in base.items()}
    taken = Counter(ids.values())  # a hashed id equal to another file's plain one: hash longer
    return {file: key if taken[key] == 1 else f"{base[file]}-{_path_hash(file, 40)}" for file, key in ids.items()}


def _path_hash(file: tuple[str, Path], length: int) -> str:
    genre, relative = file
    return hashlib.sha1(f"{genre}/{relative.as_posix()}".encode()).hexdigest()[:length]


# -- CSV manifest ----------------------------------------------------------------------------
def _manifest(manifest: Path) -> Iterator[Track]:
    """Rows of ``path,genre[,split][,artist]``; relative paths are taken from the CSV's folder."""
    with _open_csv(manifest) as stream:
        reader = csv.DictReader(stream)
        _require_columns(manifest, _csv_call(manifest, lambda: reader.fieldnames) or [], MANIFEST_COLUMNS)
        rows = _csv_call(manifest, lambda: list(reader))
    for line, row in enumerate(rows, start=2):
        path = Path(row["path"])
        split = _split_of(row.get("split"), f"{manifest} line {line}")
        yield Track(track_key(path.stem), row["genre"] or None, manifest.parent / path, split=split, artist=row.get("artist") or None)


def _open_csv(path: Path):
    """Open a CSV as UTF-8 text, a leading byte-order mark (as Excel writes it) dropped."""
    try:
        return open(path, newline="", encoding="utf-8-sig")
    except OSError as exn:
        raise InputError(f"cannot read {path}: {exn.strerror or exn}") from None


def _csv_call(path: Path, read):
    """``read()`` (reading a CSV), a non-UTF-8 file or a broken quote becoming one `InputError`."""
    try:
        return read()
    except UnicodeDecodeError as exn:
        raise InputError(f"{path} is not UTF-8 text (byte 0x{exn.object[exn.start]:02x} at offset {exn.start}): save it as UTF-8") from None
    except csv.Error as exn:
        raise InputError(f"{path} is not a readable CSV: {exn}") from None


def _split_of(value: str | None, where: str) -> str | None:
    if not value:
        return None
    if value not in SPLIT_NAMES:
        raise InputError(f"{where}: split {value!r} is not one of {', '.join(SPLIT_NAMES)}")
    return SPLIT_NAMES[value]


def _require_columns(path: Path, found: list[str], needed: tuple[str, ...]) -> None:
    missing = [column for column in needed if column not in found]
    if missing:
        raise InputError(f"{path} lacks the column(s) {', '.join(missing)}; found: {', '.join(found) or 'none'}")


# -- FMA -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _FmaRow:
    genre: str | None
    split: str | None
    subset: str | None
    artist: str | None


def _fma_tree(root: Path, metadata: Path, subset: str | None) -> Iterator[Track]:
    """FMA's ``NNN/NNNNNN.mp3`` files below `root`, labelled from tracks.csv."""
    rows = read_fma_metadata(metadata)
    files = ((path.name, path, None) for path in sorted(root.glob("*/*.mp3")))
    return _fma_tracks(files, rows, subset)


def _fma_zip(archive: Path, metadata: Path, subset: str | None) -> Iterator[Track]:
    """The MP3 members of an FMA zip (``fma_small/000/000002.mp3``), read from the archive in place."""
    rows = read_fma_metadata(metadata)
    with zipfile.ZipFile(archive) as opened:
        members = sorted(info.filename for info in opened.infolist() if not info.is_dir())
    files = ((member.rsplit("/", 1)[-1], archive, member) for member in members)
    return _fma_tracks(files, rows, subset)


def _fma_tracks(files, rows: dict[int, _FmaRow], subset: str | None) -> Iterator[Track]:
    """Join ``(file name, path, member)`` with tracks.csv; names that are no track id are skipped."""
    other_subsets = 0
    for name, path, member in files:
        match = _FMA_FILE.match(name)
        if not match:
            continue  # FMA's README.txt, checksums and the like
        row = rows.get(int(match.group(1)), _FmaRow(None, None, None, None))
        if subset is not None and row.subset is not None and row.subset not in _subsets_within(subset):
            other_subsets += 1
            continue
        yield Track(match.group(1), row.genre, path, member, row.split, row.artist)
    if other_subsets:
        logger.info("left out %d files outside --subset %s", other_subsets, subset)


def _subsets_within(subset: str) -> tuple[str, ...]:
    """FMA's subsets nest (small is in medium is in large), but set.subset names the smallest."""
    return SUBSETS[: SUBSETS.index(subset) + 1]


def read_fma_metadata(path: Path) -> dict[int, _FmaRow]:
    """Parse FMA's tracks.csv (3 header rows) into track id -> genre, split, subset, artist.

    Row 0 holds top-level names (``track``, ``artist``, ``set``), row 1 sub-names (``genre_top``,
    ``id``, ``split``), row 2 ``track_id``; columns are named ``track.genre_top`` and so on.
    Only the four needed fields are kept, so the full 106k-row file stays small in memory.

    Raises:
        InputError: the file is missing, lacks the 3-row header or the ``track.genre_top`` column.
    """
    if not path.is_file():
        raise InputError(f"--metadata {path} does not exist")
    with _open_csv(path) as stream:
        reader = csv.reader(stream)
        header = _csv_call(path, lambda: [next(reader, []) for _ in range(3)])
        if not header[2] or header[2][0] != "track_id":
            raise InputError(f"{path} is not FMA's tracks.csv: its third row must start with 'track_id'")
        columns = {f"{top}.{sub}": index for index, (top, sub) in enumerate(zip(header[0], header[1], strict=False)) if top and sub}
        _require_columns(path, list(columns), (_FMA_GENRE,))
        return _csv_call(path, lambda: {int(row[0]): _fma_row(row, columns, path) for row in reader if row and row[0].isdigit()})


def _fma_row(row: list[str], columns: dict[str, int], path: Path) -> _FmaRow:
    def cell(name: str) -> str | None:
        index = columns.get(name)
        return (row[index] or None) if index is not None and index < len(row) else None

    split = cell(_FMA_SPLIT)
    return _FmaRow(cell(_FMA_GENRE), _split_of(split, f"{path} track {row[0]}"), cell(_FMA_SUBSET), cell(_FMA_ARTIST))


@lru_cache(maxsize=4)
def _open_archive(path: Path, pid: int) -> zipfile.ZipFile:
    """One open ZipFile per archive per process: a forked worker must not share its parent's file offset."""
    return zipfile.ZipFile(path)
