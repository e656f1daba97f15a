"""Manifests (which files, which labels) and ``VideoClipDataset`` (one clip per video).

Layouts:
  * class folders of videos: ``root/{train,val,test}/{class}/*.mp4`` (or ``root/{class}/*``);
  * a CSV manifest ``path,label[,split]`` (paths relative to the CSV's folder);
  * frame folders: ``root/{split}/{class}/{sample}/*.jpg``, or ``sequences/seq_x/*.jpg``
    listed in a CSV like any video.
Classes are the sorted folder names (or sorted CSV labels) unless given.

Error policy: a file that cannot be decoded never kills an epoch under ``on_error="skip"``:
the dataset returns a :class:`SkippedSample` (path, reason) that the collate function drops
and the loader records; ``on_error="raise"`` raises :class:`~accel.video.VideoDecodeError`
naming the file. A decode that hangs is cut off after ``decode_timeout_s``.
"""
from __future__ import annotations

import contextlib
import hashlib
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch

from .sampling import SHORT_POLICIES, STRATEGIES, sample_indices
from .video import VideoDecodeError, VideoReader, open_video, resolve_backend

ON_ERROR = ("skip", "raise")

# Manifests moved to accel.manifests; imported here so ``accel.data`` keeps its names.
from .manifests import (FRAME_EXTENSIONS, SPLITS, VIDEO_EXTENSIONS, CsvOptions,  # noqa: E402,F401
                        Manifest, ManifestError, VideoItem, csv_manifest, folder_manifest,
                        load_manifest, stratified_split)


# --------------------------------------------------------------------------- frame folders
class FrameFolderReader(VideoReader):
    """A folder of image files (sorted by name) read as a video; JPEG decoded by libjpeg-turbo."""

    backend = "frames"

    def _open(self) -> None:
        self._files = sorted(p for p in Path(self.path).iterdir()
                             if p.suffix.lower() in FRAME_EXTENSIONS)
        self._num_frames = len(self._files)
        self._fps = 0.0

    def _read_sorted(self, indices: np.ndarray) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_image, read_file

        frames = [decode_image(read_file(str(self._files[i])), mode=ImageReadMode.RGB)
                  for i in indices.tolist()]
        return torch.stack(frames).permute(0, 2, 3, 1).contiguous()


def open_sample(path: str, backend: str) -> VideoReader:
    """A video file through ``backend``, or a frame folder."""
    if Path(path).is_dir():
        return FrameFolderReader(path)
    return open_video(path, backend)


# --------------------------------------------------------------------------- dataset
class SkippedSample(NamedTuple):
    """What a dataset returns, under ``on_error="skip"``, for a file it could not use."""

    path: str
    reason: str


class DecodeTimeout(VideoDecodeError):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float | None, path: str) -> Iterator[None]:
    """Raise DecodeTimeout in this thread after ``seconds``.

    SIGALRM interrupts Python code, and PyAV decodes frame by frame in Python, so a decode
    that keeps going (or a demuxer that retries) is stopped between frames. Signals work in
    the main thread only, which is where DataLoader workers call ``__getitem__``.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise DecodeTimeout(path, f"decode took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _clip_seed(seed: int, epoch: int, index: int) -> int:
    """A seed for one (epoch, sample): the same clip whichever worker draws it."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass
class VideoClipDataset(torch.utils.data.Dataset):
    """One clip per video: ``{"clip": uint8 (T, H, W, C), "label", "video_id", "indices"}``.

    ``frame_size=(H, W)`` resizes frames in the worker (uint8, antialiased) so clips of
    videos with different resolutions stack into one batch; ``None`` keeps the decoded size.
    """

    manifest: Manifest
    clip_len: int = 16
    strategy: str = "uniform"
    stride: int = 1
    short: str = "repeat_last"
    backend: str = "auto"
    frame_size: tuple[int, int] | None = None
    on_error: str = "skip"
    decode_timeout_s: float | None = 30.0
    seed: int = 0
    epoch: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        for name, value, allowed in (("strategy", self.strategy, STRATEGIES),
                                     ("short", self.short, SHORT_POLICIES),
                                     ("on_error", self.on_error, ON_ERROR)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if self.clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {self.clip_len}")
        self.backend = resolve_backend(self.backend)  # fail now, not inside a worker

    def __len__(self) -> int:
        return len(self.manifest)

    def set_epoch(self, epoch: int) -> None:
        """Random strategies draw different clips each epoch, reproducibly.

        Inside a DataLoader, workers hold their own copy of the dataset (persistent workers
        keep it across epochs), so the loader passes ``(index, epoch)`` keys instead.
        """
        self.epoch = epoch

    def open_reader(self, path: str) -> VideoReader:
        """The reader for one sample (a subclass may read differently, e.g. benchmarks)."""
        return open_sample(path, self.backend)

    def __getitem__(self, key: int | tuple[int, int]) -> dict | SkippedSample:
        index, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        item = self.manifest.items[index]
        try:
            with _time_limit(self.decode_timeout_s, item.path):
                reader = self.open_reader(item.path)
                try:
                    generator = torch.Generator().manual_seed(_clip_seed(self.seed, epoch, index))
                    indices = sample_indices(len(reader), self.clip_len, self.strategy,
                                             stride=self.stride, generator=generator,
                                             short=self.short)
                    clip = reader.get_frames(indices)
                finally:
                    reader.close()
        except (VideoDecodeError, OSError, ValueError, IndexError) as e:
            if self.on_error == "raise":
                if isinstance(e, VideoDecodeError):
                    raise
                raise VideoDecodeError(item.path, f"{type(e).__name__}: {e}") from e
            reason = e.reason if isinstance(e, VideoDecodeError) else f"{type(e).__name__}: {e}"
            return SkippedSample(item.path, reason)
        if self.frame_size is not None and tuple(clip.shape[1:3]) != tuple(self.frame_size):
            clip = resize_frames(clip, self.frame_size)
        return {"clip": clip, "label": item.label, "video_id": index,
                "indices": torch.as_tensor(indices, dtype=torch.int64)}


def resize_frames(clip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (T, H, W, C) -> uint8 (T, h, w, C), antialiased, staying channels-last."""
    from torchvision.transforms.v2 import functional as F

    frames = clip.permute(0, 3, 1, 2)  # (T, C, H, W) view in channels_last memory
    out = F.resize(frames, list(size), antialias=True)
    return out.permute(0, 2, 3, 1).contiguous()  # free when resize kept channels_last
