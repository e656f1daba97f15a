"""The training side of ``train.py``: data splits, optimiser, LR schedule, one training epoch.

Evaluation (clip- and video-level) lives in :mod:`accel.evaluation`; metrics in
:mod:`accel.metrics`; checkpoints in :mod:`accel.checkpoint`.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .manifests import (CsvOptions, Manifest, ManifestError, csv_has_split, expected_layout,
                        folder_manifest, near_miss_splits, read_source, split_source, stratified_split)


# --------------------------------------------------------------------------- data splits
@dataclass
class Splits:
    train: Manifest
    val: Manifest
    test: Manifest | None
    notes: list[str]

    @property
    def classes(self) -> list[str]:
        return self.train.classes


def _has_split(source: Path, split: str) -> bool:
    if source.suffix.lower() == ".csv":
        return csv_has_split(source, split)
    return split_source(source, split) is not None


def _source_manifest(source: Path, split: str | None, classes, options: CsvOptions) -> Manifest:
    """``split`` of a CSV or dataset folder; without ``split``, the whole CSV or class folders."""
    if split is not None and source.suffix.lower() != ".csv":
        found = split_source(source, split)
        if found is not None:
            return read_source(found, classes=classes, options=options)
    return read_source(source, split, classes=classes, options=options)


def load_other(source: str | Path, split: str, classes, options: CsvOptions = CsvOptions(),
               flag: str = "--test_dir") -> Manifest:
    """A separately given split (``--val_dir``, ``--test_dir``): a dataset folder or CSV with
    that split, else a folder of class folders or a whole CSV."""
    source = Path(source)
    if not source.exists():
        raise ManifestError(f"{flag} {source}: no such file or folder")
    return _source_manifest(source, split if _has_split(source, split) else None, classes, options)


def load_splits(data_dir: str | Path, test_dir: str | Path | None = None, *,
                val_dir: str | Path | None = None, val_fraction: float = 0.2, seed: int = 0,
                options: CsvOptions = CsvOptions()) -> Splits:
    """Train / val / test manifests from the layouts of :mod:`accel.manifests`.

    ``data_dir``: a folder with ``train/`` (and ``val/`` or ``validation/``, ``test/``; each a
    class-folder tree or holding its CSV), per-split CSVs ``train.csv`` / ``val.csv`` /
    ``test.csv``, a folder of class folders (all training data), or a CSV with an optional
    ``split`` column. Without a validation split (and no ``val_dir``), ``val_fraction`` of
    every class is split off the training data (stratified, seeded). ``test_dir``: default
    the ``test`` split of ``data_dir`` when it has one, else no test set.
    Raises :class:`ManifestError` with a one-line reason.
    """
    data_dir = Path(data_dir)
    notes: list[str] = []
    if not data_dir.exists():
        raise ManifestError(f"--data_dir {data_dir}: no such file or folder")
    is_csv = data_dir.suffix.lower() == ".csv"
    for name in near_miss_splits(data_dir):
        notes.append(f"{data_dir / name}/ is not read as a split (name it train, val, validation or test)")
    if _has_split(data_dir, "train"):
        train = _source_manifest(data_dir, "train", None, options)
    elif not is_csv and (_has_split(data_dir, "val") or _has_split(data_dir, "test")):
        raise ManifestError(f"{data_dir}: has a val or test split but no train/ folder or train.csv")
    elif is_csv:
        train = read_source(data_dir, options=options)
    else:
        try:
            train = folder_manifest(data_dir)
        except ManifestError:
            raise ManifestError(expected_layout(data_dir)) from None
    if len(train.classes) < 2:
        raise ManifestError(f"{train.source}: only one class ({train.classes[0]!r}); classification "
                            f"needs two or more. " + expected_layout(data_dir).split(": ", 1)[1])
    present = set(train.labels)
    missing = [c for i, c in enumerate(train.classes) if i not in present]
    if missing:
        raise ManifestError(f"{train.source}: no training samples for classes {missing}")
    if val_dir is not None:
        val = load_other(val_dir, "val", train.classes, options, "--val_dir")
    elif _has_split(data_dir, "val"):
        val = _source_manifest(data_dir, "val", train.classes, options)
    else:
        if not 0 < val_fraction < 1:
            raise ManifestError(f"{data_dir} has no val split and --val_fraction {val_fraction} "
                                "is not in (0, 1)")
        train, val = stratified_split(train, val_fraction, seed=seed)
        notes.append(f"no val split in {data_dir}: held out {len(val)} of the training "
                     f"samples (stratified, {val_fraction:.0%})")
        if len(val) == 0:
            raise ManifestError(f"{data_dir}: too few training samples to hold out a validation set")
    test = None
    if test_dir is not None:
        test = load_other(test_dir, "test", train.classes, options, "--test_dir")
    elif _has_split(data_dir, "test"):
        test = _source_manifest(data_dir, "test", train.classes, options)
    else:
        notes.append(f"no test split in {data_dir} and no --test_dir: no final test")
    return Splits(train, val, test, notes)


# --------------------------------------------------------------------------- optimisation
def build_optimizer(model: nn.Module, *, name: str, lr: float, weight_decay: float,
                    backbone_lr_mult: float = 1.0, momentum: float = 0.9) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD over the trainable parameters; the trunk (``model.backbone``) at
    ``lr * backbone_lr_mult`` (layer-wise LR for pretrained trunks)."""
    from models import param_groups

    groups = param_groups(model, lr=lr, backbone_lr=lr * backbone_lr_mult, weight_decay=weight_decay)
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters (everything frozen?)")
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True)
    raise ValueError(f"optimizer must be adamw, adam or sgd; got {name!r}")


class LRSchedule:
    """Per-step learning rate: linear warmup, then cosine annealing, reduce-on-plateau or
    constant. One object, one plain state dict (so a resumed run continues exactly).

    cosine: from the base LR to ``base * min_lr_ratio`` over the steps after warmup.
    plateau: multiply by ``plateau_factor`` when the validation loss has not improved for
    more than ``plateau_patience`` epochs (call :meth:`epoch_end`).
    """

    KINDS = ("cosine", "plateau", "constant")

    def __init__(self, optimizer: torch.optim.Optimizer, *, kind: str = "cosine", total_steps: int,
                 warmup_steps: int = 0, min_lr_ratio: float = 0.0, plateau_factor: float = 0.1,
                 plateau_patience: int = 2) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"scheduler must be one of {', '.join(self.KINDS)}; got {kind!r}")
        self.optimizer = optimizer
        self.kind = kind
        self.total_steps = max(1, total_steps)
        self.warmup_steps = max(0, warmup_steps)
        self.min_lr_ratio = min_lr_ratio
        self.plateau_factor, self.plateau_patience = plateau_factor, plateau_patience
        self.base_lrs = [g.setdefault("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.step_count = 0
        self.scale = 1.0
        self.best = math.inf
        self.bad_epochs = 0
        self._apply()

    def factor(self) -> float:
        s = self.step_count
        warm = (s + 1) / self.warmup_steps if s < self.warmup_steps else 1.0
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, max(0.0, (s - self.warmup_steps) / span))
            main = self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        else:
            main = self.scale
        return warm * main

    def _apply(self) -> None:
        f = self.factor()
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * f

    def step(self) -> None:
        """After every optimiser step."""
        self.step_count += 1
        self._apply()

    def epoch_end(self, val_loss: float) -> None:
        if self.kind != "plateau" or not math.isfinite(val_loss):
            return
        if val_loss < self.best * (1 - 1e-4):
            self.best, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.plateau_patience:
                self.scale *= self.plateau_factor
                self.bad_epochs = 0
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"kind": self.kind, "step_count": self.step_count, "scale": self.scale,
                "best": self.best, "bad_epochs": self.bad_epochs, "base_lrs": list(self.base_lrs),
                "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state: dict) -> None:
        self.step_count, self.scale = state["step_count"], state["scale"]
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]
        self.base_lrs = list(state["base_lrs"])
        self._apply()


# --------------------------------------------------------------------------- one epoch
class Meter:
    """Running sums on the device: one host sync per report, not per step."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.clips = 0

    def update(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        n = labels.shape[0]
        self.loss += loss.detach().double() * n
        self.correct += (logits.detach().argmax(1) == labels).sum()
        self.clips += n

    def values(self) -> tuple[float, float]:
        if not self.clips:
            return math.nan, math.nan
        return self.loss.item() / self.clips, self.correct.item() / self.clips


def train_one_epoch(net: Callable[[torch.Tensor], torch.Tensor], model: nn.Module,
                    criterion: nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule,
                    batches, *, scaler: torch.amp.GradScaler | None = None,
                    ddp: nn.Module | None = None, accum_steps: int = 1, clip_grad_norm: float = 0.0,
                    progress=None, print_freq: int = 10) -> dict:
    """One pass over ``batches`` (dicts with a float ``clip`` and ``label`` on the device).

    ``net`` runs the forward (possibly DDP, compiled, autocast); ``model`` is the plain
    module (gradient clipping). ``ddp``: the DistributedDataParallel wrapper, so micro-steps
    of a gradient accumulation skip the all-reduce. Returns loss, accuracy, throughput, the
    share of time spent waiting for data, and the video ids seen (for shard checks).
    """
    model.train()
    device = next(model.parameters()).device
    meter = Meter(device)
    num_batches = len(batches)
    pending = 0
    wait = 0.0
    seen: list[torch.Tensor] = []
    start = last = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)

    def optimizer_step() -> None:
        if clip_grad_norm > 0:
            if scaler is not None:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                           clip_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()

    for i, batch in enumerate(batches):
        now = time.perf_counter()
        wait += now - last
        x, y = batch["clip"], batch["label"]
        seen.append(batch["video_id"])  # read at the end: .tolist() of a GPU tensor syncs
        pending += 1
        sync = pending == accum_steps or i + 1 == num_batches
        ctx = ddp.no_sync() if (ddp is not None and not sync) else contextlib.nullcontext()
        with ctx:
            logits = net(x)
            loss = criterion(logits.float(), y)
            scaled = loss / accum_steps
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if sync:
            optimizer_step()
            pending = 0
        meter.update(loss, logits, y)
        last = time.perf_counter()
        if progress is not None:
            progress.update(1)
            if (i + 1) % print_freq == 0 or i + 1 == num_batches:
                elapsed = last - start
                avg_loss, acc = meter.values()
                progress.set_postfix(loss=f"{avg_loss:.4f}", acc=f"{acc:.3f}",
                                     clips_s=f"{meter.clips / elapsed:.1f}",
                                     wait=f"{wait / elapsed:.0%}", lr=f"{schedule.get_last_lr()[0]:.2e}")
    if pending:  # batches were dropped (every sample of one skipped): step what accumulated
        optimizer_step()
    elapsed = time.perf_counter() - start
    loss, acc = meter.values()
    video_ids = torch.cat([torch.as_tensor(v).reshape(-1).cpu() for v in seen]).tolist() if seen else []
    return {"loss": loss, "accuracy": acc, "clips": meter.clips, "time_s": elapsed,
            "clips_per_s": meter.clips / elapsed if elapsed > 0 else 0.0,
            "data_wait": wait / elapsed if elapsed > 0 else 0.0, "video_ids": video_ids}
