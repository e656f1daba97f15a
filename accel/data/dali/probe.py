"""What a file is before DALI sees it: frame count and codec by demux scan, and its route.

Why a demux scan: the frame count comes from the CPU readers' shared index
(:func:`accel.io.index_stream`: PyAV packets, no decode), which is the count
:class:`~accel.io.pyav.PyAVReader` uses, so frame ``i`` means the same frame on both paths and
the drawn indices equal the CPU path's. DALI has no cheap metadata operator (its decoder
builds its own index while decoding). The same scan yields the codec and size, so a file
DALI's device cannot decode is routed to the CPU fallback (:func:`dali_route`) before DALI
sees it (a failure inside DALI would cost a replay and count toward ``max_failures``), and it
rejects empty, truncated or non-video files up front. Probes are cached per path for later
epochs (:class:`ProbeCache`).

Routing tables: what ``fn.decoders.video`` decodes in DALI 2.4 (:data:`DALI_CODECS`), what
NVDEC decodes by the GPU's compute capability (:data:`NVDEC_CODECS`) and NVDEC's coded-size
limits (:data:`NVDEC_SIZES`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...io.fallback import BYTE_SEEK_CONTAINERS
from ...io.index import VideoDecodeError
from ...io.index_store import index_stream
from ..reading import time_limit

# What fn.decoders.video decodes in DALI 2.4 (its docstring): CPU: VP8, VP9, MJPEG;
# mixed (NVDEC): also H.264, HEVC, AV1, MPEG-4. Keys are FFmpeg codec names.
DALI_CODECS = {"cpu": frozenset({"vp8", "vp9", "mjpeg"}),
               "gpu": frozenset({"vp8", "vp9", "mjpeg", "h264", "hevc", "av1", "mpeg4"})}

# What NVDEC itself decodes, by the GPU's compute capability (NVIDIA's NVDEC support
# matrix, Video Codec SDK): each entry holds from that capability up to the next one.
# Hopper (9.0: H100 / H200) and A100 (8.0) have no AV1 decoder; GA10x (8.6), Ada (8.9) and
# Blackwell (10.0+) do. Codecs DALI accepts but left out here (VP8, MJPEG) go to the CPU
# fallback: unverified on NVDEC, and a file DALI fails on counts toward max_failures.
NVDEC_BASE = frozenset({"h264", "hevc", "vp9", "mpeg4"})
NVDEC_CODECS: tuple[tuple[tuple[int, int], frozenset[str]], ...] = (
    ((6, 0), frozenset({"h264", "hevc", "mpeg4"})),
    ((7, 0), NVDEC_BASE),
    ((8, 6), NVDEC_BASE | {"av1"}),
    ((9, 0), NVDEC_BASE),
    ((10, 0), NVDEC_BASE | {"av1"}),
)
# NVDEC's coded-size limits per codec, (min width, min height, max width, max height) in
# pixels; a file outside them fails inside DALI.
NVDEC_SIZES = {"h264": (48, 16, 4096, 4096), "hevc": (144, 144, 8192, 8192),
               "vp9": (128, 128, 8192, 8192), "av1": (128, 128, 8192, 8192),
               "mpeg4": (48, 16, 2032, 2032)}


@dataclass(frozen=True)
class VideoProbe:
    num_frames: int
    codec: str
    height: int
    width: int
    cpu_reason: str | None = None  # why DALI's decoder would not read the CPU path's frames


def probe_video(path: str) -> VideoProbe:
    """Frame count and codec of the best video stream, from the CPU readers' shared index.

    :func:`accel.io.index_stream` (a PyAV demux scan, no decode), so frame ``i``
    means the same frame on both paths. Raises :class:`VideoDecodeError` for what cannot be
    a video. ``cpu_reason`` names files DALI would index differently: several video streams
    (the CPU readers' stream choice is FFmpeg's best stream) or AVI frames that must be
    counted in decode order (packed B-frames), MPEG transport/program streams (sought by byte
    position) and rotated files (DALI does not apply the display matrix).
    """
    if not Path(path).is_file():
        raise VideoDecodeError(path, "no such file")
    index = index_stream(str(path))
    reason = None
    if index.video_streams > 1:
        reason = f"{index.video_streams} video streams (the CPU readers take stream {index.stream})"
    elif index.decode_order:
        reason = "AVI without presentation timestamps (frames indexed in decode order)"
    elif index.container.split(",")[0] in BYTE_SEEK_CONTAINERS:
        reason = f"{index.container} container (the CPU readers start from each keyframe's own packet)"
    elif index.rotation:
        reason = f"rotated {index.rotation} degrees by its display matrix (the CPU readers turn it upright)"
    return VideoProbe(index.num_frames, index.codec, index.height, index.width, reason)


class ProbeCache:
    """:func:`probe_video` once per path (its failure too), within ``timeout_s`` (SIGALRM)."""

    def __init__(self, timeout_s: float | None):
        self.timeout_s = timeout_s
        self.probes: dict[str, VideoProbe | VideoDecodeError] = {}

    def __call__(self, path: str) -> VideoProbe:
        cached = self.probes.get(path)
        if cached is None:
            try:
                with time_limit(self.timeout_s, path):
                    cached = probe_video(path)
            except VideoDecodeError as e:
                cached = e
            self.probes[path] = cached
        if isinstance(cached, VideoDecodeError):
            raise cached
        return cached


def nvdec_codecs(capability: tuple[int, int]) -> frozenset[str]:
    """The codecs NVDEC decodes on a GPU of this compute capability (none before 6.0)."""
    found: frozenset[str] = frozenset()
    for since, codecs in NVDEC_CODECS:
        if tuple(capability) >= since:
            found = codecs
    return found


def dali_route(probe: VideoProbe, device: str, capability: tuple[int, int] | None = None) -> str | None:
    """None when DALI on ``device`` can decode this file; else why it goes to the CPU
    fallback. ``capability``: the GPU's compute capability (``device="gpu"``)."""
    if device == "cpu" or capability is None:
        return None if probe.codec in DALI_CODECS[device] else \
            f"codec {probe.codec} is not decoded by DALI on {device}"
    cc = ".".join(map(str, capability))
    if probe.codec not in DALI_CODECS["gpu"] or probe.codec not in nvdec_codecs(capability):
        return f"codec {probe.codec} is not decoded by NVDEC on compute capability {cc}"
    min_w, min_h, max_w, max_h = NVDEC_SIZES[probe.codec]
    if probe.width < min_w or probe.height < min_h:
        return (f"{probe.width}x{probe.height} is below NVDEC's {probe.codec} minimum "
                f"{min_w}x{min_h}")
    if probe.width > max_w or probe.height > max_h:
        return (f"{probe.width}x{probe.height} is above NVDEC's {probe.codec} maximum "
                f"{max_w}x{max_h}")
    return None
