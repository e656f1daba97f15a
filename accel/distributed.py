"""Distributed data parallel plumbing for ``torchrun``: process group, samplers, gathers.

``torchrun --nproc_per_node=N train.py ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; without
them everything here degrades to one process (rank 0 of 1). The backend is NCCL on CUDA
and Gloo on CPU.

Samplers are deterministic functions of (seed, epoch): a resumed run draws the same order
as an uninterrupted one, and every rank computes the same global order, then takes its own
disjoint slice of equal length.

Several nodes: run the same torchrun command on each with ``--nnodes N --nproc_per_node P``
and one rendezvous (``--rdzv_backend c10d --rdzv_endpoint HOST:PORT --rdzv_id JOB``); ranks
(shards) are global, devices follow LOCAL_RANK, and only global rank 0 writes.
"""
from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


DEFAULT_TIMEOUT_S = 300.0


def init_distributed(device_kind: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op otherwise).

    ``timeout_s`` bounds every collective: when a rank stops answering (stopped, hung in a
    driver, a dead NCCL peer) the others fail after this long, instead of torch's default
    (30 minutes for Gloo, 10 for NCCL), and torchrun ends the job.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    backend = "nccl" if device_kind == "cuda" else "gloo"
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, world, local_rank, backend)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def destroy(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` on one process)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class ShardedSampler(Sampler[int]):
    """Training order for one rank: a seeded global permutation (or weighted draw with
    replacement when ``weights`` is given), truncated to a multiple of ``world_size``, then
    every ``world_size``-th index from ``rank``. Ranks get disjoint shards (for the weighted
    draw: disjoint positions of one global draw) of equal length.
    """

    def __init__(self, num_items: int, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True, weights: torch.Tensor | None = None,
                 num_samples: int | None = None) -> None:
        if num_items < world_size:
            raise ValueError(f"{num_items} training samples cannot be shared by {world_size} processes")
        self.num_items = num_items
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle = shuffle
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        total = num_samples or num_items
        self.total = total - total % world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_order(self) -> list[int]:
        g = _epoch_generator(self.seed, self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.total, replacement=True, generator=g)
        elif self.shuffle:
            order = torch.randperm(self.num_items, generator=g)
        else:
            order = torch.arange(self.num_items)
        return order[: self.total].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_order()[self.rank:: self.world_size])

    def __len__(self) -> int:
        return self.total // self.world_size


class ShardSampler(Sampler[int]):
    """Evaluation shard: indices ``rank, rank + world, ...`` in order; shards may differ in
    length by one, and together cover every index exactly once (no padding duplicates)."""

    def __init__(self, num_items: int, *, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, num_items, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def steps_per_epoch(num_batches: int, accum_steps: int) -> int:
    return math.ceil(num_batches / max(1, accum_steps))


def gather_arrays(parts: Sequence[Any], info: DistInfo) -> list[Any]:
    """Flattened list of every rank's ``parts`` (rank order)."""
    out: list[Any] = []
    for p in all_gather_objects(list(parts), info):
        out.extend(p)
    return out
