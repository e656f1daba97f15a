"""TSM: Temporal Shift Module on a ResNet-18 (Lin et al., ICCV 2019), residual shift.

Before the first conv of every residual branch, 1/shift_div of the channels move one
frame back in time, 1/shift_div one frame forward, the rest stay; frames past the ends
are zeros. The identity path is not shifted. Zero FLOPs, zero parameters: the cost of a
per-frame ResNet-18 with temporal mixing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from accel.data.config import DataConfig

from .base import VideoClassifier, frames_view
from .frame_models import build_resnet_trunk
from .registry import register_model

__all__ = ["temporal_shift", "TSMResNet"]


def temporal_shift(x: torch.Tensor, num_frames: int, shift_div: int = 8) -> torch.Tensor:
    """Shift channels of a (N*T, C, H, W) frame batch along time.

    With ``fold = C // shift_div``: channels ``[0, fold)`` of frame t come from frame t+1,
    channels ``[fold, 2*fold)`` from frame t-1, the rest are unchanged; frames out of range
    read zeros. ``shift_div=0`` disables the shift. Views, pads and one concat, no loop
    over frames and no data-dependent control flow, so it compiles and exports. The result
    is channels-last.
    """
    if shift_div == 0:
        return x
    nt, c, h, w = x.shape
    if nt % num_frames:
        raise ValueError(f"batch of {nt} frames is not a multiple of num_frames={num_frames}")
    fold = c // shift_div
    # Built functionally (pad + cat), not by slice-assigning into empty_like: Inductor
    # mis-compiles the partial writes (NaN logits from compiled/AOTI TSM on CPU).
    # Working on the (N, T, H, W, C) view keeps channels-last input copy-free and makes
    # the output channels-last whatever the input.
    xp = x.view(nt // num_frames, num_frames, c, h, w).permute(0, 1, 3, 4, 2)
    from_next = F.pad(xp[:, 1:, :, :, :fold], (0, 0, 0, 0, 0, 0, 0, 1))  # zero frame at the end
    from_prev = F.pad(xp[:, :-1, :, :, fold : 2 * fold], (0, 0, 0, 0, 0, 0, 1, 0))  # zero at start
    out = torch.cat([from_next, from_prev, xp[:, :, :, :, 2 * fold :]], dim=-1)
    return out.permute(0, 1, 4, 2, 3).reshape(nt, c, h, w)


def _shifted_block(block: nn.Module, x: torch.Tensor, num_frames: int, shift_div: int) -> torch.Tensor:
    """A torchvision BasicBlock/Bottleneck with the shift on its residual branch."""
    identity = x if block.downsample is None else block.downsample(x)
    out = temporal_shift(x, num_frames, shift_div)
    out = block.relu(block.bn1(block.conv1(out)))
    out = block.bn2(block.conv2(out))
    if isinstance(block, Bottleneck):
        out = block.bn3(block.conv3(block.relu(out)))
    return block.relu(out + identity)


class TSMResNet(VideoClassifier):
    """ResNet trunk with a temporal shift on every residual branch, features averaged over
    time, then Dropout + Linear.

    ``backbone`` is a plain torchvision ResNet (``fc = Identity``): ImageNet weights load
    as they are, and its state dict matches ``tsn_resnet18``'s. ``num_segments``: when
    set, the clip length the model accepts (a clear error otherwise); ``None`` takes T
    from the input. ``shift_div``: 1/shift_div of the channels shift each way; 0 disables
    the shift (the model then equals TSN, the per-frame average).
    """

    def __init__(self, num_classes: int, *, arch: str = "resnet18", pretrained: bool = False,
                 shift_div: int = 8, num_segments: int | None = None, dropout: float = 0.5,
                 freeze_backbone: bool = False, model_name: str = "tsm_resnet18") -> None:
        super().__init__()
        if shift_div < 0 or shift_div == 1:
            raise ValueError(f"shift_div must be 0 (off) or >= 2, got {shift_div}")
        self.backbone, feat_dim = build_resnet_trunk(arch, pretrained=pretrained, model_name=model_name)
        for layer in (self.backbone.layer1, self.backbone.layer2, self.backbone.layer3, self.backbone.layer4):
            for block in layer:
                assert isinstance(block, (BasicBlock, Bottleneck))
        self.shift_div = shift_div
        self.num_segments = num_segments
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feat_dim, num_classes))
        if freeze_backbone:
            self.freeze_backbone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], x.shape[2]
        if self.num_segments is not None and t != self.num_segments:
            raise ValueError(f"this TSM was built for num_segments={self.num_segments} frames, got a clip of {t}")
        bb = self.backbone
        f = bb.maxpool(bb.relu(bb.bn1(bb.conv1(frames_view(x)))))
        for layer in (bb.layer1, bb.layer2, bb.layer3, bb.layer4):
            for block in layer:
                f = _shifted_block(block, f, t, self.shift_div)
        f = torch.flatten(bb.avgpool(f), 1)  # (B*T, F)
        return self.head(f.reshape(b, t, -1).mean(dim=1))


@register_model(data_config=DataConfig(clip_len=16, size=112, weights="imagenet"))
def tsm_resnet18(*, num_classes: int, pretrained: bool = False, **kwargs) -> TSMResNet:
    """Laparoscopic actions (seed 001): TSM-ResNet-18, 1/8 channels shifted each way, 16x112."""
    return TSMResNet(num_classes, pretrained=pretrained, **kwargs)
