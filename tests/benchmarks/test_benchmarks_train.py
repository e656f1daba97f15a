"""python -m benchmarks train: throughput and data-stall share with the real loader."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from accel.data.batch import ClipBatch


def test_train_benchmark_reports_the_data_stall(tmp_path, temporal_dataset):
    out = tmp_path / "train.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks", "train", "--model", "tsn_resnet18",
                        "--data", str(temporal_dataset), "--split", "train", "--backends", "pyav,dali",
                        "--workers", "1", "--threads", "1", "--batch-size", "4", "--clip-len", "4",
                        "--frame-size", "36", "--size", "32", "--steps", "3", "--warmup-steps", "1",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {row["backend"]: row for row in json.loads(out.read_text())["records"]}
    ok = rows["pyav"]
    assert ok["status"] == "ok" and ok["steps"] == 3 and ok["skipped"] == 0
    assert 0 <= ok["data_stall_pct"] <= 100 and ok["clips_per_s"] > 0
    step = ok["data_wait_ms_mean"] + ok["compute_ms_mean"]
    assert ok["step_ms_mean"] == pytest.approx(step, rel=1e-6)
    assert ok["data_stall_pct"] == pytest.approx(100 * ok["data_wait_ms_mean"] / step, rel=1e-6)
    assert ok["clips_per_s"] == pytest.approx(4 / (step / 1e3), rel=1e-6)
    if not torch.cuda.is_available():
        assert rows["dali"]["status"] == "skipped" and "CUDA" in rows["dali"]["reason"]
    assert "% of step time waiting for data" in r.stdout


def test_train_benchmark_refuses_bad_flags():
    r = subprocess.run([sys.executable, "-m", "benchmarks", "train", "--backends", "opencv"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "opencv" in r.stderr and "pyav" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["train", "stream"])
def test_device_cuda_without_cuda_is_one_line(command, capsys):
    from benchmarks.__main__ import main as bench_main

    with pytest.raises(SystemExit) as e:
        bench_main([command, "--device", "cuda"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith(f"python -m benchmarks {command}: error: --device cuda: CUDA is not")
    assert len(err.strip().splitlines()) == 1


def test_fewer_videos_than_a_batch_still_times_every_step(tmp_path):
    """Six videos, batch 8 (what gpu_check.sh asked for): the repeat sampler makes warm-up
    plus timed steps of full batches in one epoch. It used to yield no batch and exit 2."""
    from accel.synth import make_dataset

    data = make_dataset(tmp_path / "six", classes=2, videos_per_class=3, frames=8, width=32,
                        height=32, splits=(1.0, 0.0, 0.0))
    out = tmp_path / "t.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks", "train", "--model", "tsn_resnet18",
                        "--data", str(data), "--split", "train", "--backends", "pyav", "--workers", "0",
                        "--threads", "1", "--batch-size", "8", "--clip-len", "2", "--frame-size", "32",
                        "--size", "32", "--steps", "2", "--warmup-steps", "1",
                        "--json", str(out)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = json.loads(out.read_text())["records"]
    assert row["status"] == "ok" and row["steps"] == 2 and row["batch_size"] == 8
    assert row["clips_per_s"] == pytest.approx(8 / (row["step_ms_mean"] / 1e3), rel=1e-6)


def test_the_repeat_sampler_fills_one_epoch_with_every_step():
    from accel.data.samplers import RepeatSampler

    s = RepeatSampler(6, num_samples=(3 + 20) * 8, seed=0)
    order = list(s)
    assert len(order) == len(s) == 184
    assert [sorted(order[i:i + 6]) for i in range(0, 180, 6)] == [list(range(6))] * 30  # whole passes
    assert order[:6] != order[6:12] or order[6:12] != order[12:18]  # each pass reshuffled
    s.set_epoch(1)
    assert list(s) != order and list(RepeatSampler(6, num_samples=184, seed=0)) == order


def test_an_epoch_without_batches_raises(tmp_path):
    from benchmarks.train import NoBatches, device_batches

    class Empty:  # every file of the epoch skipped
        backend, skipped = "pyav", [("a.mp4", "bad")]

        def set_epoch(self, epoch):
            pass

        def __iter__(self):
            return iter(())

        def __len__(self):
            return 1

    with pytest.raises(NoBatches, match="yielded no batch"):
        next(device_batches(Empty(), torch.device("cpu"), None))


class FakeEvent:
    """torch.cuda.Event stand-in: every recorded interval lasts 5 ms of 'GPU' time."""

    recorded, synced = [], 0

    def __init__(self, enable_timing=False):
        assert enable_timing

    def record(self, stream=None):
        FakeEvent.recorded.append(stream)

    def synchronize(self):
        FakeEvent.synced += 1

    def elapsed_time(self, other):
        return 5.0


def test_cuda_steps_time_the_compute_stream_not_the_device(monkeypatch):
    """On CUDA the step waits for its compute stream's event, never torch.cuda.synchronize
    (which would also wait for DALI's prefetch of later batches)."""
    import time

    from benchmarks import train as bench

    def no_device_sync(*a, **k):
        raise AssertionError("torch.cuda.synchronize in the timed loop")

    monkeypatch.setattr(torch.cuda, "synchronize", no_device_sync)
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: "compute-stream")
    FakeEvent.recorded, FakeEvent.synced = [], 0

    def batches():
        while True:
            time.sleep(0.03)  # 30 ms of data wait
            yield ClipBatch(clip=torch.zeros(2, 3, 1, 1, 1), label=torch.zeros(2, dtype=torch.int64),
                            video_id=torch.arange(2), indices=torch.zeros(2, 1, dtype=torch.int64))

    clock = bench.step_clock(torch.device("cuda"))
    assert isinstance(clock, bench.StreamClock)
    waits, computes, clips = bench.timed_steps(batches(), lambda b: None, clock, warmup=1, steps=3)
    assert computes == [5.0, 5.0, 5.0] and clips == 6
    assert all(w >= 30 - 5 for w in waits)
    assert FakeEvent.synced == 4 and set(FakeEvent.recorded) == {"compute-stream"}
