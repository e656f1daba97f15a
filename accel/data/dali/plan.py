"""Which manifest indices make each batch of an epoch, and which frames each sample gets.

The order comes from the CPU loader's samplers (:mod:`accel.data.samplers`), so both paths
read an epoch in the same order: a given ``sampler`` (e.g. a DDP
:class:`~accel.data.samplers.ShardedSampler`, re-read each epoch) wins; otherwise
``shuffle=True`` takes :class:`~accel.data.samplers.ShuffleSampler` (one shard) or
:class:`~accel.data.samplers.ShardedSampler` (shard ``shard_id`` of ``num_shards``: equal
lengths, so equal batch counts per rank), and ``shuffle=False`` (evaluation) takes
:class:`~accel.data.samplers.ShardSampler` (indices ``shard_id, shard_id + num_shards, ...``):
every sample exactly once over the shards, no padding, no dropping, split into the same
number of batches on every shard (sizes differ by at most one) while every shard has at
least that many samples.

Frames: each sample's indices are drawn with ``sample_indices`` from the generator seeded by
``clip_seed(seed, epoch, index)``, exactly as :class:`~accel.data.dataset.VideoClipDataset`
does, so both paths pick the same frames; with in-pipeline augmentation the clip's
parameters are drawn next from the same generator (:meth:`DaliAugment.draw
<accel.data.dali.augment.DaliAugment.draw>`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch

from ..manifests import Manifest
from ..samplers import ShardedSampler, ShardSampler, ShuffleSampler
from ..sampling import ShortPolicy, Strategy, clip_generator, sample_indices
from .augment import DaliAugment


@dataclass
class Sample:
    """One planned clip, filled in as it is prepared (indices, bytes, parameters)."""

    pos: int                    # place in its batch
    index: int                  # manifest index (the video id)
    path: str
    label: int
    indices: list[int] | None = None
    data: np.ndarray | None = None        # encoded bytes for DALI
    params: dict | None = None            # augmentation parameters


class ClipPlan:
    """The epoch's batches of manifest indices for one shard, and each sample's frames."""

    def __init__(self, manifest: Manifest, *, batch_size: int, clip_len: int, strategy: Strategy,
                 stride: int, short: ShortPolicy, seed: int, sampler=None, shuffle: bool = False,
                 shard_id: int = 0, num_shards: int = 1, drop_last: bool = False,
                 augment: DaliAugment | None = None):
        self.manifest = manifest
        self.batch_size, self.clip_len, self.strategy = batch_size, clip_len, strategy
        self.stride, self.short, self.seed = stride, short, seed
        self.sampler, self.shuffle = sampler, shuffle
        self.shard_id, self.num_shards, self.drop_last = shard_id, num_shards, drop_last
        self.augment = augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Random strategies, shuffling and augmentation differ per epoch, reproducibly."""
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def epoch_sampler(self) -> Iterable[int]:
        """The given sampler, else the shared sampler for shuffling / sharding at this epoch."""
        if self.sampler is not None:
            return self.sampler
        n = len(self.manifest)
        if not self.shuffle:
            return ShardSampler(n, rank=self.shard_id, world_size=self.num_shards)
        sampler: ShuffleSampler | ShardedSampler
        if self.num_shards == 1:
            sampler = ShuffleSampler(n, seed=self.seed)
        else:
            sampler = ShardedSampler(n, rank=self.shard_id, world_size=self.num_shards, seed=self.seed)
        sampler.set_epoch(self.epoch)
        return sampler

    def batches(self) -> list[list[int]]:
        """This shard's batches of manifest indices for the current epoch."""
        order = [int(i) for i in self.epoch_sampler()]
        if self.sampler is None and not self.shuffle and self.num_shards > 1 and not self.drop_last:
            longest = math.ceil(len(self.manifest) / self.num_shards)
            count = math.ceil(longest / self.batch_size)
            if 0 < count <= len(order):  # the same batch count on every shard, sizes +-1
                bounds = [round(i * len(order) / count) for i in range(count + 1)]
                return [order[a:b] for a, b in zip(bounds, bounds[1:])]
        out = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        return out

    def generator(self, index: int) -> torch.Generator:
        """The generator of sample ``index`` at this epoch (VideoClipDataset's seeding)."""
        return clip_generator(self.seed, self.epoch, index)

    def draw(self, sample: Sample, num_frames: int) -> None:
        """The sample's frame indices, then its augmentation parameters, from its generator."""
        generator = self.generator(sample.index)
        sample.indices = sample_indices(num_frames, self.clip_len, self.strategy, stride=self.stride,
                                        generator=generator, short=self.short)
        if self.augment is not None:
            sample.params = self.augment.draw(generator)

    def chooser(self, sample: Sample) -> Callable[[int], list[int]]:
        """``choose(num_frames)`` for :func:`~accel.data.reading.read_frames`: the sample's
        indices, drawn from the reader's frame count if the probe did not draw them."""
        def choose(num_frames: int) -> list[int]:
            if sample.indices is None:
                self.draw(sample, num_frames)
            assert sample.indices is not None  # draw() sets them
            return sample.indices

        return choose
