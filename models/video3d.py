"""3-D CNNs: torchvision's R3D-18 and R(2+1)D-18 with a new head, and R3D-18 late fusion."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import video as tvv

from accel.data.config import KINETICS400_MEAN, KINETICS400_STD, DataConfig

from .base import VideoClassifier, load_pretrained_trunk
from .registry import register_model

__all__ = ["VideoResNet3D", "LateFusion"]

_ARCHS = {
    "r3d_18": (tvv.r3d_18, tvv.R3D_18_Weights.KINETICS400_V1),
    "r2plus1d_18": (tvv.r2plus1d_18, tvv.R2Plus1D_18_Weights.KINETICS400_V1),
}

# torchvision's Kinetics-400 weights expect these (R3D_18_Weights.KINETICS400_V1.transforms():
# mean / std of Kinetics, 112x112 crops), whether or not pretrained=True loaded them.
KINETICS_CONFIG = DataConfig(mean=KINETICS400_MEAN, std=KINETICS400_STD, clip_len=16, size=112,
                             weights="kinetics400")


class VideoResNet3D(VideoClassifier):
    """A torchvision video ResNet as ``backbone`` (``fc = Identity``), Dropout + Linear head.

    Takes (B, C, T, H, W) as it is; channels-last-3d input runs the 3-D convs channels-last.
    """

    data_config = KINETICS_CONFIG

    def __init__(self, num_classes: int, *, arch: str = "r3d_18", pretrained: bool = False,
                 dropout: float = 0.0, freeze_backbone: bool = False, model_name: str | None = None) -> None:
        super().__init__()
        if arch not in _ARCHS:
            raise ValueError(f"unknown 3-D trunk {arch!r}; known: {', '.join(_ARCHS)}")
        ctor, weights = _ARCHS[arch]
        self.backbone = ctor(weights=None)
        self.backbone.fc = nn.Identity()
        if pretrained:
            load_pretrained_trunk(self.backbone, weights, model_name or arch)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(512, num_classes))
        if freeze_backbone:
            self.freeze_backbone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class LateFusion(VideoResNet3D):
    """Seed 004: the clip is cut into ``num_segments`` equal segments along T, each goes
    through the same 3-D network, and the logits are averaged.

    All segments run as one batch of B*S clips (one backbone call instead of a loop);
    the reshape is a view for channels-last-3d input. In training mode BatchNorm thus
    sees the segments of the whole batch together (the seed called the backbone once per
    segment); in eval mode the two are the same. Same state dict as the plain model.
    """

    def __init__(self, num_classes: int, *, num_segments: int = 4, arch: str = "r3d_18", **kwargs) -> None:
        super().__init__(num_classes, arch=arch, **kwargs)
        if num_segments < 1:
            raise ValueError(f"num_segments must be >= 1, got {num_segments}")
        self.num_segments = num_segments

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        s = self.num_segments
        if t % s:
            raise ValueError(
                f"late fusion needs the clip length to be a multiple of num_segments: "
                f"T={t} frames cannot be split into {s} equal segments"
            )
        segs = x.reshape(b, c, s, t // s, h, w).transpose(1, 2).reshape(b * s, c, t // s, h, w)
        logits = self.head(self.backbone(segs))  # (B*S, K)
        return logits.reshape(b, s, -1).mean(dim=1)


@register_model(data_config=KINETICS_CONFIG)
def r3d_18(*, num_classes: int, pretrained: bool = False, **kwargs) -> VideoResNet3D:
    """torchvision R3D-18 (Kinetics-400 weights with ``pretrained=True``), new head; 16x112."""
    return VideoResNet3D(num_classes, arch="r3d_18", pretrained=pretrained, model_name="r3d_18", **kwargs)


@register_model(data_config=KINETICS_CONFIG)
def r2plus1d_18(*, num_classes: int, pretrained: bool = False, **kwargs) -> VideoResNet3D:
    """torchvision R(2+1)D-18 (seed 001; Kinetics-400 weights with ``pretrained=True``); 16x112."""
    return VideoResNet3D(num_classes, arch="r2plus1d_18", pretrained=pretrained, model_name="r2plus1d_18",
                         **kwargs)


@register_model(data_config=KINETICS_CONFIG)
def r3d_18_late_fusion(*, num_classes: int, pretrained: bool = False, **kwargs) -> LateFusion:
    """Seed 004: R3D-18 on S=4 segments of a 16x112 clip, logits averaged."""
    return LateFusion(num_classes, arch="r3d_18", pretrained=pretrained, model_name="r3d_18_late_fusion",
                      **kwargs)
