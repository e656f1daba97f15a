"""python -m benchmarks loaders on CPU: the naive approach, each CPU backend and the loader."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from accel.video import available_backends

DESIGN_FIELDS = {"backend", "workers", "clip_len", "size", "clips", "clips_per_s", "frames_per_s",
                 "p50_ms", "p95_ms", "cpu_util", "rss_mb", "nvdec_util", "skipped"}


def test_loaders_benchmark_on_demo_data(tmp_path, temporal_dataset):
    out = tmp_path / "loaders.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks", "loaders", "--data", str(temporal_dataset),
                        "--split", "train", "--clips", "12", "--clip-len", "8", "--size", "32",
                        "--workers", "2", "--batch-size", "4", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    payload = json.loads(out.read_text())
    assert payload["command"].startswith("python -m benchmarks loaders")
    assert payload["environment"]["torch"]
    rows = {row["backend"]: row for row in payload["records"]}
    expected = ["naive", *available_backends()]
    for name in expected:
        for key in (name, f"raw_{name}"):
            row = rows[key]
            assert row["status"] == "ok" and DESIGN_FIELDS <= set(row), key
            assert row["clips"] == 12 and row["clips_per_s"] > 0
            assert row["frames_per_s"] == pytest.approx(row["clips_per_s"] * 8)
            assert row["skipped"] == 0
        assert "overhead_vs_raw_pct" in rows[name] and rows[name]["speedup_vs_naive"] > 0
    assert rows["dali"]["status"] == "skipped" and rows["dali"]["reason"]
    assert (tmp_path / "loaders.csv").is_file() and "| naive |" in (tmp_path / "loaders.md").read_text()
    assert "fastest" in r.stdout and "skipped files: 0" in r.stdout


def test_loaders_benchmark_refuses_unknown_backend(tmp_path):
    r = subprocess.run([sys.executable, "-m", "benchmarks", "loaders", "--backends", "naive,opencv",
                        "--json", str(tmp_path / "x.json")], capture_output=True, text=True)
    assert r.returncode != 0 and "opencv" in r.stderr and "naive" in r.stderr
