"""The decode watchdog and worker recycling (accel.io.watchdog), on every backend.

The hostile file: a regular ``.mp4`` that is an ``ffconcat`` list naming a FIFO which a
feeder process fills with an endless MPEG-TS stream. Every backend's open scans the stream
for ever (torchcodec inside one C++ call that SIGALRM cannot interrupt).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CPU_BACKENDS, backend_param, rerun_in_fresh_interpreter

from accel import WatchdogOptions, build_loader
from accel.data.dataset import VideoClipDataset
from accel.data.manifests import folder_manifest
from accel.io.watchdog import CallTimeout, ChildDied, DecodeProcess
from accel.synth import read_frame_index, write_index_video, write_video

FEEDER = """
import sys
data = open(sys.argv[1], "rb").read()
while True:  # one reader after another: a killed reader breaks the pipe, the next reopens it
    try:
        with open(sys.argv[2], "wb") as f:
            while True:
                f.write(data)
    except BrokenPipeError:
        pass
"""
TIMEOUT = 1.5
MARGIN = 6.0  # fork, scheduling on a loaded 2-core machine


@pytest.fixture(scope="module")
def endless_dataset(tmp_path_factory):
    """train/{a,b}/ with index-coded videos, and a/endless.mp4 that never ends."""
    root = tmp_path_factory.mktemp("endless")
    for cls in ("a", "b"):
        for i in range(3):
            write_index_video(root / "train" / cls / f"v{i}.mp4", 40, width=32, height=32, gop=10)
    folder = root / "train" / "a"
    write_video(root / "segment.ts", [np.full((32, 32, 3), 9 * i, np.uint8) for i in range(25)])
    os.mkfifo(folder / "stream.ts")
    (folder / "endless.mp4").write_text("ffconcat version 1.0\nfile 'stream.ts'\n")
    feeder = subprocess.Popen([sys.executable, "-c", FEEDER, str(root / "segment.ts"),
                               str(folder / "stream.ts")])
    yield root
    feeder.kill()
    feeder.wait()


@pytest.mark.parametrize("backend", [backend_param(b) for b in CPU_BACKENDS])
@pytest.mark.parametrize("workers", [0, 2])
def test_an_endless_file_is_skipped_in_time_and_the_epoch_completes(endless_dataset, backend, workers):
    manifest = folder_manifest(endless_dataset, "train")
    endless = next(i for i, item in enumerate(manifest.items) if item.path.endswith("endless.mp4"))
    loader = build_loader(manifest, batch_size=2, clip_len=4, backend=backend, num_workers=workers,
                          watchdog=WatchdogOptions(timeout_s=TIMEOUT), persistent_workers=False)
    start = time.monotonic()
    batches = list(loader.loader)  # the raw DataLoader: every batch, the skip recorded in one
    elapsed = time.monotonic() - start
    assert len(batches) == len(loader) == 4  # 7 files, batch 2: the batch count is unchanged
    seen = sorted(i for b in batches for i in b.video_id.tolist())  # an empty batch has none
    assert seen == [i for i in range(len(manifest)) if i != endless]
    skipped = [s for b in batches for s in b.skipped]
    assert skipped == [(manifest.items[endless].path, f"decode took longer than {TIMEOUT:g} s")]
    assert elapsed < TIMEOUT + MARGIN + 3.0 * (workers > 0)  # workers: their own start-up
    for b in batches:  # the good clips are the right frames
        if not b.is_empty:
            for clip, idx in zip(b.clip.permute(0, 2, 3, 4, 1).numpy(), b.indices.tolist()):
                assert [read_frame_index(f) for f in clip] == idx


def test_on_error_raise_stops_with_the_path(endless_dataset):
    from accel.data.reading import DecodeTimeout

    ds = VideoClipDataset(folder_manifest(endless_dataset, "train"), clip_len=4, backend="pyav",
                          decode_timeout_s=TIMEOUT, on_error="raise")
    endless = next(i for i, item in enumerate(ds.manifest.items) if item.path.endswith("endless.mp4"))
    with pytest.raises(DecodeTimeout, match="endless.mp4: decode took longer than 1.5 s"):
        ds[endless]
    assert ds[endless + 1]["clip"].shape == (4, 32, 32, 3)  # a fresh decode process serves the next file


def _segfault():
    import faulthandler

    faulthandler.disable()  # pytest's handler, inherited by the fork, would print a dump
    os.kill(os.getpid(), signal.SIGSEGV)


def test_a_crashed_decoder_is_reported_and_replaced():
    proc = DecodeProcess(lambda x: x * 2, timeout_s=5)
    assert proc.call(21) == 42
    first = proc.pid
    proc.fn = lambda x: _segfault()  # the next child crashes like a decoder bug would
    proc._stop(kill=True)
    with pytest.raises(ChildDied, match="SIGSEGV"):
        proc.call(1)
    proc.fn = lambda x: x + 1
    assert proc.call(1) == 2 and proc.pid != first
    proc.close()


def test_timeouts_and_limits_replace_the_child():
    proc = DecodeProcess(lambda s: time.sleep(s) or os.getpid(), timeout_s=0.5, max_calls=2)
    a = proc.call(0)
    assert proc.call(0) == a and proc.pid is None  # retired after 2 calls
    b = proc.call(0)
    assert b != a
    with pytest.raises(CallTimeout):
        proc.call(30)
    assert proc.replacements == 2 and proc.call(0) not in (a, b)
    with pytest.raises(ValueError, match="max_calls must be > 0"):
        DecodeProcess(print, timeout_s=1, max_calls=0)
    proc.close()


class PidLogging(VideoClipDataset):
    """Appends ``index pid`` for every clip it decodes to ``self.log``."""

    log: str = ""

    def open_reader(self, path):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return super().open_reader(path)


def _epoch(ds, workers):
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=workers, shuffle=False,
                                         collate_fn=lambda s: s, persistent_workers=workers > 0)
    return [(s["video_id"], s["indices"].tolist(), s["clip"].numpy().tobytes())
            for batch in loader for s in batch]


@pytest.mark.parametrize("backend", [backend_param(b) for b in CPU_BACKENDS])
@pytest.mark.parametrize("workers", [0, 2])
def test_recycling_keeps_the_clips_and_their_order(endless_dataset, tmp_path, backend, workers):
    manifest = folder_manifest(endless_dataset, "train")
    manifest = manifest.subset([i for i, it in enumerate(manifest.items) if not it.path.endswith("endless.mp4")])
    plain = _epoch(VideoClipDataset(manifest, clip_len=4, strategy="random", backend=backend,
                                    recycle_after_clips=None, recycle_rss_growth_mb=None), 0)
    log = tmp_path / "pids.txt"
    ds = PidLogging(manifest, clip_len=4, strategy="random", backend=backend, recycle_after_clips=2)
    ds.log = str(log)
    recycled = _epoch(ds, workers)
    assert len(plain) == 6 and recycled == plain  # same clips, same frames, same order
    pids = log.read_text().split()
    assert len(pids) == 6
    # 6 clips, a new decode process every 2 clips of each reading process
    assert len(set(pids)) == 3 if workers == 0 else len(set(pids)) >= 3


class Hoarding(VideoClipDataset):
    """Keeps 40 MiB per clip alive in the decode process: a leak the RSS limit must catch
    (large against the few MiB a decoder's first-use buffers may return later)."""

    def open_reader(self, path):
        hoard = self.__dict__.setdefault("_hoard", [])
        hoard.append(np.ones(40 * 2**20, np.uint8))
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return super().open_reader(path)


def test_memory_growth_replaces_the_decode_process(endless_dataset, tmp_path):
    if rerun_in_fresh_interpreter(__file__, "test_memory_growth_replaces_the_decode_process"):
        return
    manifest = folder_manifest(endless_dataset, "train")
    manifest = manifest.subset([i for i, it in enumerate(manifest.items) if not it.path.endswith("endless.mp4")])
    ds = Hoarding(manifest, clip_len=4, backend="pyav", recycle_after_clips=None,
                  recycle_rss_growth_mb=60)
    ds.log = str(tmp_path / "pids.txt")
    for i in range(len(manifest)):
        assert ds[i]["video_id"] == i
    pids = Path(ds.log).read_text().split()
    # the baseline is taken after the first clip; the second's +40 MiB is fine, the third's
    # +80 MiB retires the process: three clips per process
    assert len(pids) == 6 and len(set(pids)) == 2
    ds.close()


def test_a_child_forked_by_a_thread_that_ended_is_replaced_quietly():
    import threading

    proc = DecodeProcess(lambda x: x + 1, timeout_s=5)
    t = threading.Thread(target=proc.call, args=(1,))
    t.start()
    t.join()  # PR_SET_PDEATHSIG: the child dies with the thread that forked it
    time.sleep(0.3)
    assert proc.call(2) == 3  # no error: a fresh child answers
    assert proc.replacements == 1  # the first child did die
    proc.close()


def _parallel_ops(_):
    y = torch.randn(16, 3, 128, 128)
    z = torch.nn.functional.interpolate(y, size=(64, 64), mode="bilinear", antialias=True)
    return float(z.sum() + (torch.randn(500, 500) @ torch.randn(500, 500)).sum())


def test_a_fork_of_a_process_that_ran_openmp_does_not_hang():
    """A training loop runs OpenMP regions; its decode child's first parallel op (a resize)
    hung until the watchdog killed it, because libgomp's pool does not survive a fork."""
    x = torch.randn(1000, 1000)
    float((x @ x).sum())
    _parallel_ops(0)
    proc = DecodeProcess(_parallel_ops, timeout_s=15)
    assert isinstance(proc.call(0), float)
    proc.close()


class _NativeHandle:
    """Stands for a DALI pipeline: its finaliser must never run in a fork of its owner."""

    def __init__(self):
        self.owner = os.getpid()
        self.cycle = self

    def __del__(self):
        if os.getpid() != self.owner:
            os._exit(3)


def _collect(_):
    import gc

    gc.collect()
    return "alive"


def test_garbage_inherited_by_the_fork_is_not_finalised_in_the_child():
    import gc

    gc.disable()
    try:
        _NativeHandle()  # unreachable cycle: garbage the parent has not collected yet
        proc = DecodeProcess(_collect, timeout_s=10)
        assert proc.call(0) == "alive"  # the child's collection left the parent's garbage alone
        proc.close()
    finally:
        gc.enable()
        gc.collect()
