"""Augmentation inside the DALI pipeline: crop, flip, colour and normalisation per clip.

Why parameters drawn in Python: each clip's parameters come from the generator seeded by
``clip_seed(seed, epoch, index)`` (right after its frame indices, :mod:`.plan`) and reach DALI
as per-sample argument inputs, so a clip's crop / flip / colour do not depend on the batch it
lands in or the shard. DALI's operators apply per-sample arguments to every frame of an
"FHWC" sequence alike (tested: repeated frames stay identical after augmentation). Crop and
flip are one ``fn.resize`` with a relative ROI (flip: ROI end < start), so geometry costs one
antialiased resample from the decoded resolution. The graph is in :mod:`.pipeline`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..transforms import AugmentOptions, crop_theta


@dataclass
class DaliAugment(AugmentOptions):
    """GPU augmentation inside the DALI pipeline; output float (B, C, T, size) normalised.

    train: random resized crop (area ``scale``, aspect ``ratio``, drawn like
    :func:`accel.data.transforms.crop_theta`), horizontal flip with probability ``hflip``, and
    brightness / contrast / saturation factors in [1 - v, 1 + v] (``fn.color_twist``; its
    contrast pivots on mid-grey, the torch ``color_jitter`` on the clip's mean). No rotation
    (use :class:`~accel.data.transforms.ClipTransform` on the batch for that).
    eval: central crop of ``crop_fraction`` resized to ``size``. Every parameter is drawn once
    per clip and applies to all its frames. ``dtype``: "float16" or "float32".
    """

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
