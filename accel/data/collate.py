"""Collate decoded samples into a :class:`~accel.data.batch.ClipBatch`."""
from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import default_collate

from .batch import ClipBatch
from .reading import SkippedSample


def collate_clips(samples: Sequence[dict | SkippedSample]) -> ClipBatch:
    """Stack good samples into the channels-last-3d batch; list the skipped ones.

    Every sample skipped: :meth:`ClipBatch.empty` (``is_empty``), with the skipped files.
    """
    good = [s for s in samples if not isinstance(s, SkippedSample)]
    skipped = [(s.path, s.reason) for s in samples if isinstance(s, SkippedSample)]
    if not good:
        return ClipBatch.empty(skipped)
    # (B, T, H, W, C): the only copy. default_collate stacks straight into shared memory in a
    # DataLoader worker, so the batch crosses to the main process without a second copy.
    clips = default_collate([s["clip"] for s in good])
    return ClipBatch(
        clip=clips.permute(0, 4, 1, 2, 3),  # (B, C, T, H, W), channels_last_3d view
        label=torch.tensor([s["label"] for s in good], dtype=torch.int64),
        video_id=torch.tensor([s["video_id"] for s in good], dtype=torch.int64),
        indices=torch.stack([s["indices"] for s in good]),
        skipped=skipped,
    )
