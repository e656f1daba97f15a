"""One training epoch (:func:`train_one_epoch`): forward, loss, backward and step per batch,
with AMP, gradient accumulation under DDP and clipping; what it measured comes back.

Evaluation (clip- and video-level) lives in :mod:`accel.train.evaluation`; metrics in
:mod:`accel.train.metrics`; checkpoints in :mod:`accel.train.checkpoint`.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Callable

import torch
from torch import nn

from .optim import LRSchedule


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

    def sums(self) -> tuple[float, int]:
        """Summed loss and correct count (what ranks add up: a rank with no clip adds 0)."""
        return self.loss.item(), int(self.correct.item())

    def values(self) -> tuple[float, float]:
        if not self.clips:
            return math.nan, math.nan
        loss_sum, correct = self.sums()
        return loss_sum / self.clips, correct / self.clips


def train_one_epoch(net: Callable[[torch.Tensor], torch.Tensor], model: nn.Module,
                    criterion: nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule,
                    batches, *, scaler: torch.amp.GradScaler | None = None,
                    ddp: nn.Module | None = None, accum_steps: int = 1, clip_grad_norm: float = 0.0,
                    progress=None, print_freq: int = 10) -> dict:
    """One pass over ``batches`` (:class:`~accel.data.batch.ClipBatch` es with a float ``clip``
    and ``label`` on the device, e.g. from a :class:`~accel.data.prefetch.DevicePrefetcher`).

    ``net`` runs the forward (possibly DDP, compiled, autocast); ``model`` is the plain
    module (gradient clipping). ``ddp``: the DistributedDataParallel wrapper, so micro-steps
    of a gradient accumulation skip the all-reduce. Returns loss, accuracy, throughput, the
    share of time spent waiting for data, and the video ids seen (for shard checks);
    ``loss_sum`` and ``correct`` are the sums ranks add up.
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
        x, y = batch.clip, batch.label
        seen.append(batch.video_id)  # on the host (ClipBatch.to); read at the end
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
            # The postfix reads the meter back (a host sync): only for a bar that is shown
            # (train.py hands every rank a bar, disabled off rank 0 and under --no_progress).
            if not getattr(progress, "disable", False) and ((i + 1) % print_freq == 0 or i + 1 == num_batches):
                elapsed = last - start
                avg_loss, acc = meter.values()
                progress.set_postfix(loss=f"{avg_loss:.4f}", acc=f"{acc:.3f}",
                                     clips_s=f"{meter.clips / elapsed:.1f}",
                                     wait=f"{wait / elapsed:.0%}", lr=f"{schedule.get_last_lr()[0]:.2e}")
    if pending:  # batches were dropped (every sample of one skipped): step what accumulated
        optimizer_step()
    elapsed = time.perf_counter() - start
    loss_sum, correct = meter.sums()
    loss, acc = (loss_sum / meter.clips, correct / meter.clips) if meter.clips else (math.nan, math.nan)
    video_ids = torch.cat([torch.as_tensor(v).reshape(-1).cpu() for v in seen]).tolist() if seen else []
    return {"loss": loss, "accuracy": acc, "loss_sum": loss_sum, "correct": correct, "clips": meter.clips,
            "time_s": elapsed,
            "clips_per_s": meter.clips / elapsed if elapsed > 0 else 0.0,
            "data_wait": wait / elapsed if elapsed > 0 else 0.0, "video_ids": video_ids}
