"""python -m benchmarks loaders --soak: memory growth per backend stays within a bound (a tiny
run; the real 10k-clip figures are in benchmarks/results/loaders_soak_cpu.md)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Memory growth allowed over a soak of 96 clips (6 epochs of the 16 training videos), from the
# first sample (after a few clips: warmed up) to the last and to the peak. Measured here: 2-6 MiB
# (allocator warm-up); a leak of 0.2 MiB a clip or more fails it.
GROWTH_BOUND_MB = 16.0


def test_soak_memory_growth_is_bounded(tmp_path, temporal_dataset):
    out = tmp_path / "soak.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks", "loaders", "--soak", "--data",
                        str(temporal_dataset), "--split", "train", "--backends", "pyav", "--clips", "96",
                        "--soak-samples", "3", "--clip-len", "4", "--workers", "2", "--batch-size", "4",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {row["mode"]: row for row in json.loads(out.read_text())["records"]}
    assert set(rows) == {"raw", "loader_no_recycling", "loader_recycled"}
    assert rows["raw"]["clips"] == 96 and rows["raw"]["workers"] == 0
    for mode, row in rows.items():
        assert row["backend"] == "pyav" and row["status"] == "ok" and row["skipped"] == 0
        samples = row["samples"]
        assert len(samples) >= 3 and 0 < samples[0] <= max(samples), (mode, samples)
        assert samples[-1] - samples[0] <= GROWTH_BOUND_MB, (mode, samples)    # over the soak
        assert max(samples) - samples[0] <= GROWTH_BOUND_MB, (mode, samples)   # and at its peak
        assert row["growth_mb"] == pytest.approx(samples[-1] - samples[0], abs=0.1)  # what the table shows
    assert rows["loader_recycled"]["clips"] == 96


def _dies(queue):
    raise SystemExit(3)


def test_a_soak_child_that_dies_is_reported_not_waited_for():
    from benchmarks.loaders import in_child

    with pytest.raises(RuntimeError, match="exit code 3"):
        in_child(_dies)
