"""Batched augmentation: same parameters for every frame of a clip, different per clip."""
from __future__ import annotations

import pytest
import torch

from accel.data import transforms as T


def clip_batch(b=4, t=5, h=32, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    frame = torch.randint(0, 256, (b, 3, 1, h, w), generator=g, dtype=torch.uint8)
    # every frame of a clip identical: any per-frame difference after augmenting is a bug
    x = frame.expand(b, 3, t, h, w).contiguous(memory_format=torch.channels_last_3d)
    return x


def assert_frames_equal_within_clip(y):
    for i in range(y.shape[0]):
        for t in range(1, y.shape[2]):
            torch.testing.assert_close(y[i, :, t], y[i, :, 0])


@pytest.mark.parametrize("op", [
    lambda x, g: T.random_resized_crop(x, 24, scale=(0.3, 1.0), generator=g),
    lambda x, g: T.rotate(x, 15, generator=g),
    lambda x, g: T.hflip(x, 0.5, generator=g),
    lambda x, g: T.color_jitter(x, brightness=0.4, contrast=0.4, saturation=0.4, generator=g),
    lambda x, g: T.ClipTransform(24, train=True)(x, generator=g),
], ids=["crop", "rotate", "flip", "jitter", "train_pipeline"])
def test_temporally_consistent_and_different_per_clip(op):
    x = clip_batch(b=8)
    x[1:] = x[:1]  # all clips identical too
    y = op(x, torch.Generator().manual_seed(3)).float()
    assert_frames_equal_within_clip(y)
    assert any(not torch.allclose(y[0], y[i]) for i in range(1, 8)), "parameters did not vary per clip"


def test_identity_warp_is_exact_and_keeps_channels_last():
    x = clip_batch()
    y = T.resize(x, (32, 40))
    torch.testing.assert_close(y, x.float() / 255, atol=1e-5, rtol=0)
    assert y.is_contiguous(memory_format=torch.channels_last_3d)


def test_center_crop_matches_slicing():
    x = torch.arange(2 * 3 * 2 * 8 * 8, dtype=torch.float32).view(2, 3, 2, 8, 8)
    y = T.center_crop(x, 4)
    torch.testing.assert_close(y, x[..., 2:6, 2:6] / 1.0, atol=1e-4, rtol=0)


def test_hflip_flips_exactly_the_chosen_clips():
    x = clip_batch(b=16)
    y = T.hflip(x, 0.5, generator=torch.Generator().manual_seed(0))
    flipped = [torch.equal(y[i], x[i].flip(-1)) for i in range(16)]
    kept = [torch.equal(y[i], x[i]) for i in range(16)]
    assert all(f or k for f, k in zip(flipped, kept)) and 0 < sum(flipped) < 16


def test_flip_theta_in_warp_matches_exact_flip():
    x = clip_batch(b=2)
    theta = T.flip_theta(2, p=1.0)
    torch.testing.assert_close(T.warp(x, theta, x.shape[-2:]), x.flip(-1).float() / 255, atol=1e-5, rtol=0)


def test_normalize_and_runs_on_any_device():
    x = clip_batch()
    y = T.normalize(x)
    mean = torch.tensor(T.IMAGENET_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(T.IMAGENET_STD).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(y, (x.float() / 255 - mean) / std)
    assert y.is_contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_result_on_gpu():
    x = clip_batch()
    tf = T.ClipTransform(24, train=True)
    cpu = tf(x, generator=torch.Generator().manual_seed(1))
    gpu = tf(x.cuda(), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        T.normalize(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="larger than the frame"):
        T.center_crop(clip_batch(), 64)
    with pytest.raises(ValueError, match="scale"):
        T.crop_theta(2, scale=(0.0, 1.5))


# --------------------------------------------------------------------------- no host-device syncs
class HostToDeviceCopies:
    """Every copy from a CPU tensor to another device in the block, through torch's dispatcher
    (``.to(device)``, ``torch.tensor(..., device=)``, ``copy_``): (op, non_blocking)."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode  # noqa: PLC2701 - no public home

        copies = self.copies = []

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                name = func.overloadpacket.__name__
                if name == "_to_copy" and args[0].device.type == "cpu" \
                        and torch.device(kwargs.get("device", "cpu")).type != "cpu":
                    copies.append((name, bool(kwargs.get("non_blocking", False))))
                elif name == "copy_" and args[1].device.type == "cpu" and args[0].device.type != "cpu":
                    copies.append((name, bool(args[2]) if len(args) > 2 else bool(kwargs.get("non_blocking"))))
                return func(*args, **kwargs)

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_clip_transform_makes_one_non_blocking_copy_per_batch(train):
    """The batch lives on a non-CPU device ('meta' stands in for CUDA here): per batch, the
    transform copies host data over once, non_blocking; mean / std only on the first batch.
    A blocking copy per parameter (7 per batch before) serialises the CPU with the GPU."""
    tf = T.ClipTransform(24, train=train, crop_fraction=0.8)
    x = torch.empty(4, 3, 5, 32, 40, dtype=torch.uint8, device="meta").contiguous(
        memory_format=torch.channels_last_3d)
    g = torch.Generator().manual_seed(0)
    with HostToDeviceCopies() as first:
        tf(x, generator=g)
    with HostToDeviceCopies() as later:
        for _ in range(3):
            y = tf(x, generator=g)
    assert y.device.type == "meta" and y.shape == (4, 3, 5, 24, 24)
    assert len(first.copies) == 2 and len(later.copies) == 3, (first.copies, later.copies)
    assert all(non_blocking for _, non_blocking in first.copies + later.copies)


def test_single_ops_copy_at_most_once_non_blocking():
    x = torch.empty(2, 3, 4, 16, 16, device="meta")
    g = torch.Generator().manual_seed(0)
    for op in (lambda: T.hflip(x, generator=g), lambda: T.normalize(x),
               lambda: T.color_jitter(x, brightness=0.2, contrast=0.2, saturation=0.2, generator=g),
               lambda: T.random_resized_crop(x, 8, generator=g)):
        with HostToDeviceCopies() as c:
            op()
        assert len(c.copies) == 1 and c.copies[0][1], c.copies


def test_to_device_is_a_no_op_on_cpu_and_for_device_tensors():
    t = torch.arange(3.0)
    assert T.to_device(t, "cpu") is t
    on_device = torch.empty(3, device="meta")  # e.g. a slice of the packed parameters: no pinning
    assert T.to_device(on_device, "meta") is on_device


class BatchPasses:
    """Every op in the block that writes a whole batch-sized meta tensor (a pass over the
    batch's memory on a GPU), by name; views and allocations write nothing."""

    def __init__(self, numel: int):
        self.numel, self.names = numel, []

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode  # noqa: PLC2701 - no public home

        names, numel = self.names, self.numel
        free = {"empty", "empty_strided", "view", "permute", "reshape", "_unsafe_view", "expand", "as_strided",
                "slice", "select", "alias", "detach", "unsqueeze", "squeeze", "_reshape_alias", "t", "transpose"}

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                name = func.overloadpacket.__name__
                if isinstance(out, torch.Tensor) and out.device.type == "meta" and out.numel() >= numel \
                        and name not in free:
                    names.append(name)
                return out

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_normalize_is_one_pass_into_channels_last(dtype):
    """(x [/255] - mean) / std used 2 passes on float and 4 on uint8 (float copy, /255, -, /):
    now one multiply-add, writing channels_last_3d whatever the input layout."""
    x = torch.empty(4, 3, 5, 24, 24, dtype=dtype, device="meta")  # contiguous, not channels-last
    norm = T.Normalize()
    norm(x)
    with BatchPasses(x.numel()) as p:
        y = norm(x)
    assert p.names == ["addcmul"], p.names
    assert y.dtype == torch.float32 and y.is_contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_clip_transform_makes_no_extra_copy_after_grid_sample(train):
    """grid_sample writes contiguous frames; the channels-last copy after it was a full extra
    pass, now left to the normalisation, which writes channels_last_3d anyway."""
    tf = T.ClipTransform(24, train=train, crop_fraction=0.8, brightness=0, contrast=0, saturation=0)
    x = torch.empty(4, 3, 5, 32, 40, dtype=torch.uint8, device="meta").contiguous(
        memory_format=torch.channels_last_3d)
    g = torch.Generator().manual_seed(0)
    tf(x, generator=g)
    with BatchPasses(4 * 3 * 5 * 24 * 24) as p:
        y = tf(x, generator=g)
    jitter = ["clamp_"] if train else []  # apply_jitter's in-place clamp (no factor to apply here)
    assert p.names == ["div", "grid_sampler_2d", *jitter, "addcmul"], p.names
    assert y.is_contiguous(memory_format=torch.channels_last_3d)


def test_one_pass_normalize_matches_the_formula():
    x = torch.randint(0, 256, (2, 3, 4, 8, 8), dtype=torch.uint8)
    mean, std = (0.43, 0.39, 0.37), (0.23, 0.22, 0.21)
    want = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1, 1)
    for got in (T.Normalize(mean, std)(x), T.normalize(x, mean, std), T.normalize(x.float() / 255, mean, std)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
