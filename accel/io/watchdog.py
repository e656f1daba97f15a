"""Run decodes in a child process that can be abandoned: a watchdog that holds for every backend.

A decoder stuck inside a C++ call (torchcodec reading an endless pipe, a demuxer retrying
for ever) cannot be interrupted from Python: SIGALRM's handler only runs once the call
returns. A process can always be killed. :class:`DecodeProcess` forks a child that serves
calls over a pipe; the caller waits at most ``timeout_s`` for each answer, and on time-out
kills the child (SIGKILL) and forks a fresh one for the next call. The same child boundary
bounds memory: decoders that keep a little per open file (torchcodec's exact mode, ~1 KB
per open and read, which ``malloc_trim`` does not return) leak into a process that is
replaced after ``max_calls`` calls or once its resident anonymous memory (RSS less the
file-backed pages the kernel may drop) has grown ``max_rss_growth_mb`` past its size after
the first call.

The child is forked, not spawned: it starts in milliseconds with the caller's imports and
objects (the dataset, a monkeypatched test double), and works from inside DataLoader workers,
which as daemonic processes may not start ``multiprocessing`` children. It opens its own
decoder handles, so nothing a fork must not share (decord's reader) crosses it.
"""
from __future__ import annotations

import gc
import os
import pickle
import signal
import sys
import warnings
from multiprocessing.connection import Connection, Pipe
from typing import Any, Callable

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class CallTimeout(TimeoutError):
    """The child did not answer within the time limit; it was killed."""


class ChildDied(RuntimeError):
    """The child ended without answering (a crash inside a decoder: a signal, an abort)."""


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process (this one by default), in MiB."""
    try:
        with open(f"/proc/{pid or 'self'}/statm") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except OSError:  # not Linux
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20


def anon_mb() -> float:
    """This process's resident anonymous memory in MiB: what a leak grows. Plain RSS also
    counts file-backed pages (shared libraries), which the kernel reclaims and refaults at
    will and which would hide or fake growth; without swap anonymous pages only grow."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("Anonymous:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # not Linux, or a kernel before 4.14
        pass
    return rss_mb()


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this child when the process that forked it ends (a stuck decode must
    not outlive its caller); elsewhere the closed pipe ends an idle child."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent ended before prctl took effect
        os._exit(0)


def _single_threaded() -> None:
    """One compute thread in the child, as in a DataLoader worker. Besides sharing the CPU
    fairly, it keeps a fork of a process that ran OpenMP regions (a training loop) from
    hanging in its first parallel torch op (resize, gather): libgomp's pool does not survive
    a fork."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _serve(fn: Callable[..., Any], conn: Connection, max_rss_growth_mb: float | None) -> None:
    """The child's loop: answer ``(ok, value, retire)`` to each request until EOF or None."""
    baseline = None
    while True:
        try:
            args = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if args is None:
            return
        try:
            reply = (True, fn(*args))
        except Exception as e:  # noqa: BLE001 - the caller re-raises it on its side
            reply = (False, e)
        retire = False
        if max_rss_growth_mb is not None:
            now = anon_mb()
            baseline = now if baseline is None else baseline
            retire = now - baseline > max_rss_growth_mb
        try:
            payload = pickle.dumps((*reply, retire), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001 - an exception that does not pickle
            payload = pickle.dumps((False, RuntimeError(f"{type(e).__name__}: {e}"), retire))
        conn.send_bytes(payload)
        if retire:
            return


class DecodeProcess:
    """Calls ``fn(*args)`` in a forked child, waiting at most ``timeout_s`` (None: no limit).

    * a call that times out raises :class:`CallTimeout`; the child is killed and the next
      call forks a new one;
    * a child that dies mid-call raises :class:`ChildDied` (and is replaced);
    * an exception raised by ``fn`` is raised here;
    * the child is replaced after ``max_calls`` calls, or after a call that left its RSS
      more than ``max_rss_growth_mb`` above its RSS after its first call.

    ``prepare`` runs once in this process before the first fork (import the decoder module
    here, so each new child does not pay for it). Belongs to the process that made it: a
    forked copy (a DataLoader worker inherits its parent's dataset) neither uses nor kills
    the original's child. ``replacements`` counts children ended early (time-out, death,
    memory or call limit).
    """

    def __init__(self, fn: Callable[..., Any], *, timeout_s: float | None,
                 max_calls: int | None = None, max_rss_growth_mb: float | None = None,
                 prepare: Callable[[], None] | None = None):
        for name, value in (("timeout_s", timeout_s), ("max_calls", max_calls),
                            ("max_rss_growth_mb", max_rss_growth_mb)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value!r}")
        self.fn, self.timeout_s = fn, timeout_s
        self.max_calls, self.max_rss_growth_mb = max_calls, max_rss_growth_mb
        self.prepare = prepare
        self.owner = os.getpid()
        self.replacements = 0
        self._pid: int | None = None
        self._conn: Connection | None = None
        self._calls = 0

    @property
    def pid(self) -> int | None:
        return self._pid

    def _start(self) -> None:
        if self.prepare is not None:
            self.prepare()
            self.prepare = None
        parent_end, child_end = Pipe(duplex=True)
        parent = os.getpid()
        with warnings.catch_warnings():  # 3.12+ warns on fork with threads; see the module doc
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                # The fork inherits the parent's garbage; collecting it here would run finalisers
                # of native objects whose threads did not survive the fork (a DALI pipeline's
                # __del__ segfaults). Frozen objects are never collected (and stay shared).
                gc.freeze()
                parent_end.close()
                _die_with_parent(parent)
                _single_threaded()
                _serve(self.fn, child_end, self.max_rss_growth_mb)
            except BaseException:  # noqa: BLE001 - never return into the parent's code
                code = 1
            finally:
                os._exit(code)
        child_end.close()
        self._pid, self._conn, self._calls = pid, parent_end, 0

    def _child(self) -> tuple[int, Connection]:
        """The running child's pid and pipe end."""
        if self._pid is None or self._conn is None:
            raise RuntimeError("DecodeProcess: no child process is running")
        return self._pid, self._conn

    def _stop(self, *, kill: bool) -> None:
        if self._pid is None:
            return
        pid, conn = self._child()
        if kill:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            try:
                conn.send_bytes(pickle.dumps(None))
            except OSError:
                pass
        conn.close()
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        self._pid = self._conn = None

    def _replace(self, *, kill: bool) -> None:
        self._stop(kill=kill)
        self.replacements += 1

    def call(self, *args: Any) -> Any:
        if os.getpid() != self.owner:
            raise RuntimeError("DecodeProcess used from a forked copy; make one per process")
        if self._pid is not None and self._ended():
            # Died while idle (PDEATHSIG follows the forking *thread*, which may have ended):
            # nothing was asked of it, so a fresh child simply takes over.
            self._child()[1].close()
            self._pid = self._conn = None
            self.replacements += 1
        if self._pid is None:
            self._start()
        _, conn = self._child()
        conn.send_bytes(pickle.dumps(args, protocol=pickle.HIGHEST_PROTOCOL))
        if not conn.poll(self.timeout_s):
            self._replace(kill=True)
            raise CallTimeout(f"no answer within {self.timeout_s:g} s")
        try:
            ok, value, retire = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            status = self._exit_status()
            self._replace(kill=True)
            raise ChildDied(f"decoder process died ({status})") from None
        self._calls += 1
        if retire or (self.max_calls is not None and self._calls >= self.max_calls):
            self._replace(kill=False)
        if not ok:
            raise value
        return value

    def _ended(self) -> bool:
        """Whether the child has exited (reaping it if so)."""
        try:
            return os.waitpid(self._child()[0], os.WNOHANG)[0] != 0
        except ChildProcessError:  # already reaped elsewhere
            return True

    def _exit_status(self) -> str:
        try:
            pid, status = os.waitpid(self._child()[0], 0)
        except ChildProcessError:
            return "exit status unknown"
        if os.WIFSIGNALED(status):
            return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        return f"exit status {os.WEXITSTATUS(status)}"

    def close(self) -> None:
        """End the child (only in the process that owns it)."""
        if os.getpid() == self.owner:
            self._stop(kill=False)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __getstate__(self):
        raise TypeError("a DecodeProcess does not travel to another process; make one there")
