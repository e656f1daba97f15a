"""What DALI's external source is fed: one epoch's work queue, batches in flight, bookkeeping.

Why a batch-mode source and our own thin iterator rather than ``DALIGenericIterator``: the
source (:meth:`Feed.source`) can drop a sample it cannot use and return a shorter batch; the
last partial batch is simply shorter (no padding, no dropping); labels, ids and indices stay
with their clips through the error recovery (:mod:`.recovery`), because every planned batch
(a :class:`Group`) keeps its samples, its DALI parts, its CPU-fallback samples and its
skipped files until the loader assembles it.

Per sample, before DALI sees it (:meth:`Feed.ready_for_dali`): a frame folder goes to the CPU
fallback; a video is probed (cached, :class:`~accel.data.dali.probe.ProbeCache`), its frames and
augmentation parameters drawn (:class:`~accel.data.dali.plan.ClipPlan`), routed to the CPU
fallback when DALI's device cannot decode it (:func:`~accel.data.dali.probe.dali_route`),
else its encoded bytes read for DALI. The source runs in the loader's thread, inside
``pipe.schedule_run()``.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...io.index import VideoDecodeError
from ..manifests import Manifest
from ..reading import reason_of
from .pipeline import source_arrays
from .plan import ClipPlan, Sample
from .probe import ProbeCache, dali_route


@dataclass
class Group:
    """One planned batch: its DALI parts, CPU-fallback samples and skipped files."""

    gid: int
    pending: int = 0                                   # DALI parts not yet output
    parts: list = field(default_factory=list)          # (samples, clip tensor)
    cpu: list = field(default_factory=list)            # (Sample, reason) for the fallback
    skipped: list = field(default_factory=list)        # (path, reason)

    def fail(self, sample: Sample, reason: str, on_error: str) -> None:
        """A file neither DALI nor the fallback can use: skip it, or raise."""
        if on_error == "raise":
            raise VideoDecodeError(sample.path, reason)
        self.skipped.append((sample.path, reason))


@dataclass
class Unit:
    """One pull of the source: a planned batch, or (a replay) samples already prepared."""

    gid: int
    positions: list[int] | None = None     # manifest indices, not yet prepared
    samples: list[Sample] | None = None    # prepared (a replay after a failure)


class Feed:
    """One epoch's queue of units, the DALI batches in flight, and each planned batch's state."""

    def __init__(self, manifest: Manifest, plan: ClipPlan, probe: ProbeCache, *, device: str,
                 capability: tuple[int, int] | None, on_error: str):
        self.manifest, self.plan, self.probe = manifest, plan, probe
        self.device, self.capability = device, capability  # NVDEC's codecs depend on the GPU
        self.on_error = on_error
        self.queue: deque[Unit] = deque()
        self.inflight: deque[tuple[int, list[Sample]]] = deque()  # (gid, samples) in DALI
        self.groups: dict[int, Group] = {}
        self.exhausted = False  # the source has raised StopIteration for this pipeline

    def start(self, batches: list[list[int]]) -> None:
        """A new epoch: these planned batches, nothing in flight."""
        self.queue = deque(Unit(g, positions=b) for g, b in enumerate(batches))
        self.inflight.clear()
        self.groups = {}
        self.exhausted = False

    def source(self) -> tuple:
        """The external source: the next batch of encoded files, indices and parameters."""
        while self.queue:
            unit = self.queue.popleft()
            samples = unit.samples if unit.samples is not None else self.prepare(unit)
            if not samples:
                continue
            if unit.samples is None:
                self.groups[unit.gid].pending += 1
            self.inflight.append((unit.gid, samples))
            return source_arrays(samples, self.plan.augment)
        self.exhausted = True
        raise StopIteration

    def prepare(self, unit: Unit) -> list[Sample]:
        """Register a planned batch; return its samples for DALI (others routed or skipped)."""
        group = self.groups.setdefault(unit.gid, Group(unit.gid))
        good = []
        for pos, index in enumerate(unit.positions or []):
            item = self.manifest.items[index]
            sample = Sample(pos, index, item.path, item.label)
            if self.ready_for_dali(group, sample):
                good.append(sample)
        return good

    def ready_for_dali(self, group: Group, s: Sample) -> bool:
        """Probe, draw and read ``s`` for DALI; False when it went to the fallback or was skipped."""
        if Path(s.path).is_dir():  # a frame folder: the CPU reader handles it
            group.cpu.append((s, "frame folder"))
            return False
        try:
            probe = self.probe(s.path)
            self.plan.draw(s, probe.num_frames)
        except (VideoDecodeError, ValueError) as e:
            group.fail(s, reason_of(e), self.on_error)
            return False
        why = probe.cpu_reason or dali_route(probe, self.device, self.capability)
        if why:  # before DALI sees it: a DALI failure would count toward max_failures
            group.cpu.append((s, why))
            return False
        try:
            s.data = np.fromfile(s.path, dtype=np.uint8)
        except OSError as e:
            group.fail(s, f"OSError: {e}", self.on_error)
            return False
        return True
