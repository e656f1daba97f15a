"""The model zoo: every seed model behind one timm-style registry.

    from models import create_model, list_models
    m = create_model("tsm_resnet18", num_classes=7, pretrained=False)

Every model takes a float (B, C, T, H, W) batch (channels_last_3d preferred) and returns
(B, num_classes) logits; it has ``default_clip_len`` / ``default_size`` (its usual input),
``mean`` / ``std`` (the normalisation its pretrained weights expect), a ``backbone``
submodule, ``freeze_backbone()`` and ``param_groups(lr, backbone_lr_mult)``.
"""

from .registry import (MODEL_ALIASES, create_model, is_model, list_models, load_checkpoint, register_model,
                       resolve_model_name)
from .base import PretrainedUnavailable, VideoClassifier, frames_view, param_groups

# Importing the modules registers their models.
from . import frame_models, tsm, video3d, vivit  # noqa: E402,F401

__all__ = [
    "register_model",
    "create_model",
    "list_models",
    "is_model",
    "resolve_model_name",
    "MODEL_ALIASES",
    "load_checkpoint",
    "param_groups",
    "frames_view",
    "VideoClassifier",
    "PretrainedUnavailable",
]
