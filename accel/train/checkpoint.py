"""Full training checkpoints as plain state dicts, loadable with ``weights_only=True``.

A checkpoint holds only tensors and plain Python values (dict, list, tuple, str, int,
float, bool, None), so ``torch.load(path, weights_only=True)`` reads it without unpickling
code. Written atomically: a temporary file beside the target, flushed to disk (fsync), then
renamed over it, so a run killed while saving keeps the previous file intact; a temporary
file such a kill leaves behind is removed by the next save to the same folder.

Every problem with a checkpoint is a :class:`CheckpointError` with one line that says what
does not match (missing entries, missing or unexpected weights, the first shape mismatch,
the model it was made for).
"""
from __future__ import annotations

import errno
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping

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


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete ``.NAME.tmpPID`` files beside ``path`` left by a save that was killed: those
    of this process (an earlier failed save) and of processes that no longer run. A live
    process's temporary (a save in progress elsewhere) is kept."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.tmp(\d+)$")
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        m = pattern.match(entry.name)
        if m and (int(m.group(1)) == os.getpid() or not _pid_alive(int(m.group(1)))):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write ``state`` (made plain) to ``path`` atomically and durably; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _temporary(path)
    state = plain({"version": CHECKPOINT_VERSION, **state})
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them the file
    except OSError as e:
        tmp.unlink(missing_ok=True)  # the file it would have replaced is untouched
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointWriteError(f"{path.parent}: no space left to write {path.name}: it needs about "
                                       f"{_mb(state_bytes(state))} MB, {_mb(free_bytes(path.parent))} MB "
                                       "are free; the previous checkpoint is intact") from None
        raise CheckpointWriteError(f"{path}: cannot be written ({e.strerror or e}); the previous "
                                   "checkpoint is intact") from None
    os.replace(tmp, path)
    _fsync_folder(path.parent)
    return path


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full...): one line naming the folder."""


def state_bytes(value: Any) -> int:
    """About what ``value`` takes on disk: the bytes of its tensors (the rest is small)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(state_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(state_bytes(v) for v in value)
    return 0


def free_bytes(folder: Path) -> int:
    import shutil

    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f}"


def link_or_copy(src: str | Path, dst: str | Path) -> Path:
    """Make ``dst`` the same file as ``src`` (a hard link where the file system allows it,
    else a copy), replacing ``dst`` atomically. A later :func:`save_checkpoint` to ``src``
    writes a new file, so ``dst`` keeps this content."""
    import shutil

    src, dst = Path(src), Path(dst)
    remove_stale_temporaries(dst)
    tmp = _temporary(dst)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.replace(tmp, dst)
    _fsync_folder(dst.parent)
    return dst


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or not one of ours."""


# What train.py --resume and evaluate.py read from a checkpoint.
RESUME_ENTRIES = ("model", "model_name", "classes", "optimizer", "schedule", "selector", "epoch", "rng")
EVAL_ENTRIES = ("model", "model_name", "classes", "epoch")


def _read_error(e: Exception) -> str:
    """torch.load's failure in a few words, without its advice to load unsafely."""
    text = str(e)
    if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in text:
        found = re.search(r"unsupported GLOBAL (\S+)|Unsupported global: GLOBAL (\S+)", text)
        if found:
            return (f"refused: it holds pickled Python objects other than tensors and plain "
                    f"values ({(found.group(1) or found.group(2)).rstrip('.,')}), which are never loaded")
        # not a pickle at all (or a broken one): torch wraps the unpickler's own complaint
        why = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", text, re.S)
        return f"cannot be read as a checkpoint ({why.group(1).strip() if why else 'not a torch.save file'})"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(e).__name__)
    first = re.split(r"(?<=[.:]) (?=This is an internal|Re-running|If you)", first)[0]
    return f"cannot be read as a weights-only checkpoint ({type(e).__name__}: {first})"


def read_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu",
                    require: tuple[str, ...] = ("model",)) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``);
    ``require``: entries it must have (e.g. :data:`RESUME_ENTRIES`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise CheckpointError(f"{path}: {_read_error(e)}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a vidaccel training checkpoint (no 'model' entry)")
    missing = [k for k in require if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: missing entries {', '.join(map(repr, missing))} "
                              f"(a train.py checkpoint has them){_made_for(ckpt)}")
    return ckpt


def _made_for(ckpt: dict) -> str:
    name = ckpt.get("model_name")
    return f"; it was made for {name} with {len(ckpt['classes'])} classes" \
        if name and isinstance(ckpt.get("classes"), (list, tuple)) else (f"; it was made for {name}" if name else "")


def _listed(keys: list[str], limit: int = 3) -> str:
    more = f", ... (+{len(keys) - limit})" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def state_dict_mismatch(model: torch.nn.Module, state: dict) -> str | None:
    """What keeps ``state`` from loading into ``model`` strictly (None: it fits)."""
    if not isinstance(state, dict):
        return f"the weights are a {type(state).__name__}, not a state dict"
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_listed(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_listed(unexpected)})")
    for k, v in state.items():
        if k in own and isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(own[k].shape):
            parts.append(f"first shape mismatch: {k} is {tuple(v.shape)} in the checkpoint, "
                         f"{tuple(own[k].shape)} in the model")
            break
    return "; ".join(parts) or None


def load_model_state(model: torch.nn.Module, ckpt: dict, *, source: str | Path = "checkpoint") -> None:
    """Load ``ckpt["model"]`` into ``model`` strictly, or raise one line saying what differs."""
    problem = state_dict_mismatch(model, ckpt["model"])
    if problem is None:
        try:
            model.load_state_dict(ckpt["model"], strict=True)
        except RuntimeError as e:  # e.g. a dtype that cannot be copied
            problem = " ".join(str(e).split())[:300]
    if problem is not None:
        raise CheckpointError(f"{source}: weights do not fit {type(model).__name__}: {problem}"
                              f"{_made_for(ckpt)}")


# --------------------------------------------------------------------------- resume policy
# Options a resumed run takes from its checkpoint unless given again. Those that change the
# weights' meaning must match; the others may differ, and the difference is stated.
RESUMED = ("model", "loss", "clip_len", "size", "decode_size", "train_sampling", "val_sampling",
           "test_sampling", "frame_stride", "data_dir", "val_dir", "test_dir", "video_root",
           "path_column", "label_column", "val_fraction", "batch_size", "epochs", "lr", "opt",
           "weight_decay", "sched", "warmup_epochs", "min_lr_ratio", "accum_steps", "label_smoothing",
           "class_weights", "balanced_sampler", "sampler_tau", "focal_gamma", "augment", "loss_weight",
           "patience", "seed", "log_dir", "model_dir")
RESUME_MUST_MATCH = ("model", "loss")


@dataclass(frozen=True)
class Replaced:
    """An option given again on resume with another value than the checkpoint's (kept)."""

    option: str
    value: Any
    saved: Any


class ResumeMismatch(CheckpointError):
    """A resumed run asks for an ``option`` value its checkpoint's weights cannot have:
    ``value`` asked for, ``saved`` recorded (``option="model_kwargs"``: the model options)."""

    def __init__(self, option: str, value: Any, saved: Any) -> None:
        self.option, self.value, self.saved = option, value, saved
        super().__init__(f"the checkpoint was trained with {option}={saved!r}, not {value!r}")

    def __reduce__(self):
        return type(self), (self.option, self.value, self.saved)


def resumed_options(ck: dict, options: Mapping[str, Any], given: Collection[str]
                    ) -> tuple[dict[str, Any], list[Replaced]]:
    """What a run resumed from ``ck`` changes in its ``options``: each of :data:`RESUMED` not
    ``given`` again takes the checkpoint's recorded value (``log_dir`` / ``model_dir`` not when
    a new output place is given); one given with another value is kept and listed, or refused
    with :class:`ResumeMismatch` for :data:`RESUME_MUST_MATCH`."""
    saved = dict(ck.get("config") or ck.get("args") or {})  # "args": checkpoints before "config"
    saved["model"] = ck.get("model_name", saved.get("model"))
    new_output = bool(set(given) & {"out_dir", "log_dir", "model_dir"})
    changes: dict[str, Any] = {}
    replaced = []
    for name in RESUMED:
        if name not in saved or (saved[name] is None and name not in given):
            continue
        if name in ("log_dir", "model_dir") and new_output:
            continue  # a new output place was given: write there
        if name not in given:
            changes[name] = saved[name]
        elif str(options[name]) != str(saved[name]):
            if name in RESUME_MUST_MATCH:
                raise ResumeMismatch(name, options[name], saved[name])
            replaced.append(Replaced(name, options[name], saved[name]))
    return changes, replaced


def resumed_model_options(ck: dict, wanted: dict | None) -> dict:
    """The checkpoint's model options; ``wanted`` (options given again, None: none) must equal them."""
    kwargs = dict(ck.get("model_kwargs") or {})
    if wanted is not None and wanted != kwargs:
        raise ResumeMismatch("model_kwargs", wanted, kwargs)
    return kwargs
