"""Every sampling strategy and short-video policy: range, order, count, determinism, coverage."""
from __future__ import annotations

import pytest
import torch

from accel import STRATEGIES, sample_clips, sample_indices

LENGTHS = [16, 17, 31, 100, 301]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("clip_len", [1, 8, 16])
def test_in_range_sorted_right_count(strategy, n, clip_len):
    for seed in range(20):
        idx = sample_indices(n, clip_len, strategy, generator=gen(seed), stride=2)
        assert len(idx) == clip_len
        assert all(0 <= i < n for i in idx)
        assert idx == sorted(idx)
        if strategy in ("random", "random_window", "dense"):
            assert len(set(idx)) == clip_len  # distinct frames when the video is long enough


@pytest.mark.parametrize("strategy", ["random", "random_window", "dense"])
def test_seeded_determinism_and_variety(strategy):
    a = sample_indices(300, 16, strategy, generator=gen(7))
    b = sample_indices(300, 16, strategy, generator=gen(7))
    assert a == b
    draws = {tuple(sample_indices(300, 16, strategy, generator=gen(s))) for s in range(10)}
    assert len(draws) > 5


def test_uniform_covers_the_whole_video_evenly():
    for n in LENGTHS:
        idx = sample_indices(n, 16, "uniform")
        assert idx[0] == 0 and idx[-1] == n - 1
        gaps = [b - a for a, b in zip(idx, idx[1:])]
        assert max(gaps) - min(gaps) <= 1
    assert sample_indices(100, 16, "uniform") == sample_indices(100, 16, "uniform", generator=gen(3))


def test_random_window_takes_one_frame_per_segment():
    n, k = 100, 8
    for seed in range(50):
        idx = sample_indices(n, k, "random_window", generator=gen(seed))
        for s, i in enumerate(idx):
            assert s * n // k <= i < (s + 1) * n // k


def test_random_window_and_random_reach_every_frame():
    seen = {s: set() for s in ("random", "random_window")}
    for seed in range(300):
        for s in seen:
            seen[s].update(sample_indices(40, 8, s, generator=gen(seed)))
    assert seen["random"] == set(range(40)) and seen["random_window"] == set(range(40))


def test_dense_is_consecutive_at_the_stride():
    idx = sample_indices(100, 8, "dense", stride=3, generator=gen(1))
    assert [b - a for a, b in zip(idx, idx[1:])] == [3] * 7
    starts = {sample_indices(100, 8, "dense", stride=3, generator=gen(s))[0] for s in range(300)}
    assert min(starts) == 0 and max(starts) == 100 - 22  # every start that fits
    # too short for stride 10: the widest stride that fits
    idx = sample_indices(20, 8, "dense", stride=10, generator=gen(0))
    assert [b - a for a, b in zip(idx, idx[1:])] == [2] * 7


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_short_video_policies(strategy):
    assert sample_indices(5, 8, strategy, short="repeat_last") == [0, 1, 2, 3, 4, 4, 4, 4]
    assert sample_indices(5, 8, strategy, short="loop") == [0, 1, 2, 3, 4, 0, 1, 2]
    with pytest.raises(ValueError, match="5 frames, fewer than clip_len=8"):
        sample_indices(5, 8, strategy, short="error")
    assert sample_indices(1, 4, strategy) == [0, 0, 0, 0]


def test_bad_arguments_name_the_allowed_values():
    with pytest.raises(ValueError, match="uniform, random, random_window, dense"):
        sample_indices(10, 4, "middle")
    with pytest.raises(ValueError, match="repeat_last, loop, error"):
        sample_indices(10, 4, short="pad")
    with pytest.raises(ValueError, match="empty video"):
        sample_indices(0, 4)
    with pytest.raises(ValueError, match="clip_len"):
        sample_indices(10, 0)
    with pytest.raises(ValueError, match="stride"):
        sample_clips(10, 4, stride=0)


def test_sample_clips_covers_every_frame():
    for n in [16, 17, 50, 301]:
        clips = sample_clips(n, 16)
        covered = {i for c in clips for i in c}
        assert covered == set(range(n))
        assert all(len(c) == 16 and c == sorted(c) and c[-1] < n for c in clips)
    assert sample_clips(48, 16) == [list(range(0, 16)), list(range(16, 32)), list(range(32, 48))]
    assert sample_clips(40, 16, window_stride=8)[-1] == list(range(24, 40))
    strided = sample_clips(100, 8, stride=4)
    assert all([b - a for a, b in zip(c, c[1:])] == [4] * 7 for c in strided)
    assert strided[-1][-1] == 99
    assert sample_clips(5, 8) == [[0, 1, 2, 3, 4, 4, 4, 4]]
    assert sample_clips(5, 8, short="loop") == [[0, 1, 2, 3, 4, 0, 1, 2]]


def test_one_epoch_seed_for_every_sampler():
    """The plain loader's shuffle and the sharded (DDP / DALI) sampler draw the same order
    from the one (seed, epoch) formula, so one seed means one order whichever path reads."""
    from accel.data.samplers import ShardedSampler, ShuffleSampler
    from accel.data.sampling import epoch_generator, epoch_seed

    plain, sharded = ShuffleSampler(50, seed=3), ShardedSampler(50, seed=3)
    orders = []
    for epoch in range(3):
        plain.set_epoch(epoch)
        sharded.set_epoch(epoch)
        expected = torch.randperm(50, generator=epoch_generator(3, epoch)).tolist()
        assert list(plain) == list(sharded) == expected
        orders.append(expected)
    assert orders[0] != orders[1] != orders[2]
    assert len({epoch_seed(s, e) for s in range(4) for e in range(1000)}) == 4000


def test_one_seed_mixing_formula():
    """clip and epoch seeds come from mix_seed; purposes and ranks give unrelated streams."""
    from accel.data.sampling import clip_seed, epoch_seed, mix_seed

    assert clip_seed(7, 2, 5) == mix_seed(7, 2, 5) and epoch_seed(7, 2) == mix_seed(7, 2)
    seeds = {mix_seed(0, epoch, rank, purpose) for epoch in range(50) for rank in range(8)
             for purpose in ("step", "augment")}
    assert len(seeds) == 800 and all(0 <= s < 2**63 for s in seeds)
    assert mix_seed(1, 23) != mix_seed(12, 3)  # no "1:23" vs "12:3" collision
