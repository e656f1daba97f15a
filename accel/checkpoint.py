"""Full training checkpoints as plain state dicts, loadable with ``weights_only=True``.

A checkpoint holds only tensors and plain Python values (dict, list, tuple, str, int,
float, bool, None), so ``torch.load(path, weights_only=True)`` reads it without unpickling
code. Written atomically (temporary file + rename): a run killed while saving keeps the
previous file intact.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_VERSION = 1


def plain(value: Any) -> Any:
    """Make ``value`` safe for a weights-only checkpoint: Paths and other objects -> str."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, dict):
        return {(k if isinstance(k, (str, int)) else str(k)): plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def rng_state() -> dict:
    """Every RNG a training step can touch: torch (CPU, CUDA), numpy, Python ``random``."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write ``state`` (made plain) to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(plain({"version": CHECKPOINT_VERSION, **state}), tmp)
    os.replace(tmp, path)
    return path


def link_or_copy(src: str | Path, dst: str | Path) -> Path:
    """Make ``dst`` the same file as ``src`` (a hard link where the file system allows it,
    else a copy), replacing ``dst`` atomically. A later :func:`save_checkpoint` to ``src``
    writes a new file, so ``dst`` keeps this content."""
    import shutil

    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or not one of ours."""


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise CheckpointError(f"{path}: cannot be read as a weights-only checkpoint "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a vidaccel training checkpoint (no 'model' entry)")
    return ckpt


def model_from_checkpoint(ckpt: dict) -> torch.nn.Module:
    """Rebuild the model a training checkpoint records (name, classes, options) and load its
    weights, on CPU, in eval mode."""
    from models import create_model, is_model

    name = ckpt.get("model_name")
    if not name or not is_model(name):
        raise CheckpointError(f"checkpoint records model {name!r}, which is not registered here")
    model = create_model(name, num_classes=len(ckpt["classes"]), pretrained=False,
                         **dict(ckpt.get("model_kwargs") or {}))
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit {name}: {str(e).splitlines()[0]}") from None
    return model.eval()
