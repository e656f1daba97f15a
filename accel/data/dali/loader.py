"""The DALI data path: the Python sampler picks the frames, DALI decodes them (NVDEC on a GPU).

One clip per video, the same batch contract as :func:`accel.data.loader.build_loader`: a
:class:`~accel.data.batch.ClipBatch` with the clip (B, C, T, H, W) channels_last_3d on the
pipeline's device (uint8; with ``augment``, float and normalised with its ``mean``/``std``).

:class:`DaliClipLoader` iterates and assembles batches; the parts it drives:

* :mod:`.plan`: which manifest indices make each batch (the CPU loader's samplers) and each
  sample's frames (``clip_seed`` + ``sample_indices``, as the CPU dataset draws them);
* :mod:`.feed`: DALI's external source: per-sample probe, routing and bytes, the batches in
  flight and each planned batch's bookkeeping;
* :mod:`.pipeline`: the DALI graphs (decode, post-processing) and the DLPack handover;
* :mod:`.recovery`: stalls, replays, the CPU fallback, failure counting (the error policy);
* :mod:`.probe`, :mod:`.augment`, :mod:`.install`: demux probe and routing tables, in-pipeline
  augmentation, availability.

Pipelines are released at the end of every epoch, also one left early
(:meth:`DaliClipLoader.close`): a process that forks while DALI pipelines are alive can crash
its children (PyTorch DataLoader workers forked after this loader's pipeline and an
``fn.experimental.readers.video`` pipeline were built died with SIGSEGV; not once both were
released). Building a pipeline again is cheap.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from ...io.backends import resolve_backend
from ..batch import ClipBatch
from ..manifests import Manifest
from ..options import DaliDevice
from ..reading import ON_ERROR, OnError
from ..sampling import SHORT_POLICIES, STRATEGIES, ShortPolicy, Strategy
from .augment import DaliAugment
from .feed import Feed, Group
from .install import DALI_DEVICES, require_dali
from .pipeline import DaliPipelines
from .plan import ClipPlan
from .probe import ProbeCache
from .recovery import CpuFallback, Recovery, call_with_timeout


def check_options(*, strategy: str, short: str, on_error: str, device: str, batch_size: int,
                  clip_len: int, shard_id: int, num_shards: int) -> None:
    """ValueError naming the first option out of range."""
    for name, value, allowed in (("strategy", strategy, STRATEGIES), ("short", short, SHORT_POLICIES),
                                 ("on_error", on_error, ON_ERROR), ("device", device, DALI_DEVICES)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    if batch_size < 1 or clip_len < 1:
        raise ValueError(f"batch_size and clip_len must be >= 1, got {batch_size}, {clip_len}")
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be in [0, num_shards={num_shards}), got {shard_id}")


class DaliClipLoader:
    """Batches of one clip per video decoded by DALI; see the module docstring.

    Order and sharding (:class:`~accel.data.dali.plan.ClipPlan`): ``sampler`` (any iterable
    of manifest indices, e.g. :class:`accel.data.samplers.ShardedSampler`, re-read each
    epoch) wins; otherwise ``shuffle=True`` reads :class:`~accel.data.samplers.ShuffleSampler`
    (``ShardedSampler``'s shard ``shard_id`` of ``num_shards`` when sharded), and
    ``shuffle=False`` (evaluation) every sample once over the shards, with the same number of
    batches on every shard.

    device: "gpu" (``device="mixed"`` decoder, outputs on ``cuda:device_id``) or "cpu".
    augment: a :class:`DaliAugment` (float output) or None (uint8 output, resized to
    ``frame_size`` (H, W) when given, else the decoded size). ``fallback``: the CPU backend
    for files DALI cannot decode ("auto": the best one; None: skip them).
    """

    backend = "dali"

    def __init__(self, manifest: Manifest, *, batch_size: int, clip_len: int = 16,
                 strategy: Strategy = "uniform", stride: int = 1, short: ShortPolicy = "repeat_last",
                 frame_size: tuple[int, int] | None = None, augment: DaliAugment | None = None,
                 device: DaliDevice = "gpu", device_id: int | None = None, sampler=None,
                 shuffle: bool = False, shard_id: int = 0, num_shards: int = 1,
                 drop_last: bool = False, on_error: OnError = "skip", fallback: str | None = "auto",
                 decode_timeout_s: float | None = 30.0, pipeline_timeout_s: float | None = None,
                 seed: int = 0, num_threads: int | None = None, prefetch_queue_depth: int = 2,
                 max_failures: int = 8, reason: str = ""):
        check_options(strategy=strategy, short=short, on_error=on_error, device=device,
                      batch_size=batch_size, clip_len=clip_len, shard_id=shard_id, num_shards=num_shards)
        require_dali(device)
        self.manifest, self.device, self.on_error = manifest, device, on_error
        self.reason = reason or f"DALI on {device}"
        self.device_id = (device_id if device_id is not None else torch.cuda.current_device()) \
            if device == "gpu" else None
        # NVDEC's codecs and sizes depend on the GPU generation (dali_route)
        self.capability = torch.cuda.get_device_capability(self.device_id) if device == "gpu" else None
        self.fallback = None if fallback in (None, "none") else resolve_backend(fallback)
        self.pipeline_timeout_s = pipeline_timeout_s if pipeline_timeout_s is not None else \
            (decode_timeout_s * batch_size if decode_timeout_s else None)
        self.plan = ClipPlan(manifest, batch_size=batch_size, clip_len=clip_len, strategy=strategy,
                             stride=stride, short=short, seed=seed, sampler=sampler, shuffle=shuffle,
                             shard_id=shard_id, num_shards=num_shards, drop_last=drop_last,
                             augment=augment)
        self.pipelines = DaliPipelines(
            batch_size=batch_size, num_threads=max(1, num_threads or 2), device=device,
            device_id=self.device_id, prefetch_queue_depth=max(1, prefetch_queue_depth), seed=seed,
            augment=augment, frame_size=(int(frame_size[0]), int(frame_size[1])) if frame_size is not None else None)
        self.feed = Feed(manifest, self.plan, ProbeCache(decode_timeout_s), device=device,
                         capability=self.capability, on_error=on_error)
        self.cpu_fallback = CpuFallback(self.fallback, self.plan, self.pipelines, on_error=on_error,
                                        timeout_s=decode_timeout_s)
        self.recovery = Recovery(max_failures)
        self.skipped: list[tuple[str, str]] = []
        self.start = 0  # samples of this epoch's order to pass over (set_epoch)
        self._pipe: Any = None  # the running decode pipeline (nvidia.dali.Pipeline), if any

    # -- plan ------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self.plan.epoch

    @property
    def fallbacks(self) -> list[tuple[str, str]]:
        """``(path, why)`` of every file the CPU fallback decoded."""
        return self.cpu_fallback.fallbacks

    def set_epoch(self, epoch: int, *, start: int = 0) -> None:
        """Random strategies, shuffling and augmentation differ per epoch, reproducibly;
        ``start``: the samples of the epoch's order already trained (a run resumed mid-epoch)."""
        self.plan.set_epoch(epoch)
        self.start = start

    def batches(self) -> list[list[int]]:
        """This shard's batches of manifest indices for the current epoch (from ``start`` on)."""
        planned, done = self.plan.batches(), 0
        while planned and done < self.start:
            done += len(planned.pop(0))
        return planned

    def __len__(self) -> int:
        return len(self.batches())

    # -- pipelines (methods, so tests can count builds and simulate stalls) -------------
    def _new_pipeline(self):
        """The decode pipeline, its input pulled from the feed."""
        return self.pipelines.decode_pipeline(self.feed.source)

    def _outputs(self, pipe):
        """One batch of outputs."""
        return pipe.outputs()

    def close(self) -> None:
        """Release the pipelines (and their threads); the next epoch builds new ones."""
        self._pipe = None
        self.cpu_fallback.close()

    # -- iteration -------------------------------------------------------------------
    def __iter__(self) -> Iterator[ClipBatch]:
        plan = self.batches()
        self.feed.start(plan)
        self.recovery.reset()
        try:
            yield from self._run(len(plan))
        finally:  # also when the consumer stops early: nothing of this epoch stays in flight
            self.close()

    def _run(self, num_groups: int) -> Iterator[ClipBatch]:
        """Batches in planned order, each once all its DALI parts and fallbacks are in."""
        self._start_pipeline()
        next_gid = 0
        while next_gid < num_groups:
            group = self.feed.groups.get(next_gid)
            if group is None or group.pending:
                self._advance(next_gid)
                continue
            del self.feed.groups[next_gid]
            next_gid += 1
            batch = self._finish(group)
            if batch is not None:
                yield batch

    def _start_pipeline(self) -> None:
        """A fresh decode pipeline; its first runs pull the next queued batches from the feed."""
        pipe = self._pipe = self._new_pipeline()
        self.feed.exhausted = False
        pipe.schedule_run()  # pulls the first prefetch_queue_depth batches

    def _advance(self, next_gid: int) -> None:
        """One step: schedule a run, or take the oldest batch's outputs (or recover from it)."""
        pipe = self._pipe
        if not self.feed.inflight:
            if self.feed.exhausted and not self.feed.queue:
                raise RuntimeError(f"DALI loader lost track of batch {next_gid}")  # a bug
            pipe.schedule_run()
            return
        try:
            outputs = call_with_timeout(lambda: self._outputs(pipe), self.pipeline_timeout_s)
        except StopIteration:
            raise RuntimeError("the DALI pipeline ended before its batches did") from None
        except Exception as e:  # DALI raises RuntimeError with its own message
            self._pipe = None
            self.recovery.recover(e, pipe, self.feed)
            self._start_pipeline()
            return
        self.recovery.reset()
        self._collect(outputs, pipe)
        pipe.schedule_run()

    def _collect(self, outputs, pipe) -> None:
        """File the oldest in-flight batch's clips with its planned batch."""
        video, _label, video_id = outputs
        gid, samples = self.feed.inflight.popleft()
        ids = np.asarray(video_id.as_tensor()).reshape(-1).tolist()
        if ids != [s.index for s in samples]:
            raise RuntimeError(f"DALI outputs out of step: video ids {ids} for batch "
                               f"{[s.index for s in samples]}")
        group = self.feed.groups[gid]
        group.parts.append((samples, self.pipelines.to_torch(video, pipe)))
        group.pending -= 1

    # -- batch assembly --------------------------------------------------------------
    def _cpu_clips(self, group: Group) -> list:
        """The group's CPU-fallback samples with their post-processed clips."""
        return self.cpu_fallback.clips(group)

    def _finish(self, group: Group) -> ClipBatch | None:
        cpu = self._cpu_clips(group) if group.cpu else []
        self.skipped.extend(group.skipped)
        if len(group.parts) == 1 and not cpu:
            samples, clips = group.parts[0]
        else:
            pairs = [(s, clips[i]) for samples, clips in group.parts for i, s in enumerate(samples)] + cpu
            if not pairs:
                return None  # every file of this batch was skipped
            pairs.sort(key=lambda p: p[0].pos)
            shapes = {tuple(c.shape) for _, c in pairs}
            if len(shapes) > 1:
                raise ValueError(f"clips of different shapes {sorted(shapes)[:3]} in one batch: pass "
                                 f"frame_size (or augment) so that they share one size")
            samples = [s for s, _ in pairs]
            clips = torch.stack([c for _, c in pairs])
        a = self.pipelines.augment  # its crop_mirror_normalize applied mean / std (pipeline.py)
        return ClipBatch(clip=clips.permute(0, 4, 1, 2, 3),  # (B, T, H, W, C) memory: channels_last_3d
                         label=torch.tensor([s.label for s in samples], dtype=torch.int64),
                         video_id=torch.tensor([s.index for s in samples], dtype=torch.int64),
                         indices=torch.tensor([s.indices for s in samples], dtype=torch.int64),
                         skipped=list(group.skipped),
                         mean=tuple(a.mean) if a is not None else None,
                         std=tuple(a.std) if a is not None else None,
                         normalized_by=(f"DaliClipLoader(augment=DaliAugment(size={a.size}, train={a.train}, "
                                        f"dtype={a.dtype!r}))") if a is not None else None)
