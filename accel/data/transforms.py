"""Batched clip augmentation on whatever device the batch is on.

Input: a batch ``(B, C, T, H, W)``, uint8 or float, ideally channels_last_3d (physically
``(B, T, H, W, C)``). Every random parameter is drawn once per clip and applied to all of
its frames (temporal consistency), and differs between clips.

Geometry (random resized crop, flip, rotation, resize, center crop) is one affine matrix
per clip, applied to all frames in one ``grid_sample`` on the free ``(B*T, C, H, W)``
channels-last view, so an augmentation costs one resample whatever it combines.

No host-device syncs: random parameters are drawn on the host (a CPU generator keeps them
reproducible) and reach the device in one copy from pinned memory with ``non_blocking``;
a pageable copy (``torch.tensor(..., device=)``, ``.to(device)`` of a fresh host tensor)
would block the CPU until the GPU has finished everything queued before it, so the CPU
could never run ahead of the GPU. :class:`ClipTransform` makes one such copy per batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from .config import IMAGENET_MEAN, IMAGENET_STD


def _size2(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    return int(h), int(w)


def _check_batch(x: torch.Tensor) -> None:
    if x.dim() != 5:
        raise ValueError(f"expected a clip batch (B, C, T, H, W), got shape {tuple(x.shape)}")


def to_device(host: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A small host-built tensor on ``device`` without a sync: pinned, ``non_blocking``.

    The pinned block comes from PyTorch's caching host allocator, which keeps it until the
    copy has completed, so the caller may drop ``host`` at once.
    """
    device = torch.device(device)
    if device.type == "cpu" or host.device.type != "cpu":  # nothing to copy from the host
        return host  # (a device tensor: e.g. a slice of ClipTransform's packed parameters)
    if device.type == "cuda":
        host = host.pin_memory()
    return host.to(device, non_blocking=True)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1] in one pass; float passes through. Keeps the memory format."""
    return x.div(255) if x.dtype == torch.uint8 else x


def frames_view(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W), the one clip-to-frames view (models use it too).

    When ``x`` is ``channels_last_3d`` (physically B,T,H,W,C, as the loaders deliver it)
    this is a view, no copy, and the result is ``channels_last`` 2-D: the B and T strides
    merge because T is the outermost dimension after B. A contiguous input is copied once.
    """
    if x.dim() != 5:
        raise ValueError(f"expected a (B, C, T, H, W) clip batch, got shape {tuple(x.shape)}")
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def _clips_view(frames: torch.Tensor, b: int, t: int) -> torch.Tensor:
    bt, c, h, w = frames.shape
    return frames.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)


def warp(x: torch.Tensor, theta: torch.Tensor, size: int | Sequence[int], *,
         channels_last: bool = True) -> torch.Tensor:
    """Resample every frame of clip i with the affine ``theta[i]`` (2x3, output -> input in
    normalised coordinates) to ``size``; returns float (B, C, T, h, w) channels_last_3d.

    ``grid_sample`` writes (B*T, C, h, w) contiguous frames; ``channels_last=False`` returns
    their clip view as it is, for a caller whose next pass writes channels_last_3d anyway
    (:class:`ClipTransform`'s normalisation), which saves a full copy of the batch."""
    _check_batch(x)
    b, c, t, _, _ = x.shape
    h, w = _size2(size)
    frames = frames_view(to_float(x)).contiguous(memory_format=torch.channels_last)
    theta = to_device(theta, frames.device).to(frames.dtype)
    grid = F.affine_grid(theta.repeat_interleave(t, dim=0), [b * t, c, h, w],
                         align_corners=False)
    out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="reflection",
                        align_corners=False)
    clips = _clips_view(out, b, t)
    return clips.contiguous(memory_format=torch.channels_last_3d) if channels_last else clips


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
    flip = to_device(torch.rand(x.shape[0], generator=generator) < p, x.device)
    return torch.where(flip.view(-1, 1, 1, 1, 1), x.flip(-1), x)


def rotate(x: torch.Tensor, degrees: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    return warp(x, rotation_theta(x.shape[0], degrees, x.shape[-1] / x.shape[-2], generator),
                x.shape[-2:])


def jitter_factors(b: int, *, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-clip (brightness, contrast, saturation) factors in [1-v, 1+v], (b, 3) on the host;
    1 where v is 0 (then nothing is drawn for it)."""
    out = torch.ones(b, 3)
    for k, v in enumerate((brightness, contrast, saturation)):
        if v:
            out[:, k] = _uniform(b, max(0.0, 1 - v), 1 + v, generator)
    return out


def _gray(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of a (B, 3, ...) batch; scalar weights, so no weight tensor to copy."""
    return x[:, 0:1] * 0.299 + x[:, 1:2] * 0.587 + x[:, 2:3] * 0.114


def apply_jitter(x: torch.Tensor, factors: torch.Tensor, *, brightness: bool = True,
                 contrast: bool = True, saturation: bool = True) -> torch.Tensor:
    """Apply :func:`jitter_factors` (already on ``x``'s device) to a float batch in [0, 1]."""
    f = factors.to(x.dtype).view(x.shape[0], 3, 1, 1, 1, 1)
    if brightness:
        x = x * f[:, 0]
    if contrast:
        mean = _gray(x).mean(dim=(2, 3, 4), keepdim=True)
        x = (x - mean) * f[:, 1] + mean
    if saturation:
        gray = _gray(x)
        x = (x - gray) * f[:, 2] + gray
    return x.clamp_(0, 1)


def color_jitter(x: torch.Tensor, *, brightness: float = 0.0, contrast: float = 0.0,
                 saturation: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-clip brightness, contrast and saturation factors in [1-v, 1+v]; float in [0, 1]."""
    _check_batch(x)
    x = to_float(x)
    factors = jitter_factors(x.shape[0], brightness=brightness, contrast=contrast,
                             saturation=saturation, generator=generator)
    return apply_jitter(x, to_device(factors, x.device), brightness=bool(brightness),
                        contrast=bool(contrast), saturation=bool(saturation))


def normalize(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """(x/255 for uint8 - mean) / std per channel, in one pass; returns channels_last_3d."""
    _check_batch(x)
    return _normalize(x, to_device(_affine(mean, std), x.device))


def _affine(mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(3, C): the scale for float input (1 / std), for uint8 input (1 / (255 std)), and the
    shift (-mean / std): normalising is then one multiply-add."""
    m, s = torch.tensor(list(mean), dtype=torch.float64), torch.tensor(list(std), dtype=torch.float64)
    return torch.stack([1 / s, 1 / (255 * s), -m / s]).float()


def _normalize(x: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """``affine``: :func:`_affine` on ``x``'s device. One pass (``addcmul``) reads ``x`` in any
    layout and dtype and writes float channels_last_3d (the batch contract)."""
    a = affine.view(3, 1, -1, 1, 1, 1)
    scale = a[1] if x.dtype == torch.uint8 else a[0]
    dtype = x.dtype if x.is_floating_point() else torch.float32
    out = torch.empty(x.shape, dtype=dtype, device=x.device, memory_format=torch.channels_last_3d)
    return torch.addcmul(a[2].to(dtype), x, scale.to(dtype), out=out)


class Normalize:
    """:func:`normalize` with fixed statistics, copied to each device once (not per batch)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean, self.std = tuple(mean), tuple(std)
        self.stats = (self.mean, self.std)
        self._on: dict[torch.device, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x)
        affine = self._on.get(x.device)
        if affine is None:
            affine = self._on[x.device] = to_device(_affine(self.mean, self.std), x.device)
        return _normalize(x, affine)


@dataclass
class AugmentOptions:
    """What a clip augmentation does, the same options whether torch (:class:`ClipTransform`)
    or DALI (:class:`~accel.data.dali.DaliAugment`) applies it.

    train: random resized crop (area ``scale``, aspect ``ratio``), flip with probability
    ``hflip``, brightness / contrast / saturation factors in [1 - v, 1 + v]. eval: a central
    crop of ``crop_fraction`` resized to ``size``. Then ``(x / 255 - mean) / std``.
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


@dataclass
class ClipTransform(AugmentOptions):
    """The train or eval pipeline on a batch: geometry in one resample, then colour, then
    normalise; train also rotates up to ``rotate_deg``. Output float (B, C, T, size, size)
    channels_last_3d.
    """

    rotate_deg: float = 10.0
    _normalizer: Normalize | None = field(default=None, init=False, repr=False, compare=False)

    def __call__(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """One host-to-device copy per batch (the clips' parameters), no sync."""
        _check_batch(x)
        b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        if self.train:
            theta = compose(crop_theta(b, scale=self.scale, ratio=self.ratio, generator=generator),
                            flip_theta(b, self.hflip, generator),
                            rotation_theta(b, self.rotate_deg, w / h, generator))
            factors = jitter_factors(b, brightness=self.brightness, contrast=self.contrast,
                                     saturation=self.saturation, generator=generator)
            params = to_device(torch.cat([theta.reshape(b, 6), factors], 1), x.device)
            x = warp(x, params[:, :6].view(b, 2, 3), self.size, channels_last=False)
            x = apply_jitter(x, params[:, 6:], brightness=bool(self.brightness),
                             contrast=bool(self.contrast), saturation=bool(self.saturation))
        elif self.crop_fraction < 1.0 or (h, w) != _size2(self.size):
            crop = (round(h * self.crop_fraction), round(w * self.crop_fraction))
            x = warp(x, center_crop_theta(b, (h, w), crop), self.size, channels_last=False)
        if self._normalizer is None or self._normalizer.stats != (tuple(self.mean), tuple(self.std)):
            self._normalizer = Normalize(self.mean, self.std)
        return self._normalizer(x)
