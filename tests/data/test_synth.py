"""The synthetic data: index codes survive encoding; temporal classes need frame order."""
from __future__ import annotations

import subprocess
import sys

import av
import numpy as np
import pytest

from accel.synth import (
    TEMPORAL_CLASSES,
    brightness_profile,
    index_frame,
    make_dataset,
    read_frame_index,
    temporal_frames,
)


def test_index_frame_roundtrip_without_codec():
    for i in [0, 1, 255, 256, 1023, 65535]:
        assert read_frame_index(index_frame(i, 64, 96)) == i


def test_profiles_share_the_bag_of_values_but_not_the_order():
    n = 48
    profiles = {name: brightness_profile(seg, n) for name, seg in TEMPORAL_CLASSES.items()}
    bags = {name: np.sort(p) for name, p in profiles.items()}
    ref = bags["ramp_up"]
    for name, bag in bags.items():  # same distribution of frame values: a bag can't tell
        assert np.abs(bag - ref).max() < 0.1, name
    sequences = {tuple(np.round(p, 3)) for p in profiles.values()}
    assert len(sequences) == len(TEMPORAL_CLASSES)  # the order does tell


def test_temporal_frames_vary_scene_per_video():
    a = temporal_frames("peak", 16, 32, 32, np.random.default_rng(0))
    b = temporal_frames("peak", 16, 32, 32, np.random.default_rng(1))
    assert a.shape == (16, 32, 32, 3) and a.dtype == np.uint8
    assert not np.array_equal(a[0], b[0])
    means = a.reshape(16, -1).mean(1)
    assert means.argmax() in (7, 8) and means[0] < means[8] > means[-1]  # a peak


def test_cli_writes_a_split_dataset(tmp_path):
    out = tmp_path / "ds"
    r = subprocess.run([sys.executable, "-m", "accel.synth", str(out), "--classes", "3",
                        "--videos-per-class", "5", "--frames", "12", "--size", "48x32",
                        "--codec", "vp9", "--gop", "4"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    counts = {s: len(list((out / s).rglob("*.mp4"))) for s in ("train", "val", "test")}
    assert counts == {"train": 9, "val": 3, "test": 3}
    video = next((out / "train" / "ramp_up").glob("*.mp4"))
    with av.open(str(video)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.width, s.height) == ("vp9", 48, 32)
        assert sum(1 for _ in c.decode(video=0)) == 12
    bad = subprocess.run([sys.executable, "-m", "accel.synth", str(out), "--classes", "9"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "classes must be in [2, 8]" in bad.stderr


def test_make_dataset_refuses_bad_options(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        make_dataset(tmp_path, kind="noise")
    with pytest.raises(ValueError, match="splits"):
        make_dataset(tmp_path, splits=(0.5, 0.5, 0.5))
