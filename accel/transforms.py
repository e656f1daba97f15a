"""Batched clip augmentation on whatever device the batch is on.

Input: a batch ``(B, C, T, H, W)``, uint8 or float, ideally channels_last_3d (physically
``(B, T, H, W, C)``). Every random parameter is drawn once per clip and applied to all of
its frames (temporal consistency), and differs between clips.

Geometry (random resized crop, flip, rotation, resize, center crop) is one affine matrix
per clip, applied to all frames in one ``grid_sample`` on the free ``(B*T, C, H, W)``
channels-last view, so an augmentation costs one resample whatever it combines.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _size2(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    return int(h), int(w)


def _check_batch(x: torch.Tensor) -> None:
    if x.dim() != 5:
        raise ValueError(f"expected a clip batch (B, C, T, H, W), got shape {tuple(x.shape)}")


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float passes through. Keeps the memory format."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def _frames_view(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W); a view for channels_last_3d input."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def _clips_view(frames: torch.Tensor, b: int, t: int) -> torch.Tensor:
    bt, c, h, w = frames.shape
    return frames.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)


def warp(x: torch.Tensor, theta: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Resample every frame of clip i with the affine ``theta[i]`` (2x3, output -> input in
    normalised coordinates) to ``size``; returns float (B, C, T, h, w) channels_last_3d."""
    _check_batch(x)
    b, c, t, _, _ = x.shape
    h, w = _size2(size)
    frames = _frames_view(to_float(x)).contiguous(memory_format=torch.channels_last)
    grid = F.affine_grid(theta.to(frames).repeat_interleave(t, dim=0), [b * t, c, h, w],
                         align_corners=False)
    out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="reflection",
                        align_corners=False)
    return _clips_view(out, b, t).contiguous(memory_format=torch.channels_last_3d)


def _identity(b: int, device) -> torch.Tensor:
    return torch.eye(2, 3, device=device).repeat(b, 1, 1)


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def crop_theta(b: int, *, scale: tuple[float, float] = (0.08, 1.0),
               ratio: tuple[float, float] = (3 / 4, 4 / 3),
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Random resized crop as affine matrices: area fraction in ``scale``, aspect in ``ratio``."""
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
    area = _uniform(b, *scale, generator)
    log_ratio = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), generator)
    aspect = torch.exp(log_ratio)
    sw = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width / frame width
    sh = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - sw) * (2 * torch.rand(b, generator=generator) - 1)  # centre, normalised
    cy = (1 - sh) * (2 * torch.rand(b, generator=generator) - 1)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = sw, sh, cx, cy
    return theta


def center_crop_theta(b: int, in_size: Sequence[int], crop: int | Sequence[int]) -> torch.Tensor:
    """Central ``crop`` of a frame of ``in_size`` (pixels), as affine matrices."""
    (h, w), (ch, cw) = _size2(in_size), _size2(crop)
    if ch > h or cw > w:
        raise ValueError(f"center crop {ch}x{cw} is larger than the frame {h}x{w}")
    theta = _identity(b, "cpu")
    theta[:, 0, 0], theta[:, 1, 1] = cw / w, ch / h
    return theta


def flip_theta(b: int, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    flip = torch.rand(b, generator=generator) < p
    theta = _identity(b, "cpu")
    theta[flip, 0, 0] = -1.0
    return theta


def rotation_theta(b: int, degrees: float, aspect: float = 1.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """A rotation by a uniform angle in [-degrees, degrees]; ``aspect`` = W / H of the frame."""
    angle = torch.deg2rad(_uniform(b, -degrees, degrees, generator))
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(b, 2, 3)
    # Rotate in pixel space: normalised coordinates scale x by W and y by H.
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin / aspect
    theta[:, 1, 0], theta[:, 1, 1] = sin * aspect, cos
    return theta


def compose(*thetas: torch.Tensor) -> torch.Tensor:
    """Affine matrices applied output -> input: compose(a, b) samples through a, then b."""
    out = thetas[0]
    for t in thetas[1:]:
        full = torch.cat([t, torch.tensor([0.0, 0.0, 1.0]).expand(t.shape[0], 1, 3)], dim=1)
        out = torch.bmm(torch.cat([out, torch.tensor([0.0, 0.0, 1.0]).expand(out.shape[0], 1, 3)],
                                  dim=1), full)[:, :2]
    return out


def resize(x: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    return warp(x, _identity(x.shape[0], "cpu"), size)


def center_crop(x: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    return warp(x, center_crop_theta(x.shape[0], x.shape[-2:], size), size)


def random_resized_crop(x: torch.Tensor, size: int | Sequence[int], *,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        generator: torch.Generator | None = None) -> torch.Tensor:
    return warp(x, crop_theta(x.shape[0], scale=scale, ratio=ratio, generator=generator), size)


def hflip(x: torch.Tensor, p: float = 0.5, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each clip (all its frames) with probability ``p``; exact, no resampling."""
    _check_batch(x)
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device)
    return torch.where(flip.view(-1, 1, 1, 1, 1), x.flip(-1), x)


def rotate(x: torch.Tensor, degrees: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    return warp(x, rotation_theta(x.shape[0], degrees, x.shape[-1] / x.shape[-2], generator),
                x.shape[-2:])


def color_jitter(x: torch.Tensor, *, brightness: float = 0.0, contrast: float = 0.0,
                 saturation: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-clip brightness, contrast and saturation factors in [1-v, 1+v]; float in [0, 1]."""
    _check_batch(x)
    x = to_float(x)
    b = x.shape[0]
    shape = (b, 1, 1, 1, 1)

    def factor(v: float) -> torch.Tensor:
        return _uniform(b, max(0.0, 1 - v), 1 + v, generator).view(shape).to(x.device, x.dtype)

    gray_weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1, 1)
    if brightness:
        x = x * factor(brightness)
    if contrast:
        mean = (x * gray_weights).sum(1, keepdim=True).mean(dim=(2, 3, 4), keepdim=True)
        x = (x - mean) * factor(contrast) + mean
    if saturation:
        gray = (x * gray_weights).sum(1, keepdim=True)
        x = (x - gray) * factor(saturation) + gray
    return x.clamp_(0, 1)


def normalize(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """(x/255 for uint8 - mean) / std per channel; keeps channels_last_3d."""
    _check_batch(x)
    x = to_float(x)
    m = torch.as_tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1, 1)
    s = torch.as_tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1, 1)
    return (x - m) / s


@dataclass
class ClipTransform:
    """The train or eval pipeline: geometry in one resample, then colour, then normalise.

    train: random resized crop (``scale``, ``ratio``), flip with ``hflip``, rotation up to
    ``rotate_deg``, colour jitter. eval: resize to ``size`` (or a central crop of
    ``crop_fraction``). Output float (B, C, T, size, size) channels_last_3d.
    """

    size: int | tuple[int, int]
    train: bool = False
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    rotate_deg: float = 10.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    crop_fraction: float = 1.0
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD

    def __call__(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch(x)
        b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        if self.train:
            theta = compose(crop_theta(b, scale=self.scale, ratio=self.ratio, generator=generator),
                            flip_theta(b, self.hflip, generator),
                            rotation_theta(b, self.rotate_deg, w / h, generator))
            x = warp(x, theta, self.size)
            x = color_jitter(x, brightness=self.brightness, contrast=self.contrast,
                             saturation=self.saturation, generator=generator)
        elif self.crop_fraction < 1.0 or (h, w) != _size2(self.size):
            crop = (round(h * self.crop_fraction), round(w * self.crop_fraction))
            x = warp(x, center_crop_theta(b, (h, w), crop), self.size)
        return normalize(x, self.mean, self.std)
