"""Open natively, or hand the file to PyAV: :class:`FallbackReader`, what the decord and
torchcodec readers build on.

Frame ``i`` must be the same frame, in the same colours, on every backend. Where decord or
torchcodec would not return exactly that (:func:`pyav_only_reason`, a backend's own reasons, a
codec it cannot open, a frame count other than the index's), the file is read by a
:class:`~accel.io.pyav.PyAVReader` instead, with one warning naming the file and why.
"""
from __future__ import annotations

import abc
import os
import warnings
from typing import Callable

import numpy as np
import torch

from ..cli import one_line
from .index import StreamIndex
from .index_store import index_stream
from .pyav import PyAVReader
from .reader import VideoReader

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


class FallbackReader(VideoReader):
    """A backend with its own decoder that hands the files it would read wrongly to PyAV.

    A subclass names its reasons (:meth:`_pyav_reason`) and opens its decoder
    (:meth:`_open_native`, which says why not where it cannot); this class makes the one
    warning, the PyAV reader the reads go to, and the file name C libraries can open.
    """

    _delegate: VideoReader | None = None  # the PyAV reader this file was handed to
    _fd: int | None = None  # a non-UTF-8 name opened by its bytes (see _native_path)

    def _open(self) -> None:
        index = self._set_index(index_stream(self.path, self.stream))
        why = self._pyav_reason(index) or self._open_native(index)
        if why:
            self._use_pyav(why)

    def _pyav_reason(self, index: StreamIndex) -> str | None:
        """Why this backend would not return the stream's exact frames (None: it does)."""
        return pyav_only_reason(index)

    @abc.abstractmethod
    def _open_native(self, index: StreamIndex) -> str | None:
        """Open the backend's own decoder on ``index``'s stream; None, or why PyAV reads the
        file instead (nothing kept open then)."""

    def _make_native(self, index: StreamIndex, errors: type[BaseException] | tuple[type[BaseException], ...],
                     make: Callable):
        """(``make()``'s decoder, None), or (None, why PyAV reads the file instead): the backend
        cannot open the codec, or counts other frames than the index."""
        try:
            handle = make()
        except errors as e:
            return None, f"{self.backend} cannot decode {index.codec} ({one_line(e)[-120:]})"
        if len(handle) != index.num_frames:
            return None, f"{self.backend} counts {len(handle)} frames where the stream has {index.num_frames}"
        return handle, None

    def _use_pyav(self, why: str) -> None:
        """Hand this file to PyAV, which reads it exactly, with one warning naming the file."""
        warnings.warn(f"{self.path}: {why}; the {self.backend} backend reads this file with PyAV "
                      f"instead", stacklevel=5)  # the caller of len(), get_frames(), fps...
        self._native_rotation = 0  # PyAV does not turn frames: this reader does, once
        self._delegate = PyAVReader(self.path, threads=self.threads, stream=self._index.stream, rotate=False)
        self._delegate.known_index = self._index  # scanned already: PyAV need not scan again
        self._delegate._ensure_open()

    def _native_path(self) -> str:
        """A name for the file that C libraries taking UTF-8 strings can open.

        A file name that is not UTF-8 on disk (Latin-1 ``caf\\xe9.mp4``) reaches Python as a
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

    @property
    def decoder(self) -> str:
        """The backend that really decodes this file: ``pyav`` where this one handed it over."""
        self._ensure_open()
        return self._delegate.backend if self._delegate is not None else self.backend

    def _read(self, indices: np.ndarray) -> torch.Tensor:
        if self._delegate is not None:
            return self._delegate._read(indices)  # a failed read marks the PyAV reader's handle
        return super()._read(indices)

    def close(self) -> None:
        if self._delegate is not None:
            self._delegate.close()
            self._delegate = None
        super().close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
