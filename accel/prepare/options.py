"""What a preparation run encodes and checks (:class:`PrepareOptions`), and its one error."""
from __future__ import annotations

from dataclasses import asdict, dataclass

CODECS = {"h264": "libx264", "hevc": "libx265"}
TUNES = ("none", "fastdecode")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow")
# Bump when the outputs for the same options change (sizes, encoder settings): done records
# of other versions are redone.
FORMAT_VERSION = 1


class PrepareError(RuntimeError):
    """A source that cannot be prepared (the run lists it and goes on)."""


@dataclass(frozen=True)
class PrepareOptions:
    """How outputs are encoded and checked. Part of every done record: change one, redo all."""

    short_side: int = 128
    gop: int = 16
    bframes: int = 0
    crf: int = 20
    codec: str = "h264"
    tune: str = "fastdecode"
    preset: str = "medium"
    check_frames: int = 4
    min_psnr: float = 25.0

    def __post_init__(self) -> None:
        for name, value, allowed in (("codec", self.codec, tuple(CODECS)), ("tune", self.tune, TUNES),
                                     ("preset", self.preset, PRESETS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        for name, value, low, high in (("short_side", self.short_side, 16, 4096),
                                       ("gop", self.gop, 1, 1000), ("bframes", self.bframes, 0, 16),
                                       ("crf", self.crf, 0, 51), ("check_frames", self.check_frames, 1, 64)):
            if not low <= value <= high:
                raise ValueError(f"{name} must be in [{low}, {high}], got {value}")

    def encoding(self) -> dict:
        """The settings that change an output's bytes (what a done record is keyed on)."""
        kept = {k: v for k, v in asdict(self).items() if k not in ("check_frames", "min_psnr")}
        return {**kept, "format_version": FORMAT_VERSION}
