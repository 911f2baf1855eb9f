"""What moves the musicnn probe? Its head retrained on cached embeddings, one change at a time, grouped K-fold.

The streamed probe (`train --model musicnn`) spends its time decoding; its head only ever sees
the frozen backbone's pooled embeddings. This script embeds every 3-s window of every clip
once (`musicnn_embeddings.cached_embeddings`, same cache file), then trains the probe's own head
(`models.musicnn.genre_head`: standardisation, dropout, a hidden layer or none) with the probe recipe's
optimiser, schedule, label smoothing, batch and epochs on the same grouped folds as
`accuracy_study.py --folds`, and changes one thing at a time: the windows per clip, how window
outputs combine into a clip's answer, the features, training on clip means, a hidden layer.
Like the streamed study's probe it trains on all non-test clips; unlike it, it draws windows
from the non-overlapping 3-s grid. Mean over seeds of the mean over folds.

    python scripts/probe_levers.py ../shared/soundtracks/manifest.csv --cache st.npz [--seeds 3]
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from musicnn_embeddings import cached_embeddings

from streamgenre.models.musicnn import genre_head
from streamgenre.recipes import PROBE, learning_rate

# name: (windows per clip, vote, features, train on clip means, hidden units)
LEVERS = {
    "linear head: 8 windows, mean probability (the probe before its hidden layer)": (8, "mean", "pooled", False, 0),
    "linear, 10 windows (the whole clip)": (10, "mean", "pooled", False, 0),
    "linear, 10 windows, mean logit (= the head on the clip's mean embedding)": (10, "logit", "pooled", False, 0),
    "linear, 10 windows, square root of the features": (10, "mean", "sqrt", False, 0),
    "linear, 10 windows, pooled + penultimate features": (10, "mean", "pooled+penultimate", False, 0),
    "linear, means of random window subsets, mean logit": (10, "logit", "pooled", True, 0),
    "a hidden layer of 256 units, 8 windows (the probe as it ships)": (8, "mean", "pooled", False, 256),
    "a hidden layer of 256 units, 10 windows": (10, "mean", "pooled", False, 256),
}


def clip_features(features: dict[str, list[np.ndarray]], kind: str, clip: int) -> torch.Tensor:
    """``(windows, size)`` features of one clip in the lever's form."""
    pooled = np.asarray(features["pooled"][clip], dtype=np.float32)
    if kind == "sqrt":
        return torch.from_numpy(np.sqrt(np.maximum(pooled, 0)))
    if kind == "pooled+penultimate":
        return torch.from_numpy(np.concatenate([pooled, np.asarray(features["penultimate"][clip], dtype=np.float32)], axis=1))
    return torch.from_numpy(pooled)


def training_rows(clips: list[torch.Tensor], labels: list[int], windows: int, clip_means: bool, rng: np.random.Generator):
    """Training inputs and labels: `windows` random windows of each clip, or (`clip_means`) 8 means of random window subsets."""
    rows, targets = [], []
    for clip, label in zip(clips, labels):
        if clip_means:
            sizes = rng.integers(min(2, len(clip)), len(clip) + 1, size=8)
            rows.append(torch.stack([clip[rng.choice(len(clip), size, replace=False)].mean(dim=0) for size in sizes]))
        else:
            rows.append(clip[rng.permutation(len(clip))[:windows]])
        targets += [label] * len(rows[-1])
    return torch.cat(rows), torch.tensor(targets)


def fold_accuracy(clips: list[torch.Tensor], labels: np.ndarray, train: np.ndarray, test: np.ndarray, lever: tuple, n_classes: int, seed: int) -> float:
    """Train the head on the `train` clips as `lever` says; whole-clip accuracy on the `test` clips."""
    windows, vote, _, clip_means, hidden = lever
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    inputs, targets = training_rows([clips[i] for i in train], [int(labels[i]) for i in train], windows, clip_means, rng)
    head = genre_head(inputs.shape[1], n_classes, 0.5, hidden)
    optimizer = torch.optim.AdamW(head.parameters(), lr=PROBE.lr, weight_decay=PROBE.weight_decay)
    steps_per_epoch = math.ceil(len(inputs) / PROBE.batch_size)
    step, total = 0, PROBE.epochs * steps_per_epoch
    head.train()
    for _ in range(PROBE.epochs):
        for batch in torch.from_numpy(rng.permutation(len(inputs))).split(PROBE.batch_size):
            if len(batch) < 2:  # batch norm needs two rows
                continue
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(PROBE, step, total)
            loss = F.cross_entropy(head(inputs[batch]), targets[batch], label_smoothing=PROBE.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    head.eval()
    with torch.no_grad():
        outputs = [head(clips[i]) for i in test]
        scores = [out.mean(dim=0) if vote == "logit" else torch.softmax(out, dim=1).mean(dim=0) for out in outputs]
    return float(np.mean([int(score.argmax()) == labels[i] for score, i in zip(scores, test)]))


def main() -> None:
    from sklearn.model_selection import StratifiedGroupKFold

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cache", type=Path, help="the embeddings .npz of musicnn_embeddings.py (made here when missing)")
    parser.add_argument("--only", nargs="+", default=[""], help="run only the changes whose name holds one of these words")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(1)
    features, genres, artists = cached_embeddings(args.manifest, args.cache)
    names = sorted(set(genres))
    labels = np.array([names.index(genre) for genre in genres])
    folds = list(StratifiedGroupKFold(args.folds, shuffle=True, random_state=0).split(genres, genres, artists))
    print(f"| change to the probe's head | whole-clip accuracy, mean over {args.seeds} seeds | per seed |\n|---|---|---|")
    for name, lever in ((name, lever) for name, lever in LEVERS.items() if any(word in name for word in args.only)):
        clips = [clip_features(features, lever[2], i) for i in range(len(labels))]
        per_seed = [np.mean([fold_accuracy(clips, labels, train, test, lever, len(names), seed) for train, test in folds]) for seed in range(args.seeds)]
        print(f"| {name} | {np.mean(per_seed):.3f} | {', '.join(f'{value:.3f}' for value in per_seed)} |", flush=True)


if __name__ == "__main__":
    main()
