"""One index of a video stream that every backend shares: which stream, how many frames, fps.

Built from a PyAV demux scan (packet headers only, no decode), once per reader. It fixes the
definitions the backends would otherwise each make their own way:

* **stream**: the best video stream as FFmpeg's ``av_find_best_stream`` picks it (what the
  FFmpeg libraries, decord and torchcodec default to), or the container stream asked for.
* **frames**: one per non-empty packet of that stream; frame ``i`` is the i-th in presentation
  order. In AVI the demuxer has only decode timestamps (its pts are guesses, wrong around
  DivX/XviD "packed" B-frames), so there frames are indexed in the decoder's output order.
* **fps**: frames / duration, duration = last presentation time - first + the last frame's
  duration. For constant-rate files that is the nominal rate; for VFR the mean rate.
* **colour**: 8-bit limited-range YUV 4:2:0 is the case every backend converts to RGB bit for
  bit alike; anything else (10-bit, full range, 4:4:4) needs the one shared conversion.
"""
from __future__ import annotations

import fractions
import json
from dataclasses import dataclass

import numpy as np

# The pixel format whose RGB conversion FFmpeg's fast path gives every backend bit for bit.
PLAIN_PIX_FMTS = frozenset({"yuv420p"})
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


class VideoDecodeError(RuntimeError):
    """A file that cannot be decoded; carries the path and the reason.

    ``VideoDecodeError(message)`` rebuilds one from its message alone: PyTorch re-raises a
    DataLoader worker's exception as ``type(text)``, the text ending in the worker's traceback
    (kept in ``worker_traceback``), so the error arrives in the main process as itself."""

    def __init__(self, path, reason: str | None = None):
        self.worker_traceback: str | None = None
        if reason is None:
            self.worker_traceback = str(path) if "\n" in str(path) else None
            path, reason = _split_message(str(path), type(self).__name__)
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # pickles whole across the decode process's pipe
        return type(self), (self.path, self.reason)


def _split_message(text: str, name: str) -> tuple[str, str]:
    """``(path, reason)`` of ``"path: reason"``, or of a traceback's last ``...NAME: path: reason``
    (the exception raised; its causes come before). A path may hold ": " too: the first cut
    that names an existing file wins, else the first."""
    import os
    import re

    found = list(re.finditer(rf"^(?:\S+\.)?{re.escape(name)}: ", text, re.M)) if "\n" in text else []
    message = text[found[-1].end():].strip() if found else text.strip()
    cuts = [m.start() for m in re.finditer(": ", message)]
    if not cuts:
        return message, "unknown reason"
    cut = next((i for i in cuts if os.path.exists(message[:i])), cuts[0])
    return message[:cut], message[cut + 2:]


@dataclass(frozen=True)
class StreamIndex:
    """What a demux scan of one video stream knows (see the module docstring)."""

    stream: int                 # container stream index (FFmpeg's ``-map 0:S``)
    best: int                   # the container's best video stream
    video_streams: int
    container: str              # FFmpeg demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "avi"
    codec: str                  # canonical decoder name: "h264", "av1", not "libdav1d"
    pix_fmt: str | None
    full_range: bool
    width: int
    height: int
    keys: np.ndarray            # per frame, sorted: pts, or dts where decode_order
    durations: np.ndarray       # per frame, in the same order (0 where the container has none)
    keyframes: tuple[int, ...]  # frame indices of keyframes
    decode_order: bool          # frames indexed by decoder output order (AVI with reordering)
    keyframe_offsets_constant: bool  # every keyframe has the same pts - dts (decord's seek)
    fps: float
    time_base: fractions.Fraction
    rotation: int = 0           # display matrix: degrees counterclockwise to show it upright
    leading_frames: bool = False  # frames decoded after a keyframe but shown before it (open GOP)
    constant_rate: bool = True  # every frame interval the same (not VFR)

    @property
    def num_frames(self) -> int:
        return int(self.keys.size)

    def frame_mappings(self) -> str:
        """The index as torchcodec's ``custom_frame_mappings`` JSON (so it skips its own scan)."""
        key = np.zeros(self.num_frames, dtype=np.int64)
        key[list(self.keyframes)] = 1
        durations = self.durations.copy()
        if self.num_frames > 1:  # a container without durations: the typical frame interval
            durations[durations <= 0] = max(1, int(np.median(np.diff(self.keys))))
        frames = [{"pts": p, "duration": d, "key_frame": k} for p, d, k in
                  zip(self.keys.tolist(), durations.tolist(), key.tolist())]
        return json.dumps({"frames": frames})

    def display_midpoints(self, indices: np.ndarray) -> np.ndarray:
        """Seconds halfway through each frame's display interval (pts to the next frame's pts,
        or the frame's duration for the last): a time that names exactly that frame."""
        keys = self.keys
        nxt = np.minimum(indices + 1, keys.size - 1)
        span = np.where(indices + 1 < keys.size, keys[nxt] - keys[indices],
                        np.maximum(self.durations[indices], 1))
        return (keys[indices] + span / 2) * float(self.time_base)

    @property
    def plain_colour(self) -> bool:
        """8-bit limited-range 4:2:0: every backend's own RGB conversion agrees bit for bit."""
        return self.pix_fmt in PLAIN_PIX_FMTS and not self.full_range

    @property
    def colour_note(self) -> str:
        return f"{self.pix_fmt}{', full range' if self.full_range else ''}"


def choose_stream(container, path: str, stream: int | None):
    """The PyAV stream to read: the best video stream, or container stream ``stream``."""
    videos = container.streams.video
    if not videos:
        raise VideoDecodeError(path, "no video stream")
    if stream is None:
        return container.streams.best("video") or videos[0]
    for candidate in videos:
        if candidate.index == stream:
            return candidate
    raise VideoDecodeError(path, f"stream {stream} is not a video stream (video streams: "
                                 f"{[s.index for s in videos]})")


def index_container(container, path: str, stream: int | None = None) -> StreamIndex:
    """Index ``stream`` of an open PyAV container (a demux scan; the container is left open).

    Raises :class:`VideoDecodeError` "no video stream" / "no video frames" for files that
    have nothing to decode, the same whichever backend asks.
    """
    chosen = choose_stream(container, path, stream)
    best = chosen if stream is None else container.streams.best("video") or chosen
    pts, dts, durations, keyframe = [], [], [], []
    for packet in container.demux(chosen):
        if packet.size == 0 or packet.is_discard or (packet.pts is None and packet.dts is None):
            continue
        pts.append(packet.pts if packet.pts is not None else packet.dts)
        dts.append(packet.dts if packet.dts is not None else packet.pts)
        durations.append(packet.duration or 0)
        keyframe.append(packet.is_keyframe)
    if not pts:
        raise VideoDecodeError(path, "no video frames")
    pts_a, dts_a = np.asarray(pts, dtype=np.int64), np.asarray(dts, dtype=np.int64)
    key_a = np.asarray(keyframe, dtype=bool)
    # AVI stores no presentation times: where frames are reordered its pts are guesses.
    decode_order = container.format.name == "avi" and bool(np.any(pts_a != dts_a))
    if decode_order:
        keys, order = dts_a, np.arange(dts_a.size)  # file order is decode order
    else:
        order = np.argsort(pts_a, kind="stable")
        keys = pts_a[order]
    keyframes = tuple(int(i) for i in np.flatnonzero(key_a[order])) or (0,)
    durations_a = np.asarray(durations, dtype=np.int64)[order]
    offsets = {int(p - d) for p, d, k in zip(pts, dts, keyframe) if k}
    # Open GOPs: a packet after a keyframe (in file order) that shows before it.
    later_min = np.minimum.accumulate(pts_a[::-1])[::-1]
    leading = bool(np.any(later_min[1:][key_a[:-1]] < pts_a[:-1][key_a[:-1]])) and not decode_order
    ctx = chosen.codec_context
    return StreamIndex(
        stream=chosen.index, best=best.index, video_streams=len(container.streams.video),
        container=container.format.name,
        codec=getattr(ctx.codec, "canonical_name", None) or ctx.name,
        pix_fmt=ctx.format.name if ctx.format is not None else None,
        full_range=int(ctx.color_range or 0) == _FULL_RANGE or (ctx.format is not None and
                                                              ctx.format.name.startswith("yuvj")),
        width=int(ctx.width or 0), height=int(ctx.height or 0), keys=keys, durations=durations_a,
        keyframes=keyframes,
        decode_order=decode_order, keyframe_offsets_constant=len(offsets) <= 1,
        fps=_fps(keys, durations_a, chosen),
        time_base=chosen.time_base, rotation=_display_rotation(container, chosen),
        leading_frames=leading, constant_rate=bool(np.unique(np.diff(keys)).size <= 1))


def _display_rotation(container, stream) -> int:
    """The display matrix's rotation (degrees counterclockwise, 0/90/180/270) of a stream.

    PyAV shows the matrix on decoded frames only, so the first frame is decoded (once per
    index); only containers that carry one (MP4/MOV, Matroska) pay for it.
    """
    name = container.format.name
    if not ("mov" in name or "mp4" in name or "matroska" in name):
        return 0
    try:
        container.seek(0, stream=stream, backward=True)
        for frame in container.decode(stream):
            return int(round((frame.rotation or 0) / 90)) % 4 * 90
    except Exception:  # noqa: BLE001 - no decodable frame: no rotation to apply
        return 0
    return 0


def scan_stream(path: str, stream: int | None = None) -> StreamIndex:
    """:func:`index_container` on a file it opens and closes (no cache: see
    :func:`accel.io.index_store.index_stream`)."""
    with open_container(path) as container:
        try:
            return index_container(container, str(path), stream)
        except VideoDecodeError:
            raise
        except Exception as e:  # a demux error part way: PyAV's types
            raise VideoDecodeError(path, f"cannot read ({type(e).__name__}: {e})") from e


def open_container(path: str):
    """``av.open``, with FFmpeg's errors as :class:`VideoDecodeError` naming the file."""
    import av

    try:
        return av.open(str(path))
    except av.error.InvalidDataError as e:  # text, an image FFmpeg cannot probe, a cut-off MP4
        raise VideoDecodeError(path, f"no video stream (FFmpeg cannot read the file: "
                                     f"{e.strerror})") from e
    except Exception as e:  # PyAV's other error types: the path and the reason matter
        raise VideoDecodeError(path, f"cannot open ({type(e).__name__}: {e})") from e


def _fps(keys: np.ndarray, durations: np.ndarray, stream) -> float:
    """Frames / (last time - first time + last frame's duration): one definition, VFR too."""
    last = int(durations[-1]) if durations.size and durations[-1] > 0 else 0
    if not last and keys.size > 1:
        last = int(np.median(np.diff(keys)))
    span = int(keys[-1] - keys[0]) + last
    if span <= 0 or stream.time_base is None:
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return float(rate) if rate else 0.0
    return float(keys.size / (span * stream.time_base))
