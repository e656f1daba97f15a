"""The stream index is built once per file version: in memory, on disk, and by ``accel.index``."""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import accel.io.index_store as store
from accel import open_video
from accel.io import VideoDecodeError, index_stream
from accel.synth import read_frame_index, write_index_video
from tests.conftest import ROOT


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A private index folder and an empty in-process cache for each test."""
    index = tmp_path / "index"
    monkeypatch.setenv("VIDACCEL_INDEX_DIR", str(index))
    store.forget_memory()
    yield index
    store.forget_memory()


def only_entry(folder):
    found = store.entries(folder)
    assert len(found) == 1, found
    return found[0]


def no_scan(*args, **kwargs):
    raise AssertionError("the file was scanned again")


def test_built_once_then_served_from_memory_and_disk(folder, tmp_path, monkeypatch):
    video = write_index_video(tmp_path / "v.mp4", 40, gop=8)
    first = index_stream(video)
    entry = only_entry(folder)
    assert store.entry_source(entry) == str(video)
    monkeypatch.setattr(store, "scan_stream", no_scan)
    assert index_stream(video) is first  # this process's cache
    store.forget_memory()
    again = index_stream(video)  # the disk entry, memory-mapped
    assert np.array_equal(again.keys, first.keys) and again.keyframes == first.keyframes
    assert (again.num_frames, again.fps, again.codec) == (first.num_frames, first.fps, first.codec)
    assert [read_frame_index(f) for f in open_video(video, "pyav").get_frames([39, 0, 17]).numpy()] == [39, 0, 17]


def test_a_changed_file_is_reindexed_never_served_stale(folder, tmp_path):
    video = tmp_path / "v.mp4"
    write_index_video(video, 30, gop=8)
    assert index_stream(video).num_frames == 30
    write_index_video(video, 45, gop=8)
    os.utime(video, ns=(os.stat(video).st_atime_ns, os.stat(video).st_mtime_ns + 10**9))
    assert index_stream(video).num_frames == 45
    assert len(open_video(video, "pyav")) == 45
    store.forget_memory()
    assert index_stream(video).num_frames == 45  # the disk entry was replaced too
    assert len(store.entries(folder)) == 1


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "foreign"])
def test_a_corrupt_or_foreign_entry_is_warned_about_and_rebuilt(folder, tmp_path, damage):
    video = write_index_video(tmp_path / "v.mp4", 30, gop=8)
    other = write_index_video(tmp_path / "other.mp4", 20, gop=8)
    index_stream(video)
    entry = only_entry(folder)
    data = entry.read_bytes()
    if damage == "garbage":
        entry.write_bytes(b"\x00not an index" * 10)
    elif damage == "truncated":
        entry.write_bytes(data[:len(data) - 40])
    elif damage == "empty":
        entry.write_bytes(b"")
    else:  # another video's entry under this one's name
        index_stream(other)
        other_entry = next(e for e in store.entries(folder) if e != entry)
        entry.write_bytes(other_entry.read_bytes())
    store.forget_memory()
    with pytest.warns(UserWarning, match=r"index entry for .*v\.mp4"):
        assert index_stream(video).num_frames == 30
    store.forget_memory()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten: read back without a word
        assert index_stream(video).num_frames == 30


def _build_many(path: str, rounds: int, queue) -> None:
    try:
        for _ in range(rounds):
            store.forget_memory()
            for entry in store.entries():
                entry.unlink(missing_ok=True)  # race the other writer from scratch
            assert index_stream(path).num_frames == 30
        queue.put("ok")
    except BaseException as e:  # noqa: BLE001 - reported to the test
        queue.put(repr(e))


def test_two_writers_at_once_do_no_harm(folder, tmp_path):
    video = write_index_video(tmp_path / "v.mp4", 30, gop=8)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_build_many, args=(str(video), 25, queue)) for _ in range(2)]
    for w in workers:
        w.start()
    results = [queue.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    assert results == ["ok", "ok"]
    assert not list(folder.rglob("*.tmp"))  # no temporary left behind
    store.forget_memory()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert index_stream(video).num_frames == 30


def test_a_read_only_dataset_is_never_written_and_an_unwritable_folder_keeps_memory_only(
        tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    video = write_index_video(data / "v.mp4", 30, gop=8)
    before = sorted(p.name for p in data.iterdir())
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("VIDACCEL_INDEX_DIR", str(blocker / "index"))  # cannot be made
    store.forget_memory()
    with pytest.warns(UserWarning, match="kept in memory only"):
        assert len(open_video(video, "pyav")) == 30
    assert sorted(p.name for p in data.iterdir()) == before
    store.forget_memory()


def test_the_default_folder_is_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("VIDACCEL_INDEX_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store.forget_memory()
    assert store.index_dir() == tmp_path / "cache" / "vidaccel" / "index"
    index_stream(write_index_video(tmp_path / "v.mp4", 10, gop=5))
    assert len(store.entries(tmp_path / "cache" / "vidaccel" / "index")) == 1
    monkeypatch.setenv("VIDACCEL_INDEX_DIR", "off")
    assert store.index_dir() is None
    store.forget_memory()


def test_files_that_cannot_be_indexed_are_not_cached(folder, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    for _ in range(2):
        with pytest.raises(VideoDecodeError, match="bad.mp4: no video stream"):
            index_stream(bad)
    assert store.entries(folder) == []
    with pytest.raises(VideoDecodeError, match="missing.mp4: cannot open"):
        index_stream(tmp_path / "missing.mp4")


def run_index(*args, env=None):
    return subprocess.run([sys.executable, "-m", "accel.index", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)


def test_the_index_command_builds_clears_and_reports(tmp_path):
    data = tmp_path / "data" / "train"
    for label in ("a", "b"):
        (data / label).mkdir(parents=True)
        for i in range(3):
            write_index_video(data / label / f"{i}.mp4", 20 + i, gop=8)
    (data / "a" / "broken.mp4").write_bytes(b"\x00" * 100)
    index = tmp_path / "index"
    done = run_index(tmp_path / "data", "--index_dir", index, "--workers", "2")
    assert done.returncode == 1, done.stderr  # one file cannot be indexed: listed, status 1
    assert "indexed 6 of 7 files" in done.stdout and "broken.mp4" in done.stdout
    assert len(store.entries(index)) == 6
    again = run_index(tmp_path / "data", "--index_dir", index, "--workers", "0")
    assert "(6 were already indexed)" in again.stdout
    cleared = run_index(tmp_path / "data", "--index_dir", index, "--clear")
    assert cleared.returncode == 0 and "removed 6 index entries" in cleared.stdout
    assert store.entries(index) == []


@pytest.mark.parametrize("args, message", [
    (["/no/such/folder"], "/no/such/folder: no such file or folder"),
    (["EMPTY"], "no video files under it"),
    (["EMPTY", "--workers", "-1"], "--workers: must be >= 0, got -1"),
])
def test_the_index_command_refuses_bad_input_in_one_line(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    done = run_index(*[str(tmp_path / "empty") if a == "EMPTY" else a for a in args])
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("backend", ["pyav", "torchcodec"])
def test_a_clip_from_a_long_video_reads_only_the_clip_once_indexed(folder, tmp_path, monkeypatch, backend):
    """After the one scan, opening the file and reading 16 frames near its end scans nothing."""
    from accel.io.backends import backend_available

    if not backend_available(backend):
        pytest.skip(f"{backend} is not available")
    video = write_index_video(tmp_path / "long.mp4", 2000, width=32, height=32, gop=250)
    index_stream(video)
    store.forget_memory()
    monkeypatch.setattr(store, "scan_stream", no_scan)
    wanted = list(range(1970, 1986))
    frames = open_video(video, backend).get_frames(wanted).numpy()
    assert [read_frame_index(f) for f in frames] == wanted


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_display_rotation_is_indexed_and_applied_without_the_command_line(folder, tmp_path, degrees):
    from accel.synth import tag_rotation

    stored = write_index_video(tmp_path / "v.mp4", 12, width=64, height=48, gop=4)
    phone = tag_rotation(stored, tmp_path / "phone.mp4", degrees)
    assert index_stream(phone).rotation == degrees
    raw = open_video(stored, "pyav").get_frames([0, 11]).numpy()
    shown = open_video(phone, "pyav").get_frames([0, 11]).numpy()
    assert np.array_equal(shown, np.rot90(raw, degrees // 90, axes=(1, 2)))
    assert np.array_equal(open_video(phone, "pyav", rotate=False).get_frames([0, 11]).numpy(), raw)
