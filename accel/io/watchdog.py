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

What crosses the pipe is small: the call's arguments, and a reply pickled with its arrays'
data out of band (pickle protocol 5). That data travels through a :class:`SharedBuffer`, a
memory file both processes map: the child writes it there, the parent copies each array out
once (so the next reply may overwrite the buffer), and the pipe carries only the header. The
memory check reads ``/proc/self/statm`` (microseconds), not ``smaps_rollup``, which walks every
mapping: 15-19 ms per call in a torch process, more than many clips take to decode.

The child is forked, not spawned: it starts in milliseconds with the caller's imports and
objects (the dataset, a monkeypatched test double), and works from inside DataLoader workers,
which as daemonic processes may not start ``multiprocessing`` children. It opens its own
decoder handles, so nothing a fork must not share (decord's reader) crosses it.
"""
from __future__ import annotations

import gc
import mmap
import os
import pickle
import signal
import sys
import warnings
from multiprocessing.connection import Connection, Pipe
from typing import Any, Callable, Sequence

import numpy as np

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# A reply whose arrays hold more than this goes through the pipe instead: the buffer keeps
# its largest size for the life of the process, which a rare huge reply (every window of a
# long video) should not set. Above this size the decode dwarfs the pipe's extra copies.
SHARED_MAX_BYTES = 64 * 2**20
_ALIGN = 64  # each array's data starts on a cache line


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
    will and which would hide or fake growth, and shared memory (the reply buffer); without
    swap anonymous pages only grow.

    statm's resident less shared is the kernel's anonymous-page counter (``RssAnon``), the
    figure ``smaps_rollup``'s ``Anonymous`` adds up mapping by mapping (they agree to the KiB;
    kernels before 6.2 cache up to 64 pages per thread in it), read in microseconds."""
    try:
        with open("/proc/self/statm") as f:
            fields = f.read().split()
        return (int(fields[1]) - int(fields[2])) * _PAGE / 2**20
    except OSError:  # not Linux
        return rss_mb()


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


class SharedBuffer:
    """A growable memory file (Linux ``memfd``) that a :class:`DecodeProcess` and each child
    it forks map: the child writes a reply's array data into it, the parent copies it out.

    It grows (never shrinks) to the largest reply up to :data:`SHARED_MAX_BYTES`, so after the
    first few clips no call allocates or faults a page in it; its pages are shared memory, so
    the children's anonymous-memory check does not count them. Only one side uses it at a
    time: the child writes while it serves a call, the parent reads after the answer and
    before the next call (a killed child is reaped before another starts).
    """

    def __init__(self) -> None:
        self.fd = os.memfd_create("vidaccel-decode", os.MFD_CLOEXEC)
        self.map: mmap.mmap | None = None

    @staticmethod
    def available() -> bool:
        return hasattr(os, "memfd_create") and hasattr(os, "posix_fallocate")

    def _mapped(self, size: int) -> mmap.mmap:
        """A mapping of at least ``size`` bytes; the file grows when it is smaller (child)."""
        if self.map is None or len(self.map) < size:
            have = os.fstat(self.fd).st_size
            if have < size:  # reserve the pages now: an OSError here, not a SIGBUS on write
                have = -(-max(size, min(2 * have, SHARED_MAX_BYTES)) // _PAGE) * _PAGE
                os.posix_fallocate(self.fd, 0, have)
            if self.map is not None:
                self.map.close()
            self.map = mmap.mmap(self.fd, have)
        return self.map

    def write(self, buffers: Sequence[pickle.PickleBuffer]) -> list[int] | None:
        """Copy each buffer's bytes in, one after another; their lengths, or None when
        they are too many bytes to keep here (or the buffer cannot grow)."""
        views = [b.raw() for b in buffers]
        total = sum(_aligned(v.nbytes) for v in views)
        if total > SHARED_MAX_BYTES:
            return None
        if total:
            try:
                region = self._mapped(total)
            except OSError:
                return None
            with memoryview(region) as target:
                offset = 0
                for v in views:
                    target[offset:offset + v.nbytes] = v
                    offset += _aligned(v.nbytes)
        return [v.nbytes for v in views]

    def read(self, lengths: Sequence[int]) -> list[np.ndarray]:
        """Fresh copies of the buffers the child wrote: nothing handed out aliases the file."""
        out = [np.empty(n, np.uint8) for n in lengths]
        total = sum(_aligned(n) for n in lengths)
        if total:
            with memoryview(self._mapped(total)) as source:
                offset = 0
                for n, a in zip(lengths, out):
                    a.data[:] = source[offset:offset + n]
                    offset += _aligned(n)
        return out

    def close(self) -> None:
        if self.map is not None:
            self.map.close()
            self.map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def encode_reply(reply: tuple[bool, Any], retire: bool, shared: SharedBuffer | None) -> bytes:
    """The child's answer: ``(pickled reply, array lengths, retire)``, with the arrays' data
    in ``shared``, or all in the pickle (no shared buffer, or too large to keep there)."""
    if shared is not None:
        buffers: list[pickle.PickleBuffer] = []
        body = pickle.dumps(reply, protocol=5, buffer_callback=buffers.append)
        lengths = shared.write(buffers) if buffers else []
        if lengths is not None:
            return pickle.dumps((body, lengths, retire), protocol=5)
    return pickle.dumps((pickle.dumps(reply, protocol=5), [], retire), protocol=5)


def decode_reply(message: bytes, shared: SharedBuffer | None) -> tuple[bool, Any, bool]:
    """``(ok, value, retire)`` from :func:`encode_reply`'s message, arrays copied out."""
    body, lengths, retire = pickle.loads(message)
    buffers = shared.read(lengths) if lengths and shared is not None else None
    ok, value = pickle.loads(body, buffers=buffers)
    return ok, value, retire


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


def _serve(fn: Callable[..., Any], conn: Connection, max_rss_growth_mb: float | None,
           shared: SharedBuffer | None) -> None:
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
            payload = encode_reply(reply, retire, shared)
        except Exception as e:  # noqa: BLE001 - an exception that does not pickle
            payload = encode_reply((False, RuntimeError(f"{type(e).__name__}: {e}")), retire, None)
        conn.send_bytes(payload)
        if retire:
            return


class DecodeProcess:
    """Calls ``fn(*args)`` in a forked child, waiting at most ``timeout_s`` (None: no limit).

    * a call that times out raises :class:`CallTimeout`; the child is killed and the next
      call forks a new one;
    * a child that dies mid-call raises :class:`ChildDied` (and is replaced);
    * an exception raised by ``fn`` is raised here;
    * the child is replaced after ``max_calls`` calls, or after a call that left its
      anonymous memory (:func:`anon_mb`) more than ``max_rss_growth_mb`` above its size after
      its first call.

    Arrays in the returned value (numpy, contiguous) come back through a
    :class:`SharedBuffer` as fresh copies; the rest of it, and the arguments, are pickled on
    the pipe, so keep them small.

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
        self._shared: SharedBuffer | None = None  # made with the first child, kept across children

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def buffer_bytes(self) -> int:
        """The size of the shared reply buffer (0: none yet, or not Linux)."""
        return os.fstat(self._shared.fd).st_size if self._shared is not None else 0

    def _start(self) -> None:
        if self.prepare is not None:
            self.prepare()
            self.prepare = None
        if self._shared is None and SharedBuffer.available():
            try:
                self._shared = SharedBuffer()
            except OSError:  # out of file descriptors or memory: replies use the pipe
                pass
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
                _serve(self.fn, child_end, self.max_rss_growth_mb, self._shared)
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
            message = conn.recv_bytes()
        except (EOFError, OSError):
            status = self._exit_status()
            self._replace(kill=True)
            raise ChildDied(f"decoder process died ({status})") from None
        ok, value, retire = decode_reply(message, self._shared)
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
        """End the child and free the reply buffer (only in the process that owns them); a
        later call starts afresh."""
        if os.getpid() == self.owner:
            self._stop(kill=False)
            if self._shared is not None:
                self._shared.close()
                self._shared = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __getstate__(self):
        raise TypeError("a DecodeProcess does not travel to another process; make one there")
