""":func:`~accel.data.loader.build_loader`'s option groups: how clips are decoded, how the
decode child is watched, and what DALI does. Frozen, so one instance can be shared and reused."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from .sampling import ShortPolicy

if TYPE_CHECKING:  # accel.data.dali loads only when DALI is asked for
    from .dali.augment import DaliAugment

DaliDevice = Literal["gpu", "cpu"]
DALI_DEVICES: tuple[DaliDevice, ...] = get_args(DaliDevice)


@dataclass(frozen=True)
class DecodeOptions:
    """How each clip's frames are read, beyond its length, strategy and ``frame_size``.

    ``stride``: frames between a ``"dense"`` clip's frames; ``short``: what a video with fewer
    frames than the clip gets (``sample_indices``); ``rotate``: frames as displayed, the display
    matrix of phone videos applied (False: as stored; DALI sends rotated files to its CPU
    fallback, which turns them upright).
    """

    stride: int = 1
    short: ShortPolicy = "repeat_last"
    rotate: bool = True


@dataclass(frozen=True)
class WatchdogOptions:
    """The CPU decoders' watched decode child (:class:`~accel.io.watchdog.DecodeProcess`).

    A clip not decoded within ``timeout_s`` is abandoned and skipped (also DALI's per-sample
    limit); the child is replaced after ``recycle_after_clips`` clips or once it grew
    ``recycle_rss_growth_mb``, which keeps persistent workers bounded in memory. None: no limit.
    """

    timeout_s: float | None = 30.0
    recycle_after_clips: int | None = 1000
    recycle_rss_growth_mb: float | None = 256.0


@dataclass(frozen=True)
class DaliOptions:
    """What the DALI loader does when DALI decodes (``backend="dali"``, or ``"auto"`` with CUDA).

    ``device``: ``"gpu"`` (NVDEC) or ``"cpu"`` (DALI's CPU decoder: VP8/VP9/MJPEG only; tests
    without a GPU). ``augment``: a :class:`~accel.data.dali.DaliAugment` that augments and
    normalises inside the pipeline (float clips); any other decoder refuses it.
    """

    device: DaliDevice = "gpu"
    augment: DaliAugment | None = None

    def __post_init__(self) -> None:
        if self.device not in DALI_DEVICES:
            raise ValueError(f"DALI device must be one of {', '.join(DALI_DEVICES)}; got {self.device!r}")


__all__ = ["DecodeOptions", "WatchdogOptions", "DaliOptions"]
