"""Distributed data parallel plumbing for ``torchrun``: process group, barriers, gathers.

``torchrun --nproc_per_node=N train.py ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; without
them everything here degrades to one process (rank 0 of 1). A torchrun launch always makes
its process group, even of one process, so that ``--nproc_per_node=1`` runs the same DDP and
collective path as N processes (and its NCCL or Gloo set-up is checked). The backend is NCCL
on CUDA and Gloo on CPU.

The shard samplers live with the data path (:mod:`accel.data.samplers`): deterministic
functions of (seed, epoch), each rank taking its own disjoint slice of one global order.

Several nodes: run the same torchrun command on each with ``--nnodes N --nproc_per_node P``
and one rendezvous (``--rdzv_backend c10d --rdzv_endpoint HOST:PORT --rdzv_id JOB``); ranks
(shards) are global, devices follow LOCAL_RANK, and only global rank 0 writes.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        """A process group exists (torchrun launched us), whatever its size."""
        return self.backend is not None

    def describe(self) -> dict:
        """What metrics.json records: ``{"backend": "nccl" | "gloo" | None, "world_size": N}``."""
        return {"backend": self.backend, "world_size": self.world_size}

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
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:  # not launched by torchrun
        return DistInfo()
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    backend = "nccl" if device_kind == "cuda" else "gloo"
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                                **restart_store(rank, world, timeout_s))
    return DistInfo(rank, world, local_rank, backend)


def restart_store(rank: int, world: int, timeout_s: float) -> dict:
    """After a torchrun restart, a store whose keys are this attempt's own: torchrun's agent
    keeps one store across attempts, and a rank that starts before its peers otherwise reads
    the dead attempt's addresses (Gloo: "connectFullMesh failed ... Connection refused")."""
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if not attempt or "MASTER_ADDR" not in os.environ:
        return {}
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=rank == 0 and not agent_store, timeout=datetime.timedelta(seconds=timeout_s))
    return {"store": dist.PrefixStore(f"vidaccel/attempt{attempt}", store), "rank": rank, "world_size": world}


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


def gather_arrays(parts: Sequence[Any], info: DistInfo) -> list[Any]:
    """Flattened list of every rank's ``parts`` (rank order)."""
    out: list[Any] = []
    for p in all_gather_objects(list(parts), info):
        out.extend(p)
    return out
