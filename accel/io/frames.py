"""Frame folders read as videos, and :func:`open_sample`: a sample path (video file or
frame folder) to its reader."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .backends import open_video
from .reader import VideoReader

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


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


def open_sample(path: str, backend: str, *, rotate: bool = True) -> VideoReader:
    """A video file through ``backend`` (turned upright by its display matrix unless
    ``rotate=False``), or a frame folder."""
    if Path(path).is_dir():
        return FrameFolderReader(path)
    return open_video(path, backend, rotate=rotate)
