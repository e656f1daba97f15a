"""One training epoch (:func:`train_one_epoch`): forward, loss, backward and step per batch,
with AMP, gradient accumulation under DDP and clipping; what it measured comes back.

Evaluation (clip- and video-level) lives in :mod:`accel.train.evaluation`; metrics in
:mod:`accel.train.metrics`; checkpoints in :mod:`accel.train.checkpoint`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Callable

import torch
from torch import nn

from .optim import LRSchedule


# --------------------------------------------------------------------------- one epoch
@dataclasses.dataclass
class EpochState:
    """Where one rank is in an epoch, in plain values: what a mid-epoch checkpoint holds so
    the epoch goes on exactly (position in the sample order, the running sums, step losses)."""

    samples: int = 0  # samples of this rank's epoch order read so far (skipped ones included)
    batches: int = 0  # batches trained so far (the step index within the epoch)
    loss_sum: float = 0.0
    correct: int = 0
    clips: int = 0
    nonfinite: int = 0  # batches whose loss was not finite (skipped: no update)
    step_losses: list = dataclasses.field(default_factory=list)  # per batch; None where not finite
    video_ids: list = dataclasses.field(default_factory=list)
    time_s: float = 0.0
    wait_s: float = 0.0

    def __post_init__(self) -> None:
        self.id_parts: list[torch.Tensor] = []  # this epoch's ids, read back only when asked
        self.meter: Meter | None = None  # the running sums on the device, read back only when asked

    def state_dict(self) -> dict:
        self.flush_ids()
        if self.meter is not None:
            self.loss_sum, self.correct = self.meter.sums()
            self.clips = self.meter.clips
        return dataclasses.asdict(self)

    def flush_ids(self) -> None:
        if self.id_parts:
            self.video_ids += torch.cat([v.reshape(-1).cpu() for v in self.id_parts]).tolist()
            self.id_parts = []

    @classmethod
    def from_state_dict(cls, state: dict) -> "EpochState":
        return cls(**{f.name: state[f.name] for f in dataclasses.fields(cls)})


class StepHooks:
    """What a long run adds around each step (:mod:`accel.train.longrun`); these defaults
    do nothing. ``exchange`` is the one place ranks agree (one small all-reduce a step)."""

    def before_batch(self, step: int) -> None:
        """Before the batch is fetched (its augmentation happens while fetching)."""

    def got_batch(self, step: int, batch) -> None:
        """The batch arrived (before the forward)."""

    def data_ended(self) -> None:
        """The loader has given ``len(batches)`` batches, or has ended (may come twice)."""

    def exchange(self, finite: bool) -> bool:
        """Whether every rank's loss is finite (ranks also agree here on saving and stopping)."""
        return finite

    def after_batch(self, state: EpochState, batch, finite: bool) -> None:
        """Counted; may raise to stop the run (too many non-finite losses)."""

    def after_step(self, state: EpochState) -> bool:
        """After a complete optimiser step (nothing accumulated): save; True stops the epoch."""
        return False


class Meter:
    """Running sums on the device: one host sync per report, not per step."""

    def __init__(self, device: torch.device, state: EpochState | None = None) -> None:
        state = state or EpochState()
        self.loss = torch.tensor(state.loss_sum, dtype=torch.float64, device=device)
        self.correct = torch.tensor(state.correct, dtype=torch.int64, device=device)
        self.clips = state.clips

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
                    ddp: nn.parallel.DistributedDataParallel | None = None, accum_steps: int = 1,
                    clip_grad_norm: float = 0.0,
                    progress=None, print_freq: int = 10, state: EpochState | None = None,
                    hooks: StepHooks | None = None) -> dict:
    """One pass over ``batches`` (:class:`~accel.data.batch.ClipBatch` es with a float ``clip``
    and ``label`` on the device, e.g. from a :class:`~accel.data.prefetch.DevicePrefetcher`).

    ``net`` runs the forward (possibly DDP, compiled, autocast); ``model`` is the plain
    module (gradient clipping). ``ddp``: the DistributedDataParallel wrapper, so micro-steps
    of a gradient accumulation skip the all-reduce. A batch whose loss is not finite (on any
    rank) gives no update (its accumulation window is dropped) and is counted. ``state``: where a resumed epoch
    stands (``batches`` then holds the rest of the epoch); ``hooks``: checkpoints, signals,
    stall warnings. Returns loss, accuracy, throughput, the share of time spent waiting for
    data, the video ids seen (for shard checks), ``loss_sum`` and ``correct`` (the sums ranks
    add up), ``nonfinite``, ``step_losses``, ``stopped`` (a hook ended the epoch early) and
    ``state``.
    """
    model.train()
    state = state if state is not None else EpochState()
    hooks = hooks or StepHooks()
    meter = state.meter = Meter(next(model.parameters()).device, state)
    step = Stepper(model, optimizer, schedule, scaler, clip_grad_norm)
    pending, window_ok, stopped = 0, True, False
    t_start, t_base = time.perf_counter(), state.time_s
    remaining = len(batches)
    it = iter(batches)
    while True:
        if remaining > 0:
            hooks.before_batch(state.batches)
        else:  # all len(batches) are in: waiting for the loader's end is no batch's stall
            hooks.data_ended()
        t0 = time.perf_counter()
        batch = next(it, None)
        if batch is None:
            hooks.data_ended()  # also when the loader ends early
            break
        state.wait_s += time.perf_counter() - t0
        hooks.got_batch(state.batches, batch)
        x, y = batch.clip, batch.label
        pending, remaining = pending + 1, remaining - 1
        sync = pending == accum_steps or remaining == 0
        ctx = ddp.no_sync() if (ddp is not None and not sync) else contextlib.nullcontext()
        step.snapshot()
        with ctx:
            logits = net(x)
            loss = criterion(logits.float(), y)
            value = float(loss.detach())  # one host sync a step, as GradScaler's own check
            finite = hooks.exchange(math.isfinite(value))
            # A non-finite batch still runs its backward (DDP's all-reduce expects one on every
            # rank); its gradients are dropped and the buffers it changed put back.
            (scaler.scale(loss / accum_steps) if scaler is not None else loss / accum_steps).backward()
            if finite:
                meter.update(loss, logits, y)
            else:
                step.restore()
        window_ok = window_ok and finite
        account(state, batch, value if finite else None)
        state.time_s = t_base + time.perf_counter() - t_start
        hooks.after_batch(state, batch, finite)
        if sync:
            step.finish(window_ok)
            pending, window_ok = 0, True
            if hooks.after_step(state):
                stopped = True
                break
        show_progress(progress, print_freq, state, meter, t_start, t_base, schedule)
    if pending:  # the epoch's last, short accumulation window (or batches were dropped)
        step.finish(window_ok)
    state.time_s = t_base + time.perf_counter() - t_start
    return epoch_stats(state, stopped)


class Stepper:
    """The optimiser step (unscale, clip, step, schedule), or none after a non-finite loss."""

    def __init__(self, model, optimizer, schedule, scaler, clip_grad_norm: float) -> None:
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.scaler, self.clip_grad_norm = scaler, clip_grad_norm
        # BatchNorm's running statistics change in the forward: a NaN batch would poison them.
        self.buffers = list(model.buffers())
        self.saved = [b.detach().clone() for b in self.buffers]
        optimizer.zero_grad(set_to_none=True)

    def snapshot(self) -> None:
        for kept, b in zip(self.saved, self.buffers):
            kept.copy_(b)

    def restore(self) -> None:
        with torch.no_grad():
            for kept, b in zip(self.saved, self.buffers):
                b.copy_(kept)

    def finish(self, update: bool) -> None:
        if update:
            if self.clip_grad_norm > 0:
                if self.scaler is not None:
                    self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                               self.clip_grad_norm)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)


def account(state: EpochState, batch, loss: float | None) -> None:
    """The batch is done: its samples (skipped ones too) advance the position."""
    ids = torch.as_tensor(batch.video_id)
    state.samples += ids.numel() + len(batch.skipped)
    state.batches += 1
    state.id_parts.append(ids)  # on the host (ClipBatch.to); read at the end
    state.step_losses.append(loss)
    state.nonfinite += loss is None


def show_progress(progress, print_freq: int, state: EpochState, meter: Meter, t_start: float,
                  t_base: float, schedule: LRSchedule) -> None:
    if progress is None:
        return
    progress.update(1)
    # The postfix reads the meter back (a host sync): only for a bar that is shown
    # (train.py hands every rank a bar, disabled off rank 0 and under --no_progress).
    if getattr(progress, "disable", False) or state.batches % print_freq:
        return
    elapsed = t_base + time.perf_counter() - t_start
    avg_loss, acc = meter.values()
    progress.set_postfix(loss=f"{avg_loss:.4f}", acc=f"{acc:.3f}", clips_s=f"{meter.clips / elapsed:.1f}",
                         wait=f"{state.wait_s / elapsed:.0%}", lr=f"{schedule.get_last_lr()[0]:.2e}")


def epoch_stats(state: EpochState, stopped: bool) -> dict:
    elapsed = state.time_s
    state.state_dict()  # the sums and ids, read back
    state.meter = None
    loss, acc = ((state.loss_sum / state.clips, state.correct / state.clips) if state.clips
                 else (math.nan, math.nan))
    return {"loss": loss, "accuracy": acc, "loss_sum": state.loss_sum, "correct": state.correct,
            "clips": state.clips, "time_s": elapsed,
            "clips_per_s": state.clips / elapsed if elapsed > 0 else 0.0,
            "data_wait": state.wait_s / elapsed if elapsed > 0 else 0.0,
            "video_ids": list(state.video_ids), "nonfinite": state.nonfinite,
            "step_losses": list(state.step_losses), "stopped": stopped, "state": state}
