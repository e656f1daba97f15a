"""``build_loader``: a DataLoader of uint8 channels-last clip batches (or the DALI loader).

Batch: a :class:`~accel.data.batch.ClipBatch`: ``clip`` uint8 (B, C, T, H, W) channels_last_3d,
``label`` int64 (B,), ``video_id`` int64 (B,), ``indices`` int64 (B, T), ``skipped``
[(path, reason), ...], not normalised. The collate stacks the decoders' (T, H, W, C) clips
once into (B, T, H, W, C) memory and returns its (B, C, T, H, W) permutation:
channels_last_3d, no copy.

:class:`~accel.data.prefetch.DevicePrefetcher` takes the batches to the device.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Literal, Protocol, get_args, runtime_checkable

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..io.backends import AUTO_ORDER, available_backends
from .batch import ClipBatch
from .collate import collate_clips
from .dataset import VideoClipDataset
from .manifests import Manifest
from .options import DaliOptions, DecodeOptions, WatchdogOptions
from .reading import OnError, check_on_error
from .samplers import EpochSampler, ShuffleSampler
from .sampling import Strategy

LoaderBackend = Literal["auto", "dali", "torchcodec", "decord", "pyav"]
LOADER_BACKENDS: tuple[LoaderBackend, ...] = get_args(LoaderBackend)
assert LOADER_BACKENDS[2:] == AUTO_ORDER  # the CPU decoders in auto's order of preference


@runtime_checkable
class ClipBatchLoader(Protocol):
    """What training and evaluation read batches from: :class:`ClipLoader` (CPU decoders) and
    :class:`~accel.data.dali.DaliClipLoader` both are one; :func:`build_loader` returns one.
    (``isinstance`` checks that the members are there, not their types.)"""

    @property
    def backend(self) -> str:
        """The decoder that reads the clips."""

    @property
    def reason(self) -> str:
        """Why that decoder was chosen."""

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every file skipped so far."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[ClipBatch]: ...

    def set_epoch(self, epoch: int, *, start: int = 0) -> None:
        """Read epoch ``epoch``'s order from position ``start`` (a run resumed mid-epoch)."""


@dataclass
class ClipLoader:
    """Iterates batches of a :class:`VideoClipDataset`; records every skipped file.

    ``backend`` is the decoder used and ``reason`` says why it was chosen.
    """

    dataset: Dataset  # a VideoClipDataset, or the window reader's VideoWindowsDataset
    loader: DataLoader
    backend: str
    reason: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int, *, start: int = 0) -> None:
        """Read epoch ``epoch``'s sample order from position ``start`` (a multiple of the
        batch size: a run resumed mid-epoch)."""
        dataset_set_epoch = getattr(self.dataset, "set_epoch", None)  # windows: one pass, no epochs
        if dataset_set_epoch is not None:
            dataset_set_epoch(epoch)
        if hasattr(self.loader.sampler, "set_epoch"):  # build_loader's EpochSampler has it
            self.loader.sampler.set_epoch(epoch, start=start)
        elif start:
            raise ValueError(f"this loader's sampler ({type(self.loader.sampler).__name__}) cannot start mid-epoch")

    def __iter__(self) -> Iterator[ClipBatch]:
        dropped: list[tuple[str, str]] = []
        for batch in self.loader:
            self.skipped.extend(batch.skipped)
            if batch.is_empty:
                dropped += batch.skipped  # every sample of this batch was skipped
                continue
            # The next batch carries the dropped batches' skips: each yielded batch accounts
            # for every sample read since the one before (a mid-epoch position counts them).
            yield batch.replace(skipped=dropped + list(batch.skipped)) if dropped else batch
            dropped = []


def check_backend(backend: str) -> LoaderBackend:
    """``backend`` if it is one of :data:`LOADER_BACKENDS`, else a ValueError listing them."""
    if backend not in LOADER_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(LOADER_BACKENDS)}; got {backend!r}")
    return backend


def choose_backend(backend: str, device: torch.device | str | None = None, *,
                   dali: bool = False, dali_device: str | None = None) -> tuple[str, str]:
    """Resolve ``auto`` to a decoder; return (backend, why).

    ``dali=True`` (what :func:`build_loader` passes) lets ``auto`` pick DALI when CUDA and
    DALI are there (and ``device`` is CUDA or unset), and lets ``dali`` through, stopping
    with a one-line :class:`~accel.data.dali.DaliUnavailable` where it cannot run
    (``dali_device="cpu"``: DALI's CPU decoder, VP8/VP9/MJPEG only). Callers that read
    clips their own way on the CPU (``dali=False``, e.g. the video-level window loader) get
    the best CPU decoder instead of DALI, and the reason says so.
    """
    check_backend(backend)
    from .dali import DaliUnavailable, dali_unavailable_message, dali_unavailable_reason

    if backend == "dali" and dali:
        message = dali_unavailable_message(dali_device or "gpu", device)
        if message:
            raise DaliUnavailable(message)
        return "dali", ("asked for: DALI decoding on the GPU (NVDEC)" if (dali_device or "gpu") == "gpu"
                        else "asked for: DALI's CPU decoder (VP8/VP9/MJPEG; other codecs fall back "
                             "to a CPU backend)")
    if backend not in ("auto", "dali"):
        return backend, "asked for"
    why_not = dali_unavailable_reason("gpu", device) if backend == "auto" and dali else None
    if backend == "auto" and dali and why_not is None:
        return "dali", "auto: CUDA and DALI are available: DALI decodes on the GPU (NVDEC)"
    found = available_backends()
    if not found:
        raise RuntimeError("no video decoder available: pip install av")
    missing = [b for b in AUTO_ORDER if b not in found]
    why = f"first available CPU decoder in {'>'.join(AUTO_ORDER)}"
    if missing:
        why += f" ({', '.join(missing)} not installed)"
    if backend == "dali":
        why = f"dali asked for, but this reader decodes on the CPU: {why}"
    elif why_not:
        why = f"auto: {why_not}, so no DALI; {why}"
    else:
        why = f"auto: {why}"
    return found[0], why


def build_loader(manifest: Manifest, *, batch_size: int, clip_len: int = 16,
                 strategy: Strategy = "uniform", frame_size: tuple[int, int] | None = None,
                 backend: LoaderBackend = "auto", num_workers: int = 2, shuffle: bool = False,
                 sampler: Sampler | None = None, drop_last: bool = False, pin_memory: bool | None = None,
                 persistent_workers: bool = True, prefetch_factor: int | None = 2,
                 on_error: OnError = "skip", seed: int = 0, device: torch.device | str | None = None,
                 dataset_type: type[VideoClipDataset] = VideoClipDataset,
                 decode: DecodeOptions = DecodeOptions(), watchdog: WatchdogOptions = WatchdogOptions(),
                 dali: DaliOptions = DaliOptions()) -> ClipBatchLoader:
    """A loader of uint8 channels-last clip batches from ``manifest``.

    ``pin_memory`` defaults to True when CUDA is available. Workers open their own readers.
    ``dataset_type`` swaps in a subclass (the benchmarks' decode-everything baseline).
    ``backend`` and ``on_error`` are checked first: a wrong one stops with the allowed values.
    ``decode`` (:class:`~accel.data.options.DecodeOptions`): the clips' stride, short-video
    policy and rotation.

    ``backend="dali"`` (or ``auto`` on a machine with CUDA and DALI) returns an
    :class:`accel.data.dali.DaliClipLoader`: the same batches, decoded by DALI, with the clip
    already on the GPU; ``num_workers`` sets its CPU threads and ``prefetch_factor`` its queue
    depth. ``dali`` (:class:`~accel.data.options.DaliOptions`): ``device="cpu"`` asks for DALI's
    CPU decoder (VP8/VP9/MJPEG; tests, no GPU); ``augment`` augments inside the DALI pipeline
    (float clips), and with any other decoder it is refused.

    CPU backends decode in a child process of each worker (of this process with
    ``num_workers=0``), watched as ``watchdog`` (:class:`~accel.data.options.WatchdogOptions`)
    says: a clip not decoded within ``timeout_s`` is abandoned and skipped, and the child is
    replaced after ``recycle_after_clips`` clips or ``recycle_rss_growth_mb`` of growth, which
    keeps ``persistent_workers=True`` bounded in memory with every backend (see
    :class:`~accel.data.dataset.VideoClipDataset`).
    """
    check_backend(backend)
    check_on_error(on_error)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    chosen, why = choose_backend(backend, device, dali=dataset_type is VideoClipDataset,
                                 dali_device=dali.device)
    if dali.augment is not None and chosen != "dali":
        raise ValueError(f"dali.augment needs the DALI decoder, but the decoder is {chosen} ({why})")
    timeout_s = watchdog.timeout_s
    if chosen == "dali":
        from .dali import DaliClipLoader

        dev = torch.device(device) if device is not None else None
        return DaliClipLoader(manifest, batch_size=batch_size, clip_len=clip_len, strategy=strategy,
                              stride=decode.stride, short=decode.short, frame_size=frame_size,
                              augment=dali.augment, device=dali.device,
                              device_id=dev.index if dev is not None and dev.type == "cuda" else None,
                              sampler=sampler, shuffle=shuffle, drop_last=drop_last, on_error=on_error,
                              decode_timeout_s=timeout_s, seed=seed, num_threads=max(1, num_workers),
                              prefetch_queue_depth=prefetch_factor or 2, reason=why)
    dataset = dataset_type(manifest, clip_len=clip_len, strategy=strategy, stride=decode.stride,
                           short=decode.short, backend=chosen, frame_size=frame_size,
                           on_error=on_error, decode_timeout_s=timeout_s, seed=seed,
                           recycle_after_clips=watchdog.recycle_after_clips,
                           recycle_rss_growth_mb=watchdog.recycle_rss_growth_mb, rotate=decode.rotate)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    workers = num_workers > 0
    if sampler is None:
        sampler = (ShuffleSampler(len(dataset), seed=seed) if shuffle
                   else torch.utils.data.SequentialSampler(dataset))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=EpochSampler(sampler),
                        num_workers=num_workers, collate_fn=collate_clips,
                        drop_last=drop_last, persistent_workers=persistent_workers and workers,
                        prefetch_factor=prefetch_factor if workers else None,
                        # Pinned on the DataLoader's own thread, off the training loop;
                        # Tensor.pin_memory keeps the strides, so the clip stays channels_last_3d.
                        pin_memory=pin_memory,
                        # A batch takes at most batch_size abandoned decodes (plus forks).
                        timeout=(2 * timeout_s * batch_size if timeout_s and workers else 0))
    return ClipLoader(dataset, loader, chosen, why)


__all__ = ["build_loader", "ClipLoader", "ClipBatchLoader", "choose_backend", "check_backend", "LOADER_BACKENDS",
           "LoaderBackend", "DecodeOptions", "WatchdogOptions", "DaliOptions"]
