"""The reader contract every decoder backend implements: :class:`VideoReader`.

Frame ``i`` is the i-th frame in presentation order of the chosen stream (FFmpeg's best video
stream unless ``stream=`` names another), as :mod:`accel.io.index` defines it for every
backend. Where decord or torchcodec would return other frames or colours, they hand the file
to PyAV with one warning naming it (:mod:`accel.io.fallback`). ``get_frames(indices)`` returns
exactly those frames, in the order asked (unsorted and repeated indices too), as a uint8
tensor (T, H, W, C) in RGB. Each backend decodes only from the keyframe before each run of
wanted frames, never the whole video.

Readers open their file lazily, on first use, and pickle as their path and options, so a
reader made in the parent process is safe to hand to DataLoader workers (decord's handle
must never cross a fork).
"""
from __future__ import annotations

import abc
import os
from typing import Sequence

import numpy as np
import torch

from .handles import HANDLES
from .index import StreamIndex, VideoDecodeError
from .index_store import file_key


class VideoReader(abc.ABC):
    """Random access to one video's frames; see the module docstring for the contract."""

    backend: str = ""

    def __init__(self, path: str | os.PathLike, *, threads: int = 1, stream: int | None = None,
                 rotate: bool = True):
        self.path = os.fsdecode(path)  # bytes too: a non-UTF-8 name keeps its bytes (surrogates)
        self.threads = threads
        self.stream = stream  # the container stream asked for; None: the best video stream
        self.rotate = rotate  # apply the display matrix (frames as players show them)
        self._opened = False
        self._error: VideoDecodeError | None = None  # a file that failed fails the same way again
        self._native_rotation = 0  # degrees the backend's own decoder already turned the frames
        self._broken = False  # a read failed: the handle is closed, not kept for the next reader

    # -- lifecycle -------------------------------------------------------------------
    def _ensure_open(self) -> None:
        if self._opened:
            return
        if self._error is not None:
            raise self._error
        try:
            self._open()
            if self._num_frames < 1:
                raise VideoDecodeError(self.path, "no video frames")
        except VideoDecodeError as e:
            self.close()
            self._error = e
            raise
        except Exception as e:  # each backend raises its own types; the path matters most
            self.close()
            self._error = VideoDecodeError(self.path, f"cannot open ({type(e).__name__}: {e})")
            raise self._error from e
        self._opened = True

    @abc.abstractmethod
    def _open(self) -> None:
        """Open the file; set ``self._num_frames`` and ``self._fps`` (video readers: from
        their :class:`StreamIndex`, with :meth:`_set_index`)."""

    def _set_index(self, index: StreamIndex) -> StreamIndex:
        self._index = index
        self._num_frames, self._fps = index.num_frames, index.fps
        return index

    @abc.abstractmethod
    def _read_sorted(self, indices: np.ndarray) -> torch.Tensor:
        """Frames at sorted, distinct, in-range indices as uint8 (U, H, W, C)."""

    def _pooled(self):
        """An open handle another reader of this file version left (None: open one); what
        makes a handle reusable is its process, backend, file version, stream and threads."""
        try:
            self._key = (os.getpid(), self.backend, *file_key(self.path), self._index.stream, self.threads)
        except OSError:  # gone since it was indexed: open (and fail) as usual
            self._key = None
            return None
        return HANDLES.take(self._key)

    def _keep(self, handle, close) -> None:
        """Hand ``handle`` on to the next reader of this file, or close it if a read failed."""
        if self._broken or getattr(self, "_key", None) is None:
            close(handle)
        else:
            HANDLES.give(self._key, handle, close)

    def close(self) -> None:
        self._opened = False

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        # Only the recipe travels to another process; the handle is opened there.
        return {"path": self.path, "threads": self.threads, "stream": self.stream, "rotate": self.rotate}

    def __setstate__(self, state: dict) -> None:
        VideoReader.__init__(self, state["path"], threads=state["threads"], stream=state.get("stream"),
                             rotate=state.get("rotate", True))

    # -- public API ------------------------------------------------------------------
    def __len__(self) -> int:
        self._ensure_open()
        return self._num_frames

    @property
    def fps(self) -> float:
        """Frames / duration of the stream (see :mod:`accel.io.index`), same on every backend."""
        self._ensure_open()
        return self._fps

    @property
    def stream_index(self) -> int | None:
        """The container stream decoded (FFmpeg's ``-map 0:S``); None for a frame folder."""
        self._ensure_open()
        index = getattr(self, "_index", None)
        return index.stream if index is not None else None

    @property
    def decoder(self) -> str:
        """The backend that really decodes this file (``pyav`` where this one handed it over)."""
        self._ensure_open()
        return self.backend

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """uint8 (len(indices), H, W, 3): exactly the frames asked for, in that order."""
        self._ensure_open()
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise ValueError(f"{self.path}: get_frames needs at least one index")
        n = self._num_frames
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise IndexError(f"{self.path}: frame indices {bad[:5].tolist()} out of range [0, {n})")
        unique, inverse = np.unique(idx, return_inverse=True)
        frames = self._read(unique)
        if not (unique.size == idx.size and np.array_equal(unique, idx)):
            frames = frames[torch.from_numpy(inverse)]  # (else already in the order asked)
        return self._displayed(frames)

    def _read(self, indices: np.ndarray) -> torch.Tensor:
        """:meth:`_read_sorted`, its failures a :class:`VideoDecodeError` naming the file; a
        reader whose read failed does not hand its handle on."""
        try:
            return self._read_sorted(indices)
        except (VideoDecodeError, IndexError):
            self._broken = True
            raise
        except Exception as e:
            self._broken = True
            raise VideoDecodeError(self.path, f"decode failed ({type(e).__name__}: {e})") from e

    def _displayed(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames turned upright by the stream's display matrix, as FFmpeg's autorotate does."""
        wanted = getattr(getattr(self, "_index", None), "rotation", 0) if self.rotate else 0
        turns = (wanted - self._native_rotation) // 90 % 4
        return torch.rot90(frames, turns, dims=(1, 2)).contiguous() if turns else frames

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"
