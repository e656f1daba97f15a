"""How a decode child's reply travels (accel.io.watchdog): arrays through a shared buffer,
exact and never aliased; the cheap memory check; the guarantees kept with them."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import torch

from accel import SkippedSample
from accel.data.dataset import VideoClipDataset
from accel.data.manifests import folder_manifest
from accel.io import watchdog
from accel.io.watchdog import CallTimeout, ChildDied, DecodeProcess, anon_mb
from accel.synth import read_frame_index, write_index_video
from tests.conftest import rerun_in_fresh_interpreter

needs_memfd = pytest.mark.skipif(not watchdog.SharedBuffer.available(),
                                 reason="no memfd here (not Linux): replies use the pipe")


def _arrays(seed: int, frames: int = 4) -> dict:
    """Arrays of every layout a reply may hold, with values that depend on the seed."""
    rng = np.random.default_rng(seed)
    clip = rng.integers(0, 256, (frames, 48, 40, 3), dtype=np.uint8)
    return {"clip": clip, "indices": np.arange(frames, dtype=np.int64) + seed,
            "scores": rng.random((3, 5), dtype=np.float32),
            "fortran": np.asfortranarray(rng.random((6, 7))),
            "strided": clip[:, ::2, 1::3, 0],  # not contiguous: pickled in-band
            "empty": np.zeros((0, 3), np.int16), "label": seed, "name": f"v{seed}.mp4"}


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        if isinstance(v, np.ndarray):
            assert b[k].dtype == v.dtype and b[k].shape == v.shape, k
            np.testing.assert_array_equal(b[k], v, err_msg=k)
        else:
            assert b[k] == v, k


@needs_memfd
def test_arrays_come_back_exact_and_the_buffer_grows_for_a_bigger_reply():
    proc = DecodeProcess(_arrays, timeout_s=20)
    try:
        small = proc.call(1)
        _same(_arrays(1), small)
        size = proc.buffer_bytes
        assert size >= small["clip"].nbytes  # the arrays came through the shared buffer
        big = proc.call(2, 64)  # a clip 16x bigger: the buffer grows
        _same(_arrays(2, 64), big)
        assert proc.buffer_bytes >= big["clip"].nbytes > size
        _same(_arrays(3), proc.call(3))  # and a small one again, from the grown buffer
        assert all(v.flags.writeable for v in small.values() if isinstance(v, np.ndarray))
    finally:
        proc.close()
    assert proc.buffer_bytes == 0


def test_a_reply_stays_its_own_after_the_next_call():
    """The buffer is rewritten by every call: what one call returned must not change."""
    proc = DecodeProcess(lambda v: np.full((8, 32, 32, 3), v, np.uint8), timeout_s=20)
    try:
        first = proc.call(7)
        second = proc.call(9)
        assert (first == 7).all() and (second == 9).all()
        first[:] = 1  # and writing to one leaves the next alone
        assert (proc.call(5) == 5).all() and (second == 9).all()
    finally:
        proc.close()


def test_a_reply_larger_than_the_buffer_limit_goes_through_the_pipe(monkeypatch):
    monkeypatch.setattr(watchdog, "SHARED_MAX_BYTES", 4096)  # read by the child, forked after
    proc = DecodeProcess(_arrays, timeout_s=20)
    try:
        _same(_arrays(4, 16), proc.call(4, 16))
        assert proc.buffer_bytes == 0  # never used
    finally:
        proc.close()


def _die_or_echo(action: str, value: int):
    if action == "crash":
        import faulthandler

        faulthandler.disable()  # pytest's handler, inherited by the fork, would print a dump
        os.kill(os.getpid(), signal.SIGSEGV)
    if action == "hang":
        time.sleep(30)
    return np.full((16, 64, 64, 3), value, np.uint8)


def test_time_outs_and_crashes_leave_the_next_reply_right():
    """A child killed or crashed mid-call may leave anything in the buffer: the next child's
    reply is still exact."""
    proc = DecodeProcess(_die_or_echo, timeout_s=1.0)
    try:
        assert (proc.call("echo", 3) == 3).all()
        with pytest.raises(CallTimeout):
            proc.call("hang", 0)
        assert (proc.call("echo", 4) == 4).all()
        with pytest.raises(ChildDied, match="SIGSEGV"):
            proc.call("crash", 0)
        assert (proc.call("echo", 5) == 5).all() and proc.replacements == 2
    finally:
        proc.close()


def _hoard(hoard: list, mib: int) -> int:
    hoard.append(np.ones(mib * 2**20, np.uint8))
    return os.getpid()


def _big_reply(mib: int) -> tuple[int, np.ndarray]:
    return os.getpid(), np.ones(mib * 2**20, np.uint8)


def test_memory_growth_still_retires_the_child_and_the_buffer_is_not_counted():
    if rerun_in_fresh_interpreter(__file__, "test_memory_growth_still_retires_the_child_and_the_buffer_is_not_counted"):
        return
    # 40 MiB kept per call: the baseline comes after the first, so the third passes 60 MiB
    proc = DecodeProcess(lambda: _hoard(hoard, 40), timeout_s=20, max_rss_growth_mb=60)
    hoard: list = []
    try:
        pids = [proc.call() for _ in range(6)]
        assert len(set(pids)) == 2 and pids[0] == pids[2] != pids[3]
    finally:
        proc.close()
    # 48 MiB replies: the shared buffer (mapped after the first reply) is not a leak
    proc = DecodeProcess(_big_reply, timeout_s=20, max_rss_growth_mb=30)
    try:
        pids = [proc.call(48)[0] for _ in range(4)]
        assert len(set(pids)) == 1 and proc.replacements == 0
    finally:
        proc.close()


def test_the_memory_check_reads_statm_and_sees_growth(monkeypatch):
    if rerun_in_fresh_interpreter(__file__, "test_the_memory_check_reads_statm_and_sees_growth"):
        return
    """statm's anonymous pages, the quantity smaps_rollup sums (which cost 15-19 ms a call in a
    torch process: its speed is measured by benchmarks.decode_child, not asserted here)."""
    import builtins

    with open("/proc/self/smaps_rollup") as f:
        smaps = next(int(line.split()[1]) / 1024 for line in f if line.startswith("Anonymous:"))
    assert abs(anon_mb() - smaps) < 16
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    anon_mb()
    monkeypatch.undo()
    assert opened == ["/proc/self/statm"]
    before = anon_mb()
    hoard = np.ones(64 * 2**20, np.uint8)
    assert 60 < anon_mb() - before < 70
    del hoard


def test_a_clip_comes_back_through_the_shared_buffer():
    """A 16x128x224 clip through the child with the memory check on arrives whole, through
    the shared buffer (its cost is measured by benchmarks.decode_child, not asserted here)."""
    clip = np.random.default_rng(0).integers(0, 256, (16, 128, 224, 3), dtype=np.uint8)
    proc = DecodeProcess(lambda: clip, timeout_s=20, max_rss_growth_mb=256)
    try:
        for _ in range(3):
            np.testing.assert_array_equal(proc.call(), clip)
        assert proc.buffer_bytes >= clip.nbytes
    finally:
        proc.close()


def test_a_forked_copy_does_not_use_its_parents_child():
    proc = DecodeProcess(lambda: os.getpid(), timeout_s=20)
    try:
        child = proc.call()
        pid = os.fork()
        if pid == 0:
            try:
                proc.call()
            except RuntimeError:
                os._exit(7)
            os._exit(0)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7
        assert proc.call() == child  # the original still has its child
    finally:
        proc.close()


class Crashing(VideoClipDataset):
    """Crashes the decode child on one file, like a decoder bug would."""

    def open_reader(self, path):
        if path.endswith("v1.mp4"):
            import faulthandler

            faulthandler.disable()
            os.kill(os.getpid(), signal.SIGSEGV)
        return super().open_reader(path)


@pytest.fixture(scope="module")
def index_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    for i in range(3):
        write_index_video(root / "train" / "a" / f"v{i}.mp4", 40 + 10 * i, width=64, height=48, gop=8)
    return folder_manifest(root, "train")


@pytest.mark.parametrize("backend", ["pyav", "torchcodec"])
def test_dataset_clips_through_the_child_equal_the_in_process_ones(index_videos, backend):
    child = VideoClipDataset(index_videos, clip_len=8, backend=backend)
    plain = VideoClipDataset(index_videos, clip_len=8, backend=backend, isolate_decode=False)
    try:
        first = child[0]
        kept = first["clip"].clone()
        for i in range(len(index_videos)):
            a, b = child[i], plain[i]
            assert a.keys() == b.keys() and a["label"] == b["label"] and a["video_id"] == i
            assert a["clip"].dtype == torch.uint8 and a["indices"].dtype == torch.int64
            assert torch.equal(a["clip"], b["clip"]) and torch.equal(a["indices"], b["indices"])
            assert [read_frame_index(f) for f in a["clip"].numpy()] == a["indices"].tolist()
        assert torch.equal(first["clip"], kept)  # later clips did not overwrite the first
    finally:
        child.close()


def test_a_crashing_decoder_is_a_skip_and_the_next_clip_is_right(index_videos):
    ds = Crashing(index_videos, clip_len=8, backend="pyav")
    try:
        assert [read_frame_index(f) for f in ds[0]["clip"].numpy()] == ds[0]["indices"].tolist()
        skipped = ds[1]
        assert isinstance(skipped, SkippedSample) and skipped.path.endswith("v1.mp4")
        assert skipped.reason == "decoder process died (killed by SIGSEGV)"
        good = ds[2]
        assert [read_frame_index(f) for f in good["clip"].numpy()] == good["indices"].tolist()
    finally:
        ds.close()


def test_window_dataset_through_the_child_equals_in_process(index_videos):
    from accel.data.windows import VideoWindowsDataset

    child = VideoWindowsDataset(index_videos, clip_len=4, backend="pyav")
    plain = VideoWindowsDataset(index_videos, clip_len=4, backend="pyav", isolate_decode=False)
    try:
        for i in range(len(index_videos)):
            a, b = child[i], plain[i]
            assert a["clip"].shape == b["clip"].shape and a["clip"].shape[1:] == (4, 48, 64, 3)
            assert torch.equal(a["clip"], b["clip"]) and torch.equal(a["indices"], b["indices"])
    finally:
        child.close()
