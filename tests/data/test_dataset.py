"""Manifests, the dataset's error policy, and the CPU loader end to end with real workers."""
from __future__ import annotations

import dataclasses
import shutil
import time

import pytest
import torch

from accel import (
    ClipBatchLoader,
    DaliOptions,
    DecodeOptions,
    Manifest,
    ManifestError,
    VideoClipDataset,
    VideoDecodeError,
    WatchdogOptions,
    build_loader,
    csv_manifest,
    folder_manifest,
    load_manifest,
    stratified_split,
)
from accel.data.collate import collate_clips
from accel.data.prefetch import DevicePrefetcher
from accel.data.transforms import ClipTransform
from accel.synth import read_frame_index, write_index_video


def test_folder_manifest(temporal_dataset):
    m = folder_manifest(temporal_dataset, "train")
    assert m.classes == ["dip", "peak", "ramp_down", "ramp_up"]
    assert len(m) == 4 * 4 and m.class_counts() == [4, 4, 4, 4]
    assert all(item.path.endswith(".mp4") for item in m.items)
    fixed = folder_manifest(temporal_dataset, "test", classes=["ramp_up", "ramp_down", "peak", "dip"])
    assert {item.label for item in fixed.items if "ramp_up" in item.path} == {0}


def test_csv_manifest_with_split_and_names(tmp_path, temporal_dataset):
    rows = ["path,label,split"]
    for split in ("train", "val"):
        for p in sorted((temporal_dataset / split).rglob("*.mp4")):
            rows.append(f"{p.relative_to(temporal_dataset)},{p.parent.name},{split}")
    (temporal_dataset / "all.csv").write_text("\n".join(rows) + "\n")
    train = csv_manifest(temporal_dataset / "all.csv", "train")
    assert len(train) == 16 and train.classes == ["dip", "peak", "ramp_down", "ramp_up"]
    assert all(p.startswith(str(temporal_dataset)) for p, _ in train.items)
    assert len(load_manifest(temporal_dataset / "all.csv", "val")) == 4
    with pytest.raises(ManifestError, match="no rows with split 'test'"):
        csv_manifest(temporal_dataset / "all.csv", "test")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,kind\na.mp4,x\n")
    with pytest.raises(ManifestError, match="bad.csv: no path column"):
        csv_manifest(bad)


def test_frame_folders_read_as_videos(tmp_path):
    from torchvision.io import encode_jpeg

    from accel.synth import index_frame

    for cls, n in (("a", 12), ("b", 9)):
        folder = tmp_path / "train" / cls / f"sample_{cls}"
        folder.mkdir(parents=True)
        for i in range(n):
            img = torch.from_numpy(index_frame(i, 64, 64)).permute(2, 0, 1)
            (folder / f"{i:05d}.jpg").write_bytes(encode_jpeg(img, quality=95).numpy().tobytes())
    m = folder_manifest(tmp_path, "train")
    ds = VideoClipDataset(m, clip_len=4, backend="pyav", on_error="raise")
    sample = ds[0]
    assert sample["clip"].shape == (4, 64, 64, 3)
    decoded = [read_frame_index(f) for f in sample["clip"].numpy()]
    assert decoded == sample["indices"].tolist() == [0, 3, 7, 11]
    # the sequences/seq_x layout listed in a CSV
    (tmp_path / "seqs.csv").write_text("path,label\ntrain/b/sample_b,1\ntrain/a/sample_a,0\n")
    seq = csv_manifest(tmp_path / "seqs.csv", classes=["a", "b"])
    assert VideoClipDataset(seq, clip_len=9, backend="pyav")[0]["clip"].shape[0] == 9


def test_layout_errors_are_one_clear_line(tmp_path):
    with pytest.raises(ManifestError, match="no such folder"):
        folder_manifest(tmp_path / "nope")
    (tmp_path / "train" / "empty_class").mkdir(parents=True)
    with pytest.raises(ManifestError, match="class 'empty_class' has no videos"):
        folder_manifest(tmp_path, "train")
    with pytest.raises(ValueError, match="strategy must be one of"):
        build_loader(Manifest([], ["x"]), batch_size=2, strategy="all")
    with pytest.raises(ValueError, match="backend must be one of auto, dali, torchcodec, decord, pyav"):
        build_loader(Manifest([], ["x"]), batch_size=2, backend="opencv")


def test_build_loader_option_groups_reach_the_dataset(temporal_dataset):
    """decode / watchdog land where the flat keywords did; a wrong backend or on_error stops
    first (before batch_size is looked at), naming the allowed values."""
    with pytest.raises(ValueError, match="on_error must be one of skip, raise; got 'ignore'"):
        build_loader(Manifest([], ["x"]), batch_size=0, on_error="ignore")
    with pytest.raises(ValueError, match="backend must be one of auto, dali, torchcodec, decord, pyav"):
        build_loader(Manifest([], ["x"]), batch_size=0, backend="opencv")
    with pytest.raises(ValueError, match="DALI device must be one of gpu, cpu; got 'nvdec'"):
        DaliOptions(device="nvdec")
    with pytest.raises(dataclasses.FrozenInstanceError):
        DecodeOptions().stride = 2
    loader = build_loader(folder_manifest(temporal_dataset, "val"), batch_size=2, clip_len=4, backend="pyav",
                          num_workers=0, decode=DecodeOptions(stride=2, short="loop", rotate=False),
                          watchdog=WatchdogOptions(timeout_s=5.0, recycle_after_clips=3, recycle_rss_growth_mb=None))
    assert isinstance(loader, ClipBatchLoader)
    ds = loader.dataset
    assert (ds.stride, ds.short, ds.rotate) == (2, "loop", False)
    assert (ds.decode_timeout_s, ds.recycle_after_clips, ds.recycle_rss_growth_mb) == (5.0, 3, None)
    assert next(iter(loader)).clip.shape[:3] == (2, 3, 4)


def test_stratified_split_keeps_every_class(temporal_dataset):
    m = folder_manifest(temporal_dataset, "train")
    train, val = stratified_split(m, 0.25, seed=0)
    assert len(train) + len(val) == len(m)
    assert val.class_counts() == [1, 1, 1, 1]
    assert not {i.path for i in train.items} & {i.path for i in val.items}


@pytest.fixture()
def dataset_with_bad_files(tmp_path, temporal_dataset):
    root = tmp_path / "mixed"
    shutil.copytree(temporal_dataset / "train", root / "train")
    cls = root / "train" / "peak"
    good = sorted(cls.glob("*.mp4"))[0]
    data = good.read_bytes()
    (cls / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (cls / "empty.mp4").write_bytes(b"")
    (cls / "notes.mp4").write_text("this is a text file, not a video\n")
    return root, {"truncated.mp4", "empty.mp4", "notes.mp4"}


@pytest.mark.parametrize("backend", ["pyav", "auto"])
def test_epoch_with_bad_files_two_workers(dataset_with_bad_files, backend):
    root, bad_names = dataset_with_bad_files
    manifest = folder_manifest(root, "train")
    good_ids = {i for i, item in enumerate(manifest.items) if not item.path.endswith(tuple(bad_names))}
    loader = build_loader(manifest, batch_size=4, clip_len=8, num_workers=2, shuffle=True,
                          backend=backend, persistent_workers=False)
    seen = []
    for batch in loader:
        clip = batch.clip
        assert clip.dtype == torch.uint8 and clip.shape[1:] == (3, 8, 32, 32)
        assert clip.is_contiguous(memory_format=torch.channels_last_3d)
        assert batch.indices.shape == (clip.shape[0], 8)
        seen.extend(batch.video_id.tolist())
    assert sorted(seen) == sorted(good_ids)  # every good sample exactly once
    skipped = {path.rsplit("/", 1)[-1]: reason for path, reason in loader.skipped}
    assert set(skipped) == bad_names
    assert all(reason for reason in skipped.values())


@pytest.mark.parametrize("isolate", [True, False], ids=["decode-child", "in-process"])
@pytest.mark.parametrize("kind", ["clips", "windows"])
@pytest.mark.parametrize("bad", ["truncated.mp4", "notes.mp4"])
def test_on_error_raise_names_the_file_for_both_datasets(dataset_with_bad_files, kind, isolate, bad):
    """Clip and window datasets raise VideoDecodeError naming the damaged file, whether the
    decoder ran in the watched child or in this process (the window dataset used to
    re-raise the decoder's own error, which does not name it); under skip both return a
    SkippedSample for it."""
    from accel import SkippedSample
    from accel.data.windows import VideoWindowsDataset

    root, _ = dataset_with_bad_files
    m = folder_manifest(root, "train")
    position = next(i for i, item in enumerate(m.items) if item.path.endswith(bad))

    def make(on_error):
        if kind == "clips":
            return VideoClipDataset(m, clip_len=8, backend="pyav", on_error=on_error,
                                    isolate_decode=isolate)
        return VideoWindowsDataset(m, clip_len=4, backend="pyav", on_error=on_error,
                                   isolate_decode=isolate)

    ds = make("raise")
    try:
        with pytest.raises(VideoDecodeError, match=bad) as e:
            ds[position]
        assert e.value.path == m.items[position].path and e.value.reason
        assert ds[0]["clip"].dtype == torch.uint8  # the dataset (and its child) still reads
    finally:
        ds.close()
    ds = make("skip")
    try:
        skipped = ds[position]
        assert isinstance(skipped, SkippedSample) and skipped.path == m.items[position].path
        assert skipped.reason
    finally:
        ds.close()


@pytest.mark.parametrize("kind", ["clips", "windows"])
def test_unknown_backend_stops_at_construction_not_as_skipped_files(temporal_dataset, kind):
    """The window dataset took any backend name and skipped every video with "ValueError:
    backend must be one of ..." as its reason; both datasets now refuse it when made."""
    from accel.data.windows import VideoWindowsDataset

    m = folder_manifest(temporal_dataset, "train")
    make = VideoClipDataset if kind == "clips" else VideoWindowsDataset
    with pytest.raises(ValueError, match="backend must be one of auto, torchcodec, decord, pyav"):
        make(m, clip_len=4, backend="opencv")
    assert make(m, clip_len=4, backend="auto").backend in ("torchcodec", "decord", "pyav")


def test_a_decoder_error_about_another_path_is_renamed_to_the_file():
    """decord / torchcodec open some files as /proc/self/fd/N: their VideoDecodeError names
    that path, and was re-raised as it was; the error now names the manifest's file."""
    from accel.data.reading import read_frames

    def open_by_fd(path, backend):
        raise VideoDecodeError("/proc/self/fd/7", "moov atom not found")

    with pytest.raises(VideoDecodeError) as e:
        read_frames("/data/clip.mp4", "decord", lambda n: [0], on_error="raise", open_reader=open_by_fd)
    assert e.value.path == "/data/clip.mp4" and "moov atom not found" in str(e.value)
    skipped = read_frames("/data/clip.mp4", "decord", lambda n: [0], on_error="skip",
                          open_reader=open_by_fd)
    assert skipped == ("/data/clip.mp4", "moov atom not found")


def test_on_error_raise_names_the_file(dataset_with_bad_files):
    root, _ = dataset_with_bad_files
    m = folder_manifest(root, "train")
    ds = VideoClipDataset(m, clip_len=8, backend="pyav", on_error="raise")
    position = next(i for i, item in enumerate(m.items) if item.path.endswith("empty.mp4"))
    with pytest.raises(VideoDecodeError, match="empty.mp4"):
        ds[position]


def test_a_hanging_decode_is_cut_off(temporal_dataset, monkeypatch):
    def hang(self, path):
        while True:
            time.sleep(0.01)

    monkeypatch.setattr(VideoClipDataset, "open_reader", hang)
    ds = VideoClipDataset(folder_manifest(temporal_dataset, "val"), clip_len=4, decode_timeout_s=0.3)
    start = time.monotonic()
    result = ds[0]
    assert time.monotonic() - start < 5
    assert result.reason == "decode took longer than 0.3 s" and result.path.endswith(".mp4")


def test_clips_are_the_sampled_frames(tmp_path):
    """The dataset hands back the frames its sampler chose, per sample, seeded per epoch."""
    for cls in ("a", "b"):
        write_index_video(tmp_path / "train" / cls / "v.mp4", 100, gop=10, bframes=2)
    ds = VideoClipDataset(folder_manifest(tmp_path, "train"), clip_len=8, strategy="random_window",
                          backend="pyav", seed=3)
    first = ds[0]
    assert [read_frame_index(f) for f in first["clip"].numpy()] == first["indices"].tolist()
    assert ds[0]["indices"].tolist() == first["indices"].tolist()  # same epoch, same clip
    ds.set_epoch(1)
    assert ds[0]["indices"].tolist() != first["indices"].tolist()


def test_collate_makes_the_channels_last_batch_with_one_copy():
    clips = [torch.randint(0, 255, (4, 6, 8, 3), dtype=torch.uint8) for _ in range(3)]
    batch = collate_clips([{"clip": c, "label": i, "video_id": i, "indices": torch.arange(4)}
                           for i, c in enumerate(clips)])
    x = batch.clip
    assert x.shape == (3, 3, 4, 6, 8) and x.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(x[1], clips[1].permute(3, 0, 1, 2))


def test_device_prefetcher_normalises_on_the_device(temporal_dataset):
    loader = build_loader(folder_manifest(temporal_dataset, "val"), batch_size=4, clip_len=8,
                          num_workers=0)
    batches = list(DevicePrefetcher(loader, "cpu", transform=ClipTransform(32)))
    x = batches[0].clip
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last_3d)
    raw = next(iter(loader)).clip.float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(x, (raw - mean) / std)


def test_frame_size_resizes_mixed_resolutions(tmp_path):
    write_index_video(tmp_path / "train" / "a" / "small.mp4", 20, width=64, height=64)
    write_index_video(tmp_path / "train" / "b" / "wide.mp4", 20, width=128, height=96)
    loader = build_loader(folder_manifest(tmp_path, "train"), batch_size=2, clip_len=4,
                          frame_size=(48, 48), num_workers=0)
    batch = next(iter(loader))
    assert batch.clip.shape == (2, 3, 4, 48, 48)
    assert batch.clip.is_contiguous(memory_format=torch.channels_last_3d)


def test_epochs_reach_persistent_workers_and_are_reproducible(temporal_dataset):
    """Random clips and shuffling change with the epoch, also in persistent workers, and
    depend on (seed, epoch) alone: a fresh loader set to epoch 1 reads what epoch 1 read."""
    manifest = folder_manifest(temporal_dataset, "train")

    def read_epoch(loader, epoch):
        loader.set_epoch(epoch)
        return [(b.video_id.tolist(), b.indices.tolist()) for b in loader]

    def make():
        return build_loader(manifest, batch_size=4, clip_len=6, strategy="random", shuffle=True,
                            num_workers=2, persistent_workers=True, seed=5)

    loader = make()
    epoch0, epoch1 = read_epoch(loader, 0), read_epoch(loader, 1)
    assert epoch0 != epoch1
    ids0 = [i for ids, _ in epoch0 for i in ids]
    ids1 = [i for ids, _ in epoch1 for i in ids]
    assert sorted(ids0) == sorted(ids1) == list(range(len(manifest))) and ids0 != ids1
    clips0 = {i: idx for ids, idxs in epoch0 for i, idx in zip(ids, idxs)}
    clips1 = {i: idx for ids, idxs in epoch1 for i, idx in zip(ids, idxs)}
    assert sum(clips0[i] != clips1[i] for i in clips0) > len(clips0) // 2  # new clips per epoch
    assert read_epoch(make(), 1) == epoch1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (pinned memory)")
def test_pinned_batches_stay_channels_last(temporal_dataset):
    loader = build_loader(folder_manifest(temporal_dataset, "val"), batch_size=4, clip_len=8,
                          num_workers=1, pin_memory=True)
    clip = next(iter(loader)).clip
    assert clip.is_pinned() and clip.is_contiguous(memory_format=torch.channels_last_3d)
