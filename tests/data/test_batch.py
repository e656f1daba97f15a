"""The typed batch (accel.data.batch.ClipBatch) and the prefetcher's normalise-once rule."""
from __future__ import annotations

import pytest
import torch

# What DataLoader(pin_memory=True)'s pinning thread calls on each batch (no public name).
from torch.utils.data._utils.pin_memory import pin_memory as dataloader_pin_memory  # noqa: PLC2701

from accel.data.batch import ClipBatch
from accel.data.collate import collate_clips
from accel.data.config import IMAGENET_MEAN, IMAGENET_STD, KINETICS400_MEAN, KINETICS400_STD
from accel.data.loader import ClipLoader
from accel.data.prefetch import DevicePrefetcher
from accel.data.reading import SkippedSample
from accel.data.transforms import ClipTransform, normalize
from accel.data.windows import collate_windows


def raw_batch(b: int = 2, t: int = 3, size: int = 8, seed: int = 0) -> ClipBatch:
    g = torch.Generator().manual_seed(seed)
    thwc = torch.randint(0, 256, (b, t, size, size, 3), dtype=torch.uint8, generator=g)
    return ClipBatch(clip=thwc.permute(0, 4, 1, 2, 3), label=torch.arange(b),
                     video_id=torch.arange(10, 10 + b), indices=torch.arange(t).repeat(b, 1))


def dali_like_batch(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> tuple[ClipBatch, torch.Tensor]:
    """What DaliClipLoader(augment=DaliAugment(...)) yields: fp16, normalised, marked so."""
    raw = raw_batch()
    clip = normalize(raw.clip, mean, std).half()
    return raw.with_clip(clip, mean=mean, std=std, by="DaliClipLoader(augment=DaliAugment(...))"), clip


# --------------------------------------------------------------------------- ClipBatch
def test_to_moves_clip_and_label_and_keeps_ids_on_the_host():
    """'meta' stands in for the GPU: ids and frame indices stay where .tolist() is free."""
    batch = raw_batch()
    out = batch.to("meta", non_blocking=True)
    assert out.clip.device.type == "meta" and out.label.device.type == "meta"
    assert out.video_id is batch.video_id and out.indices is batch.indices
    assert out.clip.stride() == batch.clip.stride()  # still channels_last_3d
    assert batch.clip.device.type == "cpu"  # the original is not changed


def test_pin_memory_pins_clip_and_label_and_keeps_the_strides(monkeypatch):
    """DataLoader(pin_memory=True) calls the batch's own pin_memory(). Pinning needs CUDA, so a
    stand-in copies into fresh memory as Tensor.pin_memory does (same strides)."""
    pinned = []

    def fake_pin(self, *args, **kwargs):
        pinned.append(tuple(self.shape))
        return torch.empty_strided(self.shape, self.stride(), dtype=self.dtype).copy_(self)

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    batch = raw_batch()
    out = dataloader_pin_memory(batch)  # what the DataLoader's pinning thread runs
    assert isinstance(out, ClipBatch)
    assert pinned == [tuple(batch.clip.shape), tuple(batch.label.shape)]  # ids are not pinned
    assert out.clip.is_contiguous(memory_format=torch.channels_last_3d)
    assert out.clip.stride() == batch.clip.stride() and torch.equal(out.clip, batch.clip)
    assert out.video_id is batch.video_id and out.indices is batch.indices


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (pinned memory)")
def test_pin_memory_on_cuda_keeps_channels_last():
    out = raw_batch().pin_memory()
    assert out.clip.is_pinned() and out.label.is_pinned()
    assert out.clip.is_contiguous(memory_format=torch.channels_last_3d)
    moved = out.to("cuda", non_blocking=True)
    assert moved.clip.is_cuda and moved.clip.is_contiguous(memory_format=torch.channels_last_3d)
    assert not moved.video_id.is_cuda


def test_collate_of_an_all_skipped_batch_is_an_empty_batch():
    skipped = [SkippedSample("a.mp4", "broken"), SkippedSample("b.mp4", "empty")]
    for collate in (collate_clips, collate_windows):
        batch = collate(skipped)
        assert isinstance(batch, ClipBatch) and batch.is_empty and len(batch) == 0
        assert batch.skipped == [("a.mp4", "broken"), ("b.mp4", "empty")]
        assert batch.video_id.tolist() == [] and batch.label.dtype == torch.int64
        assert not batch.normalized and batch.stats is None


def test_collate_returns_a_raw_clip_batch():
    clip = torch.randint(0, 255, (3, 4, 4, 3), dtype=torch.uint8)
    batch = collate_clips([{"clip": clip, "label": 1, "video_id": 5, "indices": torch.arange(3)},
                           SkippedSample("bad.mp4", "truncated")])
    assert isinstance(batch, ClipBatch) and len(batch) == 1 and not batch.is_empty
    assert batch.dtype == torch.uint8 and not batch.normalized and batch.stats is None
    assert batch.skipped == [("bad.mp4", "truncated")] and batch.video_id.tolist() == [5]


def test_clip_loader_skips_empty_batches_and_records_their_files():
    good = raw_batch()
    loader = ClipLoader(dataset=None, loader=[ClipBatch.empty([("x.mp4", "broken")]), good],
                        backend="pyav", reason="test")
    (out,) = list(loader)
    assert out.clip is good.clip and loader.skipped == [("x.mp4", "broken")]
    assert out.skipped == [("x.mp4", "broken")]  # the dropped batch's skips ride on the next one


def test_a_batch_says_whether_and_how_it_is_normalised():
    with pytest.raises(ValueError, match="mean and std"):
        ClipBatch(clip=torch.zeros(1, 3, 1, 1, 1), label=torch.zeros(1), video_id=torch.zeros(1),
                  indices=torch.zeros(1, 1), mean=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="batch size"):
        ClipBatch(clip=torch.zeros(2, 3, 1, 1, 1), label=torch.zeros(1), video_id=torch.zeros(2),
                  indices=torch.zeros(2, 1))
    batch, _ = dali_like_batch()
    assert batch.normalized and batch.stats == (IMAGENET_MEAN, IMAGENET_STD)
    assert not raw_batch().normalized and raw_batch().stats is None
    assert batch.dtype == torch.float16


# --------------------------------------------------------------------------- the prefetcher
def test_prefetcher_marks_its_batches_normalised_with_its_stats():
    (out,) = DevicePrefetcher([raw_batch()], "cpu", mean=KINETICS400_MEAN, std=KINETICS400_STD)
    assert out.normalized and out.stats == (KINETICS400_MEAN, KINETICS400_STD)
    torch.testing.assert_close(out.clip, normalize(raw_batch().clip, KINETICS400_MEAN, KINETICS400_STD))
    tf = ClipTransform(8, mean=KINETICS400_MEAN, std=KINETICS400_STD)
    (out,) = DevicePrefetcher([raw_batch()], "cpu", transform=tf)
    assert out.stats == (KINETICS400_MEAN, KINETICS400_STD) and out.dtype == torch.float32


def test_prefetcher_passes_a_normalised_batch_through_once():
    """A DALI-augmented (fp16, normalised) batch is converted, not normalised again."""
    batch, clip = dali_like_batch()
    (out,) = DevicePrefetcher([batch], "cpu")
    assert out.dtype == torch.float32 and torch.equal(out.clip, clip.float())
    assert out.stats == (IMAGENET_MEAN, IMAGENET_STD)
    assert out.video_id is batch.video_id
    kin, kclip = dali_like_batch(KINETICS400_MEAN, KINETICS400_STD)
    (out,) = DevicePrefetcher([kin], "cpu", mean=KINETICS400_MEAN, std=KINETICS400_STD)
    assert torch.equal(out.clip, kclip.float())


def test_prefetcher_refuses_a_transform_on_top_of_a_normalised_batch():
    batch, _ = dali_like_batch()
    with pytest.raises(ValueError, match=r"already \(by DaliClipLoader\(augment=DaliAugment.*mean "
                                         r"\(0\.485, 0\.456, 0\.406\).*transform=ClipTransform.*"
                                         r"Pass transform=None with mean="):
        list(DevicePrefetcher([batch], "cpu", transform=ClipTransform(8)))


def test_prefetcher_refuses_a_normalised_batch_with_other_stats():
    batch, _ = dali_like_batch()  # ImageNet-normalised, but the model wants Kinetics
    with pytest.raises(ValueError, match=r"already .*not with the mean \(0\.43216.*Pass mean=\(0\.485"):
        list(DevicePrefetcher([batch], "cpu", mean=KINETICS400_MEAN, std=KINETICS400_STD))


def test_prefetcher_needs_to_know_what_a_transform_normalises_with():
    with pytest.raises(ValueError, match="pass mean= and std="):
        DevicePrefetcher([], "cpu", transform=lambda x: normalize(x))
    with pytest.raises(ValueError, match="pass one of them"):
        DevicePrefetcher([], "cpu", transform=ClipTransform(8), mean=KINETICS400_MEAN, std=KINETICS400_STD)
    with pytest.raises(ValueError, match="both mean and std"):
        DevicePrefetcher([], "cpu", mean=KINETICS400_MEAN)
    (out,) = DevicePrefetcher([raw_batch()], "cpu", transform=lambda x: normalize(x, KINETICS400_MEAN,
                                                                                    KINETICS400_STD),
                              mean=KINETICS400_MEAN, std=KINETICS400_STD)
    assert out.stats == (KINETICS400_MEAN, KINETICS400_STD)


def test_prefetcher_hands_its_generator_to_the_transform():
    """train.py's augmentation stream: the same clips as calling the transform with it."""
    tf = ClipTransform(8, train=True)
    (out,) = DevicePrefetcher([raw_batch()], "cpu", transform=tf, generator=torch.Generator().manual_seed(3))
    want = tf(raw_batch().clip, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out.clip, want)


def test_prefetcher_copies_its_statistics_to_the_device_once(monkeypatch):
    """Plain normalisation: mean/std reach the device once, not once per batch."""
    import accel.data.transforms as T

    copies = []
    real = T.to_device
    monkeypatch.setattr(T, "to_device", lambda host, device: copies.append(device) or real(host, device))
    batches = [raw_batch(seed=i) for i in range(3)]
    out = list(DevicePrefetcher(batches, "meta"))
    assert len(out) == 3 and all(b.clip.device.type == "meta" and b.normalized for b in out)
    assert len(copies) == 1


class _Samples(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {"clip": torch.full((2, 4, 4, 3), i, dtype=torch.uint8), "label": 0, "video_id": i,
                "indices": torch.zeros(2, dtype=torch.int64)}


def _collated_in_shared_memory(samples):
    batch = collate_clips(samples)
    return batch.clip.is_shared(), batch.clip.is_contiguous(memory_format=torch.channels_last_3d)


def test_a_worker_stacks_the_batch_into_shared_memory():
    """The stack is the only copy: in a DataLoader worker it lands in shared memory, so the
    batch reaches the main process without another one, still channels_last_3d."""
    loader = torch.utils.data.DataLoader(_Samples(), batch_size=2, num_workers=1,
                                         collate_fn=_collated_in_shared_memory)
    assert list(loader) == [(True, True), (True, True)]
