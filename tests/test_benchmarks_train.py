"""python -m benchmarks train: throughput and data-stall share with the real loader."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch


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
    assert r.returncode != 0 and "opencv" in r.stderr and "pyav" in r.stderr
