"""``open_video``: exact frame access by index, with three CPU backends that agree bit for bit.

Frame ``i`` is the i-th frame in presentation order. ``get_frames(indices)`` returns
exactly those frames, in the order asked (unsorted and repeated indices too), as a uint8
tensor (T, H, W, C) in RGB. Each backend decodes only from the keyframe before each run of
wanted frames, never the whole video.

Readers open their file lazily, on first use, and pickle as their path and options, so a
reader made in the parent process is safe to hand to DataLoader workers (decord's handle
must never cross a fork).
"""
from __future__ import annotations

import abc
import bisect
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

BACKENDS = ("auto", "pyav", "decord", "torchcodec")
# "auto" takes the first one that imports. torchcodec leads: maintained, exact by design, and
# the fastest loader here at every keyframe interval, by 5-15% (benchmarks/results/loaders_cpu.md).
# decord is unmaintained (see DecordReader).
AUTO_ORDER = ("torchcodec", "decord", "pyav")

_EXTRA = {"pyav": "av", "decord": "decord", "torchcodec": "torchcodec"}


class VideoDecodeError(RuntimeError):
    """A file that cannot be decoded; carries the path and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # pickles whole across the decode process's pipe
        return type(self), (self.path, self.reason)


def backend_available(backend: str) -> bool:
    """Whether ``backend`` can be used here (imports, and FFmpeg libraries load)."""
    if backend not in _EXTRA:
        raise ValueError(f"backend must be one of {', '.join(_EXTRA)}; got {backend!r}")
    if importlib.util.find_spec(_EXTRA[backend]) is None:
        return False
    if backend == "torchcodec":
        try:  # torchcodec imports only if FFmpeg's shared libraries are on the system
            from torchcodec.decoders import VideoDecoder  # noqa: F401
        except Exception:
            return False
    return True


def available_backends() -> list[str]:
    return [b for b in AUTO_ORDER if backend_available(b)]


def resolve_backend(backend: str) -> str:
    """Validate a backend name and turn ``auto`` into a concrete one."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "auto":
        found = available_backends()
        if not found:
            raise RuntimeError("no video backend available: pip install av (or vidaccel[decord], "
                               "vidaccel[torchcodec])")
        return found[0]
    if not backend_available(backend):
        extra = "" if backend == "pyav" else f" (pip install 'vidaccel[{backend}]')"
        hint = "; torchcodec also needs FFmpeg's shared libraries (apt-get install ffmpeg)" \
            if backend == "torchcodec" else ""
        raise RuntimeError(f"video backend {backend!r} is not available{extra}{hint}")
    return backend


class VideoReader(abc.ABC):
    """Random access to one video's frames; see the module docstring for the contract."""

    backend: str = ""

    def __init__(self, path: str | os.PathLike, *, threads: int = 1):
        self.path = os.fspath(path) if not isinstance(path, bytes) else os.fsdecode(path)
        self.threads = threads
        self._opened = False
        self._fd: int | None = None

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
        if not self._opened:
            try:
                self._open()
            except VideoDecodeError:
                self.close()
                raise
            except Exception as e:  # each backend raises its own types; the path matters most
                self.close()
                raise VideoDecodeError(self.path, f"cannot open ({type(e).__name__}: {e})") from e
            self._opened = True
            if self._num_frames < 1:
                raise VideoDecodeError(self.path, "no video frames")

    @abc.abstractmethod
    def _open(self) -> None:
        """Open the file; set ``self._num_frames`` and ``self._fps``."""

    @abc.abstractmethod
    def _read_sorted(self, indices: np.ndarray) -> torch.Tensor:
        """Frames at sorted, distinct, in-range indices as uint8 (U, H, W, C)."""

    def close(self) -> None:
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
        return {"path": self.path, "threads": self.threads}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], threads=state["threads"])

    # -- public API ------------------------------------------------------------------
    def __len__(self) -> int:
        self._ensure_open()
        return self._num_frames

    @property
    def fps(self) -> float:
        self._ensure_open()
        return self._fps

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """uint8 (len(indices), H, W, 3): exactly the frames asked for, in that order."""
        self._ensure_open()
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise ValueError(f"{self.path}: get_frames needs at least one index")
        bad = idx[(idx < 0) | (idx >= self._num_frames)]
        if bad.size:
            raise IndexError(f"{self.path}: frame indices {bad[:5].tolist()} out of range "
                             f"[0, {self._num_frames})")
        unique, inverse = np.unique(idx, return_inverse=True)
        try:
            frames = self._read_sorted(unique)
        except (VideoDecodeError, IndexError):
            raise
        except Exception as e:
            raise VideoDecodeError(self.path, f"decode failed ({type(e).__name__}: {e})") from e
        if unique.size == idx.size and np.array_equal(unique, idx):
            return frames  # already in the order asked: no gather copy
        return frames[torch.from_numpy(inverse)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"


class PyAVReader(VideoReader):
    """PyAV: index the packets once (demux only, no decode), then seek + decode forward."""

    backend = "pyav"

    def _open(self) -> None:
        import av

        self._container = av.open(self.path)
        if not self._container.streams.video:
            raise VideoDecodeError(self.path, "no video stream")
        self._stream = stream = self._container.streams.video[0]
        stream.codec_context.thread_count = self.threads
        if self.threads != 1:
            stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self._fps = float(rate) if rate else 0.0
        pts, keyframe = [], []
        for packet in self._container.demux(stream):
            if packet.size == 0 or packet.pts is None or packet.is_discard:
                continue
            pts.append(packet.pts)
            keyframe.append(packet.is_keyframe)
        order = np.argsort(pts, kind="stable")
        self._pts = np.asarray(pts, dtype=np.int64)[order]
        self._keyframes = [int(i) for i, k in enumerate(np.asarray(keyframe)[order]) if k] or [0]
        self._index_of_pts = {int(p): i for i, p in enumerate(self._pts)}
        self._num_frames = len(self._pts)

    def close(self) -> None:
        if self._opened:
            self._container.close()
        super().close()

    def _keyframe_before(self, index: int) -> int:
        return self._keyframes[bisect.bisect_right(self._keyframes, index) - 1]

    def _decode_from(self, keyframe: int, wanted_pts: frozenset = frozenset()):
        """Frames from ``keyframe`` on, as (index, av.VideoFrame) in presentation order.

        With ``wanted_pts``, packets of other frames are decoded with ``skip_frame=NONREF``:
        the decoder drops them if no other frame references them (most B-frames), which
        is free to skip on the way to a wanted frame. Single-threaded decoding only, where
        the option applies to exactly the packet it is set for.
        """
        self._container.seek(int(self._pts[keyframe]), stream=self._stream, backward=True,
                             any_frame=False)
        ctx = self._stream.codec_context
        skip = bool(wanted_pts) and self.threads == 1
        for packet in self._container.demux(self._stream):
            if skip:
                ctx.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted_pts else "NONREF"
            for frame in ctx.decode(packet):
                index = self._index_of_pts.get(frame.pts)
                if index is None:
                    raise VideoDecodeError(self.path, f"decoded a frame with unindexed pts {frame.pts}")
                yield index, frame

    def _read_sorted(self, indices: np.ndarray) -> torch.Tensor:
        out = None
        wanted_pts = frozenset(self._pts[indices].tolist())
        frames = None  # the current forward decode, restarted at a keyframe when that is cheaper
        position = -1  # index of the last frame taken from ``frames``
        for slot, want in enumerate(indices.tolist()):
            keyframe = self._keyframe_before(want)
            if frames is None or keyframe > position:
                frames = self._decode_from(keyframe, wanted_pts)
            index, frame = _first_at_or_after(frames, want)
            if index is not None and index > want:
                # The container's seek landed past the frame: decode from the start instead.
                frames = self._decode_from(0, wanted_pts)
                index, frame = _first_at_or_after(frames, want)
            if index != want:
                raise VideoDecodeError(self.path, f"stream ended before frame {want} of "
                                                  f"{self._num_frames} (file truncated?)")
            position = index
            array = frame.to_ndarray(format="rgb24")
            if out is None:
                out = np.empty((len(indices), *array.shape), dtype=np.uint8)
            out[slot] = array
        return torch.from_numpy(out)


def _first_at_or_after(frames, want: int):
    """Advance a decode to the first frame whose index is >= ``want``; (None, None) at the end."""
    for index, frame in frames:
        if index >= want:
            return index, frame
    return None, None


class DecordReader(VideoReader):
    """decord: its own frame index and accurate seeking, batched ``get_batch``."""

    backend = "decord"

    def _open(self) -> None:
        import decord

        self._fallback = None
        if not _keyframe_offsets_constant(self.path):
            # decord 0.6 maps decode to presentation time with the first keyframe's pts-dts
            # offset; where later keyframes differ (HEVC, MPEG-4 Part 2 with B-frames), its
            # seeks land up to a few frames off. PyAV returns the exact frames.
            warnings.warn(f"{self.path}: decord mis-seeks in streams whose keyframes' pts-dts "
                          f"offsets vary; reading this file with PyAV instead", stacklevel=4)
            self._fallback = PyAVReader(self.path, threads=self.threads)
            self._num_frames, self._fps = len(self._fallback), self._fallback.fps
            return
        self._vr = decord.VideoReader(self._native_path(), ctx=decord.cpu(0), num_threads=self.threads)
        self._num_frames = len(self._vr)
        self._fps = float(self._vr.get_avg_fps())

    def close(self) -> None:
        self._vr = None
        if self._opened and self._fallback is not None:
            self._fallback.close()
        super().close()

    def _read_sorted(self, indices: np.ndarray) -> torch.Tensor:
        if self._fallback is not None:
            return self._fallback._read_sorted(indices)
        return torch.from_numpy(self._vr.get_batch(indices.tolist()).asnumpy())


def _keyframe_offsets_constant(path: str) -> bool:
    """Whether every keyframe packet has the same pts - dts (a demux scan, no decode)."""
    import av

    with av.open(path) as container:
        offsets = {p.pts - p.dts for p in container.demux(container.streams.video[0])
                   if p.is_keyframe and p.pts is not None and p.dts is not None}
    return len(offsets) <= 1


class TorchCodecReader(VideoReader):
    """torchcodec: exact seek mode (scans the file once), NHWC output."""

    backend = "torchcodec"

    def _open(self) -> None:
        from torchcodec.decoders import VideoDecoder

        self._decoder = VideoDecoder(self._native_path(), seek_mode="exact", dimension_order="NHWC",
                                     num_ffmpeg_threads=self.threads, device="cpu")
        self._num_frames = len(self._decoder)
        self._fps = float(self._decoder.metadata.average_fps or 0.0)

    def close(self) -> None:
        self._decoder = None
        super().close()

    def _read_sorted(self, indices: np.ndarray) -> torch.Tensor:
        return self._decoder.get_frames_at(indices=indices.tolist()).data


_READERS: dict[str, type[VideoReader]] = {
    "pyav": PyAVReader, "decord": DecordReader, "torchcodec": TorchCodecReader,
}


def open_video(path: str | os.PathLike, backend: str = "auto", *, threads: int = 1) -> VideoReader:
    """A reader for ``path``; the file is opened on first use (in the process that uses it).

    backend: ``auto`` (first available of torchcodec, decord, pyav), ``pyav``, ``decord``
    or ``torchcodec``. threads: decoder threads per reader (1 suits DataLoader workers).
    """
    name = resolve_backend(backend)
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0: the decoder's choice), got {threads}")
    if not Path(path).is_file():
        raise VideoDecodeError(path, "no such file")
    return _READERS[name](path, threads=threads)
