"""Choose label indices and train/val/test splits: pure functions of the tracks and a seed.

Splits are stratified by genre (each split gets its share of every genre) and grouped by artist
(all of an artist's tracks land in one split, so a model cannot score by recognising an artist
it trained on). No I/O and no global RNG: the same tracks and seed give the same assignment.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence

from streamgenre.errors import InputError
from streamgenre.shards import SPLITS
from streamgenre.sources import Track


def label_names(present: Iterable[str], requested: Sequence[str] | None = None) -> list[str]:
    """Label names in index order: `requested` (``--genres``) as given, else the sorted genres present.

    Raises:
        InputError: a requested genre is not present, or one is named twice.
    """
    known = sorted(set(present))
    if requested is None:
        return known
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise InputError(f"--genres: {', '.join(map(repr, unknown))} not in the source; known genres: {', '.join(known)}")
    repeated = sorted(name for name, count in Counter(requested).items() if count > 1)
    if repeated:
        raise InputError(f"--genres names {', '.join(repeated)} more than once")
    return list(requested)


def split_targets(total: int, val: float, test: float) -> dict[str, int]:
    """How many of `total` clips of one genre each split should get.

    Fractions are rounded half up, and a held-out split with a non-zero fraction gets at least
    one clip once the genre has a clip for every such split: with 6 clips, 10 % would round
    to 1 anyway, but with 4 it would round to 0 and leave the genre out of evaluation.
    """
    held_out = {"val": val, "test": test}
    enough = total >= 1 + sum(fraction > 0 for fraction in held_out.values())
    targets = {split: math.floor(fraction * total + 0.5) for split, fraction in held_out.items()}
    targets = {split: max(1, count) if enough and held_out[split] > 0 else count for split, count in targets.items()}
    return {"train": max(0, total - sum(targets.values())), **targets}


def assign_splits(tracks: Sequence[Track], val: float, test: float, seed: int) -> dict[str, str]:
    """Map every track id to a split; a split the source gave (``track.split``) is kept.

    Tracks without a split are grouped by artist (a track without an artist is its own group),
    and groups are placed largest first, in seeded order among equals, into the split that is
    furthest below its per-genre target. A group whose artist already has a given split joins it.
    """
    totals = Counter(track.genre for track in tracks)
    targets = {genre: split_targets(total, val, test) for genre, total in totals.items()}
    active = [split for split, fraction in zip(SPLITS, (1.0 - val - test, val, test)) if fraction > 0]
    tally: dict[str, Counter] = {split: Counter() for split in SPLITS}
    assignment, artist_split = {}, {}
    for track in tracks:
        if track.split:
            assignment[track.track_id] = track.split
            tally[track.split][track.genre] += 1
            if track.artist:
                artist_split.setdefault(track.artist, track.split)
    for group in _artist_groups([track for track in tracks if not track.split], seed):
        # On a tie the smaller, held-out split wins: it has fewer chances left to reach its target.
        split = artist_split.get(group[0].artist) or max(reversed(active), key=lambda name: _need(group, name, targets, tally, totals))
        for track in group:
            assignment[track.track_id] = split
            tally[split][track.genre] += 1
    return assignment


def _artist_groups(tracks: Sequence[Track], seed: int) -> list[list[Track]]:
    groups: dict[str, list[Track]] = {}
    for track in tracks:
        key = f"artist:{track.artist}" if track.artist else f"track:{track.track_id}"
        groups.setdefault(key, []).append(track)
    ordered = [groups[key] for key in sorted(groups)]
    random.Random(seed).shuffle(ordered)
    return sorted(ordered, key=len, reverse=True)  # stable: equal sizes keep the seeded order


def _need(group: list[Track], split: str, targets: dict, tally: dict[str, Counter], totals: Counter) -> float:
    """How far `split` is below target for the group's genres, relative to each genre's size."""
    return sum((targets[track.genre][split] - tally[split][track.genre]) / totals[track.genre] for track in group)
