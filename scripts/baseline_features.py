"""The classic baseline: MFCC statistics + logistic regression / RBF SVM on a packed directory.

The honest anchor for every CNN recipe: it reads the same train and test splits the CNN sees
(so the same tracks are held out), describes each clip by the mean and standard deviation of
20 MFCCs, the spectral centroid and the zero-crossing rate, standardises, and fits scikit-learn
models. It prints whole-clip accuracy (features over the whole clip) and single-window accuracy
(features over the 3-s window at 0:15, the paper's input). Needs librosa (the `bench` extra).

    python scripts/baseline_features.py shards/ [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from streamgenre.audio import decode
from streamgenre.paper import DEFAULT_OFFSET_S, PAPER_SAMPLE_RATE, PAPER_WINDOW_S
from streamgenre.shards import read_index
from streamgenre.stream import iter_samples, open_split

N_MFCC = 20


def clip_features(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """Means and standard deviations over time of 20 MFCCs, spectral centroid and ZCR: (44,)."""
    import librosa

    frames = np.vstack(
        [
            librosa.feature.mfcc(y=waveform, sr=sample_rate, n_mfcc=N_MFCC),
            librosa.feature.spectral_centroid(y=waveform, sr=sample_rate) / 1000.0,
            librosa.feature.zero_crossing_rate(waveform),
        ]
    )  # (22, frames)
    return np.concatenate([frames.mean(axis=1), frames.std(axis=1)])


def split_features(directory: str, split: str, labels: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole-clip features, single-window features and labels of every clip in `split`."""
    whole, window, y = [], [], []
    start, length = round(DEFAULT_OFFSET_S * PAPER_SAMPLE_RATE), round(PAPER_WINDOW_S * PAPER_SAMPLE_RATE)
    for _, meta, audio in iter_samples(open_split(directory, split, labels)):
        waveform = decode(audio, rate=PAPER_SAMPLE_RATE).samples.numpy()
        piece = waveform[start : start + length] if len(waveform) >= start + length else waveform[-length:]
        whole.append(clip_features(waveform, PAPER_SAMPLE_RATE))
        window.append(clip_features(piece, PAPER_SAMPLE_RATE))
        y.append(labels.index(meta.genre))
    return np.array(whole), np.array(window), np.array(y)


def fit_and_score(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> dict[str, dict[str, float]]:
    """Accuracy and macro-F1 of standardised logistic regression and RBF SVM."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    models = {"logreg": LogisticRegression(max_iter=5000, C=1.0), "svm": SVC(kernel="rbf", C=10.0, gamma="scale")}
    scores = {}
    for name, estimator in models.items():
        predicted = make_pipeline(StandardScaler(), estimator).fit(train_x, train_y).predict(test_x)
        scores[name] = {"accuracy": float((predicted == test_y).mean()), "macro_f1": float(f1_score(test_y, predicted, average="macro"))}
    return scores


def run(directory: str, split: str = "test") -> dict:
    """Fit on `train`, score on `split`, whole clips and single windows."""
    labels = read_index(directory).labels
    train_whole, train_window, train_y = split_features(directory, "train", labels)
    test_whole, test_window, test_y = split_features(directory, split, labels)
    return {
        "split": split,
        "train_clips": len(train_y),
        "test_clips": len(test_y),
        "whole_clip": fit_and_score(train_whole, train_y, test_whole, test_y),
        "single_window": fit_and_score(train_window, train_y, test_window, test_y),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="a packed directory (streamgenre pack)")
    parser.add_argument("--split", default="test", help="split to score (default: test)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    result = run(args.directory, args.split)
    for mode in ("whole_clip", "single_window"):
        for model, score in result[mode].items():
            print(f"{mode:<14}{model:<8}accuracy {score['accuracy']:.3f}  macro-F1 {score['macro_f1']:.3f}  ({result['test_clips']} {args.split} clips)")
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(result, stream, indent=2)


if __name__ == "__main__":
    main()
