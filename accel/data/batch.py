"""The one batch type every loader yields: :class:`ClipBatch`.

``clip``: (B, C, T, H, W), channels_last_3d (physically (B, T, H, W, C)); uint8 from the
decoders, float once normalised. ``label``: int64 (B,). ``video_id``: int64 (B,), the
manifest index of each clip's video. ``indices``: int64 (B, T), the frames of each clip.
``skipped``: ``[(path, reason), ...]`` for the samples of this batch that could not be read.
``mean``/``std`` say what the clip is: raw pixels (None, None) or ``(x / 255 - mean) / std``
per channel (``normalized`` is True then); ``normalized_by`` names what did it (messages).

Only ``clip`` and ``label`` go to the device (:meth:`ClipBatch.to`, :meth:`pin_memory`):
``video_id`` and ``indices`` stay on the host, where ``.tolist()`` does not wait for the GPU.
A batch whose every sample was skipped is :meth:`ClipBatch.empty`: zero-length tensors,
``is_empty`` True, the skipped files listed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .config import stats_tuple


@dataclass(eq=False)  # tensors have no truth value: batches compare by identity
class ClipBatch:
    clip: torch.Tensor
    label: torch.Tensor
    video_id: torch.Tensor
    indices: torch.Tensor
    skipped: list[tuple[str, str]] = field(default_factory=list)
    mean: tuple[float, ...] | None = None  # set (with std) once the clip is normalised
    std: tuple[float, ...] | None = None
    normalized_by: str | None = None  # what normalised it (for messages), e.g. "DaliAugment"

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise ValueError("a normalised batch needs both its mean and std, a raw one neither: "
                             f"got mean={self.mean}, std={self.std}")
        if self.mean is not None and self.std is not None:
            self.mean, self.std = stats_tuple(self.mean, "mean"), stats_tuple(self.std, "std")
        else:
            self.normalized_by = None
        if self.clip.dim() != 5:
            raise ValueError(f"clip must be (B, C, T, H, W), got shape {tuple(self.clip.shape)}")
        n = self.clip.shape[0]
        if not (self.label.shape[0] == self.video_id.shape[0] == self.indices.shape[0] == n):
            raise ValueError(f"clip, label, video_id and indices disagree on the batch size: "
                             f"{n}, {self.label.shape[0]}, {self.video_id.shape[0]}, "
                             f"{self.indices.shape[0]}")

    @classmethod
    def empty(cls, skipped: Sequence[tuple[str, str]] = ()) -> "ClipBatch":
        """The batch of a step whose every sample was skipped: zero clips, ``skipped`` listed."""
        return cls(clip=torch.zeros(0, 3, 0, 0, 0, dtype=torch.uint8),
                   label=torch.zeros(0, dtype=torch.int64), video_id=torch.zeros(0, dtype=torch.int64),
                   indices=torch.zeros(0, 0, dtype=torch.int64), skipped=list(skipped))

    def __len__(self) -> int:
        return self.clip.shape[0]

    @property
    def is_empty(self) -> bool:
        return self.clip.shape[0] == 0

    @property
    def normalized(self) -> bool:
        """Whether the clip is ``(x / 255 - mean) / std`` (True) or raw pixels."""
        return self.mean is not None

    @property
    def dtype(self) -> torch.dtype:
        return self.clip.dtype

    @property
    def device(self) -> torch.device:
        return self.clip.device

    @property
    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(mean, std) the clip is normalised with, or None for raw pixels."""
        if self.mean is None or self.std is None:
            return None
        return self.mean, self.std

    def replace(self, **changes) -> "ClipBatch":
        return dataclasses.replace(self, **changes)

    def with_clip(self, clip: torch.Tensor, *, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None, by: str | None = None) -> "ClipBatch":
        """This batch with ``clip`` in place of its clip: normalised with ``mean``/``std`` (by
        ``by``) when given, raw pixels otherwise."""
        return self.replace(clip=clip, mean=None if mean is None else tuple(mean),
                            std=None if std is None else tuple(std), normalized_by=by)

    def pin_memory(self) -> "ClipBatch":
        """Clip and label in pinned host memory (what DataLoader's ``pin_memory=True`` calls);
        ``Tensor.pin_memory`` keeps the strides, so the clip stays channels_last_3d."""
        return self.replace(clip=self.clip.pin_memory(), label=self.label.pin_memory())

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> "ClipBatch":
        """Clip and label on ``device`` (strides kept); ``video_id`` and ``indices`` stay."""
        return self.replace(clip=self.clip.to(device, non_blocking=non_blocking),
                            label=self.label.to(device, non_blocking=non_blocking))


__all__ = ["ClipBatch"]
