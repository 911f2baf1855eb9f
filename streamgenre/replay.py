"""Probe epochs from memory: after one streamed pass, a frozen backbone's head trains on the embeddings it cached.

Why: with a frozen backbone and each clip's windows fixed (the `probe` recipe), every epoch
after the first hears the same windows, and the model's embedding cache already holds what the
backbone makes of them, so nearly all of a streamed epoch is MP3 decoding whose result is
known. The replay keeps the first pass's windows as 16-byte digests and labels (the embeddings
stay in the cache: nothing is copied, nothing written to disk) and serves each later epoch as a
seeded permutation of them, batch by batch, to the head alone.

It applies only when streaming would give the same windows to the same function: a frozen,
cached backbone (`GenreClassifier.serves_cached_embeddings`), fixed windows, no mixup and no
augmentation, one process (under DDP the head must train through the wrapped model). When the
cache's bound leaves windows out, epochs stream as before.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from streamgenre.model import GenreClassifier
from streamgenre.recipes import Recipe


class EmbeddingReplay:
    """The training windows of one streamed pass, replayed from the embedding cache in a new order each epoch.

    Args:
        model: the classifier whose frozen backbone's cache holds the embeddings.
        seed: the run's seed; epoch `e`'s order is a function of (seed, e) alone, so a
            resumed run replays exactly what an uninterrupted one would.
    """

    def __init__(self, model: GenreClassifier, seed: int):
        self.model = model
        self.seed = seed
        self.keys: list[bytes] = []
        self.labels: list[torch.Tensor] = []
        self.recorded = False  # one whole pass has been recorded

    def record(self, waveforms: torch.Tensor, labels: torch.Tensor, sample_rate: int) -> None:
        """Note one streamed batch's windows (call after the model has embedded them)."""
        self.keys.extend(self.model.cnn.cache.keys(waveforms.cpu(), sample_rate))
        self.labels.append(labels.cpu())

    def finish(self) -> bool:
        """End the recorded pass; True when later epochs can replay it (the cache kept every window).

        A pass the cache did not keep whole is forgotten, so `ready` stays False.
        """
        self.recorded = True
        if not self.model.cnn.cache.holds(self.keys):
            self.keys, self.labels = [], []
        return self.ready

    @property
    def ready(self) -> bool:
        """True when a whole pass is recorded and every window of it is in the cache."""
        return self.recorded and bool(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def batch_count(self, batch_size: int) -> int:
        return -(-len(self.keys) // batch_size)

    def batches(self, epoch: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(embeddings, labels)`` batches of every recorded window once, in epoch `epoch`'s order."""
        order = torch.randperm(len(self.keys), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        labels = torch.cat(self.labels)
        for start in range(0, len(order), batch_size):
            picked = order[start : start + batch_size]
            yield self.model.cnn.cache.lookup([self.keys[i] for i in picked.tolist()]), labels[picked]


def make_replay(model: GenreClassifier, recipe: Recipe, device: torch.device, distributed: bool, seed: int) -> EmbeddingReplay | None:
    """A replay when every epoch would feed the same windows through the same frozen, cached backbone; else None."""
    same_every_epoch = not recipe.fresh_windows and recipe.mixup_alpha == 0 and not model.augments
    if not (model.serves_cached_embeddings(device) and same_every_epoch and not distributed):
        return None
    return EmbeddingReplay(model, seed)
