"""ViViT, factorised encoder (Arnab et al., ICCV 2021, "model 2"), small.

A spatial transformer encodes each frame's 16x16 patches into a frame token (its CLS
token); a temporal transformer then mixes the T frame tokens; the head reads the
temporal CLS token. dim 192, 4 + 4 layers, 3 heads, MLP 768: about 3.7 M parameters,
as in seed 001. Attention is ``F.scaled_dot_product_attention`` (flash / memory-efficient
kernels on GPU). Positional embeddings are learned for ``image_size`` and ``num_frames``
and interpolated for other input sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from accel.data.config import DataConfig

from .base import VideoClassifier, frames_view
from .registry import register_model

__all__ = ["ViViT"]


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        x = x + F.dropout(self.proj(a.transpose(1, 2).reshape(b, n, d)), self.dropout, self.training)
        return x + self.mlp(self.norm2(x))


class ViViTEncoder(nn.Module):
    def __init__(self, *, image_size: int, num_frames: int, patch_size: int, in_chans: int, dim: int,
                 spatial_depth: int, temporal_depth: int, heads: int, mlp_dim: int, dropout: float,
                 emb_dropout: float) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.patch_embed = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.spatial_cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.spatial_pos = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, dim))
        self.spatial = nn.Sequential(*[Block(dim, heads, mlp_dim, dropout) for _ in range(spatial_depth)])
        self.spatial_norm = nn.LayerNorm(dim)
        self.temporal_cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.temporal_pos = nn.Parameter(torch.zeros(1, num_frames + 1, dim))
        self.temporal = nn.Sequential(*[Block(dim, heads, mlp_dim, dropout) for _ in range(temporal_depth)])
        self.norm = nn.LayerNorm(dim)
        self.emb_drop = nn.Dropout(emb_dropout)
        for p in (self.spatial_cls, self.spatial_pos, self.temporal_cls, self.temporal_pos):
            nn.init.trunc_normal_(p, std=0.02)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def _spatial_pos(self, gh: int, gw: int) -> torch.Tensor:
        pos = self.spatial_pos
        if gh == self.grid and gw == self.grid:
            return pos
        cls, grid = pos[:, :1], pos[:, 1:]
        d = grid.shape[-1]
        grid = grid.reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, gh * gw, d)], dim=1)

    def _temporal_pos(self, t: int) -> torch.Tensor:
        pos = self.temporal_pos
        if t == pos.shape[1] - 1:
            return pos
        frames = F.interpolate(pos[:, 1:].transpose(1, 2), size=t, mode="linear", align_corners=False)
        return torch.cat([pos[:, :1], frames.transpose(1, 2)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = x.shape
        p = self.patch_embed(frames_view(x))  # (B*T, D, gh, gw)
        gh, gw = p.shape[-2:]
        p = p.flatten(2).transpose(1, 2)  # (B*T, N, D)
        tok = torch.cat([self.spatial_cls.expand(p.shape[0], -1, -1), p], dim=1) + self._spatial_pos(gh, gw)
        tok = self.spatial_norm(self.spatial(self.emb_drop(tok)))
        frames = tok[:, 0].reshape(b, t, -1)  # (B, T, D) frame tokens
        seq = torch.cat([self.temporal_cls.expand(b, -1, -1), frames], dim=1) + self._temporal_pos(t)
        seq = self.norm(self.temporal(self.emb_drop(seq)))
        return seq[:, 0]


class ViViT(VideoClassifier):
    """Factorised-encoder ViViT; ``backbone`` is the encoder, the head Dropout + Linear."""

    def __init__(self, num_classes: int, *, pretrained: bool = False, image_size: int = 112,
                 num_frames: int = 16, patch_size: int = 16, in_chans: int = 3, dim: int = 192,
                 spatial_depth: int = 4, temporal_depth: int = 4, heads: int = 3, mlp_dim: int = 768,
                 dropout: float = 0.0, emb_dropout: float = 0.0, freeze_backbone: bool = False) -> None:
        super().__init__()
        if pretrained:
            raise ValueError(
                "vivit has no pretrained weights (torchvision ships none for this small ViViT); "
                "use pretrained=False, or checkpoint_path='...' for weights you trained"
            )
        self.backbone = ViViTEncoder(
            image_size=image_size, num_frames=num_frames, patch_size=patch_size, in_chans=in_chans, dim=dim,
            spatial_depth=spatial_depth, temporal_depth=temporal_depth, heads=heads, mlp_dim=mlp_dim,
            dropout=dropout, emb_dropout=emb_dropout,
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_classes))
        nn.init.zeros_(self.head[1].bias)
        nn.init.trunc_normal_(self.head[1].weight, std=0.02)
        # No pretrained weights; ImageNet statistics, the clip its positions were built for.
        self.data_config = DataConfig(clip_len=num_frames, size=image_size, weights=None)
        if freeze_backbone:
            self.freeze_backbone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@register_model(data_config=DataConfig(clip_len=16, size=112, weights=None))
def vivit(*, num_classes: int, pretrained: bool = False, **kwargs) -> ViViT:
    """Small factorised ViViT (seed 001): 16x112 clips, 16x16 patches, about 3.7 M parameters."""
    return ViViT(num_classes, pretrained=pretrained, **kwargs)
