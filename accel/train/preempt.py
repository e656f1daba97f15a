"""Preemption: SIGTERM / SIGUSR1 ask the run to stop after the current step, and the exit
statuses a long run ends with (documented in ``train.py --help`` and the README).

A cluster preempts a job with SIGTERM (SLURM, Kubernetes, spot machines), or with SIGUSR1
some seconds ahead when asked (SLURM ``--signal=USR1@90``). The first signal only sets a
flag: the loop finishes its step, writes a checkpoint and exits with :data:`EXIT_PREEMPTED`.
A second signal exits at once with ``128 + signal number``, the shell's convention for a
process killed by that signal (143 for SIGTERM, 138 for SIGUSR1).
"""
from __future__ import annotations

import os
import signal
import sys

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by a signal after a checkpoint; run again to resume
EXIT_CHECKPOINT_WRITE = 74  # EX_IOERR: a checkpoint could not be written (disk full); the previous one stays
EXIT_NONFINITE = 65  # EX_DATAERR: --max_nonfinite consecutive non-finite losses
PREEMPT_SIGNALS = ("SIGTERM", "SIGUSR1")

EXIT_STATUSES = (
    (0, "finished"),
    (2, "a wrong input or option (one line on stderr)"),
    (EXIT_NONFINITE, "--max_nonfinite consecutive non-finite losses; the last good state was saved"),
    (EXIT_CHECKPOINT_WRITE, "a checkpoint could not be written (disk full); the previous one is intact"),
    (EXIT_PREEMPTED, "stopped by SIGTERM or SIGUSR1 after a checkpoint: run again with --resume auto"),
    (143, "a second SIGTERM (138: a second SIGUSR1): stopped at once, nothing saved"),
)


def exit_status_help() -> str:
    return "exit statuses: " + "; ".join(f"{code} {what}" for code, what in EXIT_STATUSES)


class PreemptionFlag:
    """Catches SIGTERM and SIGUSR1 while installed: ``requested`` names the first signal."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self.previous: dict[int, object] = {}

    def install(self) -> "PreemptionFlag":
        for name in PREEMPT_SIGNALS:
            num = getattr(signal, name, None)
            if num is not None:
                self.previous[num] = signal.signal(num, self.handle)
        return self

    def handle(self, signum: int, frame) -> None:
        if self.requested is not None:
            # Second signal: the job's grace time is running out, stop without saving.
            sys.stderr.write(f"{signal.Signals(signum).name} again: stopping at once, nothing saved\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        self.requested = signal.Signals(signum).name

    def uninstall(self) -> None:
        for num, handler in self.previous.items():
            signal.signal(num, handler)  # type: ignore[arg-type]
        self.previous.clear()
