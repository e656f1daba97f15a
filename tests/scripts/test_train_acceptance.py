"""Acceptance: on the synthetic temporal dataset (classes told apart only by frame order),
train.py on CPU from random initialisation reaches >= 90% test accuracy with each temporal
model family, while the order-blind TSN baseline stays near chance (25% for 4 classes).

Dataset: 4 classes x 60 videos (36 train / 12 val / 12 test per class), 32 frames of 32x32;
clips of 8 frames. Measured on 2 idle CPU cores of an earlier machine: CNN+LSTM ~35 s, TSM ~17 s,
R3D-18 ~38 s, TSN ~17 s per run; on the current CI machines 157 s, 75 s, 132 s and 75 s.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMON = ["--clip_len", "8", "--size", "32", "--batch_size", "8", "--lr", "1e-3", "--augment", "none",
          "--patience", "3", "--no_progress", "--no_tensorboard"]

# family -> (model options, epochs)
RUNS = {
    # CNN+LSTM, its registered defaults (LSTM outputs averaged over time): with augmentation
    # it generalises (without it 83% test; with --model_arg pool=last 98% in 8 epochs)
    "cnn_lstm": (["--model", "cnn_lstm", "--augment", "full"], 12),
    "tsm_resnet18": (["--model", "tsm_resnet18"], 5),                      # temporal shift
    "r3d_18": (["--model", "r3d_18"], 4),                                  # 3-D CNN
}


@pytest.fixture(scope="module")
def temporal_demo(tmp_path_factory) -> Path:
    from accel.synth import make_dataset

    return make_dataset(tmp_path_factory.mktemp("temporal_demo"), classes=4, videos_per_class=60,
                        frames=32, width=32, height=32, seed=0)


def train(data: Path, out: Path, options: list[str], epochs: int) -> tuple[dict, float]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data_dir", str(data), "--out_dir",
                        str(out), "--epochs", str(epochs), *COMMON, *options],
                       cwd=ROOT, capture_output=True, text=True, timeout=1200)
    elapsed = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text()), elapsed


# CNN+LSTM and R3D-18 take 2-2.5 min each on this project's 2-core machines: they run with the
# slow tests (make test-all); TSM and the order-blind baseline keep the claim in the default suite.
SLOW_FAMILIES = {"cnn_lstm", "r3d_18"}


@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f in SLOW_FAMILIES else f
                                    for f in RUNS])
def test_temporal_family_learns_frame_order(temporal_demo, tmp_path, family):
    options, epochs = RUNS[family]
    m, elapsed = train(temporal_demo, tmp_path / family, options, epochs)
    clip, video = m["test"]["clip"], m["test"]["video"]
    print(f"{family}: test accuracy clip {clip['accuracy']:.3f} video {video['accuracy']:.3f} "
          f"in {elapsed:.0f} s ({len(m['epochs'])} epochs)")
    assert clip["n"] == 48
    assert clip["accuracy"] >= 0.9, clip
    assert video["accuracy"] >= 0.9, video


def test_order_blind_baseline_stays_near_chance(temporal_demo, tmp_path):
    # the claim is on clips: no video-level windows to evaluate
    m, elapsed = train(temporal_demo, tmp_path / "tsn", ["--model", "tsn_resnet18", "--no_video_eval"], 5)
    acc = m["test"]["clip"]["accuracy"]
    print(f"tsn_resnet18: test accuracy {acc:.3f} in {elapsed:.0f} s")
    assert acc <= 0.5, m["test"]["clip"]  # chance is 0.25; the temporal models reach >= 0.9
