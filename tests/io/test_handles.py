"""Open decoder handles are handed from one reader of a file to the next, within bounds."""
from __future__ import annotations

import os

import pytest

from accel import open_video
from accel.io.handles import HANDLES, OpenHandles
from accel.synth import read_frame_index, write_index_video
from tests.conftest import backend_param


@pytest.fixture
def handles():
    HANDLES.close_all()
    yield HANDLES
    HANDLES.close_all()


@pytest.mark.parametrize("backend", [backend_param(b) for b in ("pyav", "torchcodec", "decord")])
def test_the_next_reader_of_a_file_reuses_the_open_handle(tmp_path, handles, monkeypatch, backend):
    video = write_index_video(tmp_path / "v.mp4", 60, gop=10)
    reader = open_video(video, backend)
    assert [read_frame_index(f) for f in reader.get_frames([50, 3]).numpy()] == [50, 3]
    reader.close()
    assert len(handles._entries) == 1

    def opened_again(*args, **kwargs):
        raise AssertionError("opened the file again")

    module, name = {"pyav": ("av", "open"), "decord": ("decord", "VideoReader"),
                    "torchcodec": ("accel.io.torchcodec", "TorchCodecReader._make_decoder")}[backend]
    monkeypatch.setattr(f"{module}.{name}", opened_again)
    again = open_video(video, backend)
    assert [read_frame_index(f) for f in again.get_frames([7, 59, 0]).numpy()] == [7, 59, 0]
    again.close()


def test_a_changed_file_or_a_failed_read_is_not_reused(tmp_path, handles):
    video = write_index_video(tmp_path / "v.mp4", 30, gop=10)
    open_video(video, "pyav").get_frames([1])  # (dropped without close: nothing kept)
    reader = open_video(video, "pyav")
    reader.get_frames([1])
    reader.close()
    (key,) = handles._entries
    write_index_video(video, 40, gop=10)
    os.utime(video, ns=(os.stat(video).st_atime_ns, os.stat(video).st_mtime_ns + 10**9))
    reader = open_video(video, "pyav")
    assert len(reader) == 40 and read_frame_index(reader.get_frames([39]).numpy()[0]) == 39
    reader._broken = True  # as after a failed read
    reader.close()
    assert list(handles._entries) == [key]  # only the old version's, which nothing will match


def test_bounded_least_recently_used_first_out_and_closed():
    closed = []
    pool = OpenHandles(2)
    for name in "abc":
        pool.give((name,), name, closed.append)
    assert closed == ["a"] and pool.take(("a",)) is None and pool.take(("c",)) == "c"
    pool.forget_inherited()  # what a forked child does: never uses nor closes its parent's
    assert pool.take(("b",)) is None and closed == ["a"]
