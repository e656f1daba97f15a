"""Reading one sample: open a video file or frame folder, pick its frames, decode, close.

The one place where a read error becomes the error policy: ``on_error="skip"`` returns a
:class:`SkippedSample` (path, reason) that collate drops and the loader records;
``on_error="raise"`` raises :class:`~accel.io.VideoDecodeError` naming the file, whatever the
decoder raised. The datasets call :func:`read_frames` inside their watched decode child
(:mod:`accel.io.watchdog`); the DALI loader's CPU fallback calls it in-process with
``timeout_s`` (SIGALRM, Python-level code only).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator, Literal, NamedTuple, Sequence, get_args

import torch

from ..io import VideoDecodeError, VideoReader, open_sample

OnError = Literal["skip", "raise"]
ON_ERROR: tuple[OnError, ...] = get_args(OnError)

# Errors a damaged or unusual file raises from the decoders (PyAV's are OSError/ValueError,
# an index past a truncated end IndexError); anything else is a bug and propagates.
READ_ERRORS = (VideoDecodeError, OSError, ValueError, IndexError)


class SkippedSample(NamedTuple):
    """What a dataset returns, under ``on_error="skip"``, for a file it could not use."""

    path: str
    reason: str


class DecodeTimeout(VideoDecodeError):
    """A decode that did not finish within its time limit."""


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}; got {on_error!r}")
    return on_error


def reason_of(e: BaseException) -> str:
    """The reason a user reads: the decoder's own for a VideoDecodeError, else type and text."""
    return e.reason if isinstance(e, VideoDecodeError) else f"{type(e).__name__}: {e}"


def skip_or_raise(path: str, e: BaseException, on_error: str) -> SkippedSample:
    """``e`` under the error policy: a SkippedSample, or a VideoDecodeError that names ``path``."""
    if on_error == "raise":
        if isinstance(e, VideoDecodeError) and e.path == path:
            raise e
        raise VideoDecodeError(path, reason_of(e)) from e
    return SkippedSample(path, reason_of(e))


@contextlib.contextmanager
def time_limit(seconds: float | None, path: str) -> Iterator[None]:
    """Raise :class:`DecodeTimeout` in this thread after ``seconds``.

    SIGALRM interrupts Python code, and PyAV decodes frame by frame in Python, so a decode
    that keeps going (or a demuxer that retries) is stopped between frames; a C++ call that
    never returns is not (the datasets decode in a watched child for that). Signals work in
    the main thread only; elsewhere this sets no limit.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise DecodeTimeout(path, f"decode took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def read_frames(path: str, backend: str, choose: Callable[[int], Sequence[int]], *,
                on_error: str, timeout_s: float | None = None,
                open_reader: Callable[[str, str], VideoReader] = open_sample
                ) -> tuple[torch.Tensor, list[int]] | SkippedSample:
    """Open ``path`` with ``backend``, decode the frames ``choose(num_frames)`` names, close.

    Returns uint8 ``(N, H, W, C)`` and the indices (as a flat list), or a
    :class:`SkippedSample` under ``on_error="skip"``. ``open_reader(path, backend)`` swaps
    the reader (the benchmarks' decode-everything baseline).
    """
    try:
        with time_limit(timeout_s, path):
            reader = open_reader(path, backend)
            try:
                indices = [int(i) for i in choose(len(reader))]
                frames = reader.get_frames(indices)
            finally:
                reader.close()
    except READ_ERRORS as e:
        return skip_or_raise(path, e, on_error)
    return frames, indices
