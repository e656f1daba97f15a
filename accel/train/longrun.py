"""What a long run does around each training step (:class:`LongRunHooks`): mid-epoch
checkpoints every N steps or M minutes, a stop after SIGTERM / SIGUSR1 with a checkpoint,
non-finite losses counted and, K in a row, a stop; a warning for a stalled data step.

Exactness: each step reseeds the augmentation generator and the global RNGs (dropout) from
(seed, epoch, rank, step), so a run resumed at step k draws what an uninterrupted one drew
there, whatever the loader's iterator consumed on the way.

Under DDP the ranks agree once a step (one all-reduce of three flags: a non-finite loss,
a stop signal, a timed save), so every rank skips, saves and stops at the same step; the
ranks' epoch states are gathered and rank 0 writes them into one checkpoint.
"""
from __future__ import annotations

import dataclasses
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from accel.data.sampling import mix_seed

from .checkpoint import CheckpointWriteError
from .distributed import DistInfo, all_gather_objects
from .engine import EpochState, StepHooks
from .preempt import EXIT_CHECKPOINT_WRITE, EXIT_NONFINITE, EXIT_PREEMPTED, PreemptionFlag
from .rng import seed_everything

WARNED_NONFINITE = 10  # non-finite losses an epoch that get a warning line each


class RunStopped(Exception):
    """The run stops on purpose (preempted, too many non-finite losses, a checkpoint that
    cannot be written): ``status`` is the exit status, the message is one line."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class LongRunOptions:
    save_every_steps: int = 0  # 0: no step-count checkpoints
    save_every_minutes: float = 0.0  # 0: no timed checkpoints
    max_nonfinite: int = 0  # consecutive non-finite losses that stop the run (0: never)
    stall_warn_s: float = 60.0  # a data step longer than this gets a warning (0: never)

    def __post_init__(self) -> None:
        for name in ("save_every_steps", "save_every_minutes", "max_nonfinite", "stall_warn_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


class StallWatch:
    """Warns once per data step that takes over ``limit_s``, while it still waits (a thread
    looks), not only after: a step stuck for hours is never silent."""

    def __init__(self, limit_s: float, what: Callable[[int], str]) -> None:
        self.limit_s, self.what = limit_s, what
        self.lock = threading.Lock()
        self.step: int | None = None
        self.since = 0.0
        self.warned = False
        self.done = threading.Event()
        self.thread = None
        if limit_s > 0:
            self.thread = threading.Thread(target=self.watch, name="stall-watch", daemon=True)
            self.thread.start()

    def start(self, step: int) -> None:
        with self.lock:
            self.step, self.since, self.warned = step, time.monotonic(), False

    def stop(self) -> None:
        with self.lock:
            self.check("took")
            self.step = None

    def cancel(self) -> None:
        """Stop looking without a word: the loader said it has no more batches, and the wait
        for that (worker shutdown, then the epoch's end, other ranks) is no batch's stall."""
        with self.lock:
            self.step = None

    def check(self, verb: str) -> None:
        """Under the lock: warn if the current wait is over the limit and not told yet."""
        if self.limit_s <= 0 or self.step is None or self.warned:
            return
        waited = time.monotonic() - self.since
        if waited > self.limit_s:
            self.warned = True
            print(f"warning: {self.what(self.step)}: the batch {verb} {waited:.1f} s to arrive "
                  f"(--stall_warn_s {self.limit_s:g})", file=sys.stderr, flush=True)

    def watch(self) -> None:
        while not self.done.wait(min(max(self.limit_s / 4, 0.01), 5.0)):
            with self.lock:
                self.check("has taken")

    def close(self) -> None:
        self.done.set()


class LongRunHooks(StepHooks):
    """One epoch's hooks. ``write(ranks_states) -> Path`` (rank 0 only) writes a checkpoint
    holding every rank's :class:`EpochState`; ``describe(batch)`` names a batch's videos."""

    def __init__(self, opts: LongRunOptions, *, info: DistInfo, device: torch.device, epoch: int,
                 seed: int, generator: torch.Generator, decoder: str, flag: PreemptionFlag,
                 write: Callable[[list[dict]], Path], describe: Callable[[object], str],
                 say: Callable[[str], None]) -> None:
        self.opts, self.info, self.device, self.epoch, self.seed = opts, info, device, epoch, seed
        self.generator, self.flag, self.write, self.describe, self.say = generator, flag, write, describe, say
        self.consecutive = 0
        self.stop_asked = self.save_asked = False
        self.last_save = time.monotonic()
        where = f"rank {info.rank}, " if info.distributed else ""
        self.stall = StallWatch(opts.stall_warn_s,
                                lambda step: f"{where}epoch {epoch + 1} step {step + 1} (decoder {decoder})")

    # ---- reseeding and the stall watch
    def before_batch(self, step: int) -> None:
        self.generator.manual_seed(mix_seed(self.seed, self.epoch, self.info.rank, "augment", step))
        self.stall.start(step)

    def got_batch(self, step: int, batch) -> None:
        self.stall.stop()
        seed_everything(mix_seed(self.seed, self.epoch, self.info.rank, "step", step))

    def data_ended(self) -> None:
        self.stall.cancel()

    # ---- agreement
    def exchange(self, finite: bool) -> bool:
        minutes = self.opts.save_every_minutes
        timed = bool(minutes) and time.monotonic() - self.last_save >= minutes * 60
        flags = [int(not finite), int(self.flag.requested is not None), int(timed)]
        if self.info.distributed:
            import torch.distributed as dist

            t = torch.tensor(flags, dtype=torch.int32, device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flags = t.tolist()
        self.stop_asked = self.stop_asked or bool(flags[1])
        self.save_asked = self.save_asked or bool(flags[2])
        return not flags[0]

    # ---- non-finite losses
    def after_batch(self, state: EpochState, batch, finite: bool) -> None:
        if finite:
            self.consecutive = 0
            return
        self.consecutive += 1
        where = f"epoch {self.epoch + 1} step {state.batches}"
        limit = self.opts.max_nonfinite
        if not limit or self.consecutive < limit:
            if state.nonfinite <= WARNED_NONFINITE:  # then only counted (the epoch line has the total)
                more = "; further ones this epoch are only counted" if state.nonfinite == WARNED_NONFINITE else ""
                self.say(f"warning: {where}: non-finite loss, step skipped ({state.nonfinite} this epoch; "
                         f"videos {self.describe(batch)}{more})")
            return
        path = self.save(state)
        raise RunStopped(f"{where}: {self.consecutive} non-finite losses in a row (--max_nonfinite {limit}); "
                         f"last batch's videos: {self.describe(batch)}; last good state saved in {path}",
                         EXIT_NONFINITE)

    # ---- checkpoints and stopping
    def after_step(self, state: EpochState) -> bool:
        every = self.opts.save_every_steps
        if self.stop_asked or self.save_asked or (every and state.batches % every == 0):
            path = self.save(state)
            self.save_asked = False
            if self.stop_asked:
                names = [x for x in all_gather_objects(self.flag.requested, self.info) if x]
                signal_name = " and ".join(sorted(set(names))) or "a signal"
                raise RunStopped(f"preempted by {signal_name} at epoch {self.epoch + 1} step {state.batches}: "
                                 f"checkpoint {path}; run again with --resume auto to continue",
                                 EXIT_PREEMPTED)
        return False

    def save(self, state: EpochState) -> Path | None:
        """Every rank's state to rank 0, which writes; every rank learns whether it worked."""
        ranks = all_gather_objects(state.state_dict(), self.info)
        path, error = None, None
        if self.info.is_main:
            try:
                path = self.write(ranks)
            except CheckpointWriteError as e:
                error = str(e)
        error = next((e for e in all_gather_objects(error, self.info) if e), None)
        if error:
            raise RunStopped(error, EXIT_CHECKPOINT_WRITE)
        self.last_save = time.monotonic()
        return path

    def close(self) -> None:
        self.stall.close()
