"""Which CPU decoder reads a file: the names, ``auto``'s order, availability, ``open_video``.

:data:`AUTO_ORDER` is the one list of CPU decoders; :data:`BACKENDS` (what ``open_video``
and the datasets take) and the loader's ``LOADER_BACKENDS`` (those plus ``dali``, the
``--backend`` / ``--decoder`` choices) are made from it.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .decord import DecordReader
from .index import VideoDecodeError
from .pyav import PyAVReader
from .reader import VideoReader
from .torchcodec import TorchCodecReader

# The CPU decoders, in the order "auto" tries them (the first that imports). torchcodec
# leads: maintained, exact by design, and the fastest loader here at every keyframe
# interval, by 5-15% (benchmarks/results/loaders_cpu.md). decord is unmaintained (see
# DecordReader).
AUTO_ORDER = ("torchcodec", "decord", "pyav")
BACKENDS = ("auto", *AUTO_ORDER)

# The module each decoder needs.
_EXTRA = {"torchcodec": "torchcodec", "decord": "decord", "pyav": "av"}
assert tuple(_EXTRA) == AUTO_ORDER


def backend_available(backend: str) -> bool:
    """Whether ``backend`` can be used here (imports, and FFmpeg libraries load)."""
    if backend not in _EXTRA:
        raise ValueError(f"backend must be one of {', '.join(_EXTRA)}; got {backend!r}")
    if importlib.util.find_spec(_EXTRA[backend]) is None:
        return False
    if backend == "torchcodec":
        try:  # torchcodec imports only if FFmpeg's shared libraries are on the system
            from torchcodec.decoders import VideoDecoder  # noqa: F401
        except Exception:
            return False
    return True


def available_backends() -> list[str]:
    return [b for b in AUTO_ORDER if backend_available(b)]


def resolve_backend(backend: str) -> str:
    """Validate a backend name and turn ``auto`` into a concrete one."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "auto":
        found = available_backends()
        if not found:
            raise RuntimeError("no video backend available: pip install av (or vidaccel[decord], "
                               "vidaccel[torchcodec])")
        return found[0]
    if not backend_available(backend):
        extra = "" if backend == "pyav" else f" (pip install 'vidaccel[{backend}]')"
        hint = "; torchcodec also needs FFmpeg's shared libraries (apt-get install ffmpeg)" \
            if backend == "torchcodec" else ""
        raise RuntimeError(f"video backend {backend!r} is not available{extra}{hint}")
    return backend


_READERS: dict[str, type[VideoReader]] = {
    "pyav": PyAVReader, "decord": DecordReader, "torchcodec": TorchCodecReader,
}


def open_video(path: str | os.PathLike, backend: str = "auto", *, threads: int = 1,
               stream: int | None = None, rotate: bool = True) -> VideoReader:
    """A reader for ``path``; the file is opened on first use (in the process that uses it).

    backend: ``auto`` (first available of torchcodec, decord, pyav), ``pyav``, ``decord``
    or ``torchcodec``. threads: decoder threads per reader (1 suits DataLoader workers).
    stream: the container stream to decode (FFmpeg's ``-map 0:S``); None, the default, is
    the best video stream as FFmpeg picks it. ``reader.stream_index`` says which it read.
    rotate: turn frames upright by the stream's display matrix (phone videos), as FFmpeg's
    tools and players do; False gives the frames as stored.
    """
    name = resolve_backend(backend)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads must be an int >= 0 (0: the decoder's choice), got {threads!r}")
    if stream is not None and (isinstance(stream, bool) or not isinstance(stream, int) or stream < 0):
        raise ValueError(f"stream must be None (the best video stream) or a container stream "
                         f"index >= 0, got {stream!r}")
    if not Path(path).is_file():
        raise VideoDecodeError(path, "no such file")
    return _READERS[name](path, threads=threads, stream=stream, rotate=bool(rotate))
