"""Live inference: a ring of the last ``clip_len`` frames, pre-processed on the device once,
and a classifier that runs the model on the current window as frames arrive.

``RingBuffer`` pre-processes each frame exactly as evaluation does (the checkpoint's
``frame_size`` resize, then :class:`~accel.data.transforms.ClipTransform` in eval mode:
resample to ``size``, normalise) so a window's logits equal ``evaluate.py``'s for the same
frames. On CUDA the frames reach the device through a :class:`StagingRing` of pinned buffers.

``LiveClassifier.submit(frame, ...)`` pushes a frame and, policy permitting, infers:

* ``"busy-drop"`` (live default): a frame that arrives while the model is busy with an earlier
  one is *dropped*: it enters the ring (later windows stay contiguous) but gets no inference,
  so latency never includes waiting behind older frames;
* ``"block"`` (offline): every frame is inferred;
* ``"deadline"``: busy-drop, and a frame already older than ``deadline_ms`` when the model
  is free is dropped too (stale frames are not worth a result).

With ``deadline_ms`` any result later than it is flagged ``late``. Frame models that declare
an encoder / head split (``encode``, ``head``: ``models.frame_split``) keep a ring of
per-frame features instead: only frames whose features are missing go through the encoder,
then the temporal head runs over the window (``path == "incremental"``); the others run the
whole window (``path == "window"``). A frame with no inference of its own (the ring filling, a
dropped or ``every``-skipped frame) is encoded at once when that ends before the next frame is
due, so the next window encodes only its own frame.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..data.config import IMAGENET_MEAN, IMAGENET_STD
from ..data.transforms import ClipTransform
from .perf import sync_device

__all__ = ["StagingRing", "RingBuffer", "FeatureRing", "FrameResult", "LiveClassifier", "POLICIES",
           "latency_summary"]

POLICIES = ("busy-drop", "block", "deadline")


class StagingRing:
    """Pinned host buffers for the frame uploads, used round robin.

    A ``non_blocking`` copy from pinned memory may still be reading its buffer when the next
    frame arrives; refilling that buffer then would corrupt the frame in flight. So each
    copy records an event, and a buffer is refilled only after the event of its previous
    copy has completed (with ``slots`` buffers that wait is ``slots - 1`` frames old and
    normally already over).
    """

    def __init__(self, device: torch.device, *, slots: int = 3, pin: bool = True,
                 event_factory: Callable[[], Any] | None = None):
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.device, self.pin = device, pin
        self.buffers: list[torch.Tensor | None] = [None] * slots
        self.events: list[Any] = [None] * slots
        self.event_factory = event_factory or torch.cuda.Event
        self.next_slot = 0

    def upload(self, frame: np.ndarray) -> torch.Tensor:
        """``frame`` on the device (uint8), copied asynchronously from a free pinned buffer."""
        t = torch.from_numpy(frame)
        k, self.next_slot = self.next_slot, (self.next_slot + 1) % len(self.buffers)
        if self.events[k] is not None:
            self.events[k].synchronize()  # its last copy has finished reading the buffer
        buf = self.buffers[k]
        if buf is None or buf.shape != t.shape:
            buf = self.buffers[k] = torch.empty(t.shape, dtype=torch.uint8, pin_memory=self.pin)
        buf.copy_(t)
        out = buf.to(self.device, non_blocking=True)
        self.events[k] = self.event_factory()
        self.events[k].record()  # on the current stream, behind the copy
        return out


class RingBuffer:
    """The last ``clip_len`` pre-processed frames on the device; ``clip()`` in time order.

    ``frame_size=(H, W)``: resize the uint8 frame first (antialiased), as the data loaders do
    for a checkpoint trained with ``--frame_size``. ``staging``: how frames reach the device;
    default a :class:`StagingRing` on CUDA, and none on the CPU (the frame is used in place).
    """

    def __init__(self, clip_len: int, size: int, device: torch.device, *,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 frame_size: tuple[int, int] | None = None, staging: StagingRing | None = None):
        if clip_len < 1 or size < 1:
            raise ValueError(f"clip_len and size must be >= 1, got clip_len={clip_len}, size={size}")
        self.clip_len, self.size, self.device = clip_len, size, torch.device(device)
        self.frame_size: tuple[int, int] | None = \
            (int(frame_size[0]), int(frame_size[1])) if frame_size is not None else None
        self.frames = torch.zeros(clip_len, 3, size, size, device=self.device)
        self.transform = ClipTransform(size, train=False, mean=tuple(mean), std=tuple(std))
        self.count = 0
        self.staging = staging if staging is not None else \
            StagingRing(self.device) if self.device.type == "cuda" else None

    def preprocess(self, frame: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) -> float (3, size, size) on the device, normalised."""
        if self.frame_size is not None and tuple(frame.shape[:2]) != self.frame_size:
            from ..data.dataset import resize_frames

            frame = resize_frames(torch.from_numpy(frame)[None], self.frame_size)[0].numpy()
        x = torch.from_numpy(frame) if self.staging is None else self.staging.upload(frame)
        clip = x.permute(2, 0, 1)[None, :, None]  # (1, C, 1, H, W), uint8 until on the device
        return self.transform(clip)[0, :, 0]

    def push(self, frame: np.ndarray) -> int:
        """Pre-process ``frame`` into the ring; returns the slot it went to."""
        slot = self.count % self.clip_len
        self.frames[slot] = self.preprocess(frame)
        self.count += 1
        return slot

    @property
    def full(self) -> bool:
        return self.count >= self.clip_len

    def reset(self) -> None:
        """Empty the ring (the next ``clip_len`` frames fill it again)."""
        self.count = 0

    def order(self) -> list[int]:
        """Ring slots, oldest frame first."""
        return [(self.count + i) % self.clip_len for i in range(self.clip_len)]

    def clip(self) -> torch.Tensor:
        """(1, C, T, H, W), oldest frame first, channels_last_3d (the batch contract)."""
        clip = self.frames[self.order()]  # (T, C, H, W), a gathered copy
        return clip.permute(1, 0, 2, 3).unsqueeze(0).contiguous(memory_format=torch.channels_last_3d)


class FeatureRing:
    """Per-slot features of a :class:`RingBuffer`'s frames: a slot's feature is computed by
    ``encode_slots`` or, at the latest, when a window needs it, and is invalidated when the
    slot gets a new frame."""

    def __init__(self, frames: RingBuffer, encode: Callable[[torch.Tensor], torch.Tensor]):
        self.frames, self.encode = frames, encode
        self.features: torch.Tensor | None = None
        self.valid = [False] * frames.clip_len
        self.encoded = 0  # encoder calls' frames, for the summary

    def invalidate(self, slot: int) -> None:
        self.valid[slot] = False

    def encode_slots(self, slots: Sequence[int]) -> None:
        """Encode these slots' frames in one batch (slots already valid are left alone)."""
        missing = [k for k in slots if not self.valid[k]]
        if not missing:
            return
        x = self.frames.frames[missing].contiguous(memory_format=torch.channels_last)
        feats = self.encode(x)
        if self.features is None:
            self.features = feats.new_zeros((self.frames.clip_len, *feats.shape[1:]))
        self.features[missing] = feats
        for k in missing:
            self.valid[k] = True
        self.encoded += len(missing)

    def window(self) -> torch.Tensor:
        """(1, T, F) features of the ring's window, oldest first; encodes the missing slots
        in one batch."""
        self.encode_slots(range(self.frames.clip_len))
        assert self.features is not None
        return self.features[self.frames.order()].unsqueeze(0)

    def reset(self) -> None:
        self.valid = [False] * self.frames.clip_len
        self.encoded = 0


class FramesAsClips(nn.Module):
    """A frame model's encoder, frames (N, C, H, W) -> features (N, F), as a clip model
    (N, C, 1, H, W) -> (N, F): the shape every exporter takes, so the incremental path can
    run its encoder through ONNX Runtime, AOTInductor or TensorRT (the head stays eager; it
    is the small part). ``model`` owns ``encode_frames``, as the registry's frame models do."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model: Any = model  # duck-typed: any module with encode_frames

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.model.encode_frames(clips[:, :, 0])


@dataclass
class FrameResult:
    """What one frame got. ``dropped``: no inference of its own (policy); ``late``: its
    result came after ``deadline_ms``. Times: ``arrival_s`` on ``time.perf_counter``'s
    clock, ``latency_ms`` from arrival to logits on the host."""

    index: int
    pts_s: float | None
    arrival_s: float
    dropped: bool = False
    late: bool = False
    latency_ms: float | None = None
    label: str | None = None
    prob: float | None = None
    topk: list[tuple[str, float]] = field(default_factory=list)
    smoothed_label: str | None = None
    smoothed_prob: float | None = None
    probs: list[float] | None = None
    logits: list[float] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _check_options(policy: str, every: int, smooth: int, top_k: int, deadline_ms: float | None) -> None:
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if every < 1 or smooth < 1 or top_k < 1:
        raise ValueError(f"every, smooth and top_k must be >= 1, got {every}, {smooth}, {top_k}")
    if deadline_ms is not None and deadline_ms <= 0:
        raise ValueError(f"deadline_ms must be > 0, got {deadline_ms}")
    if policy == "deadline" and deadline_ms is None:
        raise ValueError("policy 'deadline' needs deadline_ms")


class LiveClassifier:
    """Frames in, per-frame results out, with a drop policy (see the module's docstring).

    ``model``: the whole-window callable (eager, optimised or an exported runtime), clips
    (1, C, T, H, W) -> logits. ``encode`` and ``head``: a frame model's split (both or
    neither), used instead of ``model`` for the incremental path.
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor] | None, *, classes: Sequence[str],
                 clip_len: int, size: int, device: torch.device | str = "cpu",
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 frame_size: tuple[int, int] | None = None,
                 encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 head: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 policy: str = "busy-drop", deadline_ms: float | None = None, every: int = 1,
                 smooth: int = 5, top_k: int = 3, keep_logits: bool = False):
        _check_options(policy, every, smooth, top_k, deadline_ms)
        if (encode is None) != (head is None):
            raise ValueError("give both encode and head (a frame model's split) or neither")
        if model is None and encode is None:
            raise ValueError("give model, or encode and head")
        self.model, self.classes = model, list(classes)
        self.device = torch.device(device)
        self.ring = RingBuffer(clip_len, size, self.device, mean=mean, std=std, frame_size=frame_size)
        self.features = FeatureRing(self.ring, encode) if encode is not None else None
        self.head = head
        self.path = "incremental" if encode is not None else "window"
        self.policy, self.deadline_ms, self.every = policy, deadline_ms, every
        self.top_k, self.keep_logits = min(top_k, len(self.classes)), keep_logits
        self.recent: deque[np.ndarray] = deque(maxlen=smooth)
        self.busy_until = float("-inf")
        self.model_ms: list[float] = []
        self.warmup_ms: float | None = None
        # running estimates for encoding idle-time frames: the frame interval, one frame's encode
        self.frame_gap_s: float | None = None
        self.encode_s: float | None = None
        self.last_arrival_s = float("-inf")

    def _logits(self) -> torch.Tensor:
        if self.features is not None and self.head is not None:
            return self.head(self.features.window())
        assert self.model is not None
        return self.model(self.ring.clip())

    def _encode_fits(self, why: str, arrival_s: float) -> bool:
        """Encode a frame that gets no inference of its own now? Always while the ring fills
        (else the first full window encodes clip_len frames and drops those behind it);
        a dropped or skipped frame only when it will be done before the next frame is due, so
        idle time does the work and the next window encodes just its own frame: no cascade
        of two-frame windows that each overrun the frame interval."""
        if why == "filling":
            return True
        if self.frame_gap_s is None or self.encode_s is None:
            return False
        return time.perf_counter() + self.encode_s <= arrival_s + self.frame_gap_s

    def _encode_now(self, slot: int) -> None:
        assert self.features is not None
        start = time.perf_counter()
        self.features.encode_slots([slot])
        sync_device(self.device)
        self.busy_until = done = time.perf_counter()
        self.encode_s = done - start if self.encode_s is None else 0.8 * self.encode_s + 0.2 * (done - start)

    def _skip_reason(self, index: int, arrival_s: float) -> str | None:
        """Why this frame gets no inference: "filling", "every", "dropped", or None."""
        if not self.ring.full:
            return "filling"
        if index % self.every:
            return "every"
        if self.policy == "block":
            return None
        if arrival_s < self.busy_until:
            return "dropped"
        if self.policy == "deadline" and (time.perf_counter() - arrival_s) * 1e3 > (self.deadline_ms or 0):
            return "dropped"
        return None

    @torch.inference_mode()
    def submit(self, frame: np.ndarray, *, index: int, pts_s: float | None = None,
               arrival_s: float | None = None) -> FrameResult | None:
        """Push ``frame`` (RGB uint8 (H, W, 3)); the result of its inference, a dropped
        result, or None (the ring is still filling, or ``every`` skips it)."""
        arrival_s = time.perf_counter() if arrival_s is None else arrival_s
        slot = self.ring.push(frame)
        if self.features is not None:
            self.features.invalidate(slot)
        why = self._skip_reason(index, arrival_s)
        gap = arrival_s - self.last_arrival_s
        if 0 < gap < 1:  # frames closer than 1 s: a live cadence (not a new source or a stall)
            self.frame_gap_s = gap if self.frame_gap_s is None else 0.9 * self.frame_gap_s + 0.1 * gap
        self.last_arrival_s = arrival_s
        if why is not None and self.features is not None and self._encode_fits(why, arrival_s):
            self._encode_now(slot)
        if why == "dropped":
            return FrameResult(index, pts_s, arrival_s, dropped=True)
        if why is not None:
            return None
        sync_device(self.device)  # the frame's preprocessing stays out of model_ms
        start = time.perf_counter()
        logits = self._logits().float()
        logits_host = logits[0].cpu()  # waits for the device: the logits are on the host
        done = time.perf_counter()
        self.busy_until = done
        self.model_ms.append((done - start) * 1e3)
        return self._result(index, pts_s, arrival_s, done, logits_host)

    @torch.inference_mode()
    def warmup(self, height: int, width: int, *, windows: int = 2) -> float:
        """Run the model path on ``windows`` windows of black frames, then forget them; returns
        the time it took (ms). The first calls pay one-off costs (allocator, oneDNN kernel
        choice, a compiled or exported runtime's first run) that would otherwise land on the
        first live frames."""
        start = time.perf_counter()
        black = np.zeros((height, width, 3), dtype=np.uint8)
        for _ in range(self.ring.clip_len + windows - 1):
            slot = self.ring.push(black)
            if self.features is not None:
                self.features.invalidate(slot)
                self._encode_now(slot)  # also primes the per-frame encode estimate
            if self.ring.full:
                self._logits().float()[0].cpu()
        self.ring.reset()
        self.busy_until = float("-inf")
        if self.features is not None:
            self.features.reset()
        self.warmup_ms = (time.perf_counter() - start) * 1e3
        return self.warmup_ms

    def _result(self, index: int, pts_s: float | None, arrival_s: float, done: float,
                logits: torch.Tensor) -> FrameResult:
        probs = torch.softmax(logits.double(), dim=0).numpy()
        self.recent.append(probs)
        smoothed = np.mean(self.recent, axis=0)
        top = np.argsort(-probs, kind="stable")[:self.top_k]
        latency = (done - arrival_s) * 1e3
        return FrameResult(
            index, pts_s, arrival_s, latency_ms=latency,
            late=self.deadline_ms is not None and latency > self.deadline_ms,
            label=self.classes[int(top[0])], prob=float(probs[top[0]]),
            topk=[(self.classes[int(k)], float(probs[k])) for k in top],
            smoothed_label=self.classes[int(smoothed.argmax())], smoothed_prob=float(smoothed.max()),
            probs=[float(p) for p in probs],
            logits=[float(v) for v in logits.tolist()] if self.keep_logits else None)


def latency_summary(results: Sequence[FrameResult]) -> dict[str, Any]:
    """p50/p95/p99/p99.9/max latency over the inferred frames, dropped and late counts,
    and inferred frames per (top-1) class."""
    inferred = [r for r in results if not r.dropped and r.latency_ms is not None]
    lat = np.asarray([r.latency_ms for r in inferred], dtype=np.float64)
    pct = dict(zip(("p50", "p95", "p99", "p99_9"), np.percentile(lat, [50, 95, 99, 99.9]))) \
        if len(lat) else {}
    dropped = sum(r.dropped for r in results)
    per_class: dict[str, int] = {}
    for r in inferred:
        if r.label is not None:
            per_class[r.label] = per_class.get(r.label, 0) + 1
    return {"inferred": len(inferred), "dropped": dropped,
            "drop_pct": 100.0 * dropped / max(1, dropped + len(inferred)),
            "late": sum(r.late for r in results),
            **{f"latency_{k}_ms": float(v) for k, v in pct.items()},
            "latency_max_ms": float(lat.max()) if len(lat) else None,
            "frames_per_class": per_class}
