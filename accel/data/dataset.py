"""``VideoClipDataset``: one clip per video of a manifest (:mod:`accel.data.manifests`),
decoded in a watched child process.

Error policy: a file that cannot be decoded never kills an epoch under ``on_error="skip"``:
the dataset returns a :class:`SkippedSample` (path, reason) that the collate function drops
and the loader records; ``on_error="raise"`` raises :class:`~accel.io.index.VideoDecodeError`
naming the file. A decode that hangs is abandoned after ``decode_timeout_s``, on every
backend: decoding runs in a child process that is killed and replaced (:mod:`accel.io.watchdog`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..io.backends import resolve_backend
from ..io.frames import open_sample
from ..io.index import VideoDecodeError
from ..io.reader import VideoReader
from .manifests import Manifest
from .reading import DecodeTimeout, SkippedSample, check_on_error, read_frames
from .sampling import SHORT_POLICIES, STRATEGIES, ShortPolicy, Strategy, clip_generator, sample_indices


# --------------------------------------------------------------------------- dataset
def _import_decoder(backend: str) -> None:
    """Import a decoder's module in this process, so the decode processes forked from it
    start with it loaded. Not decord: its runtime must start in the process that reads."""
    import importlib

    module = {"pyav": "av", "torchcodec": "torchcodec.decoders"}.get(backend)
    if module is not None:
        importlib.import_module(module)


class DecodesInChild:
    """Decoding through a :class:`~accel.io.watchdog.DecodeProcess`, for a dataset with the
    fields ``backend``, ``on_error``, ``decode_timeout_s``, ``recycle_after_clips``,
    ``recycle_rss_growth_mb`` and ``isolate_decode``.

    ``_load(*args)`` (run in the child) returns a sample or a :class:`SkippedSample`;
    :meth:`_isolated` turns a time-out or a crashed decoder into a skip (or, under
    ``on_error="raise"``, a :class:`DecodeTimeout` / ``VideoDecodeError``). Each process
    (main, every DataLoader worker) makes its own child on first use. The child reads a copy
    of the dataset as it was at the fork, so what varies per call (the epoch) travels in the
    call's arguments; other changes reach it when it is next replaced (or after ``close()``).
    """

    # the fields the dataset provides
    backend: str
    on_error: str
    decode_timeout_s: float | None
    recycle_after_clips: int | None
    recycle_rss_growth_mb: float | None
    isolate_decode: bool

    def _load(self, *args) -> dict | SkippedSample:
        """Open, decode and post-process one sample (run in the decode child)."""
        raise NotImplementedError

    def _check_decode_options(self) -> None:
        """Check the options and resolve ``backend`` now, not inside a worker: there an
        unknown backend's ValueError would read as a damaged file and skip every video."""
        check_on_error(self.on_error)
        self.backend = resolve_backend(self.backend)
        for name in ("decode_timeout_s", "recycle_after_clips", "recycle_rss_growth_mb"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value!r}")

    def _decode_process(self):
        from ..io.watchdog import DecodeProcess

        proc = self.__dict__.get("_decoder")
        if proc is None or proc.owner != os.getpid():  # none yet, or the parent's (forked copy)
            proc = DecodeProcess(self._load_for_wire, timeout_s=self.decode_timeout_s,
                                 max_calls=self.recycle_after_clips,
                                 max_rss_growth_mb=self.recycle_rss_growth_mb,
                                 prepare=lambda: _import_decoder(self.backend))
            self.__dict__["_decoder"] = proc
        return proc

    def _load_for_wire(self, *args):
        """``_load`` with tensors as numpy arrays: their data then travels out of band, through
        the decode process's shared buffer, not through the pipe."""
        out = self._load(*args)
        if isinstance(out, dict):
            out = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in out.items()}
        return out

    def _isolated(self, path: str, *args) -> dict | SkippedSample:
        if not self.isolate_decode:
            return self._load(*args)
        from ..io.watchdog import CallTimeout, ChildDied

        error: VideoDecodeError
        try:
            out = self._decode_process().call(*args)
        except CallTimeout:
            error = DecodeTimeout(path, f"decode took longer than {self.decode_timeout_s:g} s")
        except ChildDied as e:
            error = VideoDecodeError(path, str(e))
        else:
            if isinstance(out, dict):
                out = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                       for k, v in out.items()}
            return out
        if self.on_error == "raise":
            raise error
        return SkippedSample(path, error.reason)

    def close(self) -> None:
        """End this process's decode process (it also ends with the process)."""
        proc = self.__dict__.pop("_decoder", None)
        if proc is not None:
            proc.close()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_decoder", None)  # a process handle does not travel; the receiver makes its own
        return state


@dataclass
class VideoClipDataset(DecodesInChild, torch.utils.data.Dataset):
    """One clip per video: ``{"clip": uint8 (T, H, W, C), "label", "video_id", "indices"}``.

    ``frame_size=(H, W)`` resizes frames in the worker (uint8, antialiased) so clips of
    videos with different resolutions stack into one batch; ``None`` keeps the decoded size.

    Decoding runs in a child process of whichever process reads (see
    :mod:`accel.io.watchdog`), for every backend:

    * ``decode_timeout_s``: a clip not decoded in this time is abandoned (the child is
      killed and replaced) and the file skipped with the reason; None waits for ever.
    * ``recycle_after_clips`` / ``recycle_rss_growth_mb``: the child is replaced after this
      many clips, or once its memory has grown this much past its size after the first
      clip, so decoder leaks stay bounded and persistent DataLoader workers are safe with
      every backend. None switches a limit off.
    * ``isolate_decode=False`` decodes in the calling process: no time limit, no recycling
      (profiling, debugging).
    """

    manifest: Manifest
    clip_len: int = 16
    strategy: Strategy = "uniform"
    stride: int = 1
    short: ShortPolicy = "repeat_last"
    backend: str = "auto"
    frame_size: tuple[int, int] | None = None
    on_error: str = "skip"
    decode_timeout_s: float | None = 30.0
    seed: int = 0
    recycle_after_clips: int | None = 1000
    recycle_rss_growth_mb: float | None = 256.0
    isolate_decode: bool = True
    rotate: bool = True  # frames as displayed (the display matrix applied); False: as stored
    epoch: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        for name, value, allowed in (("strategy", self.strategy, STRATEGIES),
                                     ("short", self.short, SHORT_POLICIES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if self.clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {self.clip_len}")
        self._check_decode_options()

    def __len__(self) -> int:
        return len(self.manifest)

    def set_epoch(self, epoch: int) -> None:
        """Random strategies draw different clips each epoch, reproducibly.

        Inside a DataLoader, workers hold their own copy of the dataset (persistent workers
        keep it across epochs), so the loader passes ``(index, epoch)`` keys instead.
        """
        self.epoch = epoch

    def open_reader(self, path: str) -> VideoReader:
        """The reader for one sample (a subclass may read differently, e.g. benchmarks)."""
        return open_sample(path, self.backend, rotate=self.rotate)

    def __getitem__(self, key: int | tuple[int, int]) -> dict | SkippedSample:
        index, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        return self._isolated(self.manifest.path(index), index, epoch)

    def _load(self, index: int, epoch: int) -> dict | SkippedSample:
        """Open, sample, decode and resize one clip (in the decode process)."""
        item = self.manifest.items[index]
        generator = clip_generator(self.seed, epoch, index)

        def choose(num_frames: int) -> list[int]:
            return sample_indices(num_frames, self.clip_len, self.strategy, stride=self.stride,
                                  generator=generator, short=self.short)

        read = read_frames(item.path, self.backend, choose, on_error=self.on_error,
                           open_reader=lambda path, backend: self.open_reader(path))
        if isinstance(read, SkippedSample):
            return read
        clip, indices = read
        if self.frame_size is not None and tuple(clip.shape[1:3]) != tuple(self.frame_size):
            clip = resize_frames(clip, self.frame_size)
        return {"clip": clip, "label": item.label, "video_id": index,
                "indices": torch.as_tensor(indices, dtype=torch.int64)}


def resize_frames(clip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (T, H, W, C) -> uint8 (T, h, w, C), antialiased, staying channels-last."""
    from torchvision.transforms.v2 import functional as F

    frames = clip.permute(0, 3, 1, 2)  # (T, C, H, W) view in channels_last memory
    out = F.resize(frames, list(size), antialias=True)
    return out.permute(0, 2, 3, 1).contiguous()  # free when resize kept channels_last
