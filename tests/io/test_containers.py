"""The conformance matrix: every container users record in, made with FFmpeg's command line,
read by every backend and compared with what that command line decodes.

Rule (README, "Decoding"): frame ``i`` is the i-th frame ``ffmpeg -i f -f rawvideo -pix_fmt
rgb24 -`` puts out. Codecs with a normative bit-exact decoder agree bit for bit on 8-bit
limited-range 4:2:0; the shared colour conversion of other pixel formats stays within a mean of
3 levels of the command line's (another swscale version); codecs without a bit-exact decoder
by standard are read by PyAV for every backend (one warning naming the file) and stay within
:data:`INEXACT_MAX` levels of the command line's FFmpeg build.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import warnings

import numpy as np
import pytest

from accel import open_video
from accel.io import index_stream
from accel.io.fallback import INEXACT_CODECS, pyav_only_reason
from tests.conftest import CPU_BACKENDS, backend_param

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                reason="FFmpeg's command line is not installed (apt-get install ffmpeg)")

INEXACT_MAX = 8  # levels: IDCT differences between FFmpeg builds on codecs without bit-exact decoding
SIZE = "128x96"  # H.263 takes only its standard sizes; HEVC and the rest take this too
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]

# name: (encoder and muxer options, frames)
CASES = {
    "h264.ts": ([*X264, "-bf", "2", "-g", "12", "-f", "mpegts"], 40),
    "hevc.ts": (["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:keyint=12",
                 "-pix_fmt", "yuv420p", "-f", "mpegts"], 40),
    "mpeg2.ts": (["-c:v", "mpeg2video", "-g", "12", "-bf", "2", "-f", "mpegts"], 40),
    "offset10.ts": ([*X264, "-g", "12", "-output_ts_offset", "10", "-f", "mpegts"], 40),
    "mpeg1.mpg": (["-c:v", "mpeg1video", "-g", "12", "-bf", "2", "-f", "mpeg"], 40),
    "mpeg2.vob": (["-c:v", "mpeg2video", "-g", "12", "-bf", "2", "-f", "vob"], 40),
    "h264.mov": ([*X264, "-g", "12"], 30),
    "flv1.flv": (["-c:v", "flv", "-g", "12"], 30),
    "h263.3gp": (["-c:v", "h263", "-g", "12"], 30),
    "wmv2.wmv": (["-c:v", "wmv2", "-g", "12"], 30),
    "theora.ogv": (["-c:v", "libtheora", "-g", "12"], 30),
    "mjpeg.avi": (["-c:v", "mjpeg"], 20),
    "raw.y4m": (["-pix_fmt", "yuv420p"], 10),
    "bframes.mkv": ([*X264, "-bf", "3", "-g", "12"], 40),
    "vp8.webm": (["-c:v", "libvpx", "-g", "12", "-deadline", "realtime"], 30),
    "vp9.webm": (["-c:v", "libvpx-vp9", "-g", "12", "-deadline", "realtime", "-cpu-used", "8"], 30),
    "av1.mkv": (["-c:v", "libaom-av1", "-cpu-used", "8", "-g", "12", "-pix_fmt", "yuv420p"], 12),
    "prores.mov": (["-c:v", "prores_ks", "-profile:v", "0"], 10),
    "ffv1.mkv": (["-c:v", "ffv1", "-pix_fmt", "yuv420p"], 10),
    "rotated90.mp4": ([*X264, "-g", "12"], 20),  # then tagged: see ROTATED
}
# A phone video: the stream as stored, plus a display matrix (FFmpeg 5.1 writes it on a copy).
ROTATED = {"rotated90.mp4": ["-c", "copy", "-metadata:s:v:0", "rotate=90"]}


def ffmpeg_rgb(path) -> np.ndarray:
    """Every frame FFmpeg's command line decodes, as rgb24 (n, h, w, 3)."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    probed = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                             "stream=width,height:stream_side_data=rotation", "-of", "json", str(path)],
                            capture_output=True, text=True, check=True).stdout
    stream = json.loads(probed)["streams"][0]
    w, h = int(stream["width"]), int(stream["height"])
    rotation = max([abs(int(d.get("rotation", 0))) for d in stream.get("side_data_list", [])] or [0])
    if rotation in (90, 270):  # displayed turned: the command line rotates it
        w, h = h, w
    return np.frombuffer(out, np.uint8).reshape(-1, h, w, 3)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    root = tmp_path_factory.mktemp("containers")
    made = {}
    for name, (options, frames) in CASES.items():
        path = root / name
        run = subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                              f"testsrc=size={SIZE}:rate=25", "-frames:v", str(frames), *options, str(path)],
                             capture_output=True, text=True)
        if run.returncode == 0 and name in ROTATED:
            stored = path.with_name("stored_" + name)
            path.rename(stored)
            run = subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(stored), *ROTATED[name], str(path)],
                                 capture_output=True, text=True)
        if run.returncode == 0:
            made[name] = (path, ffmpeg_rgb(path))
    return made


def read_all_ways(reader, n: int, seed: int) -> tuple[list[int], np.ndarray]:
    rng = np.random.default_rng(seed)
    indices = [0, n // 2, n - 1, *rng.integers(0, n, 5).tolist(), n - 1, 0]
    return indices, reader.get_frames(indices).numpy()


@pytest.mark.parametrize("backend", [backend_param(b) for b in CPU_BACKENDS])
@pytest.mark.parametrize("name", list(CASES))
def test_every_container_reads_what_the_command_line_decodes(matrix, name, backend):
    if name not in matrix:
        pytest.skip(f"this FFmpeg build cannot write {name}")
    path, reference = matrix[name]
    index = index_stream(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = open_video(path, backend)
        assert len(reader) == len(reference), "frame count differs from the command line's"
        indices, frames = read_all_ways(reader, len(reference), seed=len(name))
    handed = [w for w in caught if "reads this file with PyAV" in str(w.message)]
    if backend != "pyav" and pyav_only_reason(index):
        assert reader.decoder == "pyav" and len({str(w.message) for w in handed}) == 1
        assert str(path) in str(handed[0].message)
    expected = reference[indices]
    assert frames.shape == expected.shape
    diff = np.abs(frames.astype(np.int16) - expected)
    if index.codec in INEXACT_CODECS:
        assert reader.decoder == "pyav" and diff.max() <= INEXACT_MAX, (name, int(diff.max()))
    elif not index.plain_colour:
        assert diff.mean() < 3, (name, float(diff.mean()))
    else:
        assert diff.max() == 0, (name, int(diff.max()), [i for i, d in zip(indices, diff) if d.max()])


def test_transport_stream_start_offset_and_random_access(matrix):
    """A TS whose clock starts at 10 s: every frame, in any order, once the index exists."""
    path, reference = matrix["offset10.ts"]
    index = index_stream(path)
    assert index.keys[0] * index.time_base >= 10
    reader = open_video(path, "pyav")
    n = len(reader)
    order = [n - 1, 0, n // 2, *range(n - 1, -1, -3)]
    assert np.array_equal(reader.get_frames(order).numpy(), reference[order])


def test_rotation_is_applied_by_default_and_can_be_turned_off(matrix):
    path, reference = matrix["rotated90.mp4"]
    assert index_stream(path).rotation == 90
    for backend in ("pyav", "torchcodec", "decord"):
        if backend not in [b for b in CPU_BACKENDS]:
            continue
        try:
            shown = open_video(path, backend).get_frames([0, 5]).numpy()
            stored = open_video(path, backend, rotate=False).get_frames([0, 5]).numpy()
        except RuntimeError as e:  # backend not installed
            pytest.skip(str(e))
        assert shown.shape == reference[[0, 5]].shape and np.array_equal(shown, reference[[0, 5]])
        assert stored.shape[1:3] == (reference.shape[2], reference.shape[1])
        assert np.array_equal(np.rot90(stored, 1, axes=(1, 2)), shown)


def test_no_whole_valid_file_reads_as_truncated(matrix):
    for name, (path, reference) in matrix.items():
        reader = open_video(path, "pyav")
        frames = reader.get_frames(list(range(len(reference)))[::-1])
        assert frames.shape[0] == len(reference), name


def test_the_loaders_and_prepare_accept_transport_and_program_streams(matrix, tmp_path):
    """A class-folder dataset of .ts/.vob/.mpg files loads without a skip, and its prepared
    copy keeps every file's frame count."""
    from accel import build_loader, load_manifest
    from accel.prepare import PrepareOptions, prepare

    names = [n for n in ("h264.ts", "offset10.ts", "mpeg2.vob", "mpeg1.mpg") if n in matrix]
    src = tmp_path / "src" / "train"
    for i, name in enumerate(names):
        (src / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        (src / f"c{i % 2}" / name).write_bytes(matrix[name][0].read_bytes())
    manifest = load_manifest(tmp_path / "src", "train")
    assert len(manifest) == len(names)
    loader = build_loader(manifest, batch_size=2, clip_len=8, frame_size=(32, 32), num_workers=0,
                          backend="pyav", on_error="raise")
    batches = list(loader)
    assert sum(b.clip.shape[0] for b in batches) == len(names) and not loader.skipped
    report = prepare(tmp_path / "src", tmp_path / "dst", PrepareOptions(short_side=64), progress=False)
    assert report["failed"] == [] and report["files"]["prepared"] == len(names)
    for item in load_manifest(tmp_path / "dst", "train").items:
        source = next(matrix[n] for n in names if item.path.endswith(n))
        assert len(open_video(item.path, "pyav")) == len(source[1]), item.path


def test_datasets_and_scripts_take_the_rotation_switch(matrix):
    from accel import load_manifest  # noqa: F401 - the public path users take
    from accel.data.dataset import VideoClipDataset
    from accel.data.manifests import Manifest, VideoItem
    from tests.conftest import load_script

    path, reference = matrix["rotated90.mp4"]
    manifest = Manifest([VideoItem(str(path), 0)], ["phone"])
    shown = VideoClipDataset(manifest, clip_len=4, backend="pyav", isolate_decode=False)[0]["clip"]
    stored = VideoClipDataset(manifest, clip_len=4, backend="pyav", isolate_decode=False, rotate=False)[0]["clip"]
    assert tuple(shown.shape[1:3]) == reference.shape[1:3] and tuple(stored.shape[1:3]) == reference.shape[2:0:-1]
    train = load_script("train")
    assert train.get_args_parser().parse_args(["--data_dir", "d", "--no_autorotate"]).autorotate is False
    assert train.get_args_parser().parse_args(["--data_dir", "d"]).autorotate is True
    evaluate = load_script("evaluate")
    assert evaluate.get_args_parser().parse_args(["--checkpoint", "c.pt", "--data_dir", "d",
                                                  "--no_autorotate"]).autorotate is False
