"""The training step loop (accel.train.engine.train_one_epoch) and the device prefetcher: nothing
in the hot path reads a device tensor back to the host (a device sync per step)."""
from __future__ import annotations

import torch
from torch import nn

from accel.data.batch import ClipBatch
from accel.data.prefetch import DevicePrefetcher
from accel.train.engine import train_one_epoch
from accel.train.optim import LRSchedule


class DeviceIds(torch.Tensor):
    """Video ids standing in for ids on the GPU: records every read back to the host."""

    reads: list[str] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name in ("tolist", "item", "cpu", "numpy", "__iter__", "__array__", "__int__", "__index__", "to"):
            cls.reads.append(name)
        return super().__torch_function__(func, types, args, kwargs or {})


class Batches:
    """A sized iterable of batches that notes the host reads made while the steps ran."""

    def __init__(self, batches):
        self.batches, self.reads_during_steps = batches, None

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        yield from self.batches
        self.reads_during_steps = list(DeviceIds.reads)  # the loop is over, the epoch not yet


def test_step_loop_reads_no_video_id_back_per_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ids = [[0, 1], [2, 3], [4, 5]]
    batches = Batches([ClipBatch(clip=torch.randn(2, 3, 2, 4, 4), label=torch.tensor([0, 1]),
                                 video_id=torch.tensor(v).as_subclass(DeviceIds),
                                 indices=torch.zeros(2, 2, dtype=torch.int64)) for v in ids])
    DeviceIds.reads.clear()
    stats = train_one_epoch(model, model, nn.CrossEntropyLoss(), opt, LRSchedule(opt, total_steps=3), batches)
    assert batches.reads_during_steps == [], f"host reads of the ids in the step loop: {batches.reads_during_steps}"
    assert stats["video_ids"] == [0, 1, 2, 3, 4, 5] and stats["clips"] == 6


class HiddenBar:
    """What train.py gives a rank that shows no progress: a disabled tqdm."""

    disable = True
    updates = 0

    def update(self, n):
        self.updates += n

    def set_postfix(self, **kw):
        raise AssertionError("a hidden bar got a postfix")


def test_a_hidden_progress_bar_costs_no_host_sync(monkeypatch):
    """The running loss/accuracy are read back (Tensor.item, a sync) only for a shown bar."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [ClipBatch(clip=torch.randn(2, 3, 2, 4, 4), label=torch.tensor([0, 1]),
                         video_id=torch.tensor([0, 1]), indices=torch.zeros(2, 2, dtype=torch.int64))] * 3
    reads = []
    item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append(1) or item(self))
    bar = HiddenBar()
    train_one_epoch(model, model, nn.CrossEntropyLoss(), opt, LRSchedule(opt, total_steps=3), batches,
                    progress=bar, print_freq=1)
    assert bar.updates == 3
    assert len(reads) <= 2  # the epoch's final loss and accuracy, once


def test_prefetcher_keeps_ids_and_indices_on_the_host():
    """'meta' stands in for the GPU: clip and label move, ids and frame indices do not."""
    batch = ClipBatch(clip=torch.zeros(2, 3, 2, 4, 4, dtype=torch.uint8), label=torch.tensor([0, 1]),
                      video_id=torch.tensor([7, 9]), indices=torch.tensor([[0, 5], [1, 6]]))
    (out,) = list(DevicePrefetcher([batch], "meta"))
    assert out.clip.device.type == "meta" and out.label.device.type == "meta"
    assert out.video_id.device.type == "cpu" and out.indices.device.type == "cpu"
    assert out.video_id.tolist() == [7, 9]
