"""Shared pieces: the base class, the free (B,C,T,H,W) -> (B*T,C,H,W) view, pretrained loading."""

from __future__ import annotations

import contextlib
import socket
import urllib.error

import torch
from torch import nn

from accel.data.config import DataConfig
from accel.data.transforms import frames_view
from accel.train.optim import param_groups  # re-exported: models' users import it from here

__all__ = ["VideoClassifier", "frames_view", "param_groups", "load_pretrained_trunk", "PretrainedUnavailable"]


class PretrainedUnavailable(RuntimeError):
    """The pretrained weights could not be fetched (no network, no cached file)."""


class VideoClassifier(nn.Module):
    """Base class: takes a float (B, C, T, H, W) batch, returns (B, num_classes) logits.

    Subclasses set ``self.backbone`` (the trunk pretrained weights load into, torchvision's
    key layout, classifier removed); everything else counts as head for ``param_groups``.
    """

    # The input the weights expect; ``create_model`` sets the registered one (one source:
    # ``models.resolve_data_config``). The class default is for models built directly.
    data_config: DataConfig = DataConfig()
    backbone: nn.Module

    # Read-only views of ``data_config``, kept for the README's model interface.
    @property
    def mean(self) -> tuple[float, ...]:
        return self.data_config.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.data_config.std

    @property
    def default_clip_len(self) -> int:
        return self.data_config.clip_len

    @property
    def default_size(self) -> int:
        return self.data_config.size

    def __init__(self) -> None:
        super().__init__()
        self._backbone_frozen = False

    # -- freezing -------------------------------------------------------------------
    def freeze_backbone(self, freeze: bool = True) -> "VideoClassifier":
        """Stop gradients into the trunk and keep its BatchNorm statistics fixed (eval mode)."""
        self._backbone_frozen = freeze
        for p in self.backbone.parameters():
            p.requires_grad_(not freeze)
        self.train(self.training)
        return self

    @property
    def backbone_frozen(self) -> bool:
        return self._backbone_frozen

    def train(self, mode: bool = True):
        super().train(mode)
        if self._backbone_frozen:
            self.backbone.eval()  # frozen features: BatchNorm must not drift either
        return self

    # -- optimiser groups ------------------------------------------------------------
    def param_groups(self, lr: float, backbone_lr_mult: float = 0.1, weight_decay: float | None = None):
        """Two optimiser groups: the trunk at ``lr * backbone_lr_mult``, the rest at ``lr``.

        Frozen parameters are left out. Each group carries a ``"name"`` for logging.
        """
        return param_groups(self, lr=lr, backbone_lr=lr * backbone_lr_mult, weight_decay=weight_decay)


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    """Bound every blocking socket call of a download, so no network fails fast, not after minutes."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds if old is None else min(old, seconds))
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def load_pretrained_trunk(trunk: nn.Module, weights, model_name: str, timeout_s: float = 20.0) -> None:
    """Load a torchvision weights enum (``ResNet18_Weights.IMAGENET1K_V1``...) into ``trunk``.

    ``trunk`` is the torchvision model with its classifier replaced by ``nn.Identity``,
    so the classifier's keys are dropped. torchvision looks in the hub cache
    (``$TORCH_HOME/hub/checkpoints``) first and downloads otherwise; with no network the
    error says how to get the weights in by hand.
    """
    try:
        with _socket_timeout(timeout_s):
            sd = weights.get_state_dict(progress=False, check_hash=True)
    except (urllib.error.URLError, OSError, TimeoutError, RuntimeError) as e:
        fname = weights.url.rsplit("/", 1)[-1]
        raise PretrainedUnavailable(
            f"cannot fetch pretrained weights {weights} for {model_name!r} ({e}). "
            f"Without network, download {weights.url} elsewhere and pass it as "
            f"create_model({model_name!r}, num_classes=..., checkpoint_path='/path/to/{fname}') "
            f"(a checkpoint of the whole model works too), or put the file into "
            f"{torch.hub.get_dir()}/checkpoints/ and keep pretrained=True."
        ) from e
    sd = {k: v for k, v in sd.items() if not k.startswith(("fc.", "classifier."))}
    trunk.load_state_dict(sd, strict=True)
