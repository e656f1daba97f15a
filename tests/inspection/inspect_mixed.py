"""The mixed dataset of issue 27's acceptance list, made of real encoded files."""
from __future__ import annotations

import shutil
from pathlib import Path

from accel.synth import write_audio_only, write_index_video, write_packed_bframe_avi, write_two_stream_video

# name -> the problem kind (and a word of its reason) accel.inspect must name it with; None: none
EXPECTED = {
    "train/a/h264_gop12.mp4": ("duplicate", "same content"),
    "train/a/h264_gop250.mp4": None,
    "train/a/hevc10.mp4": ("to_pyav_torchcodec", "yuv420p10le"),
    "train/a/packed.avi": ("to_pyav_decord", "AVI without presentation timestamps"),
    "train/b/vp9.webm": ("split_leak", "train, val"),
    "train/b/vfr.mp4": ("vfr", "variable frame rate"),
    "train/b/two_streams.mkv": ("dali_to_cpu", "2 video streams"),
    "train/b/truncated.mp4": ("skipped", "truncated or corrupt"),
    "train/b/audio_only.mp4": ("skipped", "no video stream"),
    "train/b/copy_of_gop12.mp4": ("duplicate", "same content"),
    "val/a/vp9_copy.webm": ("split_leak", "train, val"),
    "val/b/short.mp4": ("shorter_than_clip", "--clip_len 16"),
    "val/b/h264_b.mp4": None,
}


def make_mixed_dataset(root: Path) -> Path:
    """``root/{train,val}/{a,b}/...``: every case of :data:`EXPECTED`."""
    write_index_video(root / "train/a/h264_gop12.mp4", 48, gop=12, seed=1)
    write_index_video(root / "train/a/h264_gop250.mp4", 260, gop=250, seed=2)
    write_index_video(root / "train/a/hevc10.mp4", 40, codec="hevc", pix_fmt="yuv420p10le", seed=3)
    write_packed_bframe_avi(root / "train/a/packed.avi", 40, seed=4)
    write_index_video(root / "train/b/vp9.webm", 40, codec="vp9", seed=5)
    write_index_video(root / "train/b/vfr.mp4", 40, vfr=True, seed=6)
    write_two_stream_video(root / "train/b/two_streams.mkv")
    whole = write_index_video(root / "full.tmp.mp4", 40, seed=7)
    data = whole.read_bytes()
    (root / "train/b/truncated.mp4").write_bytes(data[: len(data) // 2])
    whole.unlink()
    write_audio_only(root / "train/b/audio_only.mp4")
    shutil.copy(root / "train/a/h264_gop12.mp4", root / "train/b/copy_of_gop12.mp4")
    (root / "val/a").mkdir(parents=True)
    shutil.copy(root / "train/b/vp9.webm", root / "val/a/vp9_copy.webm")
    write_index_video(root / "val/b/short.mp4", 8, seed=8)
    write_index_video(root / "val/b/h264_b.mp4", 40, gop=20, bframes=2, seed=9)
    return root
