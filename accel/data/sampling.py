"""Which frames make a clip: pure index math, no I/O.

``sample_indices`` picks one clip's frame indices; ``sample_clips`` tiles a whole video
with sliding windows for video-level evaluation. Random strategies draw from a
``torch.Generator``, so a seeded generator gives the same clip every time.
"""
from __future__ import annotations

import hashlib
from typing import Literal

import torch

STRATEGIES = ("uniform", "random", "random_window", "dense")
SHORT_POLICIES = ("repeat_last", "loop", "error")

Strategy = Literal["uniform", "random", "random_window", "dense"]
ShortPolicy = Literal["repeat_last", "loop", "error"]


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _check_counts(num_frames: int, clip_len: int) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames} (an empty video has no clip)")
    if clip_len < 1:
        raise ValueError(f"clip_len must be >= 1, got {clip_len}")


def _randint(high: int, generator: torch.Generator | None) -> int:
    """A uniform integer in [0, high)."""
    return int(torch.randint(high, (1,), generator=generator))


def short_video_indices(num_frames: int, clip_len: int, short: ShortPolicy) -> list[int]:
    """Indices for a video with fewer frames than the clip needs."""
    if short == "error":
        raise ValueError(f"video has {num_frames} frames, fewer than clip_len={clip_len} "
                         f"(short='error'; use 'repeat_last' or 'loop' to pad)")
    if short == "loop":
        return [i % num_frames for i in range(clip_len)]
    return [min(i, num_frames - 1) for i in range(clip_len)]


def sample_indices(num_frames: int, clip_len: int, strategy: Strategy = "uniform", *,
                   stride: int = 1, generator: torch.Generator | None = None,
                   short: ShortPolicy = "repeat_last") -> list[int]:
    """Frame indices of one clip, in temporal order.

    strategy:
      * ``uniform``: evenly spaced over the whole video, first and last frame included.
      * ``random``: a sorted random subset of distinct frames.
      * ``random_window``: the video cut into ``clip_len`` equal segments, one random frame
        from each (TSN sampling).
      * ``dense``: ``clip_len`` consecutive frames ``stride`` apart from a random start; if
        the video is too short for that stride, the largest stride that fits is used.
    short: what a video with fewer than ``clip_len`` frames gets, whatever the strategy:
      ``repeat_last`` pads with its last frame, ``loop`` starts again from frame 0,
      ``error`` raises.
    """
    _check_choice("strategy", strategy, STRATEGIES)
    _check_choice("short", short, SHORT_POLICIES)
    _check_counts(num_frames, clip_len)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if num_frames < clip_len:
        return short_video_indices(num_frames, clip_len, short)
    if clip_len == 1 and strategy == "uniform":
        return [(num_frames - 1) // 2]
    if strategy == "uniform":
        # Integer arithmetic: exact ends (0 and num_frames-1), gaps differ by at most one.
        return [i * (num_frames - 1) // (clip_len - 1) for i in range(clip_len)]
    if strategy == "random":
        picked = torch.randperm(num_frames, generator=generator)[:clip_len]
        return sorted(int(i) for i in picked)
    if strategy == "random_window":
        bounds = [i * num_frames // clip_len for i in range(clip_len + 1)]
        return [lo + _randint(hi - lo, generator) for lo, hi in zip(bounds, bounds[1:])]
    # dense
    stride = min(stride, (num_frames - 1) // (clip_len - 1)) if clip_len > 1 else stride
    span = (clip_len - 1) * stride + 1
    start = _randint(num_frames - span + 1, generator)
    return [start + i * stride for i in range(clip_len)]


def sample_clips(num_frames: int, clip_len: int, *, stride: int = 1,
                 window_stride: int | None = None,
                 short: ShortPolicy = "repeat_last") -> list[list[int]]:
    """Sliding windows of ``clip_len`` frames ``stride`` apart that cover the whole video.

    Windows start every ``window_stride`` frames (default: one window span, so they do not
    overlap); a last window aligned to the video's end is added when the others miss its
    tail. A video shorter than one clip gives one clip padded by the ``short`` policy.
    """
    _check_choice("short", short, SHORT_POLICIES)
    _check_counts(num_frames, clip_len)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    span = (clip_len - 1) * stride + 1
    if window_stride is None:
        window_stride = span
    if window_stride < 1:
        raise ValueError(f"window_stride must be >= 1, got {window_stride}")
    if num_frames < clip_len:
        return [short_video_indices(num_frames, clip_len, short)]
    if span > num_frames:  # too long at this stride: one clip with the widest stride that fits
        return [sample_indices(num_frames, clip_len, "uniform")]
    starts = list(range(0, num_frames - span + 1, window_stride))
    if starts[-1] + span < num_frames:
        starts.append(num_frames - span)
    return [[s + i * stride for i in range(clip_len)] for s in starts]


# The seeds of a run: every (seed, epoch) order and every (seed, epoch, sample) clip comes
# from one of these two, whichever process, worker or loader (DALI included) draws it.
def mix_seed(*parts: int | str) -> int:
    """The one seed-mixing formula: a 63-bit seed from the run's seed and what varies
    (epoch, sample, rank, purpose). A hash, so nearby inputs give unrelated streams and no
    two (epoch, index) pairs collide the way ``seed * K + epoch`` arithmetic can."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s sample order (the samplers' permutation or weighted
    draw): a function of (seed, epoch) alone, so a resumed run reads the epoch in the same
    order."""
    return mix_seed(seed, epoch)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`epoch_seed`."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch))


def clip_seed(seed: int, epoch: int, index: int) -> int:
    """A seed for one (epoch, sample): the same clip whichever worker draws it."""
    return mix_seed(seed, epoch, index)


def clip_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator one sample's frames (then its augmentation) are drawn from, on the CPU
    path and the DALI path alike."""
    return torch.Generator().manual_seed(clip_seed(seed, epoch, index))
