"""Frame models: a 2-D CNN on every frame, then an LSTM (CNN+LSTM family) or an average (TSN).

The clip (B, C, T, H, W) is viewed as (B*T, C, H, W) by ``frames_view``: free for
channels-last-3d input, and channels-last 2-D for the trunk.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models as tvm

from accel.data.config import DataConfig

from .base import VideoClassifier, frames_view, load_pretrained_trunk
from .registry import register_model

__all__ = ["FrameClassifier", "CNNLSTM", "TSN", "build_resnet_trunk"]

# arch -> (constructor, ImageNet weights, feature width)
_TRUNKS = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1, 512),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1, 2048),
    "resnext50_32x4d": (tvm.resnext50_32x4d, tvm.ResNeXt50_32X4D_Weights.IMAGENET1K_V1, 2048),
}


def build_resnet_trunk(arch: str, *, pretrained: bool, model_name: str) -> tuple[nn.Module, int]:
    """torchvision ResNet with ``fc = Identity``: (N, 3, H, W) -> (N, features)."""
    if arch not in _TRUNKS:
        raise ValueError(f"unknown trunk {arch!r}; known: {', '.join(_TRUNKS)}")
    ctor, weights, dim = _TRUNKS[arch]
    trunk = ctor(weights=None)
    trunk.fc = nn.Identity()
    if pretrained:
        load_pretrained_trunk(trunk, weights, model_name)
    return trunk, dim


class FrameClassifier(VideoClassifier):
    """A model that sees one frame at a time, then combines them: ``forward`` is
    ``head_from_features(encode_frames(frames))``, the split ``models.frame_split`` uses live."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], x.shape[2]
        return self.head_from_features(self.encode_frames(frames_view(x)).reshape(b, t, -1))

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def head_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class CNNLSTM(FrameClassifier):
    """Per-frame CNN features -> LSTM -> temporal pooling -> head.

    pool: ``"mean"`` (average of the LSTM outputs over time), ``"last"`` (final hidden
    state; both directions when bidirectional) or ``"max"``.
    head_hidden: ``None`` gives Dropout + Linear; an int gives Linear + ReLU + Dropout + Linear.
    lstm_fp32: under autocast, run the LSTM in float32 (see ``_temporal``).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        arch: str = "resnet18",
        pretrained: bool = False,
        hidden_size: int = 512,
        num_layers: int = 1,
        bidirectional: bool = False,
        lstm_dropout: float = 0.0,
        pool: str = "mean",
        head_hidden: int | None = None,
        dropout: float = 0.0,
        freeze_backbone: bool = False,
        lstm_fp32: bool = True,
        model_name: str = "cnn_lstm",
    ) -> None:
        super().__init__()
        if pool not in ("mean", "last", "max"):
            raise ValueError(f"pool must be 'mean', 'last' or 'max', got {pool!r}")
        self.backbone, feat_dim = build_resnet_trunk(arch, pretrained=pretrained, model_name=model_name)
        self.lstm = nn.LSTM(
            feat_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=lstm_dropout if num_layers > 1 else 0.0,
        )
        self.pool = pool
        self.lstm_fp32 = lstm_fp32
        out_dim = hidden_size * (2 if bidirectional else 1)
        if head_hidden:
            self.head = nn.Sequential(
                nn.Linear(out_dim, head_hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                nn.Linear(head_hidden, num_classes),
            )
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(out_dim, num_classes))
        if freeze_backbone:
            self.freeze_backbone()

    # The encoder / head split for live inference (``models.frame_split``): a window that
    # slides by one frame needs the trunk for the new frame only.
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) frames -> (N, F) per-frame features."""
        return self.backbone(frames)

    def head_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, T, F) features of a window -> (B, num_classes) logits."""
        return self.head(self._temporal(feats))

    # The LSTM is kept out of torch.compile: dynamo graph-breaks on nn.LSTM anyway
    # (torch._dynamo.config.allow_rnn is False) and cuDNN's LSTM is already one fused
    # call, so compiling gains nothing there. Marking it explicitly keeps the break in one
    # known place: the trunk before it and the head after it still compile to graphs.
    # Under autocast it runs in float32: fp16 recurrences lose precision over 16-32
    # steps (saturating gates, accumulated rounding in the cell state) and the LSTM
    # is a small share of the FLOPs, so float32 costs little.
    @torch.compiler.disable
    def _temporal(self, feats: torch.Tensor) -> torch.Tensor:
        dev = feats.device.type
        if self.lstm_fp32 and dev != "meta" and torch.is_autocast_enabled(dev):
            with torch.autocast(device_type=dev, enabled=False):
                out, (h_n, _) = self.lstm(feats.float())
        else:
            out, (h_n, _) = self.lstm(feats)
        if self.pool == "mean":
            return out.mean(dim=1)
        if self.pool == "max":
            return out.amax(dim=1)
        dirs = 2 if self.lstm.bidirectional else 1
        return h_n[-dirs:].transpose(0, 1).reshape(feats.shape[0], -1)  # last layer, all directions


class TSN(FrameClassifier):
    """Order-blind baseline: per-frame ResNet logits averaged over time (TSN average consensus).

    Shuffling the frames does not change its output, so it shows what the temporal
    models gain from frame order. Its state dict matches ``tsm_resnet18``'s.
    """

    def __init__(self, num_classes: int, *, arch: str = "resnet18", pretrained: bool = False,
                 dropout: float = 0.5, freeze_backbone: bool = False, model_name: str = "tsn_resnet18") -> None:
        super().__init__()
        self.backbone, feat_dim = build_resnet_trunk(arch, pretrained=pretrained, model_name=model_name)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feat_dim, num_classes))
        if freeze_backbone:
            self.freeze_backbone()

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) frames -> (N, K) per-frame logits (the consensus is the head)."""
        return self.head(self.backbone(frames))

    def head_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, T, K) per-frame logits of a window -> their average."""
        return feats.mean(dim=1)


def _imagenet(clip_len: int, size: int) -> DataConfig:
    """ImageNet trunks: ImageNet statistics, at the model's usual clip length and size."""
    return DataConfig(clip_len=clip_len, size=size, weights="imagenet")


@register_model(data_config=_imagenet(32, 224), frame_split=True)
def resnet50_lstm(*, num_classes: int, pretrained: bool = False, **kwargs) -> CNNLSTM:
    """Laryngoscopy screening (seed 000): ImageNet ResNet-50 frame features, LSTM, 32-frame clips.

    The seed gives no LSTM size: hidden 512, one layer, final hidden state, dropout 0.5.
    """
    kw = dict(arch="resnet50", hidden_size=512, num_layers=1, pool="last", dropout=0.5)
    kw.update(kwargs)
    return CNNLSTM(num_classes, pretrained=pretrained, model_name="resnet50_lstm", **kw)


@register_model(data_config=_imagenet(20, 112), frame_split=True)
def resnext50_lstm(*, num_classes: int, pretrained: bool = False, **kwargs) -> CNNLSTM:
    """Deepfake detection (seed 002): ResNeXt-50 32x4d, LSTM 2048, averaged LSTM output, dropout 0.4.

    Clip length 20 at 112 px, as in the original project (the seed text fixes neither).
    """
    kw = dict(arch="resnext50_32x4d", hidden_size=2048, num_layers=1, pool="mean", dropout=0.4)
    kw.update(kwargs)
    return CNNLSTM(num_classes, pretrained=pretrained, model_name="resnext50_lstm", **kw)


@register_model(data_config=_imagenet(30, 224), frame_split=True)
def resnet18_lstm(*, num_classes: int, pretrained: bool = False, **kwargs) -> CNNLSTM:
    """Seed 003: frozen ResNet-18, 2-layer LSTM hidden 128, mean over 30 frames, FC 64 + ReLU + dropout."""
    kw = dict(arch="resnet18", hidden_size=128, num_layers=2, pool="mean", head_hidden=64,
              dropout=0.5, freeze_backbone=True)
    kw.update(kwargs)
    return CNNLSTM(num_classes, pretrained=pretrained, model_name="resnet18_lstm", **kw)


@register_model(data_config=_imagenet(16, 112), frame_split=True)
def cnn_lstm(*, num_classes: int, pretrained: bool = False, **kwargs) -> CNNLSTM:
    """Laparoscopic actions (seed 001): ResNet-18 encoder, LSTM 512, temporal mean, linear head.

    13.28 M parameters with 7 classes, as in the seed's table.
    """
    kw = dict(arch="resnet18", hidden_size=512, num_layers=1, pool="mean", dropout=0.0)
    kw.update(kwargs)
    return CNNLSTM(num_classes, pretrained=pretrained, model_name="cnn_lstm", **kw)


@register_model(data_config=_imagenet(16, 112), frame_split=True)
def tsn_resnet18(*, num_classes: int, pretrained: bool = False, **kwargs) -> TSN:
    """Per-frame ResNet-18, logits averaged over time: the order-blind baseline."""
    return TSN(num_classes, pretrained=pretrained, **kwargs)
