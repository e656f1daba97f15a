"""``open_video``: exact frame access by index, with three CPU backends that agree bit for bit.

Frame ``i`` is the i-th frame in presentation order of the chosen stream (FFmpeg's best video
stream unless ``stream=`` names another), as :mod:`accel.video_index` defines it for every
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
import bisect
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .video_index import StreamIndex, VideoDecodeError, index_container, index_stream, open_container

BACKENDS = ("auto", "pyav", "decord", "torchcodec")
# "auto" takes the first one that imports. torchcodec leads: maintained, exact by design, and
# the fastest loader here at every keyframe interval, by 5-15% (benchmarks/results/loaders_cpu.md).
# decord is unmaintained (see DecordReader).
AUTO_ORDER = ("torchcodec", "decord", "pyav")

_EXTRA = {"pyav": "av", "decord": "decord", "torchcodec": "torchcodec"}


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

    def __init__(self, path: str | os.PathLike, *, threads: int = 1, stream: int | None = None):
        self.path = os.fsdecode(path)  # bytes too: a non-UTF-8 name keeps its bytes (surrogates)
        self.threads = threads
        self.stream = stream  # the container stream asked for; None: the best video stream
        self._opened = False
        self._error: VideoDecodeError | None = None  # a file that failed fails the same way again
        self._delegate: VideoReader | None = None
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
        self._delegate = PyAVReader(self.path, threads=self.threads, stream=self._index.stream)
        self._delegate._ensure_open()

    def _native_or_pyav(self, index: StreamIndex, errors, make):
        """The backend's own decoder from ``make()``, or None after handing the file to PyAV
        (one warning) when it cannot open the codec or counts other frames than the index."""
        try:
            handle = make()
        except errors as e:
            first = str(e).strip().splitlines()[0][-120:] if str(e).strip() else type(e).__name__
            self._use_pyav(f"{self.backend} cannot decode {index.codec} ({first})")
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
        return {"path": self.path, "threads": self.threads, "stream": self.stream}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], threads=state["threads"], stream=state.get("stream"))

    # -- public API ------------------------------------------------------------------
    def __len__(self) -> int:
        self._ensure_open()
        return self._num_frames

    @property
    def fps(self) -> float:
        """Frames / duration of the stream (see :mod:`accel.video_index`), same on every backend."""
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
            raise
        except Exception as e:
            raise VideoDecodeError(self.path, f"decode failed ({type(e).__name__}: {e})") from e
        if unique.size == idx.size and np.array_equal(unique, idx):
            return frames  # already in the order asked: no gather copy
        return frames[torch.from_numpy(inverse)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"


class PyAVReader(VideoReader):
    """PyAV: index the packets once (demux only, no decode), then seek + decode forward.

    Frames whose container has no presentation times (AVI with B-frames, packed or not) are
    identified by decode order: FFmpeg's decoder puts out one frame per AVI chunk, a fixed
    delay after it, so a frame's index is its packet dts minus that delay.
    """

    backend = "pyav"

    def _open(self) -> None:
        self._container = open_container(self.path)
        try:
            index = self._set_index(index_container(self._container, self.path, self.stream))
        except BaseException:
            self._container.close()
            raise
        self._stream = stream = self._container.streams[index.stream]
        # Decode-order indexing needs the decoder's delay fixed: single-threaded there.
        threads = 1 if index.decode_order else self.threads
        stream.codec_context.thread_count = threads
        if threads != 1:
            stream.thread_type = "AUTO"
        self._index_of_key = {int(k): i for i, k in enumerate(index.keys)}
        self._delay = self._decoder_delay() if index.decode_order else 0

    def _decoder_delay(self) -> int:
        """dts ticks between the first packet and the first frame the decoder puts out."""
        for _, frame in self._frames_from(0, frozenset(), raw=True):
            return int(frame.dts) - int(self._index.keys[0])
        raise VideoDecodeError(self.path, "no video frames")

    def close(self) -> None:
        if self._opened:
            self._container.close()
        super().close()

    def _keyframe_before(self, index: int) -> int:
        """The last keyframe at or before ``index``; frame 0 before the first keyframe."""
        keyframes = self._index.keyframes
        i = bisect.bisect_right(keyframes, index) - 1
        return keyframes[i] if i >= 0 else 0

    def _frames_from(self, keyframe: int, wanted: frozenset = frozenset(), *, raw: bool = False):
        """Frames from ``keyframe`` on, as (index, av.VideoFrame) in presentation order.

        With ``wanted`` (keys of wanted frames), packets of other frames are decoded with
        ``skip_frame=NONREF``: the decoder drops them if no other frame references them
        (most B-frames), which is free to skip on the way to a wanted frame. Single-threaded
        decoding only, where the option applies to exactly the packet it is set for; never
        in decode order, where a packet's key does not name the frame it puts out.
        """
        keys = self._index.keys
        self._container.seek(int(keys[keyframe]), stream=self._stream, backward=True,
                             any_frame=False)
        ctx = self._stream.codec_context  # the seek flushed its buffers
        decode_order = self._index.decode_order
        skip = bool(wanted) and self.threads == 1 and not decode_order
        previous = None  # decode order: index of the last frame put out
        fed = int(keys[keyframe])  # decode order: dts of the last packet fed
        for packet in self._container.demux(self._stream):
            if skip:
                ctx.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted else "NONREF"
            if packet.dts is not None:
                fed = int(packet.dts)
            for frame in ctx.decode(packet):
                if raw:
                    yield None, frame
                    continue
                if not decode_order:
                    index = self._index_of_key.get(frame.pts)
                elif frame.dts is not None:
                    index = self._index_of_key.get(int(frame.dts) - self._delay)
                else:  # flushed at the end of the stream: they follow the last packet's frame
                    index = (previous if previous is not None else fed - self._delay) + 1
                if index is None:
                    raise VideoDecodeError(self.path, f"decoded a frame with unindexed timestamp "
                                                      f"{frame.dts if decode_order else frame.pts}")
                previous = index
                yield index, frame

    def _read_sorted(self, indices: np.ndarray) -> torch.Tensor:
        out = None
        wanted = frozenset(self._index.keys[indices].tolist())
        frames = None  # the current forward decode, restarted at a keyframe when that is cheaper
        position = -1  # index of the last frame taken from ``frames``
        for slot, want in enumerate(indices.tolist()):
            keyframe = self._keyframe_before(want)
            if frames is None or keyframe > position:
                frames = self._frames_from(keyframe, wanted)
            index, frame = _first_at_or_after(frames, want)
            while index is not None and index > want and keyframe > 0:
                # Landed past the frame (an open GOP's leading B-frames need the keyframe
                # before, or the container's seek overshot): start one keyframe earlier.
                keyframe = self._keyframe_before(keyframe - 1)
                frames = self._frames_from(keyframe, wanted)
                index, frame = _first_at_or_after(frames, want)
            if index != want:
                raise VideoDecodeError(self.path, f"stream ended before frame {want} of "
                                                  f"{self._index.num_frames} (file truncated?)")
            position = index
            array = self._to_rgb(frame)
            if out is None:
                out = np.empty((len(indices), *array.shape), dtype=np.uint8)
            out[slot] = array
        return torch.from_numpy(out)

    def _to_rgb(self, frame) -> np.ndarray:
        if self._index.plain_colour:
            return frame.to_ndarray(format="rgb24")
        return shared_rgb(frame)


def shared_rgb(frame) -> np.ndarray:
    """The one RGB conversion for >8-bit, full-range and non-4:2:0 sources, every backend.

    FFmpeg's swscale, told the frame's own colour matrix and range, with bicubic chroma
    upsampling (the FFmpeg command line's default).
    """
    return frame.to_ndarray(format="rgb24", interpolation="BICUBIC",
                            src_colorspace=frame.colorspace or None,
                            src_color_range=frame.color_range or None)


def _first_at_or_after(frames, want: int):
    """Advance a decode to the first frame whose index is >= ``want``; (None, None) at the end."""
    for index, frame in frames:
        if index >= want:
            return index, frame
    return None, None


def _pyav_reason(index: StreamIndex) -> str | None:
    """Why decord or torchcodec would not return this stream's exact frames."""
    if index.decode_order:
        return ("AVI without presentation timestamps (B-frames, packed or not): frames must be "
                "indexed in decode order")
    if not index.plain_colour:
        return (f"{index.colour_note} needs the one shared RGB conversion (each backend's own "
                f"differs)")
    return None


class DecordReader(VideoReader):
    """decord: its own frame index and accurate seeking, batched ``get_batch``.

    decord 0.6 cannot choose a stream, converts colour its own way and mis-seeks in some
    streams; files where that matters go to PyAV (see :func:`_decord_reason`).
    """

    backend = "decord"

    def _open(self) -> None:
        import decord

        index = self._set_index(index_stream(self.path, self.stream))
        why = _pyav_reason(index) or _decord_reason(index)
        if why:
            return self._use_pyav(why)
        # decord.DECORDError: e.g. no AV1 decoder in decord's bundled FFmpeg
        self._vr = self._native_or_pyav(index, decord.DECORDError, lambda: decord.VideoReader(
            self._native_path(), ctx=decord.cpu(0), num_threads=self.threads))

    def close(self) -> None:
        self._vr = None
        super().close()

    def _read_sorted(self, indices: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self._vr.get_batch(indices.tolist()).asnumpy())


def _decord_reason(index: StreamIndex) -> str | None:
    if index.stream != index.best:
        return f"decord reads only the best video stream ({index.best}), not stream {index.stream}"
    if not index.keyframe_offsets_constant:
        # decord 0.6 maps decode to presentation time with the first keyframe's pts-dts
        # offset; where later keyframes differ (HEVC, MPEG-4 Part 2 with B-frames), its
        # seeks land up to a few frames off.
        return "decord mis-seeks in streams whose keyframes' pts-dts offsets vary"
    return None


class TorchCodecReader(VideoReader):
    """torchcodec: exact seeking on the shared index (its frame mappings), NHWC, the chosen stream."""

    backend = "torchcodec"

    def _open(self) -> None:
        from torchcodec.decoders import VideoDecoder

        index = self._set_index(index_stream(self.path, self.stream))
        why = _pyav_reason(index)
        if why:
            return self._use_pyav(why)
        # Our index as its frame mappings: exact seeking without torchcodec's own scan.
        # Exception: a codec the system FFmpeg lacks raises torchcodec's own types.
        self._decoder = self._native_or_pyav(index, Exception, lambda: VideoDecoder(
            self._native_path(), stream_index=index.stream, custom_frame_mappings=index.frame_mappings(),
            dimension_order="NHWC", num_ffmpeg_threads=self.threads, device="cpu"))

    def close(self) -> None:
        self._decoder = None
        super().close()

    def _read_sorted(self, indices: np.ndarray) -> torch.Tensor:
        return self._decoder.get_frames_at(indices=indices.tolist()).data


_READERS: dict[str, type[VideoReader]] = {
    "pyav": PyAVReader, "decord": DecordReader, "torchcodec": TorchCodecReader,
}


def open_video(path: str | os.PathLike, backend: str = "auto", *, threads: int = 1,
               stream: int | None = None) -> VideoReader:
    """A reader for ``path``; the file is opened on first use (in the process that uses it).

    backend: ``auto`` (first available of torchcodec, decord, pyav), ``pyav``, ``decord``
    or ``torchcodec``. threads: decoder threads per reader (1 suits DataLoader workers).
    stream: the container stream to decode (FFmpeg's ``-map 0:S``); None, the default, is
    the best video stream as FFmpeg picks it. ``reader.stream_index`` says which it read.
    """
    name = resolve_backend(backend)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads must be an int >= 0 (0: the decoder's choice), got {threads!r}")
    if stream is not None and (isinstance(stream, bool) or not isinstance(stream, int) or stream < 0):
        raise ValueError(f"stream must be None (the best video stream) or a container stream "
                         f"index >= 0, got {stream!r}")
    if not Path(path).is_file():
        raise VideoDecodeError(path, "no such file")
    return _READERS[name](path, threads=threads, stream=stream)
