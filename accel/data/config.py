"""What a model expects of its input: :class:`DataConfig` (as timm's pretrained configs).

A model owns its preprocessing: the registry in ``models`` attaches a :class:`DataConfig`
to every model it builds (``models.resolve_data_config(model_or_name)`` returns it), and
the loader, the prefetcher, the scripts, the benchmarks and the exports read the
normalisation statistics, clip length and frame size from there, once. ``accel`` cannot
import ``models``, so the type lives here.

The two sets of statistics in use are defined here and nowhere else: ImageNet (2-D trunks,
torchvision's ``IMAGENET1K_V1`` transforms) and Kinetics-400 (torchvision's video ResNets,
``R3D_18_Weights.KINETICS400_V1.transforms()``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS400_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS400_STD = (0.22803, 0.22145, 0.216989)


def stats_tuple(values: Sequence[float], name: str) -> tuple[float, ...]:
    """``values`` as a tuple of floats (one per channel); ValueError for an empty one."""
    out = tuple(float(v) for v in values)
    if not out:
        raise ValueError(f"{name} must have one value per channel, got {values!r}")
    return out


@dataclass(frozen=True)
class DataConfig:
    """A model's input: normalisation ``mean``/``std`` (per RGB channel, of [0, 1] pixels),
    the usual ``clip_len`` (frames) and ``size`` (square side in pixels), and ``weights``:
    which pretrained weights the statistics come from (``"imagenet"``, ``"kinetics400"``,
    or None for a model with no pretrained weights, normalised the ImageNet way)."""

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    clip_len: int = 16
    size: int = 112
    weights: str | None = "imagenet"

    def __post_init__(self) -> None:
        mean, std = stats_tuple(self.mean, "mean"), stats_tuple(self.std, "std")
        if len(mean) != len(std):
            raise ValueError(f"mean {mean} and std {std} differ in length")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {std}")
        if int(self.clip_len) < 1 or int(self.size) < 1:
            raise ValueError(f"clip_len and size must be >= 1, got {self.clip_len}, {self.size}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "clip_len", int(self.clip_len))
        object.__setattr__(self, "size", int(self.size))

    @property
    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return self.mean, self.std

    def replace(self, **changes) -> "DataConfig":
        """A copy with ``changes``; None values keep the current field (CLI flags unset)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "clip_len": self.clip_len,
                "size": self.size, "weights": self.weights}

    @classmethod
    def from_dict(cls, d: dict) -> "DataConfig":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


__all__ = ["DataConfig", "IMAGENET_MEAN", "IMAGENET_STD", "KINETICS400_MEAN", "KINETICS400_STD",
           "stats_tuple"]
