"""accel.deploy.live: incremental window logits equal the full-clip forward for every frame
model, the ring pre-processes as evaluation does, and the drop policies do what they say."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from accel.data.transforms import ClipTransform
from accel.deploy.live import LiveClassifier, RingBuffer, latency_summary
from models import create_model, frame_split, has_frame_split, list_models

FRAME_MODELS = ["cnn_lstm", "resnet18_lstm", "resnet50_lstm", "resnext50_lstm", "tsn_resnet18"]
CLASSES = ["a", "b", "c"]


def frames(n: int, h: int = 40, w: int = 48, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_the_registry_declares_the_split_for_the_frame_models_only():
    assert [n for n in list_models() if has_frame_split(n)] == sorted(FRAME_MODELS)
    assert frame_split(create_model("tsm_resnet18", num_classes=3)) is None


@pytest.mark.parametrize("name", FRAME_MODELS)
def test_incremental_window_logits_equal_the_full_clip_forward(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3).eval()
    split = frame_split(model)
    assert split is not None
    clip_len, size = 4, 32
    live = LiveClassifier(None, classes=CLASSES, clip_len=clip_len, size=size, encode=split.encode,
                          head=split.head, policy="block", keep_logits=True)
    ring = RingBuffer(clip_len, size, torch.device("cpu"))
    worst, n = 0.0, 0
    for k, f in enumerate(frames(9)):
        r = live.submit(f, index=k)
        ring.push(f)
        if r is None:
            assert k < clip_len - 1
            continue
        with torch.inference_mode():
            full = model(ring.clip())[0]
        worst = max(worst, (torch.tensor(r.logits) - full).abs().max().item())
        n += 1
    assert n == 6 and live.path == "incremental"
    assert worst <= 1e-5, worst
    assert live.features.encoded == 9   # one encoder call per new frame, none recomputed


def test_frames_are_encoded_as_the_ring_fills_and_warmup_leaves_no_trace():
    torch.manual_seed(0)
    model = create_model("cnn_lstm", num_classes=3).eval()
    split = frame_split(model)
    batches: list[int] = []

    def encode(x):
        batches.append(x.shape[0])
        return split.encode(x)

    def make():
        return LiveClassifier(None, classes=CLASSES, clip_len=4, size=32, encode=encode, head=split.head,
                              policy="block", keep_logits=True)

    cold = make()
    cold_out = [cold.submit(f, index=k) for k, f in enumerate(frames(6))]
    assert batches == [1] * 6                 # never a clip_len batch at the first full window
    warm = make()
    assert warm.warmup(40, 48) > 0 and warm.warmup_ms is not None
    assert not warm.ring.full and warm.features.encoded == 0 and not any(warm.features.valid)
    warm_out = [warm.submit(f, index=k) for k, f in enumerate(frames(6))]
    assert [r is None for r in warm_out] == [r is None for r in cold_out] == [True] * 3 + [False] * 3
    for a, b in zip(cold_out[3:], warm_out[3:]):  # the black warm-up frames left nothing behind
        assert a.logits == pytest.approx(b.logits, abs=1e-6)


def test_binary_logit_hook_runs_on_the_incremental_head():
    torch.manual_seed(0)
    model = create_model("resnet18_lstm", num_classes=2, binary_logit=True).eval()
    split = frame_split(model)
    x = torch.randn(1, 3, 3, 32, 32)
    with torch.inference_mode():
        feats = split.encode(x[0].permute(1, 0, 2, 3)).unsqueeze(0)
        assert torch.allclose(split.head(feats), model(x), atol=1e-6)
        assert split.head(feats).shape == (1, 2)


def test_ring_preprocesses_like_evaluation():
    f = frames(4, 36, 60)
    ring = RingBuffer(4, 24, torch.device("cpu"), mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))
    for x in f:
        ring.push(x)
    batch = torch.from_numpy(np.stack(f)).permute(3, 0, 1, 2)[None]  # (1, C, T, H, W) uint8
    ref = ClipTransform(24, train=False, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))(batch)
    assert (ring.clip() - ref).abs().max().item() <= 1e-6


class Clock:
    """A clock that only the models and the frame schedule move, put in place of live.py's
    ``time``: what is dropped depends on the policy alone, never on a busy CI core."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    from accel.deploy import live as live_module

    clock = Clock()
    monkeypatch.setattr(live_module, "time", clock)
    return clock


def slow_model(seconds: float, clock: Clock | None = None):
    """A model that takes ``seconds``: on ``clock`` when given, else really (time.sleep)."""
    def run(clip: torch.Tensor) -> torch.Tensor:
        if clock is None:
            time.sleep(seconds)
        else:
            clock.now += seconds
        return clip.mean(dim=(2, 3, 4))
    return run


def play(live: LiveClassifier, n: int, fps: float, clock: Clock) -> list:
    """Frames submitted on a real-time schedule (arrival = due time), as a live source does:
    a frame due while the model runs is submitted when it returns."""
    out = []
    for k, f in enumerate(frames(n, 16, 16)):
        clock.now = max(clock.now, k / fps)
        if (r := live.submit(f, index=k, pts_s=k / fps, arrival_s=k / fps)) is not None:
            out.append(r)
    return out


def test_busy_drop_drops_what_arrives_while_busy_and_block_drops_nothing(clock):
    kw = dict(classes=CLASSES, clip_len=2, size=8)
    busy = play(LiveClassifier(slow_model(0.1, clock), **kw), 26, 25.0, clock)  # 100 ms model, 40 ms frames
    s = latency_summary(busy)
    # a window every 120 ms (the first frame due after the model returns): 2 of every 3 dropped
    assert (s["inferred"], s["dropped"]) == (9, 16), s
    assert s["latency_p50_ms"] == pytest.approx(100)
    block = play(LiveClassifier(slow_model(0.02, clock), policy="block", deadline_ms=15, **kw), 11, 100.0,
                 clock)
    assert len(block) == 10 and not any(r.dropped for r in block)
    assert all(r.late for r in block)                                     # 20 ms > 15 ms deadline
    assert [r.pts_s for r in block] == pytest.approx([k / 100 for k in range(1, 11)])


def test_a_dropped_frame_is_encoded_in_idle_time_so_no_two_frame_windows_follow(clock):
    """8 ms a frame at 25 fps, and one 60-ms stall drops exactly the frame behind it."""
    batches: list[int] = []
    calls = {"n": 0}

    def encode(x):  # 8 ms a frame, and one 60 ms stall: the frame behind it is dropped
        calls["n"] += 1
        batches.append(x.shape[0])
        clock.now += 0.06 if calls["n"] == 12 else 0.008 * x.shape[0]
        return x.mean(dim=(2, 3))

    live = LiveClassifier(None, classes=CLASSES, clip_len=4, size=8, encode=encode,
                          head=lambda f: f.mean(dim=1))
    s = latency_summary(play(live, 30, 25.0, clock))
    assert s["dropped"] == 1 and s["inferred"] == 26, s
    assert batches == [1] * 30          # the dropped frame was encoded on its own, in idle time
    assert live.frame_gap_s == pytest.approx(0.04) and live.encode_s < 0.04


def test_deadline_policy_drops_stale_frames(clock):
    live = LiveClassifier(slow_model(0.01, clock), classes=CLASSES, clip_len=1, size=8, policy="deadline",
                          deadline_ms=30)
    clock.now = 5.0
    assert live.submit(frames(1)[0], index=0, arrival_s=4.0).dropped      # a second old
    fresh = live.submit(frames(1)[0], index=1)                              # arrives now
    assert not fresh.dropped and fresh.latency_ms == pytest.approx(10) and not fresh.late


def test_results_carry_topk_and_a_smoothed_label():
    def fixed(clip):  # class 0 for the first windows, then class 2
        fixed.n += 1
        return torch.tensor([[5.0, 0.0, 0.0]]) if fixed.n <= 3 else torch.tensor([[0.0, 0.0, 5.0]])
    fixed.n = 0
    live = LiveClassifier(fixed, classes=CLASSES, clip_len=1, size=8, policy="block", smooth=5, top_k=2)
    out = [live.submit(f, index=k) for k, f in enumerate(frames(5))]
    assert out[3].label == "c" and out[3].smoothed_label == "a"           # 3 of 4 windows said a
    assert [c for c, _ in out[4].topk] == ["c", "a"] and out[4].prob == pytest.approx(out[4].topk[0][1])
    assert latency_summary(out)["frames_per_class"] == {"a": 3, "c": 2}


@pytest.mark.parametrize("kw, needle", [
    (dict(policy="fifo"), "policy must be one of busy-drop, block, deadline, got 'fifo'"),
    (dict(policy="deadline"), "policy 'deadline' needs deadline_ms"),
    (dict(every=0), "must be >= 1"),
    (dict(encode=lambda x: x), "give both encode and head"),
])
def test_bad_options_fail_early(kw, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        LiveClassifier(slow_model(0), classes=CLASSES, clip_len=2, size=8, **kw)
