"""Video-level evaluation input: every sliding window of each video
(:class:`VideoWindowsDataset`), batched per video (:func:`collate_windows`,
:func:`build_window_loader`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..io.frames import open_sample
from .batch import ClipBatch
from .dataset import DecodesInChild, resize_frames
from .loader import ClipLoader, choose_backend
from .manifests import Manifest
from .reading import SkippedSample, read_frames
from .sampling import sample_clips


@dataclass
class VideoWindowsDataset(DecodesInChild, Dataset):
    """Every window of a video: ``{"clip": uint8 (K, T, H, W, C), "label", "video_id",
    "indices": (K, T)}``.

    ``stride``: frames between a window's frames; ``None`` picks, per video, the largest
    stride whose window still fits in the video (so each window spans the video like a
    ``uniform`` clip, and the windows are its phase-shifted versions). ``window_stride``:
    frames between window starts (default: non-overlapping, plus one aligned to the end).
    ``max_windows``: evenly thin out longer lists (bounds the cost of long videos).
    Decoding runs in a watched child process, as in :class:`~accel.data.dataset.VideoClipDataset`.
    """

    manifest: Manifest
    clip_len: int
    stride: int | None = None
    window_stride: int | None = None
    max_windows: int | None = None
    backend: str = "auto"
    frame_size: tuple[int, int] | None = None
    on_error: str = "skip"
    decode_timeout_s: float | None = 60.0
    recycle_after_clips: int | None = 1000
    recycle_rss_growth_mb: float | None = 256.0
    isolate_decode: bool = True
    rotate: bool = True  # frames as displayed (the display matrix applied); False: as stored

    def __post_init__(self) -> None:
        if self.clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {self.clip_len}")
        self._check_decode_options()

    def __len__(self) -> int:
        return len(self.manifest)

    def windows(self, num_frames: int) -> list[list[int]]:
        stride = self.stride
        if stride is None:
            stride = max(1, (num_frames - 1) // max(1, self.clip_len - 1))
        wins = sample_clips(num_frames, self.clip_len, stride=stride, window_stride=self.window_stride)
        if self.max_windows and len(wins) > self.max_windows:
            keep = np.linspace(0, len(wins) - 1, self.max_windows).round().astype(int)
            wins = [wins[i] for i in keep]
        return wins

    def __getitem__(self, index: int) -> dict | SkippedSample:
        return self._isolated(self.manifest.path(index), index)

    def _load(self, index: int) -> dict | SkippedSample:
        item = self.manifest.items[index]
        wins: list[list[int]] = []

        def choose(num_frames: int) -> list[int]:
            wins.extend(self.windows(num_frames))
            return [i for w in wins for i in w]

        read = read_frames(item.path, self.backend, choose, on_error=self.on_error,
                           open_reader=lambda path, backend: open_sample(path, backend, rotate=self.rotate))
        if isinstance(read, SkippedSample):
            return read
        frames, _ = read
        if self.frame_size is not None and tuple(frames.shape[1:3]) != tuple(self.frame_size):
            frames = resize_frames(frames, self.frame_size)
        k, t = len(wins), self.clip_len
        return {"clip": frames.reshape(k, t, *frames.shape[1:]), "label": item.label,
                "video_id": index, "indices": torch.tensor(wins, dtype=torch.int64)}


def collate_windows(samples: Sequence[dict | SkippedSample]) -> ClipBatch:
    """All windows of the batch's videos as one clip batch (channels_last_3d), one label and
    video id per window; :meth:`ClipBatch.empty` when every video was skipped."""
    good = [s for s in samples if not isinstance(s, SkippedSample)]
    skipped = [(s.path, s.reason) for s in samples if isinstance(s, SkippedSample)]
    if not good:
        return ClipBatch.empty(skipped)
    counts = [s["clip"].shape[0] for s in good]
    clips = torch.cat([s["clip"] for s in good])  # (N, T, H, W, C)
    return ClipBatch(
        clip=clips.permute(0, 4, 1, 2, 3),
        label=torch.tensor([s["label"] for s, n in zip(good, counts) for _ in range(n)],
                           dtype=torch.int64),
        video_id=torch.tensor([s["video_id"] for s, n in zip(good, counts) for _ in range(n)],
                              dtype=torch.int64),
        indices=torch.cat([s["indices"] for s in good]),
        skipped=skipped,
    )


def build_window_loader(manifest: Manifest, *, clip_len: int, videos_per_batch: int,
                        stride: int | None = None, window_stride: int | None = None,
                        max_windows: int | None = None, frame_size=None, backend: str = "auto",
                        num_workers: int = 0, sampler: Sampler | None = None,
                        on_error: str = "skip", rotate: bool = True) -> ClipLoader:
    chosen, why = choose_backend(backend)
    dataset = VideoWindowsDataset(manifest, clip_len, stride, window_stride, max_windows,
                                  backend=chosen, frame_size=frame_size, on_error=on_error, rotate=rotate)
    loader = DataLoader(dataset, batch_size=videos_per_batch, sampler=sampler, shuffle=False,
                        num_workers=num_workers, collate_fn=collate_windows,
                        pin_memory=torch.cuda.is_available())
    return ClipLoader(dataset, loader, chosen, why)
