"""Batches on the device, as float, normalised once: :class:`DevicePrefetcher`."""
from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import torch

from .batch import ClipBatch
from .config import IMAGENET_MEAN, IMAGENET_STD, stats_tuple
from .transforms import Normalize


def _same_stats(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9) for x, y in zip(a, b))


class DevicePrefetcher:
    """Yields :class:`ClipBatch` es on ``device`` with the clip as ``dtype``, normalised once.

    On CUDA the uint8 copy of batch i+1 runs on a side stream, overlapping the compute of
    batch i; on CPU this only converts. Only ``clip`` and ``label`` move (``ClipBatch.to``):
    ``video_id`` and ``indices`` stay on the host.

    What is applied to a raw (uint8) clip: ``transform`` (e.g. a :class:`ClipTransform`,
    called with ``generator=generator`` when one is given), else plain normalisation with
    ``mean``/``std`` (a model's: ``models.resolve_data_config(model).mean``; ImageNet's when
    neither is given). The yielded batch is marked normalised with those statistics (a
    transform's own ``mean``/``std`` attributes; a transform without them needs ``mean=``
    and ``std=``).

    A batch that arrives normalised already (``DaliClipLoader(augment=DaliAugment(...))``)
    is not normalised again: with no ``transform`` and the same statistics it passes
    through, converted to ``dtype`` only; with a ``transform``, or other statistics, it is a
    ValueError that says what normalised it and what to pass instead.
    """

    def __init__(self, loader, device: torch.device | str, *,
                 transform: Callable[..., torch.Tensor] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32):
        if (mean is None) != (std is None):
            raise ValueError("pass both mean and std, or neither")
        self.loader = loader
        self.device = torch.device(device)
        self.transform = transform
        self.generator = generator
        self.dtype = dtype
        self.cuda = self.device.type == "cuda"
        given = (stats_tuple(mean, "mean"), stats_tuple(std, "std")) \
            if mean is not None and std is not None else None
        own = None
        own_mean, own_std = getattr(transform, "mean", None), getattr(transform, "std", None)
        if own_mean is not None and own_std is not None:
            own = (stats_tuple(own_mean, "mean"), stats_tuple(own_std, "std"))
        if own is not None and given is not None and not (
                _same_stats(own[0], given[0]) and _same_stats(own[1], given[1])):
            raise ValueError(f"the transform normalises with mean {own[0]}, std {own[1]}, but "
                             f"mean={given[0]}, std={given[1]} were passed: pass one of them")
        if transform is not None and own is None and given is None:
            raise ValueError(f"{_name(transform)} has no mean/std attributes: pass mean= and std= "
                             f"(the statistics it normalises with), so that the batches say so")
        self.mean, self.std = own or given or (IMAGENET_MEAN, IMAGENET_STD)
        self._normalizer = Normalize(self.mean, self.std)  # the stats go to the device once

    def __len__(self) -> int:
        return len(self.loader)

    def _to_device(self, batch: ClipBatch) -> ClipBatch:
        return batch.to(self.device, non_blocking=True)

    def _check_normalized(self, batch: ClipBatch) -> None:
        """Raise unless an already normalised ``batch`` can pass through as it is."""
        stats = batch.stats
        if stats is None:
            raise ValueError("DevicePrefetcher: a batch marked normalised carries no mean/std")
        mean, std = stats
        by = batch.normalized_by or type(self.loader).__name__
        what = (f"the batch arrives normalised already (by {by}: mean {batch.mean}, std {batch.std}, "
                f"{str(batch.dtype).removeprefix('torch.')})")
        if self.transform is not None:
            raise ValueError(
                f"DevicePrefetcher: {what}, and transform={_name(self.transform)} would apply on top "
                f"of it. Pass transform=None with mean={batch.mean}, std={batch.std} to take it as it "
                f"is (converted to {str(self.dtype).removeprefix('torch.')} only), or have the loader "
                f"deliver raw uint8 clips (DaliClipLoader without augment) for this transform")
        if not (_same_stats(mean, self.mean) and _same_stats(std, self.std)):
            raise ValueError(
                f"DevicePrefetcher: {what}, not with the mean {self.mean}, std {self.std} it is to "
                f"have. Pass mean={batch.mean}, std={batch.std} if those are the model's, or "
                f"normalise in the loader with the model's statistics (DaliAugment(mean=..., std=...))")

    def _finish(self, batch: ClipBatch) -> ClipBatch:
        if batch.normalized:
            self._check_normalized(batch)
            return batch.replace(clip=batch.clip.to(self.dtype))
        if self.transform is None:
            clip = self._normalizer(batch.clip)
            by = "DevicePrefetcher (normalize)"
        else:
            clip = (self.transform(batch.clip, generator=self.generator) if self.generator is not None
                    else self.transform(batch.clip))
            by = f"DevicePrefetcher ({_name(self.transform)})"
        return batch.with_clip(clip.to(self.dtype), mean=self.mean, std=self.std, by=by)

    def __iter__(self) -> Iterator[ClipBatch]:
        if not self.cuda:
            for batch in self.loader:
                yield self._finish(self._to_device(batch))
            return
        stream = torch.cuda.Stream(self.device)
        pending = None
        for batch in self.loader:
            with torch.cuda.stream(stream):
                moved = self._to_device(batch)
            if pending is not None:
                yield self._finish(pending)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            for v in (moved.clip, moved.label):  # what ClipBatch.to moved
                if v.is_cuda:
                    v.record_stream(torch.cuda.current_stream(self.device))
            pending = moved
        if pending is not None:
            yield self._finish(pending)


def _name(transform) -> str:
    return getattr(transform, "__name__", None) or type(transform).__name__
