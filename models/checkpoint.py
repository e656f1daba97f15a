"""The model a training checkpoint was made for, rebuilt from what it records (name, classes,
model options) with its weights: here rather than in ``accel``, which never imports the models."""
from __future__ import annotations

from pathlib import Path

import torch

from accel.train.checkpoint import CheckpointError, load_model_state


def model_from_checkpoint(ckpt: dict, *, source: str | Path = "checkpoint") -> torch.nn.Module:
    """Rebuild the model a training checkpoint records (name, classes, options) and load its
    weights, on CPU, in eval mode."""
    from models import create_model, is_model

    name = ckpt.get("model_name")
    if not name or not is_model(name):
        raise CheckpointError(f"{source}: records model {name!r}, which is not registered here")
    classes = ckpt.get("classes")
    if not isinstance(classes, (list, tuple)) or len(classes) < 2:
        raise CheckpointError(f"{source}: no list of classes (entry 'classes': {classes!r})")
    options = dict(ckpt.get("model_kwargs") or {})
    try:
        model = create_model(name, num_classes=len(classes), pretrained=False, **options)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: {name} does not take the recorded model options "
                              f"{options} ({' '.join(str(e).split())})") from None
    load_model_state(model, ckpt, source=source)
    return model.eval()
