"""Which musicnn features should a genre head read? Frozen embeddings + logistic regression, grouped K-fold.

Decodes every clip of a manifest (path, genre, artist) at 16 kHz, cuts it into non-overlapping
3-s windows, runs the pretrained backbone once and keeps three feature sets per window: the
1506 pooled features, the 200-d penultimate layer and the 50 tag logits. Then, per feature set,
standardised logistic regression is scored with grouped K-fold cross-validation (by `artist`,
the same folds as `accuracy_study.py --folds`) in two ways: on each clip's mean feature vector,
and per window with the window probabilities averaged per clip (how streamgenre scores a
clip). This chose `MusicnnClassifier`'s embedding (README "Accuracy").

    python scripts/musicnn_embeddings.py ../shared/data/manifest.csv [--folds 5] [--cache emb.npz]
"""

from __future__ import annotations

import argparse
import csv
import warnings
from pathlib import Path

import numpy as np
import torch

from streamgenre.audio import decode
from streamgenre.frontend import MelFrontend
from streamgenre.models.musicnn import MUSICNN_FRONTEND, pretrained_backbone

FEATURES = ("pooled", "penultimate", "logits")


def embed_manifest(manifest: Path) -> tuple[dict[str, list[np.ndarray]], np.ndarray, np.ndarray]:
    """Per clip, each feature set as ``(windows, size)``; and the clips' genres and artists."""
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    backbone, frontend = pretrained_backbone().eval(), MelFrontend(MUSICNN_FRONTEND)
    window = MUSICNN_FRONTEND.window_samples
    features: dict[str, list[np.ndarray]] = {name: [] for name in FEATURES}
    for row in rows:
        samples = decode((manifest.parent / row["path"]).read_bytes(), rate=MUSICNN_FRONTEND.sample_rate).samples
        count = max(1, samples.shape[-1] // window)
        windows = samples[: count * window].reshape(count, window)  # (windows, samples)
        with torch.inference_mode():
            outputs = backbone(frontend(windows))
        for name in FEATURES:
            features[name].append(getattr(outputs, name).numpy())
    return features, np.array([row["genre"] for row in rows]), np.array([row["artist"] for row in rows])


def cached_embeddings(manifest: Path, cache: Path | None) -> tuple[dict[str, list[np.ndarray]], np.ndarray, np.ndarray]:
    """`embed_manifest`, read from the `cache` .npz when it exists and written there when it does not."""
    if cache and cache.exists():
        with np.load(cache, allow_pickle=True) as data:
            return {name: list(data[name]) for name in FEATURES}, data["genres"], data["artists"]
    features, genres, artists = embed_manifest(manifest)
    if cache:
        np.savez(cache, genres=genres, artists=artists, **{name: np.array(features[name], dtype=object) for name in FEATURES})
    return features, genres, artists


def score(per_clip: list[np.ndarray], genres: np.ndarray, artists: np.ndarray, folds: int, mode: str, c: float) -> list[float]:
    """Accuracy per fold of standardised logistic regression (`mode`: "clip mean" or "per window")."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    accuracies = []
    for train, test in StratifiedGroupKFold(folds, shuffle=True, random_state=0).split(genres, genres, artists):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
        if mode == "clip mean":
            model.fit(np.stack([per_clip[i].mean(axis=0) for i in train]), genres[train])
            predicted = model.predict(np.stack([per_clip[i].mean(axis=0) for i in test]))
        else:
            model.fit(np.concatenate([per_clip[i] for i in train]), np.concatenate([[genres[i]] * len(per_clip[i]) for i in train]))
            predicted = np.array([model.classes_[model.predict_proba(per_clip[i]).mean(axis=0).argmax()] for i in test])
        accuracies.append(float((predicted == genres[test]).mean()))
    return accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--cache", type=Path, help="keep the embeddings here (an .npz) and reuse them")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    features, genres, artists = cached_embeddings(args.manifest, args.cache)
    print("| features | how a clip is scored | C | accuracy, mean ± sd over folds |\n|---|---|---|---|")
    for name in FEATURES:
        for mode in ("clip mean", "per window"):
            for c in (0.01, 0.1, 1.0):
                accuracies = score(features[name], genres, artists, args.folds, mode, c)
                print(f"| {name} | {mode} | {c:g} | {np.mean(accuracies):.3f} ± {np.std(accuracies):.3f} |", flush=True)


if __name__ == "__main__":
    main()
