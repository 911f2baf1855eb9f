"""What genre the pretrained musicnn tagger names for each label of a folder-per-label corpus.

Runs `streamgenre tag musicnn`'s own prediction (whole clips, 3-s windows, the `GENRE_TAGS`
vocabulary) on every clip of ``CORPUS/manifest.csv`` and prints, per label, how often each genre
came first. ``--expect marsshooter=Metal,Heavy Metal`` also scores a label whose true genre is
known: the share of its clips whose top genre is one of those names (the README's measure).

    .venv/bin/python scripts/tagger_genres.py ../shared/soundtracks --expect "marsshooter=Metal,Heavy Metal"
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from pathlib import Path

import torch

from streamgenre.checkpoint import load_for_inference
from streamgenre.predict import predict_files
from streamgenre.tag import genre_vocabulary
from streamgenre.windows import WindowPlan


def run(corpus: Path, expect: dict[str, set[str]]) -> dict:
    """Top genre per clip, counted per label; hit rates for the labels in `expect`."""
    with open(corpus / "manifest.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    loaded = load_for_inference("musicnn")
    vocabulary = genre_vocabulary(loaded)
    plan = WindowPlan(duration_s=loaded.spec.window_s, hop_s=loaded.spec.window_s)
    paths = [corpus / row["path"] for row in rows]
    top_genre: dict[str, Counter] = {}
    for row, prediction in zip(rows, predict_files(loaded, paths, plan, len(loaded.labels), torch.device("cpu")), strict=True):
        genre = vocabulary.rank(prediction.top)[0][0] if not prediction.error else "error"
        top_genre.setdefault(row["genre"], Counter())[genre] += 1
    result = {"clips": len(rows), "top_genre": {label: dict(counts.most_common()) for label, counts in sorted(top_genre.items())}}
    result["expected"] = {
        label: {"genres": sorted(names), "hits": sum(top_genre[label][name] for name in names), "clips": sum(top_genre[label].values())}
        for label, names in expect.items()
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--expect", action="append", default=[], help="LABEL=Genre[,Genre...]: the genre names that count as right")
    args = parser.parse_args()
    expect = {label: set(names.split(",")) for label, names in (item.split("=", 1) for item in args.expect)}
    print(json.dumps(run(args.corpus, expect), indent=1))


if __name__ == "__main__":
    main()
