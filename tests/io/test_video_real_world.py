"""Exact frames on the files users really have: every backend against a sequential decode.

Files made once per session: two video streams (the best not the first), a DivX-style
packed-B-frame AVI, 10-bit H.264 and HEVC, full-range yuvj420p, AV1 in MKV, variable frame
rate; and files with nothing to decode (audio only, zero frames, not media).
"""
from __future__ import annotations

import shutil
import subprocess
import time
import warnings

import av
import numpy as np
import pytest
from conftest import CPU_BACKENDS, backend_param

from accel import VideoDecodeError, open_video
from accel.io import index_stream
from accel.io.pyav import shared_rgb
from accel.synth import (
    encoder_available,
    index_frame,
    read_frame_index,
    write_audio_only,
    write_index_video,
    write_packed_bframe_avi,
    write_two_stream_video,
    write_video,
)

BACKENDS = [backend_param(b) for b in CPU_BACKENDS]
FRAMES = 40
# (name, codec, pix_fmt): index-coded 64x64 videos, GOP 10 with 2 B-frames where the codec has them.
ENCODED = [("h264_10bit.mp4", "h264", "yuv420p10le"), ("hevc_10bit.mp4", "hevc", "yuv420p10le"),
           ("full_range.mp4", "h264", "yuvj420p"), ("av1.mkv", "av1", "yuv420p")]


@pytest.fixture(scope="session")
def real_world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("real_world")
    files = {"two_streams.mp4": write_two_stream_video(root / "two_streams.mp4"),
             "best_hevc.mp4": write_two_stream_video(root / "best_hevc.mp4", frames=(30, 90),
                                                     codecs=("h264", "hevc")),
             "packed_b.avi": write_packed_bframe_avi(root / "packed_b.avi", 60),
             "vfr.mp4": write_video(root / "vfr.mp4", (index_frame(i, 64, 64) for i in range(FRAMES)),
                                    frame_durations_ms=[20, 100] * (FRAMES // 2)),
             "audio_only.wav": write_audio_only(root / "audio_only.wav"),
             "zero_frames.mkv": write_audio_only(root / "zero_frames.mkv", video_track=True)}
    for name, codec, pix_fmt in ENCODED:
        if encoder_available(codec):
            files[name] = write_index_video(root / name, FRAMES, codec=codec, gop=10, bframes=2,
                                            pix_fmt=pix_fmt)
    (root / "notes.mp4").write_text("not a video")
    files["notes.mp4"] = root / "notes.mp4"
    return files


def sequential_decode(path, stream: int) -> np.ndarray:
    """Every frame of container stream ``stream`` in decoder output order, converted to RGB
    the way the readers promise: FFmpeg's fast path on 8-bit 4:2:0, else the shared one."""
    with av.open(str(path)) as c:
        s = c.streams[stream]
        plain = s.codec_context.format.name == "yuv420p" and s.codec_context.color_range != 2
        return np.stack([f.to_ndarray(format="rgb24") if plain else shared_rgb(f)
                         for f in c.decode(s)])


def ffmpeg_decode(path, stream: int, shape) -> np.ndarray:
    """What ``ffmpeg -map 0:S -f rawvideo -pix_fmt rgb24`` writes: the command line's truth."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("no ffmpeg command line here (apt-get install ffmpeg)")
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", f"0:{stream}",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         check=True, capture_output=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, *shape)


def requests(n: int) -> list[list[int]]:
    rng = np.random.default_rng(n)
    return [sorted(rng.choice(n, 8, replace=False).tolist()),  # sorted
            rng.permutation(n)[:10].tolist(),                    # shuffled
            [n - 1, 3, 3, 0, n // 2, n // 2, 1, n - 1]]          # repeated, ends


def check_exact(path, backend, *, stream=None, expect_stream, frames, fps, offset=0):
    """len, fps, stream and frames for sorted, shuffled and repeated indices, bit for bit."""
    reference = sequential_decode(path, expect_stream)
    assert len(reference) == frames
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the hand-overs to PyAV are tested on their own
        reader = open_video(path, backend, stream=stream)
        assert len(reader) == frames and reader.stream_index == expect_stream
        assert reader.fps == pytest.approx(fps, rel=1e-6)
        for request in requests(frames):
            got = reader.get_frames(request).numpy()
            assert [read_frame_index(f) - offset for f in got] == request
            np.testing.assert_array_equal(got, reference[request])
    return reader


@pytest.mark.parametrize("backend", BACKENDS)
def test_best_stream_by_default_any_stream_on_request(real_world, backend):
    path = real_world["two_streams.mp4"]
    best = check_exact(path, backend, expect_stream=1, frames=45, fps=30, offset=1000)
    assert best.get_frames([0]).shape == (1, 64, 64, 3)
    first = check_exact(path, backend, stream=0, expect_stream=0, frames=30, fps=25)
    assert first.get_frames([0]).shape == (1, 32, 48, 3)
    with pytest.raises(VideoDecodeError, match="stream 2 is not a video stream"):
        len(open_video(path, backend, stream=2))


def test_stream_option_fails_early():
    with pytest.raises(ValueError, match="stream must be None"):
        open_video(__file__, "pyav", stream=-1)
    with pytest.raises(ValueError, match="stream must be None"):
        open_video(__file__, "pyav", stream="1")


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_bframe_avi_in_decoder_order(real_world, backend):
    path = real_world["packed_b.avi"]
    truth = ffmpeg_decode(path, 0, (64, 64, 3))
    assert [read_frame_index(f) for f in truth] == list(range(60))
    np.testing.assert_array_equal(sequential_decode(path, 0), truth)
    reader = check_exact(path, backend, expect_stream=0, frames=60, fps=25)
    assert reader.decoder == "pyav"


def test_packed_avi_is_what_it_claims(real_world):
    """Placeholder N-VOPs, pts that are not presentation order, and the index says so."""
    path = real_world["packed_b.avi"]
    with av.open(str(path)) as c:
        packets = [p for p in c.demux(video=0) if p.size]
    assert sum(p.size < 20 for p in packets) >= 10  # the placeholders
    index = index_stream(str(path))
    assert index.decode_order and index.container == "avi" and index.num_frames == 60


@pytest.mark.parametrize("backend", [backend_param("decord"), backend_param("torchcodec")])
def test_files_other_backends_get_wrong_go_to_pyav_with_one_warning(real_world, backend):
    for name, why in [("packed_b.avi", "AVI without presentation timestamps"),
                      ("h264_10bit.mp4", "yuv420p10le needs the one shared RGB conversion"),
                      ("full_range.mp4", "yuvj420p, full range needs the one shared RGB conversion")]:
        with pytest.warns(UserWarning, match=f"{name}: {why}") as caught:
            reader = open_video(real_world[name], backend)
            reader.get_frames([3, 1])
        assert len(caught) == 1 and reader.decoder == "pyav"
    if backend == "decord":
        with pytest.warns(UserWarning, match="decord reads only the best video stream"):
            assert open_video(real_world["two_streams.mp4"], backend, stream=0).decoder == "pyav"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the best stream of plain 8-bit H.264: no hand-over
        assert open_video(real_world["two_streams.mp4"], backend).decoder == backend


@pytest.mark.parametrize("backend", [backend_param("decord"), backend_param("torchcodec")])
def test_a_handed_over_file_is_scanned_once(real_world, backend, monkeypatch):
    """The backend's scan of the stream serves PyAV too: no second demux of the whole file."""
    import accel.io.index_store as store

    def second_scan(*args, **kwargs):
        raise AssertionError("PyAV scanned a file the other backend had indexed")

    store.index_stream(real_world["packed_b.avi"])  # the other backend's scan, or a cached one
    monkeypatch.setattr(store, "scan_stream", second_scan)
    with pytest.warns(UserWarning, match="reads this file with PyAV"):
        reader = open_video(real_world["packed_b.avi"], backend)
        frames = reader.get_frames([3, 1])
    assert reader.decoder == "pyav" and frames.shape[0] == 2


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", [e[0] for e in ENCODED])
def test_high_bit_depth_full_range_and_av1(real_world, name, backend):
    if name not in real_world:
        pytest.skip(f"no encoder for {name} in this FFmpeg build")
    check_exact(real_world[name], backend, expect_stream=0, frames=FRAMES, fps=25)


@pytest.mark.parametrize("name", [e[0] for e in ENCODED])
def test_shared_conversion_is_close_to_the_ffmpeg_command_line(real_world, name):
    """The stated tolerance against FFmpeg 5.1's CLI (another swscale version): 8-bit sources
    match bit for bit, 10-bit ones within a mean of 3 levels (at most 48 at sharp edges)."""
    if name not in real_world:
        pytest.skip(f"no encoder for {name} in this FFmpeg build")
    ours = sequential_decode(real_world[name], 0).astype(np.int16)
    diff = np.abs(ours - ffmpeg_decode(real_world[name], 0, (64, 64, 3)))
    if "10bit" in name:
        assert diff.mean() < 3 and diff.max() <= 48, (diff.mean(), diff.max())
    else:
        assert diff.max() == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_variable_frame_rate_has_one_fps(real_world, backend):
    """fps = frames / (last pts - first pts + last frame's duration), on every backend."""
    path = real_world["vfr.mp4"]  # frames last 20 and 100 ms in turn: 40 frames in 2.4 s
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        packets = sorted((p for p in c.demux(s) if p.size), key=lambda p: p.pts)
        span = packets[-1].pts - packets[0].pts + packets[-1].duration
        fps = float(FRAMES / (span * s.time_base))
    assert fps == pytest.approx(FRAMES / 2.4, rel=0.03)
    check_exact(path, backend, expect_stream=0, frames=FRAMES, fps=fps)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,message", [("audio_only.wav", "no video stream"),
                                          ("zero_frames.mkv", "no video frames"),
                                          ("notes.mp4", "no video stream")])
def test_nothing_to_decode_fails_the_same_everywhere_every_time(real_world, name, message, backend):
    reader = open_video(real_world[name], backend)
    for use in (len, lambda r: r.fps, len, lambda r: r.get_frames([0])):
        with pytest.raises(VideoDecodeError, match=f"^{real_world[name]}: {message}"):
            use(reader)


@pytest.mark.parametrize("backend", [backend_param("decord")])
def test_decord_without_a_codec_hands_over_naming_it(real_world, backend):
    if "av1.mkv" not in real_world:
        pytest.skip("no AV1 encoder in this FFmpeg build")
    with pytest.warns(UserWarning, match="av1.mkv: decord cannot decode av1"):
        assert open_video(real_world["av1.mkv"], backend).decoder == "pyav"


def test_index_scan_costs_little_on_ordinary_mp4(index_videos):
    """The detection rides on the demux scan the PyAV reader always did: a few ms per file."""
    path = str(index_videos[("h264", 30, 2)])
    index_stream(path)
    start = time.perf_counter()
    for _ in range(5):
        index = index_stream(path)
    per_file_ms = (time.perf_counter() - start) / 5 * 1e3
    assert not index.decode_order and index.plain_colour and index.num_frames == 300
    assert per_file_ms < 100, per_file_ms  # generous: a loaded 2-core CI machine


def test_dali_probe_counts_the_same_stream_and_routes_what_it_would_misread(real_world):
    from accel.data.dali import probe_video

    two = probe_video(str(real_world["two_streams.mp4"]))
    assert (two.num_frames, two.codec, two.width) == (45, "h264", 64)  # the best stream
    assert "2 video streams" in two.cpu_reason
    packed = probe_video(str(real_world["packed_b.avi"]))
    assert packed.num_frames == 60 and "decode order" in packed.cpu_reason
    with pytest.raises(VideoDecodeError, match="no video frames"):
        probe_video(str(real_world["zero_frames.mkv"]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_dataset_reads_the_best_stream_and_the_packed_avi_exactly(real_world, backend):
    from accel.data.dataset import VideoClipDataset
    from accel.data.manifests import Manifest, VideoItem

    items = [VideoItem(str(real_world["two_streams.mp4"]), 0), VideoItem(str(real_world["packed_b.avi"]), 1)]
    dataset = VideoClipDataset(Manifest(items, ["a", "b"]), clip_len=8, backend=backend,
                               on_error="raise", decode_timeout_s=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        two, packed = dataset[0], dataset[1]
    assert two["clip"].shape == (8, 64, 64, 3)  # stream 1's size, not stream 0's 48x32
    assert [read_frame_index(f) - 1000 for f in two["clip"].numpy()] == two["indices"].tolist()
    assert two["indices"].max() > 29  # stream 1 has 45 frames, stream 0 only 30
    assert [read_frame_index(f) for f in packed["clip"].numpy()] == packed["indices"].tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_decord_guard_scans_the_stream_decord_decodes(real_world, backend):
    """Best stream HEVC with B-frames (decord mis-seeks there), behind a plain H.264 stream 0."""
    path = real_world["best_hevc.mp4"]
    assert not index_stream(str(path)).keyframe_offsets_constant
    assert index_stream(str(path), 0).keyframe_offsets_constant
    reader = check_exact(path, backend, expect_stream=1, frames=90, fps=30, offset=1000)
    if backend == "decord":
        assert reader.decoder == "pyav"
        with pytest.warns(UserWarning, match="best_hevc.mp4: decord mis-seeks"):
            len(open_video(path, backend))
