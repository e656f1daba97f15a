"""The model zoo: every seed model behind one timm-style registry.

    from models import create_model, list_models
    m = create_model("tsm_resnet18", num_classes=7, pretrained=False)

Every model takes a float (B, C, T, H, W) batch (channels_last_3d preferred) and returns
(B, num_classes) logits; it carries its ``data_config`` (an :class:`accel.data.config.DataConfig`:
the normalisation its weights expect, its usual clip length and size, which weights;
``resolve_data_config(model_or_name)``), with ``mean`` / ``std`` / ``default_clip_len`` /
``default_size`` read from it, a ``backbone`` submodule, ``freeze_backbone()`` and
``param_groups(lr, backbone_lr_mult)`` (``accel.train.optim.param_groups`` for any model).
"""

# Importing the modules registers their models.
from . import frame_models, tsm, video3d, vivit  # noqa: E402,F401
from .base import PretrainedUnavailable, VideoClassifier, frames_view, param_groups
from .registry import (
    MODEL_ALIASES,
    FrameSplit,
    create_model,
    frame_split,
    has_frame_split,
    is_model,
    list_models,
    load_weights,
    register_model,
    resolve_data_config,
    resolve_model_name,
)

__all__ = [
    "register_model",
    "create_model",
    "list_models",
    "is_model",
    "resolve_model_name",
    "resolve_data_config",
    "MODEL_ALIASES",
    "load_weights",
    "param_groups",
    "frames_view",
    "VideoClassifier",
    "PretrainedUnavailable",
    "FrameSplit",
    "frame_split",
    "has_frame_split",
]
