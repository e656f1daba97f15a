"""The reader contract every decoder backend implements: :class:`VideoReader`.

Frame ``i`` is the i-th frame in presentation order of the chosen stream (FFmpeg's best video
stream unless ``stream=`` names another), as :mod:`accel.io.index` defines it for every
backend. Where decord or torchcodec would return other frames or colours (decode-order AVI,
>8-bit or full-range sources, a stream or codec they cannot read, decord's mis-seeks), they
hand the file to PyAV with one warning naming it. ``get_frames(indices)`` returns
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
import warnings
from typing import Sequence

import numpy as np
import torch

from ..cli import one_line
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
        self._delegate: VideoReader | None = None
        self._fd: int | None = None
        self._native_rotation = 0  # degrees the backend's own decoder already turned the frames
        self._broken = False  # a read failed: the handle is closed, not kept for the next reader

    def _native_path(self) -> str:
        """A name for the file that C libraries taking UTF-8 strings can open.

        A file name that is not UTF-8 on disk (Latin-1 ``caf\xe9.mp4``) reaches Python as a
        str with surrogate escapes, which decord and torchcodec refuse to encode. Such a
        file is opened here by its bytes and handed over as ``/proc/self/fd/N``
        (``/dev/fd/N`` elsewhere), an ASCII name for the same file; closed with the reader.
        """
        try:
            self.path.encode("utf-8")
            return self.path
        except UnicodeEncodeError:
            pass
        if self._fd is None:
            self._fd = os.open(os.fsencode(self.path), os.O_RDONLY)
        folder = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
        return f"{folder}/{self._fd}"

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

    def _use_pyav(self, why: str) -> None:
        """Hand this file to PyAV, which reads it exactly, with one warning naming the file."""
        warnings.warn(f"{self.path}: {why}; the {self.backend} backend reads this file with PyAV "
                      f"instead", stacklevel=5)
        from .pyav import PyAVReader  # the subclass module imports this one

        self._delegate = PyAVReader(self.path, threads=self.threads, stream=self._index.stream,
                                    rotate=False)  # rotated once, by the reader asked
        self._delegate.known_index = self._index  # scanned already: PyAV need not scan again
        self._delegate._ensure_open()

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

    def _native_or_pyav(self, index: StreamIndex, errors, make):
        """The backend's own decoder from ``make()``, or None after handing the file to PyAV
        (one warning) when it cannot open the codec or counts other frames than the index."""
        try:
            handle = make()
        except errors as e:
            self._use_pyav(f"{self.backend} cannot decode {index.codec} ({one_line(e)[-120:]})")
            return None
        if len(handle) != index.num_frames:
            self._use_pyav(f"{self.backend} counts {len(handle)} frames where the stream has "
                           f"{index.num_frames}")
            return None
        return handle

    def close(self) -> None:
        if self._delegate is not None:
            self._delegate.close()
            self._delegate = None
        self._opened = False
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

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
        return self._delegate.backend if self._delegate is not None else self.backend

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
        reader = self._delegate or self
        try:
            frames = reader._read_sorted(unique)
        except (VideoDecodeError, IndexError):
            reader._broken = True
            raise
        except Exception as e:
            reader._broken = True
            raise VideoDecodeError(self.path, f"decode failed ({type(e).__name__}: {e})") from e
        if not (unique.size == idx.size and np.array_equal(unique, idx)):
            frames = frames[torch.from_numpy(inverse)]  # (else already in the order asked)
        return self._displayed(frames)

    def _displayed(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames turned upright by the stream's display matrix, as FFmpeg's autorotate does."""
        wanted = getattr(getattr(self, "_index", None), "rotation", 0) if self.rotate else 0
        turns = (wanted - (0 if self._delegate else self._native_rotation)) // 90 % 4
        return torch.rot90(frames, turns, dims=(1, 2)).contiguous() if turns else frames

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"


# Containers sought by byte position, whose timestamps start late and whose packets may land
# mid-GOP after a seek (MPEG transport and program streams): decord and torchcodec seek them
# wrongly or not at all; PyAV starts from the keyframe's own packet (see PyAVReader).
BYTE_SEEK_CONTAINERS = frozenset({"mpegts", "mpeg", "mpegtsraw", "mpegvideo"})
# Codecs whose standard defines no bit-exact decoder (IDCT precision is left to the decoder):
# FFmpeg builds differ on them (decord bundles FFmpeg 4, torchcodec uses the system's, PyAV its
# own), so one decoder reads them for every backend.
INEXACT_CODECS = frozenset({"mpeg1video", "mpeg2video", "mpeg4", "msmpeg4v1", "msmpeg4v2",
                            "msmpeg4", "msmpeg4v3", "h263", "h263p", "flv", "flv1", "wmv1", "wmv2",
                            "mjpeg"})


def pyav_only_reason(index: StreamIndex) -> str | None:
    """Why decord or torchcodec would not return this stream's exact frames (None: they do)."""
    if index.decode_order:
        return ("AVI without presentation timestamps (B-frames, packed or not): frames must be "
                "indexed in decode order")
    if index.container.split(",")[0] in BYTE_SEEK_CONTAINERS:
        return f"{index.container} container (seeking by byte position)"
    if index.codec in INEXACT_CODECS:
        return (f"{index.codec} has no bit-exact decoder by standard (FFmpeg builds differ): one "
                f"decoder reads it for every backend")
    if not index.plain_colour:
        return (f"{index.colour_note} needs the one shared RGB conversion (each backend's own "
                f"differs)")
    return None
