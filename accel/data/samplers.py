"""Samplers: the training order (a function of seed and epoch, see
:func:`accel.data.sampling.epoch_seed`), per-rank shards, and epoch keys for workers."""
from __future__ import annotations

import itertools
from typing import Iterator

import torch
from torch.utils.data import Sampler

from .sampling import epoch_generator


class EpochSampler(Sampler):
    """Yields ``(index, epoch)`` keys so the epoch reaches (persistent) worker processes,
    which hold their own copy of the dataset; forwards ``set_epoch`` to the inner sampler
    (DistributedSampler reshuffles with it). ``start`` skips the epoch's first samples: a run
    resumed mid-epoch reads the rest of the same order."""

    def __init__(self, inner):
        self.inner = inner
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, *, start: int = 0) -> None:
        if not 0 <= start <= len(self.inner):
            raise ValueError(f"start must be in [0, {len(self.inner)}] (the epoch's samples), got {start}")
        self.epoch, self.start = epoch, start
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __iter__(self):
        epoch = self.epoch
        return ((int(i), epoch) for i in itertools.islice(self.inner, self.start, None))

    def __len__(self) -> int:
        return len(self.inner) - self.start


class ShardedSampler(Sampler[int]):
    """Training order for one rank: a seeded global permutation (or weighted draw with
    replacement when ``weights`` is given), truncated to a multiple of ``world_size``, then
    every ``world_size``-th index from ``rank``. Ranks get disjoint shards (for the weighted
    draw: disjoint positions of one global draw) of equal length.
    """

    def __init__(self, num_items: int, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True, weights: torch.Tensor | None = None,
                 num_samples: int | None = None) -> None:
        if world_size > 1 and num_items < world_size:
            raise ValueError(f"{num_items} training samples cannot be shared by {world_size} processes")
        self.num_items = num_items
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle = shuffle
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        total = num_samples or num_items
        self.total = total - total % world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_order(self) -> list[int]:
        g = epoch_generator(self.seed, self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.total, replacement=True, generator=g)
        elif self.shuffle:
            order = torch.randperm(self.num_items, generator=g)
        else:
            order = torch.arange(self.num_items)
        return order[: self.total].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_order()[self.rank:: self.world_size])

    def __len__(self) -> int:
        return self.total // self.world_size


class ShuffleSampler(ShardedSampler):
    """The one-process training order: :class:`ShardedSampler`'s permutation of (seed, epoch)
    with a single shard, so a resumed run reads the epoch in the same order as an
    uninterrupted one, and one seed gives one order on every path."""

    def __init__(self, n: int, *, seed: int = 0):
        super().__init__(n, seed=seed)


class ShardSampler(Sampler[int]):
    """Evaluation shard: indices ``rank, rank + world, ...`` in order; shards may differ in
    length by one, and together cover every index exactly once (no padding duplicates)."""

    def __init__(self, num_items: int, *, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, num_items, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class RepeatSampler(Sampler[int]):
    """``num_samples`` indices from seeded permutations of ``range(num_items)`` laid end to
    end: a benchmark's warm-up plus timed steps in one epoch, however few the items (so no
    step waits on a loader or DALI pipeline rebuilt at an epoch boundary). Each pass is a
    new permutation of (seed, epoch, pass)."""

    def __init__(self, num_items: int, *, num_samples: int, seed: int = 0) -> None:
        if num_items < 1 or num_samples < 1:
            raise ValueError(f"num_items and num_samples must be >= 1, got {num_items} and {num_samples}")
        self.num_items, self.num_samples, self.seed = num_items, num_samples, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        order: list[int] = []
        passes = -(-self.num_samples // self.num_items)
        for k in range(passes):
            g = epoch_generator(self.seed, self.epoch * passes + k)
            order += torch.randperm(self.num_items, generator=g).tolist()
        return iter(order[: self.num_samples])

    def __len__(self) -> int:
        return self.num_samples
