"""Batches of same-size items, for ``DPODataset`` with ``args.full_frame`` (sizes differ per video).

``SizeBucketBatchSampler`` groups dataset indices by item size and yields batches drawn within one
size only, so the default collate can stack them. Pass it as ``batch_sampler`` to a ``DataLoader``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np
import torch

from .seeding import derive_seed

__all__ = ["SizeBucketBatchSampler"]


class SizeBucketBatchSampler(torch.utils.data.Sampler):
    """Batches of indices whose ``sizes`` are equal (``sizes[i]``: any hashable, e.g. ``(h, w)``).

    Every index appears once per epoch. With ``shuffle`` the order within each size and the order of
    the batches depend only on ``(seed, epoch)``; call ``set_epoch`` before each epoch. A size with
    fewer items than ``batch_size`` gives a smaller last batch, dropped with ``drop_last``.
    """

    def __init__(self, sizes: Sequence[object], batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False):
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.buckets: dict[object, list[int]] = defaultdict(list)
        for index, size in enumerate(sizes):
            self.buckets[size].append(index)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng(derive_seed(self.seed, "size_buckets", self.epoch))
        batches = []
        for size in sorted(self.buckets, key=repr):
            indices = list(self.buckets[size])
            if self.shuffle:
                indices = [indices[k] for k in rng.permutation(len(indices))]
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        if self.shuffle:
            batches = [batches[k] for k in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        full, partial = 0, 0
        for indices in self.buckets.values():
            full += len(indices) // self.batch_size
            partial += bool(len(indices) % self.batch_size)
        return full + (0 if self.drop_last else partial)
