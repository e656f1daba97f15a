"""The distributed samplers: disjoint, equal, deterministic shards."""
from __future__ import annotations

import pytest
import torch

from accel.data.samplers import ShardedSampler, ShardSampler


@pytest.mark.parametrize("weights", [None, torch.rand(23, generator=torch.Generator().manual_seed(3))])
def test_sharded_sampler_disjoint_equal_and_deterministic(weights):
    shards = []
    for rank in range(2):
        s = ShardedSampler(23, rank=rank, world_size=2, seed=7, weights=weights)
        s.set_epoch(4)
        shards.append(list(s))
        assert len(shards[-1]) == len(s) == 11
    single = ShardedSampler(23, seed=7, weights=weights)
    single.set_epoch(4)
    order = single.global_order()[:22]
    # the two ranks take alternate positions of one global order: disjoint positions
    assert sorted(shards[0] + shards[1]) == sorted(order)
    if weights is None:
        assert not set(shards[0]) & set(shards[1])
    again = ShardedSampler(23, rank=1, world_size=2, seed=7, weights=weights)
    again.set_epoch(4)
    assert list(again) == shards[1]
    again.set_epoch(5)
    assert list(again) != shards[1]


def test_shard_sampler_covers_everything_once():
    parts = [list(ShardSampler(7, rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(7))
