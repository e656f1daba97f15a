"""The timer against operations of known duration and known spread.

These check that the timer measures correctly; they never assert that anything is fast.
Bounds are loose because the machine is shared: a sleep can only overshoot, never finish
early, so lower bounds are tight and upper bounds generous.
"""
import statistics
import time

import pytest
import torch

from benchmarks.common import summarize_ms
from benchmarks.timing import make_input_pool, time_inference, time_iterations, time_train_step


def test_known_duration_sleep():
    times = time_iterations(lambda i: time.sleep(0.010), warmup=1, iters=10)
    assert len(times) == 10
    assert min(times) >= 9.9                    # sleep never returns early
    assert statistics.median(times) < 10 + 15   # generous for a busy 2-core machine


def test_known_spread_on_a_clock_the_steps_advance(monkeypatch):
    """5 ms and 15 ms alternately on a clock only the steps move (a shared machine's hiccups
    cannot blur it): each iteration is timed on its own and summarised exactly."""
    from types import SimpleNamespace

    from benchmarks import timing

    now = [0.0]
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: now[0]))

    def step(i):
        now[0] += 0.005 if i % 2 == 0 else 0.015

    times = time_iterations(step, warmup=1, iters=20)  # the warm-up (i=0) moves it untimed
    assert times == pytest.approx([15.0, 5.0] * 10)
    s = summarize_ms(times)
    assert s["mean_ms"] == pytest.approx(10.0) and s["std_ms"] == pytest.approx(5 * (20 / 19) ** 0.5)


def test_known_spin_length():
    # A busy-wait of known length measures CPU time accurately even without sleep's wake-up jitter.
    def spin(i, ms=8.0):
        end = time.perf_counter() + ms / 1e3
        while time.perf_counter() < end:
            pass
    times = time_iterations(spin, warmup=1, iters=5)
    assert min(times) >= 8.0 and statistics.median(times) < 8.0 + 20


def test_warmup_calls_are_not_timed():
    calls = []
    times = time_iterations(lambda i: calls.append(i), warmup=3, iters=4)
    assert calls == list(range(7)) and len(times) == 4


class FakeEvent:
    """torch.cuda.Event stand-in: records on which stream, waits, and a 4 ms elapsed time."""
    log: list = []

    def __init__(self, enable_timing=False):
        assert enable_timing
        self.recorded_on = None

    def record(self, stream=None):
        self.recorded_on = stream
        FakeEvent.log.append(("record", stream))

    def synchronize(self):
        FakeEvent.log.append(("wait", self.recorded_on))

    def elapsed_time(self, end):
        assert self.recorded_on == end.recorded_on == "compute-stream"
        return 4.0


class FakeStream:
    def synchronize(self):
        FakeEvent.log.append(("stream-wait", "compute-stream"))

    def __eq__(self, other):
        return other == "compute-stream"


def test_cuda_iterations_are_timed_by_events_on_the_compute_stream(monkeypatch):
    """On CUDA: warm-up untimed, the stream drained once, then each iteration between two
    events on the current stream, waiting for its end event only (never a device-wide
    synchronize, which would also wait for other streams' work)."""
    def no_device_sync(*a, **k):
        raise AssertionError("torch.cuda.synchronize while timing")

    monkeypatch.setattr(torch.cuda, "synchronize", no_device_sync)
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeStream())
    FakeEvent.log = []
    calls = []
    times = time_iterations(lambda i: (calls.append(i), FakeEvent.log.append(("step", i))),
                            warmup=2, iters=3, device="cuda")
    assert times == [4.0, 4.0, 4.0] and calls == [0, 1, 2, 3, 4]
    timed = [("record", "compute-stream"), ("step", 2), ("record", "compute-stream"),
             ("wait", "compute-stream")]
    assert FakeEvent.log[:3] == [("step", 0), ("step", 1), ("stream-wait", "compute-stream")]
    assert FakeEvent.log[3:7] == timed
    assert len(FakeEvent.log) == 3 + 3 * 4


def test_inputs_rotate_through_the_pool():
    pool = make_input_pool((2, 3), n=3)
    seen = []
    time_inference(lambda x: seen.append(x.data_ptr()), pool, warmup=0, iters=6)
    ptrs = [p.data_ptr() for p in pool]
    assert seen == ptrs * 2
    assert not torch.equal(pool[0], pool[1])   # distinct contents, not copies


def test_train_step_updates_weights():
    model = torch.nn.Linear(4, 3)
    pool = make_input_pool((8, 4), n=2)
    targets = [torch.randint(0, 3, (8,)) for _ in pool]
    before = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    times = time_train_step(model, pool, targets, opt, warmup=1, iters=3)
    assert len(times) == 3 and all(t > 0 for t in times)
    assert not torch.equal(before, model.weight)


@pytest.mark.parametrize("kw", [dict(warmup=-1, iters=3), dict(warmup=0, iters=0)])
def test_bad_counts_fail_early(kw):
    with pytest.raises(ValueError, match="warmup|iters"):
        time_iterations(lambda i: None, **kw)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_timing_counts_async_kernels():
    # torch.cuda._sleep spins the GPU for a number of cycles; the host returns immediately,
    # so only a timer that waits for the device sees it.
    times = time_iterations(lambda i: torch.cuda._sleep(50_000_000), warmup=1, iters=3, device="cuda")
    assert min(times) > 1.0   # 50M cycles is > 10 ms on any current GPU
