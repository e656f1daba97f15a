"""A plain model registry in the manner of timm.

Factories are decorated with ``@register_model`` (or ``@register_model(data_config=...)``);
the function name is the model name. ``create_model`` builds one, optionally loading local
weights, and attaches its :class:`~accel.data.config.DataConfig` (``model.data_config``):
the input its weights expect (mean, std, clip length, size, which weights), as timm's
pretrained configs do. ``resolve_data_config(model_or_name)`` returns it.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from accel.data.config import DataConfig

__all__ = ["register_model", "create_model", "list_models", "is_model", "load_weights",
           "resolve_model_name", "resolve_data_config", "MODEL_ALIASES", "FrameSplit", "frame_split",
           "has_frame_split"]

_model_entrypoints: dict[str, Callable[..., nn.Module]] = {}
_model_configs: dict[str, DataConfig] = {}
_frame_split_models: set[str] = set()

# The seed projects' own names for the registered models (matched case-insensitively,
# dashes as underscores), so their configs and commands keep working.
MODEL_ALIASES = {
    "tsm_resnet": "tsm_resnet18", "tsm": "tsm_resnet18",                      # seed 001
    "r2plus1d": "r2plus1d_18", "r21d": "r2plus1d_18",                         # seed 001
    "cnnlstm": "cnn_lstm",                                                    # seed 001
    "res_lstm": "resnet18_lstm",                                              # seed 003's RES_LSTM
    "resnext_lstm": "resnext50_lstm",                                         # seed 002
    "late_fusion": "r3d_18_late_fusion", "latefusionvideoresnet": "r3d_18_late_fusion",  # seed 004
    "r3d": "r3d_18",
}


def register_model(fn: Callable[..., nn.Module] | None = None, *, data_config: DataConfig | None = None,
                   frame_split: bool = False):
    """Register a factory ``fn(*, num_classes, pretrained=False, **kwargs)`` under ``fn.__name__``.

    ``@register_model(data_config=DataConfig(...))`` records the input the model expects;
    plain ``@register_model`` records the default ``DataConfig()`` (ImageNet, 16x112).
    ``frame_split=True`` declares that the model's frames meet only after its frame encoder:
    it owns ``encode_frames((N, C, H, W)) -> (N, F)`` and ``head_from_features((B, T, F)) ->
    logits``, and ``forward`` is exactly their composition (live inference keeps a ring of
    features and runs the encoder once per new frame; see :func:`frame_split`).
    """
    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _model_entrypoints:
            raise ValueError(
                f"model {name!r} is already registered (by {_model_entrypoints[name].__module__}); "
                f"known models: {', '.join(list_models())}"
            )
        if data_config is not None and not isinstance(data_config, DataConfig):
            raise TypeError(f"data_config of {name!r} must be a DataConfig, got {type(data_config).__name__}")
        _model_entrypoints[name] = fn
        _model_configs[name] = data_config if data_config is not None else DataConfig()
        if frame_split:
            _frame_split_models.add(name)
        return fn

    return register(fn) if fn is not None else register


def resolve_data_config(model_or_name: nn.Module | str, **overrides) -> DataConfig:
    """The :class:`DataConfig` of a model (built by ``create_model``) or of a registered name
    (aliases too), with ``overrides`` (``mean``, ``std``, ``clip_len``, ``size``, ``weights``;
    None keeps the model's), like ``timm.data.resolve_data_config``. A DDP or
    ``torch.compile`` wrapper is looked through; a module with no config gets the default
    ``DataConfig()`` (ImageNet)."""
    if isinstance(model_or_name, str):
        cfg = _model_configs[resolve_model_name(model_or_name)]
    else:
        m = model_or_name
        while True:  # torch.compile's wrapper, DistributedDataParallel / DataParallel
            inner = getattr(m, "_orig_mod", None)
            if inner is None and isinstance(m, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
                inner = m.module
            if not isinstance(inner, nn.Module):
                break
            m = inner
        cfg = getattr(m, "data_config", None)
        if cfg is None:
            cfg = DataConfig()
        elif not isinstance(cfg, DataConfig):
            raise TypeError(f"{type(m).__name__}.data_config is a {type(cfg).__name__}, not a DataConfig")
    return cfg.replace(**overrides)


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell-style ``pattern`` (``"*lstm"``)."""
    names = sorted(_model_entrypoints)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def resolve_model_name(name: str) -> str:
    """The registered name for ``name`` or one of its aliases; ValueError listing the names."""
    if name in _model_entrypoints:
        return name
    key = name.strip().lower().replace("-", "_")
    key = MODEL_ALIASES.get(key, key)
    if key in _model_entrypoints:
        return key
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())} "
                     f"(aliases: {', '.join(sorted(MODEL_ALIASES))})")


def is_model(name: str) -> bool:
    try:
        resolve_model_name(name)
    except ValueError:
        return False
    return True


def has_frame_split(name: str) -> bool:
    """Whether the registered model ``name`` (or alias) declares an encoder / head split."""
    return resolve_model_name(name) in _frame_split_models


@dataclass(frozen=True)
class FrameSplit:
    """A frame model cut between its per-frame encoder and its temporal head:
    ``head(stack of encode(frame) over the window) == model(window)``."""

    encode: Callable[[torch.Tensor], torch.Tensor]   # (N, C, H, W) -> (N, F)
    head: Callable[[torch.Tensor], torch.Tensor]     # (B, T, F) -> (B, num_classes)


def frame_split(model: nn.Module) -> FrameSplit | None:
    """The encoder / head split of a model built by ``create_model`` whose registration
    declares one (``frame_split=True``), else None (the model mixes frames inside: TSM,
    3-D convolutions, attention). Forward hooks (``binary_logit``'s two-class view) run on
    the head's output, as they do on ``forward``'s."""
    m = getattr(model, "_orig_mod", model)
    if getattr(m, "registry_name", None) not in _frame_split_models:
        return None
    hooks = list(m._forward_hooks.values())

    def head(feats: torch.Tensor) -> torch.Tensor:
        out = m.head_from_features(feats)
        for hook in hooks:
            result = hook(m, (feats,), out)
            out = out if result is None else result
        return out

    return FrameSplit(encode=m.encode_frames, head=head)


def _two_class_view(module: nn.Module, inputs, logit: torch.Tensor) -> torch.Tensor:
    """(B, 1) logit z -> (B, 2) logits [0, z]: softmax of them is (1 - sigmoid z, sigmoid z),
    so metrics, argmax and exports see an ordinary two-class model."""
    return torch.cat([torch.zeros_like(logit), logit], dim=1)


def create_model(
    name: str,
    *,
    num_classes: int,
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model.

    ``pretrained=True`` downloads the trunk's weights through torchvision's weights
    API (ImageNet for 2-D trunks, Kinetics-400 for 3-D ones). ``checkpoint_path``
    loads local weights instead of downloading: either a checkpoint of this very
    model (a plain state dict, or a dict with a ``"model"`` key, as ``train.py``
    writes) or the torchvision weights file of its trunk (e.g. ``resnet18-f37072fd.pth``;
    its classifier is dropped). ``binary_logit=True`` (two classes only) gives the model one
    output logit, seen as ``[0, z]`` (BCE with one logit, as seed 003 trains). Names may be
    aliases (``MODEL_ALIASES``). Other keyword arguments go to the model's factory.
    """
    name = resolve_model_name(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    binary_logit = bool(kwargs.pop("binary_logit", False))
    if binary_logit and num_classes != 2:
        raise ValueError(f"binary_logit needs exactly 2 classes, got {num_classes}")
    # A local file replaces the download: no network is touched when one is given.
    model = _model_entrypoints[name](
        num_classes=1 if binary_logit else num_classes, pretrained=pretrained and checkpoint_path is None,
        **kwargs
    )
    # The registered config, unless the model derived its own from its options (vivit's
    # num_frames / image_size).
    if "data_config" not in vars(model):
        model.data_config = _model_configs[name]
    model.registry_name = name  # what frame_split() looks up
    if binary_logit:
        model.register_forward_hook(_two_class_view)
    if checkpoint_path is not None:
        load_weights(model, checkpoint_path)
    return model


_STRIP_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile wrappers
_CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.")


def _unwrap_state_dict(obj) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("checkpoint is neither a state dict nor a dict with a 'model' state dict")
    out = {}
    for k, v in obj.items():
        changed = True
        while changed:
            changed = False
            for p in _STRIP_PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def _key_diff(expected, given, n=5) -> str:
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    return (
        f"{len(missing)} missing (e.g. {missing[:n]}), {len(unexpected)} unexpected (e.g. {unexpected[:n]})"
    )


def load_weights(model: nn.Module, checkpoint_path) -> nn.Module:
    """Load local weights into ``model`` (see ``create_model``); returns the model."""
    obj = torch.load(checkpoint_path, weights_only=True, map_location="cpu")
    sd = _unwrap_state_dict(obj)
    own = model.state_dict()
    if set(sd) == set(own):
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise ValueError(
                f"checkpoint {checkpoint_path} matches the keys of this model but not its shapes "
                f"(trained with another num_classes or options?): {e}"
            ) from e
        return model
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        trunk_sd = {k: v for k, v in sd.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
        if set(trunk_sd) == set(backbone.state_dict()):
            try:
                backbone.load_state_dict(trunk_sd, strict=True)
            except RuntimeError as e:
                raise ValueError(f"checkpoint {checkpoint_path} has the trunk's keys but not its shapes: {e}") from e
            return model
        trunk_msg = f"; as trunk weights: {_key_diff(backbone.state_dict(), trunk_sd)}"
    else:
        trunk_msg = ""
    raise ValueError(
        f"checkpoint {checkpoint_path} fits neither {type(model).__name__} "
        f"({_key_diff(own, sd)}){trunk_msg}"
    )
